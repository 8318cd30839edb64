// The image pipelines' jobs: upscale, text-to-image (image_jobs.cc).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_commands.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

using ::testing::HasSubstr;

TEST_F(CliTest, UpscaleWritesOutput) {
  WriteAll(Path("in.png"), PngHeader(64, 48));
  EXPECT_EQ(Run({"upscale", "--model", "esrgan-slim-x4", "--in", Path("in.png"), "--out",
                 Path("out.png"), "--prompt", "sharp"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(ReadAll(Path("out.png")), "upscaled:" + PngHeader(64, 48));
  EXPECT_EQ(out_.str(), "upscaled " + Path("in.png") + " (64x48) -> " + Path("out.png") +
                            " (256x192) with esrgan-slim-x4 on orch-1 in 812 ms (attempts 1)\n");
  EXPECT_EQ(gateway_.last_upscale().model_id(), "esrgan-slim-x4");
  EXPECT_EQ(gateway_.last_upscale().prompt(), "sharp");
  EXPECT_FALSE(gateway_.last_upscale().has_seed());
}

TEST_F(CliTest, UpscaleJson) {
  WriteAll(Path("in.jpg"), JpegHeader(64, 48));
  EXPECT_EQ(Run({"--json", "upscale", "--model", "m", "--in", Path("in.jpg"), "--out",
                 Path("out.png"), "--seed", "7"}),
            kExitOk)
      << err_.str();
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["output"], Path("out.png"));
  EXPECT_EQ(json["width"], 256);
  EXPECT_EQ(json["input_width"], 64);
  EXPECT_EQ(json["job"]["orchestrator"], "orch-1");
  EXPECT_EQ(json["job"]["attempts"], 1);
  EXPECT_EQ(gateway_.last_upscale().seed(), 7);
}

TEST_F(CliTest, UpscaleValidationExitsTwoWithoutCalling) {
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("missing.png"), "--out", Path("o.png")}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("does not exist"));
  WriteAll(Path("not-image.png"), "hello");
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("not-image.png"), "--out", Path("o.png")}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("not a PNG or JPEG"));
  WriteAll(Path("in.png"), PngHeader(8, 8));
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("in.png"), "--out", Path("nodir/o.png")}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("does not exist"));
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("in.png"), "--out", dir_.string()}),
            kExitUsage);
  EXPECT_EQ(gateway_.calls(), 0);
}

TEST_F(CliTest, TextToImageNamesSeveralOutputsAndLeavesDefaultsUnset) {
  EXPECT_EQ(Run({"text-to-image", "--model", "m", "--prompt", "fox", "--out", Path("fox.png"),
                 "--num-images", "2", "--seed", "3", "--loras", "{\"a\": 1.5}"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(ReadAll(Path("fox-1.png")), "image0:fox");
  EXPECT_EQ(ReadAll(Path("fox-2.png")), "image1:fox");
  EXPECT_FALSE(fs::exists(Path("fox.png")));
  EXPECT_THAT(out_.str(), HasSubstr("seed 4"));
  const v1::TextToImageRequest request = gateway_.last_text_to_image();
  EXPECT_EQ(request.seed(), 3);
  EXPECT_EQ(request.loras(), "{\"a\": 1.5}");
  EXPECT_FALSE(request.has_width());  // the gateway's default applies
  EXPECT_FALSE(request.has_guidance_scale());
  EXPECT_FALSE(request.has_safety_check());

  EXPECT_EQ(Run({"--json", "text-to-image", "--model", "m", "--prompt", "x", "--out",
                 Path("one.png"), "--width", "32", "--no-safety-check"}),
            kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["images"][0]["path"], Path("one.png"));
  EXPECT_EQ(json["job"]["orchestrator"], "orch-1");
  EXPECT_EQ(gateway_.last_text_to_image().width(), 32);
  EXPECT_FALSE(gateway_.last_text_to_image().safety_check());
}

}  // namespace
}  // namespace switchyard::cli
