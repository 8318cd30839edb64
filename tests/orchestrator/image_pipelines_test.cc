// Unit tests of the image pipelines' validation, pre/post-processing and TorchScript contracts,
// with tiny deterministic TorchScript models built here (docs/pipelines-image.md).
#include "orchestrator/pipelines/image_pipelines.h"

#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
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

// Always a [1, 3, 4, 4] image, whatever was asked.
constexpr const char* kTextToImageWrongShape = R"(
def forward(self, prompt: str, negative_prompt: str, seed: int, num_inference_steps: int,
            guidance_scale: float, height: int, width: int, num_images: int):
    return torch.zeros([1, 3, 4, 4])
)";

// The right shape as bool.
constexpr const char* kTextToImageWrongDtype = R"(
def forward(self, prompt: str, negative_prompt: str, seed: int, num_inference_steps: int,
            guidance_scale: float, height: int, width: int, num_images: int):
    return torch.zeros([num_images, 3, height, width]) > 1.0
)";

// Frames one pixel narrower than asked.
constexpr const char* kImageToVideoWrongSize = R"(
def forward(self, image, seed: int, height: int, width: int, fps: int, motion_bucket_id: int,
            noise_aug_strength: float, num_inference_steps: int):
    return torch.zeros([2, 3, height, width - 1])
)";

constexpr const char* kSegmentWrongOutput = R"(
def forward(self, image, point_coords, point_labels, box, mask_input, multimask_output: bool,
            normalize_coords: bool):
    return image
)";

constexpr const char* kImageToTextWrongOutput = R"(
def forward(self, image, prompt: str):
    return image
)";

// A deterministic test image: value (x * 3 + y * 5 + c * 7) % 256.
media::RgbImage MakeImage(int w, int h) {
  media::RgbImage img{w, h, {}};
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        img.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>((x * 3 + y * 5 + c * 7) % 256);
      }
    }
  }
  return img;
}

std::string Png(const media::RgbImage& img) {
  auto png = media::EncodePng(img);
  EXPECT_TRUE(png.ok()) << png.status();
  return png.ok() ? *png : std::string();
}

int Pixel(const media::RgbImage& img, int x, int y, int c) {
  return img.pixels[(static_cast<size_t>(y) * img.width + x) * 3 + c];
}

class ImagePipelinesTest : public ::testing::Test {
 protected:
  ModelConfig Config(const std::string& pipeline,
                     nlohmann::json options = nlohmann::json::object()) {
    ModelConfig c;
    c.id = absl::StrCat("test-", pipeline);
    c.pipeline = pipeline;
    c.device = "cpu";
    c.options = std::move(options);
    return c;
  }

  // Saves, loads and starts an executor for `source`; `config` is kept for RunContext.
  RunContext Start(const std::string& source, const ModelConfig& config) {
    const fs::path path = dir_.path() / absl::StrCat("m", models_.size(), ".pt");
    SaveScriptModule(path, source);
    auto model = runner::TorchModel::Load(path, "cpu");
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return {};
    loaded_.push_back(*model);
    auto executor = runner::ModelExecutor::Create(*model, {});
    EXPECT_TRUE(executor.ok()) << executor.status();
    if (!executor.ok()) return {};
    models_.push_back(std::move(*executor));
    configs_.push_back(std::make_unique<ModelConfig>(config));
    return RunContext{models_.back().get(), configs_.back().get(), absl::Now() + absl::Seconds(60),
                      [] { return false; }};
  }

  TempDir dir_;
  std::vector<runner::TorchModelPtr> loaded_;
  std::vector<std::unique_ptr<runner::ModelExecutor>> models_;
  std::vector<std::unique_ptr<ModelConfig>> configs_;
};

// ---------------------------------------------------------------------------------------------
// text-to-image

TEST_F(ImagePipelinesTest, TextToImageDefaultsFollowTheSpecAndOptions) {
  v1::TextToImageRequest req;
  req.set_prompt("a cat");
  auto p = ValidateTextToImage(req, Config(pipelines::kTextToImage));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->width, 1024);
  EXPECT_EQ(p->height, 576);
  EXPECT_EQ(p->num_inference_steps, 50);
  EXPECT_DOUBLE_EQ(p->guidance_scale, 7.5);
  EXPECT_EQ(p->num_images_per_prompt, 1);
  EXPECT_GE(p->seed, 0);
  EXPECT_LT(p->seed, int64_t{1} << 32);
  ASSERT_EQ(p->prompts.size(), 1u);
  EXPECT_EQ(p->prompts[0], "a cat");

  auto q = ValidateTextToImage(
      req, Config(pipelines::kTextToImage, {{"default_width", 64}, {"default_height", 32}}));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->width, 64);
  EXPECT_EQ(q->height, 32);

  req.set_seed(42);
  req.set_prompt(" a | b |");
  auto r = ValidateTextToImage(req, Config(pipelines::kTextToImage));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->seed, 42);
  EXPECT_EQ(r->prompts, (std::vector<std::string>{"a", "b"}));
}

struct ValidationCase {
  std::string name;
  std::function<void(v1::TextToImageRequest*)> mutate;
  std::string message;  // expected in the error
};

TEST_F(ImagePipelinesTest, TextToImageValidationErrorsNameTheField) {
  const ModelConfig config =
      Config(pipelines::kTextToImage, {{"max_width", 64}, {"max_height", 64}, {"max_steps", 100}});
  const std::vector<ValidationCase> cases = {
      {"no prompt", [](auto* r) { r->clear_prompt(); }, "prompt is required"},
      {"blank prompts", [](auto* r) { r->set_prompt(" | "); }, "prompt is required"},
      {"width not x8", [](auto* r) { r->set_width(20); }, "width must be a positive multiple of 8"},
      {"width 0", [](auto* r) { r->set_width(0); }, "width must be a positive multiple of 8"},
      {"height negative", [](auto* r) { r->set_height(-8); }, "height must be a positive"},
      {"width over max", [](auto* r) { r->set_width(72); },
       "width 72 exceeds the model's max_width"},
      {"height over max", [](auto* r) { r->set_height(128); }, "max_height 64"},
      {"negative steps", [](auto* r) { r->set_num_inference_steps(-1); },
       "num_inference_steps must be between 1 and 100"},
      {"zero steps", [](auto* r) { r->set_num_inference_steps(0); }, "num_inference_steps"},
      {"too many steps", [](auto* r) { r->set_num_inference_steps(101); }, "(got 101)"},
      {"negative guidance", [](auto* r) { r->set_guidance_scale(-1); }, "guidance_scale"},
      {"nan guidance", [](auto* r) { r->set_guidance_scale(std::nanf("")); }, "guidance_scale"},
      {"zero images", [](auto* r) { r->set_num_images_per_prompt(0); },
       "num_images_per_prompt must be between 1 and 4"},
      {"too many images", [](auto* r) { r->set_num_images_per_prompt(5); },
       "num_images_per_prompt"},
      {"images x prompts",
       [](auto* r) {
         r->set_prompt("a|b");
         r->set_num_images_per_prompt(3);
       },
       "max_images 4"},
      {"loras", [](auto* r) { r->set_loras(R"({"x": 1})"); }, "loras"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    v1::TextToImageRequest req;
    req.set_prompt("ok");
    req.set_width(32);
    req.set_height(32);
    c.mutate(&req);
    auto p = ValidateTextToImage(req, config);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.message), std::string::npos) << p.status();
  }
}

TEST_F(ImagePipelinesTest, BadOptionsAreReportedWithTheModelAndOption) {
  v1::TextToImageRequest req;
  req.set_prompt("x");
  auto p = ValidateTextToImage(req, Config(pipelines::kTextToImage, {{"max_width", "big"}}));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("test-text-to-image"), std::string::npos) << p.status();
  EXPECT_NE(p.status().message().find("max_width"), std::string::npos) << p.status();
}

TEST_F(ImagePipelinesTest, TextToImageProducesTheModelsExactPixels) {
  RunContext ctx = Start(kTinyTextToImageSource, Config(pipelines::kTextToImage));
  ASSERT_NE(ctx.executor, nullptr);
  v1::TextToImageRequest req;
  req.set_prompt("cat|horse");
  req.set_seed(5);
  req.set_width(16);
  req.set_height(8);
  req.set_num_images_per_prompt(2);
  auto p = ValidateTextToImage(req, *ctx.model);
  ASSERT_TRUE(p.ok()) << p.status();
  auto result = RunTextToImage(ctx, *p);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->images.size(), 4u);
  EXPECT_EQ(result->output_pixels, 4 * 16 * 8);
  const int lens[2] = {3, 5};
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    const auto& img = result->images[i];
    EXPECT_EQ(img.width, 16);
    EXPECT_EQ(img.height, 8);
    auto decoded = media::DecodeImage(img.png, 1 << 20);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    const int len = lens[i / 2], n = i % 2;
    for (int y = 0; y < 8; ++y) {
      for (int x = 0; x < 16; ++x) {
        for (int c = 0; c < 3; ++c) {
          ASSERT_EQ(Pixel(*decoded, x, y, c), (len * 7 + 5 + n + c * 50 + y + x) % 256)
              << x << "," << y << "," << c;
        }
      }
    }
  }
}

TEST_F(ImagePipelinesTest, TextToImageWrongOutputShapeOrDtypeIsInternal) {
  v1::TextToImageRequest req;
  req.set_prompt("x");
  req.set_width(16);
  req.set_height(8);
  {
    RunContext ctx = Start(kTextToImageWrongShape, Config(pipelines::kTextToImage));
    auto p = ValidateTextToImage(req, *ctx.model);
    ASSERT_TRUE(p.ok());
    auto result = RunTextToImage(ctx, *p);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal);
    EXPECT_NE(result.status().message().find("test-text-to-image"), std::string::npos);
    EXPECT_NE(result.status().message().find("[1, 3, 4, 4]"), std::string::npos) << result.status();
    EXPECT_NE(result.status().message().find("expected float32 [1, 3, 8, 16]"), std::string::npos)
        << result.status();
  }
  {
    RunContext ctx = Start(kTextToImageWrongDtype, Config(pipelines::kTextToImage));
    auto p = ValidateTextToImage(req, *ctx.model);
    ASSERT_TRUE(p.ok());
    auto result = RunTextToImage(ctx, *p);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal);
    EXPECT_NE(result.status().message().find("Bool"), std::string::npos) << result.status();
  }
}

TEST_F(ImagePipelinesTest, EncodePngsClampsAndRounds) {
  at::Tensor t = at::tensor({-5.0f, 0.4f, 0.6f, 254.5f, 300.0f, std::nanf("")}).view({1, 3, 1, 2});
  auto pngs = EncodePngs(t);
  ASSERT_TRUE(pngs.ok()) << pngs.status();
  ASSERT_EQ(pngs->size(), 1u);
  auto img = media::DecodeImage((*pngs)[0].png, 100);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(Pixel(*img, 0, 0, 0), 0);
  EXPECT_EQ(Pixel(*img, 1, 0, 0), 0);
  EXPECT_EQ(Pixel(*img, 0, 0, 1), 1);
  EXPECT_EQ(Pixel(*img, 1, 0, 1), 254);  // round half to even
  EXPECT_EQ(Pixel(*img, 0, 0, 2), 255);
  EXPECT_EQ(Pixel(*img, 1, 0, 2), 0);  // NaN
}

// ---------------------------------------------------------------------------------------------
// image-to-image

TEST_F(ImagePipelinesTest, ImageToImageDefaultsAndExactPixels) {
  RunContext ctx = Start(kTinyImageToImageSource, Config(pipelines::kImageToImage));
  v1::ImageToImageRequest req;
  req.set_prompt("dog");
  req.set_image(Png(MakeImage(12, 6)));
  auto defaults = ValidateImageToImage(req, *ctx.model);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_FLOAT_EQ(static_cast<float>(defaults->strength), 0.8f);
  EXPECT_DOUBLE_EQ(defaults->guidance_scale, 7.5);
  EXPECT_DOUBLE_EQ(defaults->image_guidance_scale, 1.5);
  EXPECT_EQ(defaults->num_inference_steps, 100);

  req.set_seed(1000);
  req.set_num_inference_steps(4);
  req.set_num_images_per_prompt(2);
  auto p = ValidateImageToImage(req, *ctx.model);
  ASSERT_TRUE(p.ok()) << p.status();
  auto result = RunImageToImage(ctx, req.image(), *p);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->images.size(), 2u);
  EXPECT_EQ(result->input_width, 12);
  EXPECT_EQ(result->input_height, 6);
  EXPECT_EQ(result->output_pixels, 2 * 12 * 6);
  const media::RgbImage in = MakeImage(12, 6);
  for (int n = 0; n < 2; ++n) {
    auto out = media::DecodeImage(result->images[n].png, 1 << 20);
    ASSERT_TRUE(out.ok());
    ASSERT_EQ(out->width, 12);
    for (int y = 0; y < 6; ++y) {
      for (int x = 0; x < 12; ++x) {
        for (int c = 0; c < 3; ++c) {
          ASSERT_EQ(Pixel(*out, x, y, c), (Pixel(in, x, y, c) + n + 1000 + 3 + 4) % 256);
        }
      }
    }
  }
}

TEST_F(ImagePipelinesTest, ImageToImageValidationAndImageErrors) {
  const ModelConfig config = Config(pipelines::kImageToImage);
  struct Case {
    std::string name;
    std::function<void(v1::ImageToImageRequest*)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no prompt", [](auto* r) { r->clear_prompt(); }, "prompt is required"},
      {"no image", [](auto* r) { r->clear_image(); }, "image is required"},
      {"strength > 1", [](auto* r) { r->set_strength(1.5f); }, "strength must be between 0 and 1"},
      {"strength < 0", [](auto* r) { r->set_strength(-0.1f); }, "strength"},
      {"image guidance", [](auto* r) { r->set_image_guidance_scale(-1); }, "image_guidance_scale"},
      {"steps", [](auto* r) { r->set_num_inference_steps(-3); }, "num_inference_steps"},
      {"images", [](auto* r) { r->set_num_images_per_prompt(0); }, "num_images_per_prompt"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    v1::ImageToImageRequest req;
    req.set_prompt("ok");
    req.set_image("not checked here");
    c.mutate(&req);
    auto p = ValidateImageToImage(req, config);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.message), std::string::npos) << p.status();
  }

  ModelConfig small = Config(pipelines::kImageToImage);
  small.max_input_pixels = 100;
  RunContext ctx = Start(kTinyImageToImageSource, small);
  v1::ImageToImageRequest req;
  req.set_prompt("x");
  req.set_image("\x89PNG\r\n\x1a\ngarbage");
  auto p = ValidateImageToImage(req, *ctx.model);
  ASSERT_TRUE(p.ok());
  auto corrupt = RunImageToImage(ctx, req.image(), *p);
  ASSERT_FALSE(corrupt.ok());
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(corrupt.status().message().find("image: "), std::string::npos) << corrupt.status();
  auto too_big = RunImageToImage(ctx, Png(MakeImage(20, 20)), *p);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument) << too_big.status();
}

// ---------------------------------------------------------------------------------------------
// image-to-video

TEST_F(ImagePipelinesTest, EncodeMp4IsProbeableWithTheRightSizeAndFrames) {
  at::Tensor frames = at::rand({5, 3, 16, 32}) * 255;
  auto mp4 = EncodeMp4(frames, 10);
  ASSERT_TRUE(mp4.ok()) << mp4.status();
  auto probe = testing::ProbeVideo(dir_, *mp4, "mp4");
  ASSERT_TRUE(probe.ok) << probe.error;
  EXPECT_EQ(probe.width, 32);
  EXPECT_EQ(probe.height, 16);
  EXPECT_EQ(probe.frames, 5);
  EXPECT_EQ(probe.codec, "h264");

  auto odd = EncodeMp4(at::zeros({1, 3, 15, 32}), 10);
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ImagePipelinesTest, ImageToVideoRunsTheModelAndEncodesEveryFrame) {
  RunContext ctx = Start(kTinyImageToVideoSource, Config(pipelines::kImageToVideo));
  v1::ImageToVideoRequest req;
  req.set_image(Png(MakeImage(20, 10)));
  auto defaults = ValidateImageToVideo(req, *ctx.model);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->width, 1024);
  EXPECT_EQ(defaults->height, 576);
  EXPECT_EQ(defaults->fps, 6);
  EXPECT_EQ(defaults->motion_bucket_id, 127);
  EXPECT_FLOAT_EQ(static_cast<float>(defaults->noise_aug_strength), 0.02f);
  EXPECT_EQ(defaults->num_inference_steps, 25);

  req.set_width(48);
  req.set_height(32);
  req.set_fps(8);
  req.set_num_inference_steps(7);  // the test model makes one frame per step
  req.set_seed(3);
  auto p = ValidateImageToVideo(req, *ctx.model);
  ASSERT_TRUE(p.ok()) << p.status();
  auto result = RunImageToVideo(ctx, req.image(), *p);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->frames, 7);
  EXPECT_EQ(result->width, 48);
  EXPECT_EQ(result->height, 32);
  EXPECT_EQ(result->output_pixels, 7 * 48 * 32);
  auto probe = testing::ProbeVideo(dir_, result->mp4, "mp4");
  ASSERT_TRUE(probe.ok) << probe.error;
  EXPECT_EQ(probe.width, 48);
  EXPECT_EQ(probe.height, 32);
  EXPECT_EQ(probe.frames, 7);
}

TEST_F(ImagePipelinesTest, ImageToVideoValidationAndWrongFrames) {
  const ModelConfig config = Config(pipelines::kImageToVideo, {{"max_width", 256}, {"max_fps", 30}});
  struct Case {
    std::string name;
    std::function<void(v1::ImageToVideoRequest*)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no image", [](auto* r) { r->clear_image(); }, "image is required"},
      {"width", [](auto* r) { r->set_width(30); }, "width must be a positive multiple of 8"},
      {"width max", [](auto* r) { r->set_width(264); }, "max_width 256"},
      {"fps 0", [](auto* r) { r->set_fps(0); }, "fps must be between 1 and 30"},
      {"fps max", [](auto* r) { r->set_fps(31); }, "fps"},
      {"motion", [](auto* r) { r->set_motion_bucket_id(-1); }, "motion_bucket_id"},
      {"noise", [](auto* r) { r->set_noise_aug_strength(-0.5f); }, "noise_aug_strength"},
      {"steps", [](auto* r) { r->set_num_inference_steps(-2); }, "num_inference_steps"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    v1::ImageToVideoRequest req;
    req.set_image("x");
    req.set_width(64);
    req.set_height(64);
    c.mutate(&req);
    auto p = ValidateImageToVideo(req, config);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.message), std::string::npos) << p.status();
  }

  RunContext ctx = Start(kImageToVideoWrongSize, Config(pipelines::kImageToVideo));
  v1::ImageToVideoRequest req;
  req.set_image(Png(MakeImage(8, 8)));
  req.set_width(16);
  req.set_height(16);
  auto p = ValidateImageToVideo(req, *ctx.model);
  ASSERT_TRUE(p.ok());
  auto result = RunImageToVideo(ctx, req.image(), *p);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(result.status().message().find("[2, 3, 16, 15]"), std::string::npos) << result.status();
}

// ---------------------------------------------------------------------------------------------
// segment-anything-2

TEST_F(ImagePipelinesTest, SegmentAnything2ReturnsJsonMasksScoresAndLogits) {
  RunContext ctx = Start(kTinySegmentSource, Config(pipelines::kSegmentAnything2));
  v1::SegmentAnything2Request req;
  req.set_image(Png(MakeImage(4, 2)));
  req.add_point_coords(2);
  req.add_point_coords(1);
  req.add_point_labels(1);
  auto p = ValidateSegmentAnything2(req, *ctx.model);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->multimask_output);
  EXPECT_TRUE(p->return_logits);
  EXPECT_TRUE(p->normalize_coords);
  auto result = RunSegmentAnything2(ctx, req.image(), *p);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->masks,
            "[[[-2,-1,0,1],[-2,-1,0,1]],[[-1.5,-0.5,0.5,1.5],[-1.5,-0.5,0.5,1.5]],"
            "[[-1,0,1,2],[-1,0,1,2]]]");
  EXPECT_EQ(result->scores, "[0.5,0.75,1]");
  auto logits = nlohmann::json::parse(result->logits);
  ASSERT_EQ(logits.size(), 3u);
  EXPECT_EQ(logits[2][3][3], 1);
  EXPECT_EQ(result->num_masks, 3);
  EXPECT_EQ(result->input_width, 4);

  // Binary masks, one mask, pixel coordinates, box prompt.
  req.clear_point_coords();
  req.clear_point_labels();
  for (float v : {1.0f, 0.0f, 3.0f, 2.0f}) req.add_box(v);
  req.set_return_logits(false);
  req.set_multimask_output(false);
  req.set_normalize_coords(false);
  p = ValidateSegmentAnything2(req, *ctx.model);
  ASSERT_TRUE(p.ok()) << p.status();
  result = RunSegmentAnything2(ctx, req.image(), *p);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->masks, "[[[0,0,1,1],[0,0,1,1]]]");
  EXPECT_EQ(result->scores, "[0.5]");
  EXPECT_EQ(result->logits, "[[[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]]]");
}

TEST_F(ImagePipelinesTest, SegmentAnything2ValidationErrorsNameTheField) {
  const ModelConfig config = Config(pipelines::kSegmentAnything2);
  struct Case {
    std::string name;
    std::function<void(v1::SegmentAnything2Request*)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no image", [](auto* r) { r->clear_image(); }, "image is required"},
      {"odd coords", [](auto* r) { r->add_point_coords(5); },
       "point_coords must hold (x, y) pairs"},
      {"label count", [](auto* r) { r->add_point_labels(0); }, "point_labels must have one label"},
      {"label value", [](auto* r) { r->set_point_labels(0, 2); }, "point_labels must be 0"},
      {"box size",
       [](auto* r) {
         for (int i = 0; i < 3; ++i) r->add_box(1);
       },
       "box must be exactly 4 values"},
      {"mask size", [](auto* r) { r->add_mask_input(0); }, "mask_input must be 256x256"},
      {"no prompt",
       [](auto* r) {
         r->clear_point_coords();
         r->clear_point_labels();
       },
       "a prompt is required"},
      {"nan coords", [](auto* r) { r->set_point_coords(0, std::nanf("")); }, "point_coords"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    v1::SegmentAnything2Request req;
    req.set_image("x");
    req.add_point_coords(1);
    req.add_point_coords(1);
    req.add_point_labels(1);
    c.mutate(&req);
    auto p = ValidateSegmentAnything2(req, config);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.message), std::string::npos) << p.status();
  }

  RunContext ctx = Start(kSegmentWrongOutput, config);
  v1::SegmentAnything2Request req;
  req.set_image(Png(MakeImage(4, 2)));
  req.add_point_coords(1);
  req.add_point_coords(1);
  req.add_point_labels(1);
  auto p = ValidateSegmentAnything2(req, *ctx.model);
  ASSERT_TRUE(p.ok());
  auto result = RunSegmentAnything2(ctx, req.image(), *p);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(result.status().message().find("test-segment-anything-2"), std::string::npos);
  EXPECT_NE(result.status().message().find("[1, 3, 2, 4]"), std::string::npos) << result.status();
}

TEST_F(ImagePipelinesTest, TensorToJsonWritesNestedArrays) {
  EXPECT_EQ(TensorToJson(at::tensor({0.1f, -2.0f, 3.5f}).view({3})), "[0.1,-2,3.5]");
  EXPECT_EQ(TensorToJson(at::tensor({0.1f, -2.0f, 3.5f, 0.0f}).view({2, 2}), true),
            "[[1,0],[1,0]]");
  EXPECT_EQ(TensorToJson(at::tensor({std::nanf("")})), "[null]");
  EXPECT_EQ(TensorToJson(at::zeros({2, 0})), "[[],[]]");
}

// ---------------------------------------------------------------------------------------------
// image-to-text

TEST_F(ImagePipelinesTest, ImageToTextReturnsTheModelsString) {
  RunContext ctx = Start(kTinyImageToTextSource, Config(pipelines::kImageToText));
  auto result = RunImageToText(ctx, Png(MakeImage(10, 4)), "describe");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->text, "describe:10x4:0");
  EXPECT_EQ(result->input_width, 10);
  EXPECT_EQ(result->input_height, 4);

  auto missing = RunImageToText(ctx, "", "x");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  auto corrupt = RunImageToText(ctx, "\xff\xd8\xff garbage", "x");
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kInvalidArgument);

  RunContext bad = Start(kImageToTextWrongOutput, Config(pipelines::kImageToText));
  auto wrong = RunImageToText(bad, Png(MakeImage(10, 4)), "x");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(wrong.status().message().find("expected str"), std::string::npos) << wrong.status();
  EXPECT_NE(wrong.status().message().find("test-image-to-text"), std::string::npos);
}

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
  auto shorter = LiveVideoLimitsFor(Config(pipelines::kLiveVideoToVideo, {{"max_segment_seconds", 0.95}}));
  ASSERT_TRUE(shorter.ok());
  auto too_long = RunLiveVideoSegment(none, segment, "{}", *shorter);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_long.status().message(),
            "segment: 1.000 s of video, more than the limit of 0.95 s");
  auto smaller = LiveVideoLimitsFor(
      Config(pipelines::kLiveVideoToVideo, {{"max_segment_bytes", static_cast<int64_t>(segment.size()) - 1}}));
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
