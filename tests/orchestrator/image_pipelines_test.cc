// Unit tests of the image pipelines' validation, pre/post-processing and TorchScript contracts,
// with tiny deterministic TorchScript models built here (docs/pipelines-image.md).
#include "orchestrator/pipelines/image_pipelines.h"
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/float_tensor.h"
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
  const ModelConfig config =
      Config(pipelines::kImageToVideo, {{"max_width", 256}, {"max_fps", 30}});
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

// A 4x2 image with one foreground point at (2, 1).
v1::SegmentAnything2Request OnePointRequest() {
  v1::SegmentAnything2Request req;
  req.set_image(Png(MakeImage(4, 2)));
  req.add_point_coords(2);
  req.add_point_coords(1);
  req.add_point_labels(1);
  return req;
}

TEST_F(ImagePipelinesTest, SegmentAnything2ReturnsJsonMasksScoresAndLogits) {
  RunContext ctx = Start(kTinySegmentSource, Config(pipelines::kSegmentAnything2));
  v1::SegmentAnything2Request req = OnePointRequest();
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

// packed_tensors: the same values as the JSON, as float32 with their shapes, and no JSON.
TEST_F(ImagePipelinesTest, SegmentAnything2PackedTensorsHoldTheJsonValues) {
  RunContext ctx = Start(kTinySegmentSource, Config(pipelines::kSegmentAnything2));
  v1::SegmentAnything2Request req = OnePointRequest();
  for (bool return_logits : {true, false}) {
    SCOPED_TRACE(return_logits ? "logits" : "thresholded");
    req.set_return_logits(return_logits);
    req.clear_packed_tensors();
    auto p = ValidateSegmentAnything2(req, *ctx.model);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_FALSE(p->packed_tensors);
    auto json = RunSegmentAnything2(ctx, req.image(), *p);
    ASSERT_TRUE(json.ok()) << json.status();
    EXPECT_EQ(json->masks_tensor.ByteSizeLong(), 0u);

    req.set_packed_tensors(true);
    p = ValidateSegmentAnything2(req, *ctx.model);
    ASSERT_TRUE(p.ok()) << p.status();
    auto packed = RunSegmentAnything2(ctx, req.image(), *p);
    ASSERT_TRUE(packed.ok()) << packed.status();
    EXPECT_TRUE(packed->masks.empty() && packed->scores.empty() && packed->logits.empty());
    EXPECT_THAT(packed->masks_tensor.shape(), ::testing::ElementsAre(3, 2, 4));
    EXPECT_THAT(packed->scores_tensor.shape(), ::testing::ElementsAre(3));
    EXPECT_THAT(packed->logits_tensor.shape(), ::testing::ElementsAre(3, 4, 4));
    // Printed back by the gateway's formatter, they are the orchestrator's JSON, byte for byte.
    auto masks = FloatTensorToJson(packed->masks_tensor, 1 << 20);
    ASSERT_TRUE(masks.ok()) << masks.status();
    EXPECT_EQ(*masks, json->masks);
    EXPECT_EQ(*FloatTensorToJson(packed->scores_tensor, 1 << 20), json->scores);
    EXPECT_EQ(*FloatTensorToJson(packed->logits_tensor, 1 << 20), json->logits);
  }
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

}  // namespace
}  // namespace image_pipelines_test
}  // namespace switchyard::orchestrator
