#include "orchestrator/transcode_sessions.h"

#include <gtest/gtest.h>

#include <atomic>

#include "support/media_fixtures.h"

namespace switchyard::orchestrator {
namespace {

using ::switchyard::testing::MakeTestSegment;
using ::switchyard::testing::SegmentSpec;
using ::switchyard::testing::TempDir;

struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1000);
  std::function<absl::Time()> Fn() {
    return [this] { return now; };
  }
};

class TranscodeSessionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TempDir dir;
    SegmentSpec spec;
    spec.width = 160;
    spec.height = 90;
    spec.seconds = 0.5;
    segment_ = new std::string(MakeTestSegment(dir, spec));
  }
  static void TearDownTestSuite() {
    delete segment_;
    segment_ = nullptr;
  }

  std::vector<RenditionSpec> Ladder(int height = 60) {
    RenditionSpec r;
    r.height = height;
    r.bitrate_bps = 200000;
    r.preset = "ultrafast";
    return {r};
  }

  std::unique_ptr<TranscodeSessions> Make(int capacity) {
    TranscodeSessionsOptions options;
    options.capacity = capacity;
    options.idle_timeout = absl::Seconds(10);
    options.sweep_interval = absl::ZeroDuration();  // the test sweeps
    return std::make_unique<TranscodeSessions>(
        options, [this] { ++changes_; }, clock_.Fn());
  }

  static std::string* segment_;
  FakeClock clock_;
  std::atomic<int> changes_{0};
};
std::string* TranscodeSessionsTest::segment_ = nullptr;

TEST_F(TranscodeSessionsTest, AnOpenStreamHoldsASlotAndIsNeverRefused) {
  ASSERT_FALSE(segment_->empty());
  auto sessions = Make(2);
  TranscodeOptions options;
  auto a = sessions->Transcode("a", 0, *segment_, Ladder(), options);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->renditions.size(), 1u);
  EXPECT_EQ(a->renditions[0].height, 60);
  EXPECT_EQ(sessions->in_use(), 1);  // held between segments
  ASSERT_TRUE(sessions->Transcode("b", 0, *segment_, Ladder(), options).ok());
  EXPECT_EQ(sessions->in_use(), 2);
  // Full: a new stream and a one-off segment are refused at once...
  auto c = sessions->Transcode("c", 0, *segment_, Ladder(), options);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted) << c.status();
  EXPECT_NE(c.status().message().find("2 transcode slots"), std::string::npos);
  auto one_off = sessions->Transcode("", 0, *segment_, Ladder(), options);
  EXPECT_EQ(one_off.status().code(), absl::StatusCode::kResourceExhausted);
  // ...but the open streams go on.
  EXPECT_TRUE(sessions->Transcode("a", 1, *segment_, Ladder(), options).ok());
  EXPECT_TRUE(sessions->Transcode("b", 1, *segment_, Ladder(), options).ok());
  EXPECT_EQ(sessions->open_sessions(), 2);
  // Closing one frees its slot.
  EXPECT_TRUE(sessions->Close("a"));
  EXPECT_FALSE(sessions->Close("a"));
  EXPECT_EQ(sessions->in_use(), 1);
  EXPECT_TRUE(sessions->Transcode("c", 0, *segment_, Ladder(), options).ok());
  EXPECT_GT(changes_.load(), 0);
}

TEST_F(TranscodeSessionsTest, IdleSessionsCloseAndOneOffSegmentsHoldASlotOnlyWhileRunning) {
  auto sessions = Make(1);
  TranscodeOptions options;
  ASSERT_TRUE(sessions->Transcode("", 0, *segment_, Ladder(), options).ok());
  EXPECT_EQ(sessions->in_use(), 0);
  ASSERT_TRUE(sessions->Transcode("s", 0, *segment_, Ladder(), options).ok());
  clock_.now += absl::Seconds(5);
  EXPECT_EQ(sessions->CloseIdle(), 0);
  ASSERT_TRUE(sessions->Transcode("s", 1, *segment_, Ladder(), options).ok());
  clock_.now += absl::Seconds(9);
  EXPECT_EQ(sessions->CloseIdle(), 0);  // used 9 s ago
  clock_.now += absl::Seconds(2);
  EXPECT_EQ(sessions->CloseIdle(), 1);
  EXPECT_EQ(sessions->in_use(), 0);
  EXPECT_TRUE(sessions->Transcode("t", 0, *segment_, Ladder(), options).ok());
}

TEST_F(TranscodeSessionsTest, ALadderChangeReopensTheSessionAndABadLadderHoldsNoSlot) {
  auto sessions = Make(1);
  TranscodeOptions options;
  auto first = sessions->Transcode("s", 0, *segment_, Ladder(60), options);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = sessions->Transcode("s", 1, *segment_, Ladder(30), options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->renditions[0].height, 30);
  EXPECT_EQ(sessions->open_sessions(), 1);
  ASSERT_TRUE(sessions->Close("s"));

  auto bad = sessions->Transcode("x", 0, *segment_, {}, options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_EQ(sessions->in_use(), 0);
}

TEST(TranscodeSessionsSweep, TheSweeperClosesIdleSessionsAndStopsOnDestruction) {
  TempDir dir;
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 0.2;
  const std::string segment = MakeTestSegment(dir, spec);
  TranscodeSessionsOptions options;
  options.capacity = 1;
  options.idle_timeout = absl::Milliseconds(100);
  options.sweep_interval = absl::Milliseconds(20);
  TranscodeSessions sessions(options, nullptr);
  RenditionSpec r;
  r.height = 60;
  r.bitrate_bps = 100000;
  r.preset = "ultrafast";
  ASSERT_TRUE(sessions.Transcode("s", 0, segment, {r}, TranscodeOptions{}).ok());
  EXPECT_EQ(sessions.in_use(), 1);
  bool closed = false;
  for (int i = 0; i < 200 && !closed; ++i) {
    closed = sessions.in_use() == 0;
    if (!closed) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(closed);
}

}  // namespace
}  // namespace switchyard::orchestrator
