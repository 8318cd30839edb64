#include "orchestrator/serving/transcode_sessions.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <spdlog/sinks/ringbuffer_sink.h>

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
  auto a = sessions->Transcode("", "a", 0, *segment_, Ladder(), options);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->renditions.size(), 1u);
  EXPECT_EQ(a->renditions[0].height, 60);
  EXPECT_EQ(sessions->in_use(), 1);  // held between segments
  ASSERT_TRUE(sessions->Transcode("", "b", 0, *segment_, Ladder(), options).ok());
  EXPECT_EQ(sessions->in_use(), 2);
  // Full: a new stream and a one-off segment are refused at once...
  auto c = sessions->Transcode("", "c", 0, *segment_, Ladder(), options);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted) << c.status();
  EXPECT_NE(c.status().message().find("2 transcode slots"), std::string::npos);
  auto one_off = sessions->Transcode("", "", 0, *segment_, Ladder(), options);
  EXPECT_EQ(one_off.status().code(), absl::StatusCode::kResourceExhausted);
  // ...but the open streams go on.
  EXPECT_TRUE(sessions->Transcode("", "a", 1, *segment_, Ladder(), options).ok());
  EXPECT_TRUE(sessions->Transcode("", "b", 1, *segment_, Ladder(), options).ok());
  EXPECT_EQ(sessions->open_sessions(), 2);
  // Closing one frees its slot.
  EXPECT_TRUE(sessions->Close("", "a"));
  EXPECT_FALSE(sessions->Close("", "a"));
  EXPECT_EQ(sessions->in_use(), 1);
  EXPECT_TRUE(sessions->Transcode("", "c", 0, *segment_, Ladder(), options).ok());
  EXPECT_GT(changes_.load(), 0);
}

TEST_F(TranscodeSessionsTest, IdleSessionsCloseAndOneOffSegmentsHoldASlotOnlyWhileRunning) {
  auto sessions = Make(1);
  TranscodeOptions options;
  ASSERT_TRUE(sessions->Transcode("", "", 0, *segment_, Ladder(), options).ok());
  EXPECT_EQ(sessions->in_use(), 0);
  ASSERT_TRUE(sessions->Transcode("", "s", 0, *segment_, Ladder(), options).ok());
  clock_.now += absl::Seconds(5);
  EXPECT_EQ(sessions->CloseIdle(), 0);
  ASSERT_TRUE(sessions->Transcode("", "s", 1, *segment_, Ladder(), options).ok());
  clock_.now += absl::Seconds(9);
  EXPECT_EQ(sessions->CloseIdle(), 0);  // used 9 s ago
  clock_.now += absl::Seconds(2);
  EXPECT_EQ(sessions->CloseIdle(), 1);
  EXPECT_EQ(sessions->in_use(), 0);
  EXPECT_TRUE(sessions->Transcode("", "t", 0, *segment_, Ladder(), options).ok());
}

TEST_F(TranscodeSessionsTest, ALadderChangeReopensTheSessionAndABadLadderHoldsNoSlot) {
  auto sessions = Make(1);
  TranscodeOptions options;
  auto first = sessions->Transcode("", "s", 0, *segment_, Ladder(60), options);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = sessions->Transcode("", "s", 1, *segment_, Ladder(30), options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->renditions[0].height, 30);
  EXPECT_EQ(sessions->open_sessions(), 1);
  ASSERT_TRUE(sessions->Close("", "s"));

  auto bad = sessions->Transcode("", "x", 0, *segment_, {}, options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_EQ(sessions->in_use(), 0);
}

// Regression (issue 18): sessions were keyed by stream id alone, so another API key naming the
// same stream id continued (and could reset) the first key's session and could close it.
TEST_F(TranscodeSessionsTest, AnotherTenantsStreamOfTheSameIdIsASeparateSession) {
  auto sessions = Make(3);
  TranscodeOptions options;
  ASSERT_TRUE(sessions->Transcode("key-a", "live", 0, *segment_, Ladder(60), options).ok());
  // B names A's stream with another ladder: B gets a session of its own; A's is untouched.
  auto b = sessions->Transcode("key-b", "live", 0, *segment_, Ladder(30), options);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->renditions[0].height, 30);
  EXPECT_EQ(sessions->open_sessions(), 2);
  EXPECT_EQ(sessions->open_sessions("key-a"), 1);
  EXPECT_EQ(sessions->open_sessions("key-b"), 1);
  // Closing "live" as B (or as no key) ends B's stream only.
  EXPECT_TRUE(sessions->Close("key-b", "live"));
  EXPECT_FALSE(sessions->Close("key-b", "live"));
  EXPECT_FALSE(sessions->Close("", "live"));
  EXPECT_EQ(sessions->open_sessions("key-a"), 1);
  auto a = sessions->Transcode("key-a", "live", 1, *segment_, Ladder(60), options);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->renditions[0].height, 60);
  EXPECT_EQ(sessions->open_sessions(), 1);
}

// Regression (issue 18): a stream whose first segment failed kept its slot until the idle
// timeout (30 s by default), so a client sending bad first segments pinned every slot.
TEST_F(TranscodeSessionsTest, AFailedFirstSegmentGivesItsSlotBackAtOnce) {
  auto sessions = Make(1);
  TranscodeOptions options;
  auto bad = sessions->Transcode("key-a", "s", 0, "not a video segment", Ladder(), options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_EQ(sessions->in_use(), 0);  // no clock advance, no sweep
  // The slot is free for another stream at once...
  ASSERT_TRUE(sessions->Transcode("key-b", "t", 0, *segment_, Ladder(), options).ok());
  EXPECT_EQ(sessions->in_use(), 1);
  // ...while a stream that has succeeded keeps its session through a failed segment.
  EXPECT_FALSE(sessions->Transcode("key-b", "t", 1, "garbage", Ladder(), options).ok());
  EXPECT_EQ(sessions->open_sessions("key-b"), 1);
  EXPECT_TRUE(sessions->Transcode("key-b", "t", 2, *segment_, Ladder(), options).ok());
}

// Issue 18: one key may not hold every slot of a node with its (idle) streams.
TEST_F(TranscodeSessionsTest, SessionsPerTenantAreCappedWithANamedLimit) {
  TranscodeSessionsOptions o;
  o.capacity = 3;
  o.idle_timeout = absl::Seconds(10);
  o.sweep_interval = absl::ZeroDuration();
  o.max_sessions_per_tenant = 1;
  TranscodeSessions sessions(o, nullptr, clock_.Fn());
  TranscodeOptions options;
  ASSERT_TRUE(sessions.Transcode("key-a", "s1", 0, *segment_, Ladder(), options).ok());
  auto second = sessions.Transcode("key-a", "s2", 0, *segment_, Ladder(), options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  EXPECT_TRUE(IsTenantLimit(second.status()));
  EXPECT_NE(second.status().message().find("max_sessions_per_key"), std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find("key-a"), std::string::npos);
  // Its open stream goes on; other keys, and clients without keys, still find room.
  EXPECT_TRUE(sessions.Transcode("key-a", "s1", 1, *segment_, Ladder(), options).ok());
  EXPECT_TRUE(sessions.Transcode("key-b", "s1", 0, *segment_, Ladder(), options).ok());
  EXPECT_TRUE(sessions.Transcode("", "s1", 0, *segment_, Ladder(), options).ok());
  // A full node is not a per-key refusal.
  auto full = sessions.Transcode("key-c", "s1", 0, *segment_, Ladder(), options);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(IsTenantLimit(full.status()));
  // Once the key's stream ends it may open another.
  ASSERT_TRUE(sessions.Close("key-a", "s1"));
  EXPECT_TRUE(sessions.Transcode("key-a", "s2", 0, *segment_, Ladder(), options).ok());
}

// A stream id with a newline (a client's, passed on by the gateway) forged a line in the
// orchestrator's log ("transcode session for stream '...' opened"). Now it is cut and escaped.
TEST_F(TranscodeSessionsTest, AStreamIdCannotForgeLogLines) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  sink->set_pattern("%v");
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("sessions-test", sink));
  {
    auto sessions = Make(1);
    const std::string id = "s\n2026-12-03 00:00:00.000 error FORGED" + std::string(5000, 'x');
    EXPECT_TRUE(sessions->Transcode("", id, 0, *segment_, Ladder(), TranscodeOptions()).ok());
    EXPECT_TRUE(sessions->Close("", id));
  }
  spdlog::set_default_logger(previous);
  int lines = 0;
  for (std::string line : sink->last_formatted()) {
    if (!line.empty() && line.back() == '\n') line.pop_back();
    if (line.find("FORGED") == std::string::npos) continue;
    ++lines;
    EXPECT_EQ(line.find('\n'), std::string::npos) << line.substr(0, 200);
    EXPECT_NE(line.find("s\\n2026-12-03"), std::string::npos) << line.substr(0, 200);
    EXPECT_LT(line.size(), 400u) << line.substr(0, 200);
  }
  EXPECT_GE(lines, 2);  // opened and closed
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
  ASSERT_TRUE(sessions.Transcode("", "s", 0, segment, {r}, TranscodeOptions{}).ok());
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
