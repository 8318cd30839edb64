// Spot checks of results (gateway/api/spot_check.h): the comparison of two results, the verdict
// of a tie-break, the sampling, and whole checks over fake nodes (who is blamed, ejected and has
// its ledger rows disputed; what is skipped).
#include "gateway/api/spot_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/media/image_codec.h"
#include "gateway/gateway_config.h"
#include "gateway/router_test_util.h"
#include "support/media_fixtures.h"

namespace switchyard::gateway {
namespace {

using router_test::Constant;
using router_test::FakeClock;
using router_test::Node;
using router_test::Ready;
using router_test::Script;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;

// A 4x2 PNG whose pixels are `value`, with the first channel of the first pixel `first`.
std::string Png(uint8_t value, uint8_t first, int width = 4, int height = 2) {
  media::RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels.assign(static_cast<size_t>(3 * width * height), value);
  image.pixels[0] = first;
  auto png = media::EncodePng(image);
  EXPECT_TRUE(png.ok()) << png.status();
  return png.ok() ? *png : std::string();
}

SpotResult Result(const std::string& node, std::vector<std::string> images,
                  const std::string& rest = "") {
  SpotResult r;
  r.node = node;
  r.images = std::move(images);
  r.rest = rest;
  return r;
}

TEST(SpotCompareTest, ExactAndWithinTolerance) {
  VerificationPipeline exact;
  const SpotResult a = Result("a", {Png(100, 100)});
  EXPECT_TRUE(CompareSpotResults(a, Result("b", {Png(100, 100)}), exact).match);
  // One channel of one pixel 3 off: not exact; within max_abs_diff 3.
  const SpotResult off = Result("b", {Png(100, 103)});
  SpotComparison c = CompareSpotResults(a, off, exact);
  EXPECT_FALSE(c.match);
  EXPECT_EQ(c.max_abs_diff, 3);
  EXPECT_THAT(c.detail, HasSubstr("max abs difference 3 (allowed 0)"));
  VerificationPipeline loose;
  loose.max_abs_diff = 3;
  EXPECT_TRUE(CompareSpotResults(a, off, loose).match);
  // PSNR: MSE = 9 / 24 -> 52.4 dB.
  loose.min_psnr_db = 50;
  c = CompareSpotResults(a, off, loose);
  EXPECT_TRUE(c.match);
  EXPECT_NEAR(c.min_psnr_db, 10 * std::log10(255.0 * 255.0 / (9.0 / 24)), 1e-9);
  loose.min_psnr_db = 60;
  EXPECT_FALSE(CompareSpotResults(a, off, loose).match);
  // The same pixels in another encoding (a JPEG would differ; a PNG with other compression is
  // the same pixels): decoded, not compared as bytes.
  media::RgbImage image;
  image.width = 4;
  image.height = 2;
  image.pixels.assign(24, 100);
  EXPECT_TRUE(CompareSpotResults(a, Result("b", {*media::EncodePng(image)}), exact).match);
}

TEST(SpotCompareTest, ShapeCountRestAndGarbageAreMismatches) {
  VerificationPipeline loose;
  loose.max_abs_diff = 255;
  const SpotResult a = Result("a", {Png(100, 100)}, "rest");
  SpotComparison c = CompareSpotResults(a, Result("b", {Png(100, 100, 2, 4)}, "rest"), loose);
  EXPECT_FALSE(c.match);
  EXPECT_THAT(c.detail, HasSubstr("4x2 against 2x4"));
  c = CompareSpotResults(a, Result("b", {Png(100, 100), Png(1, 1)}, "rest"), loose);
  EXPECT_FALSE(c.match);
  EXPECT_THAT(c.detail, HasSubstr("1 images against 2"));
  c = CompareSpotResults(a, Result("b", {Png(100, 100)}, "other"), loose);
  EXPECT_FALSE(c.match);
  EXPECT_THAT(c.detail, HasSubstr("beyond their images"));
  c = CompareSpotResults(a, Result("b", {"not an image"}, "rest"), loose);
  EXPECT_FALSE(c.match);
  EXPECT_THAT(c.detail, HasSubstr("does not decode"));
  // Masks and text: the rest alone, byte for byte.
  EXPECT_TRUE(CompareSpotResults(Result("a", {}, "[[1,0]]"), Result("b", {}, "[[1,0]]"), {}).match);
  EXPECT_FALSE(
      CompareSpotResults(Result("a", {}, "[[1,0]]"), Result("b", {}, "[[1,1]]"), {}).match);
}

// One second of testsrc2 at 25 fps, 160x96, H.264 in MPEG-TS with `args` (ffmpeg CLI).
std::string Rendition(const TempDir& dir, const std::string& name, const std::string& args) {
  auto path = dir.path() / name;
  std::string log;
  EXPECT_EQ(::switchyard::testing::RunCommand(
                "ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                "testsrc2=size=160x96:rate=25:duration=1 -c:v libx264 -pix_fmt yuv420p -crf 18 " +
                    args + " -f mpegts " + path.string(),
                &log),
            0)
      << log;
  return ::switchyard::testing::ReadFile(path);
}

SpotResult Videos(const std::string& node, std::vector<std::string> videos,
                  const std::string& rest = "rest") {
  SpotResult r = Result(node, {}, rest);
  r.videos = std::move(videos);
  return r;
}

TEST(SpotCompareTest, TranscodesAreComparedAsDecodedFrames) {
  TempDir dir;
  const std::string medium = Rendition(dir, "a.ts", "-preset medium -threads 1");
  const std::string veryfast = Rendition(dir, "b.ts", "-preset veryfast -threads 4");
  const std::string negated = Rendition(dir, "n.ts", "-vf negate");
  const std::string shorter = Rendition(dir, "s.ts", "-frames:v 20");
  VerificationConfig config;
  const VerificationPipeline tolerance = config.For("transcode");
  ASSERT_EQ(tolerance.min_psnr_db, kDefaultTranscodeMinPsnrDb);
  const SpotResult a = Videos("a", {medium, medium});
  // Identical bytes: no decoding. Another encoding of the same frames: a match.
  EXPECT_TRUE(CompareSpotResults(a, Videos("b", {medium, medium}), tolerance).match);
  SpotComparison c = CompareSpotResults(a, Videos("b", {medium, veryfast}), tolerance);
  EXPECT_TRUE(c.match) << c.detail;
  EXPECT_GT(c.min_psnr_db, 35);
  // Wrong pixels, a frame missing, a count of renditions, garbage, the rest (sizes, frames).
  c = CompareSpotResults(a, Videos("b", {medium, negated}), tolerance);
  EXPECT_FALSE(c.match);
  EXPECT_THAT(c.detail, HasSubstr("PSNR"));
  c = CompareSpotResults(a, Videos("b", {shorter, medium}), tolerance);
  EXPECT_FALSE(c.match);
  EXPECT_THAT(c.detail, HasSubstr("video 0 has 25 frames against 20"));
  c = CompareSpotResults(a, Videos("b", {medium}), tolerance);
  EXPECT_FALSE(c.match);
  EXPECT_THAT(c.detail, HasSubstr("2 videos against 1"));
  c = CompareSpotResults(a, Videos("b", {medium, "not a video"}), tolerance);
  EXPECT_FALSE(c.match);
  EXPECT_THAT(c.detail, HasSubstr("video 1: the second video"));
  EXPECT_FALSE(CompareSpotResults(a, Videos("b", {medium, medium}, "other"), tolerance).match);
}

TEST(SpotVerdictTest, TheNodeTheOtherTwoContradictIsWrong) {
  EXPECT_EQ(JudgeSpotCheck(true, std::nullopt, std::nullopt), SpotVerdict::kAgree);
  EXPECT_EQ(JudgeSpotCheck(false, std::nullopt, std::nullopt), SpotVerdict::kUnresolved);
  EXPECT_EQ(JudgeSpotCheck(false, true, false), SpotVerdict::kCheckerWrong);
  EXPECT_EQ(JudgeSpotCheck(false, false, true), SpotVerdict::kFirstWrong);
  EXPECT_EQ(JudgeSpotCheck(false, false, false), SpotVerdict::kUnresolved);
  EXPECT_EQ(JudgeSpotCheck(false, true, true), SpotVerdict::kUnresolved);
}

// Fake nodes: each answers the re-run with its own result (or an error), synchronously.
struct FakeNodes {
  std::map<std::string, absl::StatusOr<SpotResult>> results;
  std::vector<std::string> ran;  // the nodes re-runs went to, in order
  SpotChecker::RunOn Fn() {
    return [this](const NodeView& node, grpc::ClientContext* context, SpotChecker::Done done) {
      EXPECT_NE(context, nullptr);
      ran.push_back(node.id);
      auto it = results.find(node.id);
      done(it == results.end() ? absl::StatusOr<SpotResult>(absl::UnavailableError("no result"))
                               : it->second);
    };
  }
};

class SpotCheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.sample_rate = 1;
    config_.eject_after = 2;
    config_.eject_seconds = 3600;
    auto ledger = SqliteUsageLedger::Open(dir_.path() / "usage.db");
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = *std::move(ledger);
  }

  // Nodes a, b and c offering upscale 'esrgan' (c full when `c_full`: routed to last).
  void SetNodes(std::vector<std::shared_ptr<const NodeView>> nodes) {
    snapshot_ = std::make_shared<Snapshot>(router_test::Snap(std::move(nodes)));
  }

  std::unique_ptr<SpotChecker> Make(std::function<uint64_t()> random = Constant(0)) {
    SpotChecker::Deps deps;
    deps.router = &router_;
    deps.snapshot = [this] { return snapshot_; };
    deps.ledger = ledger_.get();
    deps.random = std::move(random);
    deps.now = clock_.Fn();
    auto checker = SpotChecker::Create(config_, std::move(deps));
    EXPECT_TRUE(checker.ok()) << checker.status();
    return checker.ok() ? *std::move(checker) : nullptr;
  }

  SpotChecker::Job Job(const SpotResult& first) {
    SpotChecker::Job job;
    job.pipeline = "upscale";
    job.model_id = "esrgan";
    job.request_id = "req";
    job.first = first;
    job.run = fakes_.Fn();
    return job;
  }

  void RecordRow(const std::string& job_id, const std::string& node) {
    // Strings, not literals: GCC 12 sees a false -Wrestrict in literal assignments inlined here.
    const std::string key = "k", pipeline = "upscale", model = "esrgan", unit = "pixel";
    UsageRecord r;
    r.job_id = job_id;
    r.api_key_id = key;
    r.pipeline = pipeline;
    r.model_id = model;
    r.orchestrator = node;
    r.unit = unit;
    r.units = 10;
    r.reported_units = 10;
    r.price_per_unit = 1;
    r.amount = 10;
    r.completed = absl::Now();
    ASSERT_TRUE(ledger_->Record(r).ok());
  }

  bool Disputed(const std::string& job_id) {
    UsageQuery all;
    all.all_keys = true;
    auto rows = ledger_->Rows(all);
    EXPECT_TRUE(rows.ok());
    for (const auto& r : *rows) {
      if (r.job_id == job_id) return r.disputed && r.dispute == "verification";
    }
    ADD_FAILURE() << "no row " << job_id;
    return false;
  }

  TempDir dir_;
  FakeClock clock_;
  Router router_{RouterOptions{}, Constant(0), clock_.Fn()};
  VerificationConfig config_;
  std::unique_ptr<SqliteUsageLedger> ledger_;
  SnapshotPtr snapshot_;
  FakeNodes fakes_;
  const std::string good_ = Png(100, 100);
  const std::string bad_ = Png(100, 155);
};

TEST_F(SpotCheckerTest, CheatingFirstNodeIsBlamedByTheTieBreakThenEjectedAndDisputed) {
  SetNodes({Node("a", {Ready(2, 0)}), Node("b", {Ready(2, 0)}), Node("c", {Ready(2, 0)})});
  fakes_.results = {
      {"a", Result("", {good_})}, {"b", Result("", {good_})}, {"c", Result("", {bad_})}};
  RecordRow("job-c", "c");
  RecordRow("job-a", "a");
  auto checker = Make();
  ASSERT_NE(checker, nullptr);
  // c answered the client with a wrong result: the checker (a or b) differs, the third agrees
  // with the checker.
  checker->Start(Job(Result("c", {bad_})));
  ASSERT_TRUE(checker->WaitIdle(absl::Seconds(5)));
  ASSERT_EQ(fakes_.ran.size(), 2u);
  EXPECT_NE(fakes_.ran[0], "c");
  EXPECT_NE(fakes_.ran[1], "c");
  EXPECT_NE(fakes_.ran[0], fakes_.ran[1]);
  EXPECT_EQ(checker->Blamed("c"), 1);
  EXPECT_EQ(checker->Count("mismatch"), 1);
  EXPECT_FALSE(checker->Ejected("c"));
  EXPECT_FALSE(router_.IsEjected("c"));
  // An honest answer checked: one re-run, a match, nobody blamed.
  fakes_.ran.clear();
  checker->Start(Job(Result("a", {good_})));
  ASSERT_TRUE(checker->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(checker->Count("match"), 2);  // the tie-break's winner, then this one
  EXPECT_EQ(checker->Blamed("a"), 0);
  // The second mismatch (eject_after 2): c is ejected for eject_seconds, a success does not end
  // it, and its paid rows are disputed.
  checker->Start(Job(Result("c", {bad_})));
  ASSERT_TRUE(checker->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(checker->Blamed("c"), 2);
  EXPECT_TRUE(checker->Ejected("c"));
  EXPECT_TRUE(router_.IsEjected("c"));
  router_.ReportAttempt(*snapshot_->nodes[2], "esrgan", AttemptOutcome::kSuccess,
                        absl::Milliseconds(1));
  EXPECT_TRUE(router_.IsEjected("c"));
  clock_.now += absl::Seconds(3599);
  EXPECT_TRUE(router_.IsEjected("c"));
  EXPECT_TRUE(Disputed("job-c"));
  EXPECT_FALSE(Disputed("job-a"));
  EXPECT_EQ(checker->Blamed("a") + checker->Blamed("b"), 0);
  clock_.now += absl::Seconds(2);
  EXPECT_FALSE(router_.IsEjected("c"));
}

TEST_F(SpotCheckerTest, CheatingCheckerIsBlamedNotTheHonestFirstNode) {
  // c has room and b is full: c is the checker, b the tie-breaker.
  SetNodes({Node("a", {Ready(2, 0)}), Node("b", {Ready(2, 2)}), Node("c", {Ready(2, 0)})});
  fakes_.results = {{"b", Result("", {good_})}, {"c", Result("", {bad_})}};
  auto checker = Make();
  checker->Start(Job(Result("a", {good_})));
  ASSERT_TRUE(checker->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(fakes_.ran, (std::vector<std::string>{"c", "b"}));
  EXPECT_EQ(checker->Blamed("a"), 0);
  EXPECT_EQ(checker->Blamed("c"), 1);
}

TEST_F(SpotCheckerTest, TwoNodesCannotTellWhoCheatedSoNobodyIsBlamed) {
  SetNodes({Node("a", {Ready(2, 0)}), Node("c", {Ready(2, 0)})});
  fakes_.results = {{"a", Result("", {good_})}};
  auto checker = Make();
  for (int i = 0; i < 3; ++i) {
    checker->Start(Job(Result("c", {bad_})));
    ASSERT_TRUE(checker->WaitIdle(absl::Seconds(5)));
  }
  EXPECT_EQ(checker->Count("unresolved"), 6);  // both nodes, each time
  EXPECT_EQ(checker->Blamed("a"), 0);
  EXPECT_EQ(checker->Blamed("c"), 0);
  EXPECT_FALSE(router_.IsEjected("c"));
}

TEST_F(SpotCheckerTest, SkipsWithoutAnotherNodeOrWhenBusyAndCountsErrors) {
  SetNodes({Node("a", {Ready(2, 0)})});
  auto checker = Make();
  checker->Start(Job(Result("a", {good_})));
  ASSERT_TRUE(checker->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(checker->Count("skipped_no_node"), 1);
  EXPECT_TRUE(fakes_.ran.empty());

  // b's re-run fails: an error, nobody blamed.
  SetNodes({Node("a", {Ready(2, 0)}), Node("b", {Ready(2, 0)})});
  checker->Start(Job(Result("a", {good_})));
  ASSERT_TRUE(checker->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(checker->Count("error"), 1);
  EXPECT_EQ(checker->Blamed("b"), 0);

  // max_in_flight 1 with a re-run held open: the next job is skipped.
  config_.max_in_flight = 1;
  auto one = Make();
  SpotChecker::Done held;
  SpotChecker::Job job = Job(Result("a", {good_}));
  job.run = [&held](const NodeView&, grpc::ClientContext*, SpotChecker::Done done) {
    held = std::move(done);
  };
  one->Start(job);
  one->Start(Job(Result("a", {good_})));
  EXPECT_EQ(one->Count("skipped_busy"), 1);
  ASSERT_TRUE(held);
  EXPECT_FALSE(one->WaitIdle(absl::Milliseconds(10)));
  held(Result("", {good_}));
  ASSERT_TRUE(one->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(one->Count("match"), 1);
}

TEST_F(SpotCheckerTest, SamplesDeterministicJobsAtTheirPipelinesRate) {
  config_.sample_rate = 0.01;
  VerificationPipeline upscale;
  upscale.sample_rate = 0.2;
  config_.pipelines["upscale"] = upscale;
  config_.deterministic_models = {"fixed-t2i"};
  SetNodes({});
  // Draws: u = (value >> 11) / 2^53.
  const uint64_t u_010 = static_cast<uint64_t>(0.10 * 0x1.0p53) << 11;
  const uint64_t u_030 = static_cast<uint64_t>(0.30 * 0x1.0p53) << 11;
  const uint64_t u_0005 = static_cast<uint64_t>(0.005 * 0x1.0p53) << 11;
  auto checker = Make(Script({u_010, u_030, u_0005, u_010}));
  EXPECT_TRUE(checker->Sample("upscale", "m", false));              // 0.10 < 0.2
  EXPECT_FALSE(checker->Sample("upscale", "m", false));             // 0.30
  EXPECT_TRUE(checker->Sample("segment-anything-2", "m", false));   // 0.005 < 0.01
  EXPECT_FALSE(checker->Sample("segment-anything-2", "m", false));  // 0.10
  // Not deterministic: no draw at all.
  EXPECT_FALSE(checker->Deterministic("image-to-image", "m", false));
  EXPECT_TRUE(checker->Deterministic("image-to-image", "m", true));
  EXPECT_FALSE(checker->Deterministic("text-to-image", "m", true));  // not listed
  EXPECT_TRUE(checker->Deterministic("text-to-image", "fixed-t2i", false));
  EXPECT_FALSE(checker->Deterministic("llm", "fixed-t2i", false));
  EXPECT_FALSE(checker->Deterministic("live-video-to-video", "m", true));
  EXPECT_TRUE(checker->Deterministic("transcode", "libx264", false));
  EXPECT_FALSE(checker->Deterministic("audio-to-text", "m", false));
  // max_in_flight 0: never.
  config_.max_in_flight = 0;
  EXPECT_FALSE(Make(Constant(0))->Sample("upscale", "m", false));
  // Rate 1 and 0 need no draw.
  config_.max_in_flight = 4;
  config_.pipelines["upscale"].sample_rate = 1;
  EXPECT_TRUE(Make(Constant(~uint64_t{0}))->Sample("upscale", "m", false));
  config_.pipelines["upscale"].sample_rate = 0;
  EXPECT_FALSE(Make(Constant(0))->Sample("upscale", "m", false));
}

TEST(SpotResultTest, ImagesApartFromTheRestAndTheReceiptKept) {
  v1::ImageResponse resp;
  auto* media = resp.add_images();
  media->set_data("png-bytes");
  media->set_content_type("image/png");
  media->set_width(4);
  resp.mutable_job()->set_orchestrator("a");
  resp.mutable_job()->mutable_receipt()->set_job_id("job-1");
  SpotResult r = SpotResultOf("a", resp);
  ASSERT_EQ(r.images.size(), 1u);
  EXPECT_EQ(r.images[0], "png-bytes");
  EXPECT_THAT(r.receipt_json, HasSubstr("job-1"));
  v1::ImageResponse rest;
  ASSERT_TRUE(rest.ParseFromString(r.rest));
  EXPECT_FALSE(rest.has_job());
  EXPECT_EQ(rest.images(0).width(), 4);
  EXPECT_TRUE(rest.images(0).data().empty());
}

TEST(SpotResultTest, RenditionsApartFromTheRest) {
  v1::TranscodeResponse resp;
  auto* rendition = resp.add_renditions();
  rendition->set_data("ts-bytes");
  rendition->set_frames(25);
  resp.set_input_frames(25);
  resp.mutable_job()->set_orchestrator("a");
  SpotResult r = SpotResultOf("a", resp);
  ASSERT_EQ(r.videos.size(), 1u);
  EXPECT_EQ(r.videos[0], "ts-bytes");
  EXPECT_TRUE(r.images.empty());
  v1::TranscodeResponse rest;
  ASSERT_TRUE(rest.ParseFromString(r.rest));
  EXPECT_FALSE(rest.has_job());
  EXPECT_EQ(rest.renditions(0).frames(), 25);
  EXPECT_TRUE(rest.renditions(0).data().empty());
}

}  // namespace
}  // namespace switchyard::gateway
