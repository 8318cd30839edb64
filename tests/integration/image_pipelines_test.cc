// End to end: the five image pipelines through a real gateway and orchestrator, with tiny
// deterministic TorchScript models built and saved here (docs/pipelines-image.md).
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace image_pipelines_integration {
namespace {

namespace fs = std::filesystem;
using ::grpc::StatusCode;

// Declares text-to-image but returns a wrong shape.
constexpr const char* kWrongShapeModel = R"(
def forward(self, prompt: str, negative_prompt: str, seed: int, num_inference_steps: int,
            guidance_scale: float, height: int, width: int, num_images: int):
    return torch.zeros([num_images, 3, height, width + 1])
)";

media::RgbImage MakeImage(int w, int h) {
  media::RgbImage img{w, h, {}};
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        img.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>((x * 3 + y * 5 + c * 7 + 9) % 256);
      }
    }
  }
  return img;
}

std::string Png(const media::RgbImage& img) {
  auto png = media::EncodePng(img);
  return png.ok() ? *png : std::string();
}

int Pixel(const media::RgbImage& img, int x, int y, int c) {
  return img.pixels[(static_cast<size_t>(y) * img.width + x) * 3 + c];
}

std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

constexpr auto kTimeout = std::chrono::seconds(60);

bool Contains(const grpc::Status& st, const std::string& text) {
  return st.error_message().find(text) != std::string::npos;
}

// One cluster for the whole suite: a gateway and one orchestrator serving the test models.
class ImagePipelinesClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_dir_ = new TempDir();
    struct TestModel {
      std::string id;
      std::string pipeline;
      const char* source;
      nlohmann::json options;
    };
    const std::vector<TestModel> models = {
        {"t2i-test",
         "text-to-image",
         kTinyTextToImageSource,
         {{"max_width", 256}, {"max_height", 256}, {"default_width", 64}, {"default_height", 32}}},
        {"i2i-test", "image-to-image", kTinyImageToImageSource, nlohmann::json::object()},
        {"i2v-test", "image-to-video", kTinyImageToVideoSource, {{"max_frames", 16}}},
        {"sam2-test", "segment-anything-2", kTinySegmentSource, nlohmann::json::object()},
        {"i2t-test", "image-to-text", kTinyImageToTextSource, nlohmann::json::object()},
        {"t2i-broken", "text-to-image", kWrongShapeModel, nlohmann::json::object()}};
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {};
    for (const auto& m : models) {
      const fs::path path = models_dir_->path() / (m.id + ".pt");
      SaveScriptModule(path, m.source);
      options.extra_models.push_back({{"id", m.id},
                                      {"pipeline", m.pipeline},
                                      {"path", path.string()},
                                      {"warm", true},
                                      {"device", "cpu"},
                                      {"warmup_size", 16},
                                      {"max_input_pixels", 4096},
                                      {"options", m.options}});
    }
    cluster_ = new LocalCluster();
    start_status_ = new absl::Status(cluster_->Start(options));
  }

  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete models_dir_;
    models_dir_ = nullptr;
    delete start_status_;
    start_status_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(start_status_->ok()) << *start_status_ << "\n" << cluster_->Logs();
    stub_ = cluster_->GatewayStub();
  }

  static TempDir* models_dir_;
  static LocalCluster* cluster_;
  static absl::Status* start_status_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  TempDir tmp_;
};

TempDir* ImagePipelinesClusterTest::models_dir_ = nullptr;
LocalCluster* ImagePipelinesClusterTest::cluster_ = nullptr;
absl::Status* ImagePipelinesClusterTest::start_status_ = nullptr;

TEST_F(ImagePipelinesClusterTest, TextToImageReturnsTheModelsExactPixels) {
  v1::TextToImageRequest req;
  req.set_model_id("t2i-test");
  req.set_prompt("a red fox");
  req.set_seed(11);
  req.set_width(24);
  req.set_height(16);
  req.set_num_images_per_prompt(2);
  v1::ImageResponse resp;
  auto ctx = Context(kTimeout);
  auto st = stub_->TextToImage(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_->Logs();
  ASSERT_EQ(resp.images_size(), 2);
  for (int n = 0; n < 2; ++n) {
    SCOPED_TRACE(n);
    const auto& media = resp.images(n);
    EXPECT_EQ(media.content_type(), "image/png");
    EXPECT_EQ(media.width(), 24);
    EXPECT_EQ(media.height(), 16);
    EXPECT_EQ(media.seed(), 11 + n);
    EXPECT_FALSE(media.nsfw());
    auto img = media::DecodeImage(media.data(), 1 << 20);
    ASSERT_TRUE(img.ok()) << img.status();
    ASSERT_EQ(img->width, 24);
    ASSERT_EQ(img->height, 16);
    for (int y = 0; y < 16; ++y) {
      for (int x = 0; x < 24; ++x) {
        for (int c = 0; c < 3; ++c) {
          ASSERT_EQ(Pixel(*img, x, y, c), (9 * 7 + 11 + n + c * 50 + y + x) % 256);
        }
      }
    }
  }
  EXPECT_EQ(resp.job().units(), 2 * 24 * 16);  // output pixels
  EXPECT_EQ(resp.job().model_id(), "t2i-test");
  EXPECT_FALSE(resp.job().orchestrator().empty());
}

TEST_F(ImagePipelinesClusterTest, TextToImageUsesOptionDefaultsAndARandomSeed) {
  v1::TextToImageRequest req;
  req.set_model_id("t2i-test");
  req.set_prompt("x");
  v1::ImageResponse resp;
  auto ctx = Context(kTimeout);
  auto st = stub_->TextToImage(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.images_size(), 1);
  EXPECT_EQ(resp.images(0).width(), 64);  // the model's default_width option
  EXPECT_EQ(resp.images(0).height(), 32);
  const int64_t seed = resp.images(0).seed();
  auto img = media::DecodeImage(resp.images(0).data(), 1 << 20);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(Pixel(*img, 0, 0, 0), (7 + seed) % 256);  // the returned seed is the one used
}

TEST_F(ImagePipelinesClusterTest, TextToImageBadInputs) {
  struct Case {
    std::string name;
    std::function<void(v1::TextToImageRequest*)> mutate;
    StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no prompt", [](auto* r) { r->clear_prompt(); }, StatusCode::INVALID_ARGUMENT, "prompt"},
      {"width", [](auto* r) { r->set_width(30); }, StatusCode::INVALID_ARGUMENT, "width"},
      {"over max", [](auto* r) { r->set_height(264); }, StatusCode::INVALID_ARGUMENT,
       "max_height 256"},
      {"steps", [](auto* r) { r->set_num_inference_steps(-1); }, StatusCode::INVALID_ARGUMENT,
       "num_inference_steps"},
      {"images", [](auto* r) { r->set_num_images_per_prompt(9); }, StatusCode::INVALID_ARGUMENT,
       "num_images_per_prompt"},
      {"unknown model", [](auto* r) { r->set_model_id("nope"); }, StatusCode::NOT_FOUND, "nope"},
      {"wrong output", [](auto* r) { r->set_model_id("t2i-broken"); }, StatusCode::INTERNAL,
       "[1, 3, 16, 17]"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    v1::TextToImageRequest req;
    req.set_model_id("t2i-test");
    req.set_prompt("ok");
    req.set_width(16);
    req.set_height(16);
    c.mutate(&req);
    v1::ImageResponse resp;
    auto ctx = Context(kTimeout);
    auto st = stub_->TextToImage(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), c.code) << st.error_message();
    EXPECT_TRUE(Contains(st, c.message)) << st.error_message();
  }
}

TEST_F(ImagePipelinesClusterTest, ImageToImageReturnsTheModelsExactPixels) {
  const media::RgbImage input = MakeImage(20, 12);
  v1::ImageToImageRequest req;
  req.set_model_id("i2i-test");
  req.set_prompt("oil");
  req.set_image(Png(input));
  req.set_seed(7);
  req.set_num_inference_steps(2);
  v1::ImageResponse resp;
  auto ctx = Context(kTimeout);
  auto st = stub_->ImageToImage(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_->Logs();
  ASSERT_EQ(resp.images_size(), 1);
  EXPECT_EQ(resp.images(0).seed(), 7);
  auto img = media::DecodeImage(resp.images(0).data(), 1 << 20);
  ASSERT_TRUE(img.ok());
  ASSERT_EQ(img->width, 20);
  ASSERT_EQ(img->height, 12);
  for (int y = 0; y < 12; ++y) {
    for (int x = 0; x < 20; ++x) {
      for (int c = 0; c < 3; ++c) {
        ASSERT_EQ(Pixel(*img, x, y, c), (Pixel(input, x, y, c) + 7 + 3 + 2) % 256);
      }
    }
  }
  EXPECT_EQ(resp.job().units(), 20 * 12);
}

TEST_F(ImagePipelinesClusterTest, ImageToImageBadInputs) {
  struct Case {
    std::string name;
    std::function<void(v1::ImageToImageRequest*)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no image", [](auto* r) { r->clear_image(); }, "image is required"},
      {"corrupt image", [](auto* r) { r->set_image("\x89PNG\r\n\x1a\nbroken"); }, "image: "},
      {"too large", [](auto* r) { r->set_image(Png(MakeImage(80, 80))); }, "image: "},
      {"no prompt", [](auto* r) { r->clear_prompt(); }, "prompt is required"},
      {"strength", [](auto* r) { r->set_strength(2); }, "strength must be between 0 and 1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    v1::ImageToImageRequest req;
    req.set_model_id("i2i-test");
    req.set_prompt("ok");
    req.set_image(Png(MakeImage(8, 8)));
    c.mutate(&req);
    v1::ImageResponse resp;
    auto ctx = Context(kTimeout);
    auto st = stub_->ImageToImage(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_TRUE(Contains(st, c.message)) << st.error_message();
  }
}

TEST_F(ImagePipelinesClusterTest, ImageToVideoReturnsAProbeableMp4) {
  v1::ImageToVideoRequest req;
  req.set_model_id("i2v-test");
  req.set_image(Png(MakeImage(16, 16)));
  req.set_width(64);
  req.set_height(48);
  req.set_fps(12);
  req.set_num_inference_steps(9);  // one frame per step
  req.set_seed(4);
  v1::VideoResponse resp;
  auto ctx = Context(kTimeout);
  auto st = stub_->ImageToVideo(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_->Logs();
  ASSERT_EQ(resp.images_size(), 1);
  EXPECT_EQ(resp.images(0).content_type(), "video/mp4");
  EXPECT_EQ(resp.images(0).width(), 64);
  EXPECT_EQ(resp.images(0).height(), 48);
  EXPECT_EQ(resp.images(0).seed(), 4);
  auto probe = ProbeVideo(tmp_, resp.images(0).data(), "mp4");
  ASSERT_TRUE(probe.ok) << probe.error;
  EXPECT_EQ(probe.codec, "h264");
  EXPECT_EQ(probe.width, 64);
  EXPECT_EQ(probe.height, 48);
  EXPECT_EQ(probe.frames, 9);
  EXPECT_EQ(resp.job().units(), 9 * 64 * 48);
}

TEST_F(ImagePipelinesClusterTest, ImageToVideoBadInputs) {
  struct Case {
    std::string name;
    std::function<void(v1::ImageToVideoRequest*)> mutate;
    StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no image", [](auto* r) { r->clear_image(); }, StatusCode::INVALID_ARGUMENT, "image"},
      {"corrupt", [](auto* r) { r->set_image("garbage"); }, StatusCode::INVALID_ARGUMENT,
       "image: "},
      {"height", [](auto* r) { r->set_height(20); }, StatusCode::INVALID_ARGUMENT, "height"},
      {"fps", [](auto* r) { r->set_fps(0); }, StatusCode::INVALID_ARGUMENT, "fps"},
      {"too many frames", [](auto* r) { r->set_num_inference_steps(17); }, StatusCode::INTERNAL,
       "max_frames 16"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    v1::ImageToVideoRequest req;
    req.set_model_id("i2v-test");
    req.set_image(Png(MakeImage(8, 8)));
    req.set_width(16);
    req.set_height(16);
    req.set_num_inference_steps(2);
    c.mutate(&req);
    v1::VideoResponse resp;
    auto ctx = Context(kTimeout);
    auto st = stub_->ImageToVideo(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), c.code) << st.error_message();
    EXPECT_TRUE(Contains(st, c.message)) << st.error_message();
  }
}

TEST_F(ImagePipelinesClusterTest, SegmentAnything2ReturnsJsonMasks) {
  v1::SegmentAnything2Request req;
  req.set_model_id("sam2-test");
  req.set_image(Png(MakeImage(4, 2)));
  req.add_point_coords(2);
  req.add_point_coords(1);
  req.add_point_labels(1);
  v1::MasksResponse resp;
  auto ctx = Context(kTimeout);
  auto st = stub_->SegmentAnything2(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_->Logs();
  EXPECT_EQ(resp.masks(),
            "[[[-2,-1,0,1],[-2,-1,0,1]],[[-1.5,-0.5,0.5,1.5],[-1.5,-0.5,0.5,1.5]],"
            "[[-1,0,1,2],[-1,0,1,2]]]");
  EXPECT_EQ(resp.scores(), "[0.5,0.75,1]");
  auto logits = nlohmann::json::parse(resp.logits());
  ASSERT_EQ(logits.size(), 3u);
  EXPECT_EQ(logits[0][0][0], 1);
  EXPECT_EQ(resp.job().units(), 4 * 2);  // input pixels

  req.set_return_logits(false);
  req.set_multimask_output(false);
  v1::MasksResponse binary;
  auto ctx2 = Context(kTimeout);
  st = stub_->SegmentAnything2(ctx2.get(), req, &binary);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(binary.masks(), "[[[0,0,0,1],[0,0,0,1]]]");
  EXPECT_EQ(binary.scores(), "[0.5]");
}

TEST_F(ImagePipelinesClusterTest, SegmentAnything2BadInputs) {
  struct Case {
    std::string name;
    std::function<void(v1::SegmentAnything2Request*)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no image", [](auto* r) { r->clear_image(); }, "image is required"},
      {"odd coords", [](auto* r) { r->add_point_coords(3); }, "point_coords"},
      {"labels", [](auto* r) { r->add_point_labels(1); }, "point_labels"},
      {"box", [](auto* r) { r->add_box(1); }, "box must be exactly 4 values"},
      {"corrupt", [](auto* r) { r->set_image("\xff\xd8\xff"); }, "image: "},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    v1::SegmentAnything2Request req;
    req.set_model_id("sam2-test");
    req.set_image(Png(MakeImage(8, 8)));
    req.add_point_coords(1);
    req.add_point_coords(1);
    req.add_point_labels(1);
    c.mutate(&req);
    v1::MasksResponse resp;
    auto ctx = Context(kTimeout);
    auto st = stub_->SegmentAnything2(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_TRUE(Contains(st, c.message)) << st.error_message();
  }
}

TEST_F(ImagePipelinesClusterTest, ImageToTextReturnsTheModelsText) {
  v1::ImageToTextRequest req;
  req.set_model_id("i2t-test");
  req.set_image(Png(MakeImage(10, 6)));
  req.set_prompt("what is it");
  v1::ImageToTextResponse resp;
  auto ctx = Context(kTimeout);
  auto st = stub_->ImageToText(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_->Logs();
  EXPECT_EQ(resp.text(), "what is it:10x6:9");
  EXPECT_EQ(resp.job().units(), 10 * 6);

  v1::ImageToTextRequest bad;
  bad.set_model_id("i2t-test");
  v1::ImageToTextResponse bad_resp;
  auto ctx2 = Context(kTimeout);
  st = stub_->ImageToText(ctx2.get(), bad, &bad_resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(st, "image")) << st.error_message();

  bad.set_image("not an image");
  auto ctx3 = Context(kTimeout);
  st = stub_->ImageToText(ctx3.get(), bad, &bad_resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(st, "image: ")) << st.error_message();

  bad.set_model_id("t2i-test");  // a model of another pipeline
  auto ctx4 = Context(kTimeout);
  st = stub_->ImageToText(ctx4.get(), bad, &bad_resp);
  EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND) << st.error_message();
}

TEST_F(ImagePipelinesClusterTest, CapabilitiesListEveryImagePipeline) {
  v1::ListCapabilitiesRequest req;
  v1::ListCapabilitiesResponse resp;
  auto ctx = Context(std::chrono::seconds(10));
  ASSERT_TRUE(stub_->ListCapabilities(ctx.get(), req, &resp).ok());
  std::set<std::string> seen;
  for (const auto& c : resp.capabilities()) seen.insert(c.pipeline() + "/" + c.model_id());
  for (const char* want :
       {"text-to-image/t2i-test", "image-to-image/i2i-test", "image-to-video/i2v-test",
        "segment-anything-2/sam2-test", "image-to-text/i2t-test"}) {
    EXPECT_TRUE(seen.count(want)) << want;
  }
}

}  // namespace
}  // namespace image_pipelines_integration
}  // namespace switchyard::testing
