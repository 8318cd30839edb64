// Quotes' units from the request alone (common/quote_units.h): exact ones equal metering's count of
// a completed job, the others say what they assume; the price that keeps a total; the
// x-max-total-price parser; and the billing guarantee that a job is never charged above its
// max_total_price (JobBilling::Settle).
#include "common/quote_units.h"

#include <cmath>
#include <limits>
#include <map>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/metering.h"
#include "common/metrics.h"
#include "gateway/billing/usage_ledger.h"
#include "support/media_fixtures.h"

namespace switchyard::metering {
namespace {

using ::switchyard::testing::MakeTestImage;
using ::switchyard::testing::MakeTestSegment;
using ::switchyard::testing::ProbeVideo;
using ::switchyard::testing::ReadFile;
using ::switchyard::testing::RunCommand;
using ::switchyard::testing::SegmentSpec;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;

TEST(QuoteUnitsTest, InputPixelPipelinesAreExactAndEqualTheMeteredUnits) {
  TempDir dir;
  const std::string png = MakeTestImage(dir, 24, 16, "png");
  const std::string jpg = MakeTestImage(dir, 40, 30, "jpg");

  v1::UpscaleRequest up;
  up.set_model_id("m");
  up.set_image(png);
  auto q = QuoteUnitsOf(up);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->basis, QuoteBasis::kExact);
  EXPECT_EQ(q->units, 24 * 16);
  auto metered = Units(up, v1::ImageResponse());
  ASSERT_TRUE(metered.ok());
  EXPECT_EQ(q->units, *metered);

  v1::ImageToTextRequest i2t;
  i2t.set_image(jpg);
  q = QuoteUnitsOf(i2t);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->basis, QuoteBasis::kExact);
  EXPECT_EQ(q->units, *Units(i2t, v1::ImageToTextResponse()));
  EXPECT_EQ(q->units, 40 * 30);

  v1::SegmentAnything2Request sam;
  sam.set_image(png);
  q = QuoteUnitsOf(sam);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->units, *Units(sam, v1::MasksResponse()));

  // Bytes that are no image: INVALID_ARGUMENT naming it; none: the field is required.
  up.set_image("not an image at all");
  q = QuoteUnitsOf(up);
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(q.status().message(), HasSubstr("image"));
  up.clear_image();
  EXPECT_EQ(QuoteUnitsOf(up).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuoteUnitsTest, TextToImageIsExactWithASizeAndEqualsTheReturnedImagesPixels) {
  TempDir dir;
  v1::TextToImageRequest req;
  req.set_prompt("a cat | a dog | ");  // two prompts (the empty part is dropped)
  req.set_width(64);
  req.set_height(32);
  req.set_num_images_per_prompt(2);
  auto q = QuoteUnitsOf(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->basis, QuoteBasis::kExact);
  EXPECT_EQ(q->units, 2 * 2 * 64 * 32);
  // What a completed job of that request returns: 4 images of 64x32, counted by metering.
  v1::ImageResponse resp;
  const std::string image = MakeTestImage(dir, 64, 32, "png");
  for (int i = 0; i < 4; ++i) resp.add_images()->set_data(image);
  auto metered = Units(req, resp);
  ASSERT_TRUE(metered.ok()) << metered.status();
  EXPECT_EQ(q->units, *metered);

  // Without a size: the default 1024x576, an estimate (a model's options may change it).
  req.clear_width();
  q = QuoteUnitsOf(req);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->basis, QuoteBasis::kEstimate);
  EXPECT_EQ(q->units, 2 * 2 * 1024 * 32);
  EXPECT_THAT(q->note, HasSubstr("1024x576"));

  req.set_prompt(" | ");
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.set_prompt("x");
  req.set_num_images_per_prompt(0);
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.set_num_images_per_prompt(1);
  req.set_height(-8);
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
  // Sizes no model takes: refused, not overflowed.
  req.set_width(2000000000);
  req.set_height(2000000000);
  req.set_num_images_per_prompt(2000000000);
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuoteUnitsTest, ImageToImageAndVideoAreEstimates) {
  TempDir dir;
  v1::ImageToImageRequest i2i;
  i2i.set_prompt("p");
  i2i.set_image(MakeTestImage(dir, 20, 10, "png"));
  i2i.set_num_images_per_prompt(3);
  auto q = QuoteUnitsOf(i2i);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->basis, QuoteBasis::kEstimate);
  EXPECT_EQ(q->units, 3 * 20 * 10);

  v1::ImageToVideoRequest i2v;
  i2v.set_image(MakeTestImage(dir, 20, 10, "png"));
  i2v.set_width(64);
  i2v.set_height(48);
  q = QuoteUnitsOf(i2v);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->basis, QuoteBasis::kEstimate);
  EXPECT_EQ(q->units, 256 * 64 * 48);
}

TEST(QuoteUnitsTest, AudioToTextIsTheDecodedLengthExactly) {
  TempDir dir;
  const auto path = dir.path() / "tone.wav";
  std::string log;
  ASSERT_EQ(RunCommand("ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                       "sine=frequency=440:sample_rate=16000:duration=1.25 " +
                           path.string(),
                       &log),
            0)
      << log;
  v1::AudioToTextRequest req;
  req.set_audio(ReadFile(path));
  auto q = QuoteUnitsOf(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->basis, QuoteBasis::kExact);
  EXPECT_EQ(q->units, 1250);
  EXPECT_EQ(q->units, *Units(req, v1::TextResponse()));
  req.set_audio("garbage bytes");
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuoteUnitsTest, LlmIsMaxTokensPlusAPromptBound) {
  v1::LLMRequest req;
  req.set_model("m");
  auto* m = req.add_messages();
  m->set_role("user");
  m->set_content("hello");
  req.set_max_tokens(10);
  auto q = QuoteUnitsOf(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->basis, QuoteBasis::kEstimate);
  EXPECT_EQ(q->units, 10 + 32 + (5 + 4 + 8));
  req.clear_max_tokens();  // 256 when unset
  EXPECT_EQ(QuoteUnitsOf(req)->units, 256 + 32 + 17);
  req.set_max_tokens(0);
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.clear_max_tokens();
  req.clear_messages();
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuoteUnitsTest, TextToSpeechHasNoUnitsBeforeItRuns) {
  v1::TextToSpeechRequest req;
  req.set_text("hello");
  auto q = QuoteUnitsOf(req);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->basis, QuoteBasis::kUnknown);
  EXPECT_EQ(q->units, 0);
  EXPECT_EQ(QuoteBasisName(q->basis), "unknown");
}

TEST(QuoteUnitsTest, TranscodeCountsInputFramesTimesEachRenditionsSize) {
  TempDir dir;
  SegmentSpec spec;
  spec.width = 320;
  spec.height = 240;
  spec.fps = "30";
  spec.seconds = 1.0;
  const std::string segment = MakeTestSegment(dir, spec);
  const auto probe = ProbeVideo(dir, segment, "ts");
  ASSERT_TRUE(probe.ok) << probe.error;
  v1::TranscodeRequest req;
  req.set_segment(segment);
  auto* r = req.add_renditions();
  r->set_width(160);
  r->set_height(120);
  r->set_bitrate_bps(100000);
  auto* same = req.add_renditions();  // 0x0: the input's size
  same->set_bitrate_bps(100000);
  auto q = QuoteUnitsOf(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->basis, QuoteBasis::kEstimate);
  EXPECT_EQ(q->units, static_cast<int64_t>(probe.frames) * (160 * 120 + 320 * 240));
  // Half the rate: half the frames.
  r->set_fps_num(15);
  r->set_fps_den(1);
  q = QuoteUnitsOf(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->units, 15 * 160 * 120 + static_cast<int64_t>(probe.frames) * 320 * 240);

  req.set_segment("not a segment");
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.clear_renditions();
  EXPECT_EQ(QuoteUnitsOf(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuoteUnitsTest, LiveSegmentIsInputFramesTimesSize) {
  TempDir dir;
  SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.seconds = 0.5;
  v1::LiveVideoSegmentRequest req;
  req.set_segment(MakeTestSegment(dir, spec));
  auto count = CountVideo(req.segment());
  ASSERT_TRUE(count.ok());
  auto q = QuoteUnitsOf(req);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->units, count->frames * 64 * 48);
  EXPECT_EQ(q->basis, QuoteBasis::kEstimate);
}

TEST(QuoteUnitsTest, PriceWithinTotalNeverExceedsTheTotal) {
  // Totals and unit counts whose quotient rounds up in double arithmetic are common; every one
  // must come out at or under the total, and be the largest price that does.
  int checked = 0;
  for (double total : {1.0, 0.1, 0.3, 7.77, 1e-9, 123456.789, 1e15}) {
    for (int64_t units : {int64_t{1}, int64_t{3}, int64_t{7}, int64_t{49}, int64_t{384},
                          int64_t{1234567}, int64_t{1} << 40, (int64_t{1} << 50) - 1}) {
      const double p = PriceWithinTotal(total, units);
      const double n = static_cast<double>(units);
      EXPECT_GT(p, 0) << total << " / " << units;
      EXPECT_LE(n * p, total) << total << " / " << units;
      EXPECT_GT(n * std::nextafter(p, std::numeric_limits<double>::infinity()), total)
          << total << " / " << units;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 56);
  EXPECT_EQ(PriceWithinTotal(0, 5), 0);
  EXPECT_EQ(PriceWithinTotal(1, 0), 0);
}

TEST(QuoteUnitsTest, MaxTotalPriceParsing) {
  EXPECT_DOUBLE_EQ(*ParseMaxTotalPrice("0.25", "x-max-total-price"), 0.25);
  EXPECT_DOUBLE_EQ(*ParseMaxTotalPrice("1e15", "x-max-total-price"), 1e15);
  for (const char* bad :
       {"", "abc", "0", "-1", "nan", "NaN", "inf", "-inf", "1e16", "1e400", "1,5", " ", "1 2"}) {
    auto v = ParseMaxTotalPrice(bad, "x-max-total-price");
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(v.status().message(), HasSubstr("x-max-total-price must be a number > 0")) << bad;
  }
}

TEST(QuoteUnitsTest, SetQuoteRequestFillsTheFieldOfTheRequestsType) {
  v1::QuoteRequest quote;
  v1::ImageToTextRequest i2t;
  i2t.set_model_id("m");
  ASSERT_TRUE(SetQuoteRequest(i2t, &quote));
  EXPECT_EQ(quote.request_case(), v1::QuoteRequest::kImageToText);
  EXPECT_EQ(quote.image_to_text().model_id(), "m");
  v1::TranscodeRequest t;
  ASSERT_TRUE(SetQuoteRequest(t, &quote));
  EXPECT_EQ(quote.request_case(), v1::QuoteRequest::kTranscode);
  EXPECT_FALSE(SetQuoteRequest(v1::ImageResponse(), &quote));
}

}  // namespace
}  // namespace switchyard::metering

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::TempDir;

JobBilling::Job CappedJob(const std::string& id, int64_t counted, int64_t reported,
                          double max_total) {
  JobBilling::Job job;
  job.job_id = id;
  job.request_id = id;
  job.api_key_id = std::string("k");
  job.pipeline = std::string("llm");
  job.model_id = std::string("m");
  job.orchestrator = std::string("node-x");
  job.reported_units = reported;
  job.counted = counted;
  job.advertised_price_per_unit = 0.1;
  job.reported_price_per_unit = 0.1;
  job.max_total_price = max_total;
  return job;
}

// x-max-total-price at settlement: the amount is never above it. Within it nothing changes; more
// units than quoted (an estimate) lower the price billed; a node reporting other units than the
// gateway counted is disputed as always.
TEST(JobBillingTest, NeverChargesAboveTheMaxTotalPrice) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  Metrics metrics("gateway");
  JobBilling billing(ledger->get(), &metrics);

  EXPECT_TRUE(billing.Settle(CappedJob("within", 30, 30, 3.0)));  // 30 x 0.1 = 3: at the cap
  EXPECT_TRUE(billing.Settle(CappedJob("over", 49, 49, 3.0)));    // 4.9 asked: 3 paid
  EXPECT_FALSE(billing.Settle(CappedJob("lying", 30, 4000, 3.0)));
  EXPECT_TRUE(billing.Settle(CappedJob("uncapped", 49, 49, 0)));

  UsageQuery all;
  all.all_keys = true;
  auto rows = (*ledger)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::map<std::string, UsageRecord> by_id;
  for (auto& r : *rows) by_id[r.job_id] = r;
  ASSERT_EQ(by_id.size(), 4u);
  EXPECT_FALSE(by_id["within"].disputed);
  EXPECT_DOUBLE_EQ(by_id["within"].price_per_unit, 0.1);
  EXPECT_LE(by_id["within"].amount, 3.0);
  EXPECT_NEAR(by_id["within"].amount, 3.0, 1e-12);
  EXPECT_FALSE(by_id["over"].disputed);
  EXPECT_LE(by_id["over"].amount, 3.0);
  EXPECT_NEAR(by_id["over"].amount, 3.0, 1e-12);
  EXPECT_LT(by_id["over"].price_per_unit, 0.1);
  EXPECT_EQ(by_id["over"].amount, 49 * by_id["over"].price_per_unit);  // units x price, exactly
  EXPECT_TRUE(by_id["lying"].disputed);
  EXPECT_EQ(by_id["lying"].amount, 0);
  EXPECT_EQ(by_id["lying"].dispute, "units");
  EXPECT_NEAR(by_id["uncapped"].amount, 4.9, 1e-12);
}

}  // namespace
}  // namespace switchyard::gateway
