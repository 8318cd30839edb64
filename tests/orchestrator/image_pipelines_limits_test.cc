// Unit tests of the image pipelines' limits before the model runs (prompt lengths, live video
// segment limits) and of every contract model's warm-up inputs (docs/pipelines-image.md).
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include "orchestrator/pipelines/image_pipelines.h"

#include <gtest/gtest.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "orchestrator/image_pipelines_fixture.h"
#include "orchestrator/pipelines/live_video_pipeline.h"
#include "orchestrator/pipelines/warmup.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::orchestrator {
namespace image_pipelines_test {
namespace {

namespace fs = std::filesystem;
using ::switchyard::testing::kTinyImageToImageSource;
using ::switchyard::testing::kTinyImageToTextSource;
using ::switchyard::testing::kTinyImageToVideoSource;
using ::switchyard::testing::kTinySegmentSource;
using ::switchyard::testing::kTinyTextToImageSource;
using ::switchyard::testing::SaveScriptModule;
using ::switchyard::testing::TempDir;
// ---------------------------------------------------------------------------------------------
// prompt length (max_prompt_chars)

// "é" is one character in two bytes: lengths are counted in characters.
std::string Chars(int n, const std::string& ch = "\xc3\xa9") {
  std::string s;
  for (int i = 0; i < n; ++i) s += ch;
  return s;
}

TEST_F(ImagePipelinesTest, PromptLengthIsCountedInCharactersUpToMaxPromptChars) {
  EXPECT_EQ(Utf8Chars(""), 0);
  EXPECT_EQ(Utf8Chars("abc"), 3);
  EXPECT_EQ(Utf8Chars(Chars(4)), 4);
  EXPECT_EQ(Utf8Chars("\xf0\x9f\x98\x80x"), 2);  // U+1F600 (4 bytes) and 'x'

  const ModelConfig config = Config(pipelines::kTextToImage, {{"max_prompt_chars", 10}});
  RunContext ctx = Start(kTinyTextToImageSource, config);
  ASSERT_NE(ctx.executor, nullptr);
  v1::TextToImageRequest req;
  req.set_width(8);
  req.set_height(8);
  // Exactly at the limit (10 characters, 20 bytes): accepted and run.
  req.set_prompt(Chars(10));
  req.set_negative_prompt(Chars(10));
  auto at_limit = ValidateTextToImage(req, config);
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  ASSERT_TRUE(RunTextToImage(ctx, *at_limit).ok());

  req.set_prompt(Chars(11));
  auto over = ValidateTextToImage(req, config);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(),
            "prompt is 11 characters, more than the model's max_prompt_chars (10)");
  // The '|' form counts as the one field it is.
  req.set_prompt("aaaaa|bbbbb");
  over = ValidateTextToImage(req, config);
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("prompt is 11 characters"), std::string::npos);
  req.set_prompt("ok");
  req.set_negative_prompt(Chars(12, "x"));
  over = ValidateTextToImage(req, config);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().message(),
            "negative_prompt is 12 characters, more than the model's max_prompt_chars (10)");

  // The model serves the next request as before.
  req.set_negative_prompt("");
  auto next = ValidateTextToImage(req, config);
  ASSERT_TRUE(next.ok()) << next.status();
  auto result = RunTextToImage(ctx, *next);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->images.size(), 1u);

  // The default is 4096 characters.
  req.set_prompt(std::string(4096, 'a'));
  EXPECT_TRUE(ValidateTextToImage(req, Config(pipelines::kTextToImage)).ok());
  req.set_prompt(std::string(4097, 'a'));
  auto over_default = ValidateTextToImage(req, Config(pipelines::kTextToImage));
  ASSERT_FALSE(over_default.ok());
  EXPECT_NE(over_default.status().message().find("4097 characters"), std::string::npos);
  EXPECT_NE(over_default.status().message().find("max_prompt_chars (4096)"), std::string::npos);

  // A bad option is the config's fault, named as such.
  auto bad = ValidateTextToImage(req, Config(pipelines::kTextToImage, {{"max_prompt_chars", 0}}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("option 'max_prompt_chars'"), std::string::npos);
}

TEST_F(ImagePipelinesTest, ImageToImageAndImageToTextPromptsAreLimited) {
  const ModelConfig i2i = Config(pipelines::kImageToImage, {{"max_prompt_chars", 6}});
  v1::ImageToImageRequest a;
  a.set_image(Png(MakeImage(8, 8)));
  a.set_prompt(Chars(6));
  a.set_negative_prompt(Chars(6));
  EXPECT_TRUE(ValidateImageToImage(a, i2i).ok());
  a.set_prompt(Chars(7));
  auto over = ValidateImageToImage(a, i2i);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(),
            "prompt is 7 characters, more than the model's max_prompt_chars (6)");
  a.set_prompt("x");
  a.set_negative_prompt(Chars(7));
  over = ValidateImageToImage(a, i2i);
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("negative_prompt is 7 characters"), std::string::npos);

  const ModelConfig i2t = Config(pipelines::kImageToText, {{"max_prompt_chars", 6}});
  v1::ImageToTextRequest t;
  t.set_image(Png(MakeImage(8, 8)));
  t.set_prompt(Chars(6));
  EXPECT_TRUE(ValidateImageToText(t, i2t).ok());
  t.set_prompt("");  // optional
  EXPECT_TRUE(ValidateImageToText(t, i2t).ok());
  t.set_prompt(Chars(7));
  auto over_text = ValidateImageToText(t, i2t);
  ASSERT_FALSE(over_text.ok());
  EXPECT_EQ(over_text.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over_text.message(),
            "prompt is 7 characters, more than the model's max_prompt_chars (6)");
  t.set_prompt("x");
  t.clear_image();
  EXPECT_NE(ValidateImageToText(t, i2t).message().find("image is required"), std::string::npos);
}

// live-video-to-video segments: options max_segment_bytes / max_segment_seconds, checked before
// anything is decoded or run.
constexpr const char* kLiveIdentityModel = R"(
def forward(self, frame, params: str):
    return frame
)";

TEST_F(ImagePipelinesTest, LiveVideoSegmentLimitsComeBeforeTheModel) {
  ::switchyard::testing::SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.fps = "10";
  spec.seconds = 1.0;
  spec.gop_seconds = 1.0;
  const std::string segment = ::switchyard::testing::MakeTestSegment(dir_, spec);
  ASSERT_FALSE(segment.empty());

  auto defaults = LiveVideoLimitsFor(Config(pipelines::kLiveVideoToVideo));
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->max_input_bytes, 64 << 20);
  EXPECT_EQ(defaults->max_input_seconds, 30);
  for (const nlohmann::json& bad :
       {nlohmann::json{{"max_segment_seconds", 0}}, nlohmann::json{{"max_segment_seconds", "1"}},
        nlohmann::json{{"max_segment_bytes", 100}}, nlohmann::json{{"max_segment_bytes", 2.5}}}) {
    auto l = LiveVideoLimitsFor(Config(pipelines::kLiveVideoToVideo, bad));
    ASSERT_FALSE(l.ok()) << bad.dump();
    EXPECT_NE(l.status().message().find(bad.begin().key()), std::string::npos) << l.status();
  }

  const ModelConfig at_limit_config = Config(
      pipelines::kLiveVideoToVideo,
      {{"max_segment_seconds", 1.0}, {"max_segment_bytes", static_cast<int64_t>(segment.size())}});
  auto at_limit = LiveVideoLimitsFor(at_limit_config);
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  RunContext ctx = Start(kLiveIdentityModel, at_limit_config);
  ASSERT_NE(ctx.executor, nullptr);
  auto ran = RunLiveVideoSegment(ctx, segment, "{}", *at_limit);
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_EQ(ran->frames, 10);

  // Over either limit: refused with no model and no decoder (an empty context would crash a run).
  RunContext none;
  auto shorter =
      LiveVideoLimitsFor(Config(pipelines::kLiveVideoToVideo, {{"max_segment_seconds", 0.95}}));
  ASSERT_TRUE(shorter.ok());
  auto too_long = RunLiveVideoSegment(none, segment, "{}", *shorter);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_long.status().message(),
            "segment: 1.000 s of video, more than the limit of 0.95 s");
  auto smaller =
      LiveVideoLimitsFor(Config(pipelines::kLiveVideoToVideo,
                                {{"max_segment_bytes", static_cast<int64_t>(segment.size()) - 1}}));
  ASSERT_TRUE(smaller.ok());
  auto too_big = RunLiveVideoSegment(none, segment, "{}", *smaller);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_big.status().message(),
            absl::StrCat("segment: ", segment.size(), " bytes, more than the limit of ",
                         segment.size() - 1));

  // And the model takes the next segment as before.
  auto next = RunLiveVideoSegment(ctx, segment, "{}", *at_limit);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->frames, 10);
}

// An upscaling live model (int attribute `scale`, as switchyard-convert writes it) returns frames
// `scale` times the input's: max_width/max_height bound those too, so it takes frames of at most
// the limits divided by its scale, refused before anything is decoded or run.
constexpr const char* kLiveUpscaleX2Model = R"(
def forward(self, frame, params: str):
    return frame.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
)";

TEST_F(ImagePipelinesTest, LiveVideoUpscalingModelTakesFramesWithinTheLimitsOverItsScale) {
  ::switchyard::testing::SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.fps = "10";
  spec.seconds = 0.5;
  spec.gop_seconds = 0.5;
  const std::string segment = ::switchyard::testing::MakeTestSegment(dir_, spec);
  ASSERT_FALSE(segment.empty());
  auto set_scale = [](torch::jit::Module& m) {
    m.register_attribute("scale", c10::IntType::get(), c10::IValue(int64_t{2}));
  };

  // 64x48 in, 128x96 out: within 128x96, served.
  const ModelConfig fits =
      Config(pipelines::kLiveVideoToVideo, {{"max_width", 128}, {"max_height", 96}});
  auto fits_limits = LiveVideoLimitsFor(fits);
  ASSERT_TRUE(fits_limits.ok()) << fits_limits.status();
  RunContext ctx = Start(kLiveUpscaleX2Model, fits, set_scale);
  ASSERT_NE(ctx.executor, nullptr);
  auto ran = RunLiveVideoSegment(ctx, segment, "{}", *fits_limits);
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_EQ(ran->frames, 5);

  // Within 100x100 the input is, the output is not: refused up front, naming both sizes.
  const ModelConfig small =
      Config(pipelines::kLiveVideoToVideo, {{"max_width", 100}, {"max_height", 100}});
  auto small_limits = LiveVideoLimitsFor(small);
  ASSERT_TRUE(small_limits.ok()) << small_limits.status();
  RunContext small_ctx = Start(kLiveUpscaleX2Model, small, set_scale);
  ASSERT_NE(small_ctx.executor, nullptr);
  auto refused = RunLiveVideoSegment(small_ctx, segment, "{}", *small_limits);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(),
            "segment's video is 64x48; the model 'test-live-video-to-video' takes at most 50x50 "
            "(it upscales x2 and returns at most 100x100)");

  // Without the attribute the same model's output is caught only after the run (INTERNAL).
  RunContext unmarked = Start(kLiveUpscaleX2Model, small);
  ASSERT_NE(unmarked.executor, nullptr);
  auto late = RunLiveVideoSegment(unmarked, segment, "{}", *small_limits);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kInternal) << late.status();
}

// ---------------------------------------------------------------------------------------------
// warm-up

TEST_F(ImagePipelinesTest, WarmupInputsRunOnEveryContractModel) {
  const std::vector<std::pair<const char*, const char*>> models = {
      {pipelines::kTextToImage, kTinyTextToImageSource},
      {pipelines::kImageToImage, kTinyImageToImageSource},
      {pipelines::kImageToVideo, kTinyImageToVideoSource},
      {pipelines::kSegmentAnything2, kTinySegmentSource},
      {pipelines::kImageToText, kTinyImageToTextSource}};
  for (const auto& [pipeline, source] : models) {
    SCOPED_TRACE(pipeline);
    ModelConfig config = Config(pipeline);
    config.warmup_size = 12;
    const fs::path path = dir_.path() / absl::StrCat("warm-", pipeline, ".pt");
    SaveScriptModule(path, source);
    auto model = runner::TorchModel::Load(path, "cpu");
    ASSERT_TRUE(model.ok()) << model.status();
    WarmupInputs inputs = ImageWarmupInputs(config);
    ASSERT_TRUE(inputs.has_value());
    auto out = (*model)->Run(std::move(*inputs));
    EXPECT_TRUE(out.ok()) << out.status();
    config.warmup_size = 0;
    EXPECT_FALSE(ImageWarmupInputs(config).has_value());
  }
}

}  // namespace
}  // namespace image_pipelines_test
}  // namespace switchyard::orchestrator
