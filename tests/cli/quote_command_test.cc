// `switchyard quote` (quote_command.cc): each pipeline's job flags make the QuoteRequest, outputs
// are not needed, the caps travel as metadata, and bad input is a usage error before any call.
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_commands.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST_F(CliTest, QuoteSendsThePipelinesRequestWithoutAnOutput) {
  WriteAll(Path("in.png"), PngHeader(24, 16));
  EXPECT_EQ(Run({"quote", "upscale", "--model", "esrgan", "--in", Path("in.png")}), kExitOk)
      << err_.str();
  const v1::QuoteRequest request = gateway_.last_quote();
  ASSERT_EQ(request.request_case(), v1::QuoteRequest::kUpscale);
  EXPECT_EQ(request.upscale().model_id(), "esrgan");
  EXPECT_EQ(request.upscale().image(), PngHeader(24, 16));
  EXPECT_EQ(gateway_.last_total_cap(), "");
  const std::string out = out_.str();
  EXPECT_THAT(out,
              HasSubstr("upscale 'esrgan': 384 pixels (exact) x 0.25 per pixel on orch-1 = 96"));
  EXPECT_THAT(out, HasSubstr("2 node(s) can take it now, at 0.25 to 0.5 per pixel"));
  EXPECT_THAT(out, HasSubstr("run it with x-max-total-price 96"));
}

TEST_F(CliTest, QuoteLlmAndTheTotalCapAsMetadata) {
  EXPECT_EQ(Run({"--json", "quote", "--max-total-price", "0.125", "llm", "--model", "m",
                 "--max-tokens", "7", "--prompt", "hi"}),
            kExitOk)
      << err_.str();
  const v1::QuoteRequest request = gateway_.last_quote();
  ASSERT_EQ(request.request_case(), v1::QuoteRequest::kLlm);
  EXPECT_EQ(request.llm().model(), "m");
  EXPECT_EQ(request.llm().max_tokens(), 7);
  ASSERT_EQ(request.llm().messages_size(), 1);
  EXPECT_EQ(request.llm().messages(0).content(), "hi");
  EXPECT_EQ(gateway_.last_total_cap(), "0.125");
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["units"], "384");
  EXPECT_DOUBLE_EQ(json["max_total_price"].get<double>(), 0.125);
}

TEST_F(CliTest, QuoteTranscodeSendsTheLadderWithoutAnOutputDirectory) {
  WriteAll(Path("seg.ts"), "segment-bytes");
  EXPECT_EQ(Run({"quote", "transcode", "--in", Path("seg.ts"), "--rendition", "640x360:800k",
                 "--rendition", "hd=1280x720:3M@30", "--preset", "fast", "--container", "mp4"}),
            kExitOk)
      << err_.str();
  const v1::QuoteRequest request = gateway_.last_quote();
  ASSERT_EQ(request.request_case(), v1::QuoteRequest::kTranscode);
  const v1::TranscodeRequest& transcode = request.transcode();
  EXPECT_EQ(transcode.segment(), "segment-bytes");
  EXPECT_EQ(transcode.container(), "mp4");
  ASSERT_EQ(transcode.renditions_size(), 2);
  EXPECT_EQ(transcode.renditions(0).width(), 640);
  EXPECT_EQ(transcode.renditions(0).height(), 360);
  EXPECT_EQ(transcode.renditions(0).bitrate_bps(), 800000);
  EXPECT_EQ(transcode.renditions(0).preset(), "fast");
  EXPECT_EQ(transcode.renditions(1).name(), "hd");
  EXPECT_EQ(transcode.renditions(1).bitrate_bps(), 3000000);
  EXPECT_EQ(transcode.renditions(1).fps_num(), 30);
  const int calls = gateway_.calls();
  // The ladder and the input are checked before any call, as `switchyard transcode` checks them.
  EXPECT_EQ(Run({"quote", "transcode", "--in", Path("seg.ts"), "--rendition", "wide"}),
            kExitUsage);
  EXPECT_EQ(Run({"quote", "transcode", "--in", Path("missing.ts"), "--rendition", "64x64:1M"}),
            kExitUsage);
  EXPECT_EQ(gateway_.calls(), calls);
}

TEST_F(CliTest, QuoteLiveVideoQuotesEachSegmentAndAddsThemUp) {
  WriteAll(Path("a.ts"), "segment-a");
  WriteAll(Path("b.ts"), "segment-b");
  EXPECT_EQ(Run({"quote", "--max-total-price", "100", "live-video-to-video", "--model", "live-m",
                 "--in", Path("a.ts"), Path("b.ts"), "--stream-id", "s1"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(gateway_.calls(), 2);
  const v1::QuoteRequest request = gateway_.last_quote();
  ASSERT_EQ(request.request_case(), v1::QuoteRequest::kLiveVideoSegment);
  EXPECT_EQ(request.live_video_segment().model_id(), "live-m");
  EXPECT_EQ(request.live_video_segment().segment(), "segment-b");
  EXPECT_EQ(request.live_video_segment().sequence(), 1);
  EXPECT_EQ(request.live_video_segment().stream_id(), "s1");
  // The cap is per job, and each segment is one.
  EXPECT_EQ(gateway_.last_total_cap(), "100");
  const std::string out = out_.str();
  EXPECT_THAT(out, HasSubstr("segment 0: upscale 'esrgan': 384 pixels"));
  EXPECT_THAT(out, HasSubstr("segment 1: upscale 'esrgan': 384 pixels"));
  EXPECT_THAT(out, HasSubstr("2 segments: 768 pixels = 192 in all"));

  out_.str("");
  EXPECT_EQ(Run({"--json", "quote", "live-video-to-video", "--model", "live-m", "--in",
                 Path("a.ts"), Path("b.ts"), Path("a.ts")}),
            kExitOk)
      << err_.str();
  const auto json = nlohmann::json::parse(out_.str());
  ASSERT_EQ(json["segments"].size(), 3u);
  EXPECT_EQ(json["segments"][2]["units"], "384");
  EXPECT_EQ(json["units"], "1152");
  EXPECT_DOUBLE_EQ(json["total"].get<double>(), 288);
  EXPECT_EQ(json["units_exact"], true);

  // One segment prints as any other quote; a missing segment is a usage error before any call.
  out_.str("");
  EXPECT_EQ(Run({"quote", "live-video-to-video", "--model", "live-m", "--in", Path("a.ts")}),
            kExitOk);
  EXPECT_THAT(out_.str(), Not(HasSubstr("segments:")));
  const int calls = gateway_.calls();
  EXPECT_EQ(Run({"quote", "live-video-to-video", "--model", "live-m", "--in", Path("a.ts"),
                 Path("missing.ts")}),
            kExitUsage);
  EXPECT_EQ(gateway_.calls(), calls);
}

TEST_F(CliTest, QuoteFlagsAreCheckedBeforeCalling) {
  EXPECT_EQ(Run({"quote", "upscale", "--model", "esrgan", "--in", Path("missing.png")}),
            kExitUsage);
  EXPECT_EQ(Run({"quote", "--max-total-price", "-1", "llm", "--model", "m", "--prompt", "x"}),
            kExitUsage);
  EXPECT_EQ(Run({"quote"}), kExitUsage);
  EXPECT_EQ(Run({"quote", "no-such-pipeline"}), kExitUsage);
  EXPECT_EQ(gateway_.calls(), 0);
}

}  // namespace
}  // namespace switchyard::cli
