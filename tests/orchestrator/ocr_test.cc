// OCR for image-to-text (orchestrator/pipelines/ocr.h, runner/ocr_bundle.h): the torch-free
// geometry and decoding on synthetic inputs, the keys file's checks, and the whole pipeline
// (RunImageToText) on bundles of tiny TorchScript networks whose outputs are known, so that
// boxes, crops, orientation, reading order and decoding are checked without the real models.
#include "orchestrator/pipelines/ocr.h"

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "common/pipelines.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "runner/model_executor.h"
#include "runner/ocr_bundle.h"
#include "runner/torch_model.h"
#include "support/media_fixtures.h"

namespace switchyard::orchestrator {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A probability map with rectangles [x0, x1] x [y0, y1] (inclusive) at `p`, 0 elsewhere.
struct Map {
  int width, height;
  std::vector<float> p;
  Map(int w, int h) : width(w), height(h), p(static_cast<size_t>(w) * h, 0.0f) {}
  void Fill(int x0, int y0, int x1, int y1, float v) {
    for (int y = y0; y <= y1; ++y) {
      for (int x = x0; x <= x1; ++x) p[static_cast<size_t>(y) * width + x] = v;
    }
  }
};

TEST(OcrGeometryTest, DetectionSizeLimitsTheLongestSideAndRoundsTo32) {
  EXPECT_EQ(ocr::DetectionSize(1000, 500).width, 960);
  EXPECT_EQ(ocr::DetectionSize(1000, 500).height, 480);
  // Never enlarged beyond rounding; each side at least 32.
  EXPECT_EQ(ocr::DetectionSize(100, 50).width, 96);
  EXPECT_EQ(ocr::DetectionSize(100, 50).height, 64);
  EXPECT_EQ(ocr::DetectionSize(10, 10).width, 32);
  EXPECT_EQ(ocr::DetectionSize(10, 10).height, 32);
  EXPECT_EQ(ocr::DetectionSize(4000, 100).width, 960);
  EXPECT_EQ(ocr::DetectionSize(4000, 100).height, 32);
}

TEST(OcrGeometryTest, TwoSeparatedLinesGiveTwoUnclippedBoxesTopFirst) {
  Map map(200, 100);
  map.Fill(30, 60, 120, 69, 0.9f);  // filled first, still read second
  map.Fill(10, 20, 150, 29, 0.8f);
  auto boxes = ocr::DbPostProcess(map.p.data(), map.width, map.height, 200, 100);
  ASSERT_TRUE(boxes.ok()) << boxes.status();
  ASSERT_EQ(boxes->size(), 2u);
  // Component 10..150 x 20..29: sides 140 x 9, unclip distance 140*9*1.5/(2*149) = 6.34.
  const ocr::Box& top = (*boxes)[0];
  EXPECT_EQ(top.x0, 4);
  EXPECT_EQ(top.x1, 156);
  EXPECT_EQ(top.y0, 14);
  EXPECT_EQ(top.y1, 35);
  EXPECT_NEAR(top.score, 0.8f, 1e-5);
  const ocr::Box& bottom = (*boxes)[1];
  EXPECT_GT(bottom.y0, top.y1);
  EXPECT_NEAR(bottom.score, 0.9f, 1e-5);
}

TEST(OcrGeometryTest, BoxesAreScaledBackToTheSourceImage) {
  Map map(100, 50);
  map.Fill(10, 10, 50, 19, 1.0f);
  auto boxes = ocr::DbPostProcess(map.p.data(), 100, 50, 200, 100);
  ASSERT_TRUE(boxes.ok()) << boxes.status();
  ASSERT_EQ(boxes->size(), 1u);
  // Sides 40 x 9: d = 40*9*1.5/98 = 5.51; x0 = (10 - 5.51) * 2 = 8.98.
  EXPECT_EQ((*boxes)[0].x0, 9);
  EXPECT_EQ((*boxes)[0].x1, 111);
  EXPECT_EQ((*boxes)[0].y0, 9);
  EXPECT_EQ((*boxes)[0].y1, 49);
}

TEST(OcrGeometryTest, BoxesOfOneLineAreReadLeftToRight) {
  Map map(200, 60);
  map.Fill(120, 18, 190, 30, 1.0f);  // starts higher: found first by the row-major scan
  map.Fill(10, 20, 100, 31, 1.0f);
  auto boxes = ocr::DbPostProcess(map.p.data(), 200, 60, 200, 60);
  ASSERT_TRUE(boxes.ok()) << boxes.status();
  ASSERT_EQ(boxes->size(), 2u);
  EXPECT_LT((*boxes)[0].x0, (*boxes)[1].x0);
  auto order = ocr::ReadingOrder(*boxes);
  ASSERT_EQ(order.size(), 1u);  // one line
  EXPECT_EQ(order[0], (std::vector<size_t>{0, 1}));
}

TEST(OcrGeometryTest, NoiseBelowTheThresholdsGivesNoBox) {
  Map map(128, 64);
  for (size_t i = 0; i < map.p.size(); ++i)
    map.p[i] = 0.25f + 0.05f * static_cast<float>(i % 7) / 7;
  auto none = ocr::DbPostProcess(map.p.data(), 128, 64, 128, 64);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  // Above the pixel threshold but a mean under box_threshold (0.6): dropped.
  map.Fill(10, 10, 100, 30, 0.5f);
  auto weak = ocr::DbPostProcess(map.p.data(), 128, 64, 128, 64);
  ASSERT_TRUE(weak.ok()) << weak.status();
  EXPECT_TRUE(weak->empty());
  // A speck shorter than min_size (3) is noise; NaN is never text.
  map.Fill(10, 40, 11, 41, 1.0f);
  map.p[50 * 128 + 50] = std::nanf("");
  auto speck = ocr::DbPostProcess(map.p.data(), 128, 64, 128, 64);
  ASSERT_TRUE(speck.ok()) << speck.status();
  EXPECT_TRUE(speck->empty());
}

TEST(OcrGeometryTest, MoreBoxesThanTheLimitAreRefused) {
  Map map(200, 150);
  for (int gy = 0; gy < 15; ++gy) {
    for (int gx = 0; gx < 20; ++gx) map.Fill(gx * 10 + 2, gy * 10 + 2, gx * 10 + 7, gy * 10 + 7, 1);
  }
  ocr::DbParams params;
  auto all = ocr::DbPostProcess(map.p.data(), 200, 150, 200, 150, params);
  EXPECT_EQ(all.status().code(), absl::StatusCode::kInvalidArgument) << all.status();
  EXPECT_THAT(all.status().message(), HasSubstr("more than 256 text regions"));
  params.max_boxes = 300;
  auto allowed = ocr::DbPostProcess(map.p.data(), 200, 150, 200, 150, params);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ(allowed->size(), 300u);
  EXPECT_EQ(ocr::DbPostProcess(map.p.data(), 0, 150, 200, 150).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(OcrGeometryTest, ReadingOrderGroupsLinesTopToBottom) {
  std::vector<ocr::Box> boxes = {
      {100, 52, 150, 70}, {10, 0, 50, 20}, {60, 3, 90, 22}, {0, 50, 40, 68}, {5, 100, 30, 120}};
  auto order = ocr::ReadingOrder(boxes);
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0], (std::vector<size_t>{1, 2}));
  EXPECT_EQ(order[1], (std::vector<size_t>{3, 0}));
  EXPECT_EQ(order[2], (std::vector<size_t>{4}));
  EXPECT_EQ(ocr::JoinText(order, {"d", "a", "b", "c", ""}), "a b\nc d");
  EXPECT_EQ(ocr::JoinText(order, {"", "", "", "", "e"}), "e");
}

media::RgbImage Gradient(int w, int h) {
  media::RgbImage img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        img.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>(x + 10 * y + c);
      }
    }
  }
  return img;
}

TEST(OcrGeometryTest, CropResizeAndRotateMath) {
  const media::RgbImage img = Gradient(10, 8);
  const media::RgbImage crop = ocr::Crop(img, {2, 3, 5, 6});
  ASSERT_EQ(crop.width, 3);
  ASSERT_EQ(crop.height, 3);
  EXPECT_EQ(crop.pixels[0], 2 + 30);                        // (2, 3)
  EXPECT_EQ(crop.pixels[(2 * 3 + 2) * 3 + 1], 4 + 50 + 1);  // (4, 5), green
  EXPECT_EQ(ocr::Crop(img, {8, 6, 20, 20}).width, 2);       // clipped to the image
  EXPECT_EQ(ocr::Crop(img, {12, 0, 20, 5}).width, 0);

  // OpenCV INTER_LINEAR of [0, 255] to 4 columns: 0, 64, 191, 255.
  media::RgbImage two{2, 1, {0, 0, 0, 255, 255, 255}};
  const media::RgbImage four = ocr::Resize(two, 4, 1);
  ASSERT_EQ(four.width, 4);
  EXPECT_EQ(four.pixels[0], 0);
  EXPECT_EQ(four.pixels[3], 64);
  EXPECT_EQ(four.pixels[6], 191);
  EXPECT_EQ(four.pixels[9], 255);
  const media::RgbImage same = ocr::Resize(img, 10, 8);
  EXPECT_EQ(same.pixels, img.pixels);

  const media::RgbImage turned = ocr::Rotate180(img);
  EXPECT_EQ(turned.pixels[0], img.pixels[(7 * 10 + 9) * 3]);
  EXPECT_EQ(ocr::Rotate180(turned).pixels, img.pixels);

  EXPECT_EQ(ocr::LineWidth(100, 20, 48, 2048), 240);
  EXPECT_EQ(ocr::LineWidth(100, 20, 48, 192), 192);
  EXPECT_EQ(ocr::LineWidth(10, 30, 48, 2048), 16);
  EXPECT_EQ(ocr::LineWidth(0, 30, 48, 2048), 1);
}

TEST(OcrDecodeTest, CtcCollapsesRepeatsAndDropsBlanks) {
  const std::vector<std::string> alphabet = {"", "a", "b", " "};
  // Steps: a a _ a b b _ " " b  ->  "aab b"
  const std::vector<int> path = {1, 1, 0, 1, 2, 2, 0, 3, 2};
  std::vector<float> probs(path.size() * 4, 0.0f);
  for (size_t t = 0; t < path.size(); ++t) {
    probs[t * 4 + path[t]] = t == 0 ? 0.5f : 0.9f;
    probs[t * 4 + (path[t] + 1) % 4] = 0.1f;
  }
  auto line = ocr::CtcGreedyDecode(probs.data(), static_cast<int64_t>(path.size()), 4, alphabet);
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->text, "aab b");
  // Kept characters at steps 0, 3, 4, 7, 8: (0.5 + 4 * 0.9) / 5.
  EXPECT_NEAR(line->score, 0.82f, 1e-5);

  auto blank = ocr::CtcGreedyDecode(probs.data(), 0, 4, alphabet);
  ASSERT_TRUE(blank.ok());
  EXPECT_EQ(blank->text, "");
  EXPECT_EQ(blank->score, 0.0f);
  auto mismatch = ocr::CtcGreedyDecode(probs.data(), 9, 5, alphabet);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OcrKeysTest, KeysAreCheckedLineByLine) {
  auto keys = runner::ParseOcrKeys("a\n\xe4\xb8\xad\r\n1", "keys");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, (std::vector<std::string>{"a", "\xe4\xb8\xad", "1"}));
  EXPECT_EQ(runner::OcrAlphabet(*keys),
            (std::vector<std::string>{"", "a", "\xe4\xb8\xad", "1", " "}));
  EXPECT_TRUE(runner::ParseOcrKeys("a\nb\n", "keys").ok());  // a final newline is fine

  auto invalid = runner::ParseOcrKeys("a\nb\xff\n", "keys.txt");
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(invalid.status().message(), HasSubstr("keys.txt: line 2 is not valid UTF-8"));
  EXPECT_THAT(runner::ParseOcrKeys("\xc0\xaf", "k").status().message(), HasSubstr("UTF-8"));
  EXPECT_THAT(runner::ParseOcrKeys("\xed\xa0\x80", "k").status().message(), HasSubstr("UTF-8"));
  EXPECT_THAT(runner::ParseOcrKeys("a\n\nb", "k").status().message(), HasSubstr("line 2 is empty"));
  EXPECT_THAT(runner::ParseOcrKeys(std::string(40, 'x'), "k").status().message(),
              HasSubstr("more than the limit of 32"));
  EXPECT_THAT(runner::ParseOcrKeys("a\x01", "k").status().message(), HasSubstr("control"));
  EXPECT_THAT(runner::ParseOcrKeys("", "k").status().message(), HasSubstr("no characters"));
  std::string many;
  for (int i = 0; i < runner::kMaxOcrKeys + 1; ++i) many += "a\n";
  EXPECT_THAT(runner::ParseOcrKeys(many, "k").status().message(), HasSubstr("more than 65536"));

  testing::TempDir dir;
  EXPECT_EQ(runner::ReadOcrKeys(dir.path() / "missing.txt").status().code(),
            absl::StatusCode::kNotFound);
  testing::WriteFile(dir.path() / "big.txt", std::string(runner::kMaxOcrKeysBytes + 1, 'a'));
  auto big = runner::ReadOcrKeys(dir.path() / "big.txt");
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("more than the limit"));
}

// Tiny networks with the real ones' interfaces. det: 1 where the de-normalised pixel is dark.
constexpr char kTinyDet[] = R"(
def forward(self, x):
    b = x[:, 0:1] * 0.229 + 0.485
    g = x[:, 1:2] * 0.224 + 0.456
    r = x[:, 2:3] * 0.225 + 0.406
    return ((r + g + b) / 3.0 < 0.5).float()
)";
// rec over keys "a", "b" (classes blank, a, b, space): "a" when the line's reddest column comes
// before its bluest one, else "b" (x is BGR, normalised to -1..1; white and padding are neutral).
constexpr char kTinyRec[] = R"(
def forward(self, x):
    col = (x[:, 2] - x[:, 0]).mean(1)
    red = (torch.argmax(col, 1) < torch.argmin(col, 1)).float()
    out = torch.zeros([x.size(0), 4, 4])
    out[:, 0, 1] = red
    out[:, 0, 2] = 1.0 - red
    out[:, 1:, 0] = 1.0
    return out
)";
// cls: every line is upside down (180) with probability 0.95.
constexpr char kTinyCls[] = R"(
def forward(self, x):
    return torch.tensor([[0.05, 0.95]]).repeat(x.size(0), 1)
)";

torch::jit::Module Net(const char* name, const char* source) {
  torch::jit::Module m(name);
  m.define(source);
  return m;
}

class OcrPipelineTest : public ::testing::Test {
 protected:
  // Saves `bundle`, loads it and returns a context running it as image-to-text.
  RunContext Serve(torch::jit::Module bundle) {
    const fs::path path = dir_.path() / absl::StrCat("ocr", executors_.size(), ".pt");
    bundle.save(path.string());
    auto model = runner::TorchModel::Load(path, "cpu");
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return {};
    auto executor = runner::ModelExecutor::Create(*model, {});
    EXPECT_TRUE(executor.ok()) << executor.status();
    if (!executor.ok()) return {};
    executors_.push_back(std::move(*executor));
    config_.id = "ocr-test";
    config_.pipeline = pipelines::kImageToText;
    config_.device = "cpu";
    return RunContext{executors_.back().get(), &config_, absl::Now() + absl::Seconds(60),
                      [] { return false; }};
  }

  absl::StatusOr<torch::jit::Module> Bundle(bool with_cls) {
    runner::OcrNetworks nets{Net("TinyDet", kTinyDet), Net("TinyRec", kTinyRec), std::nullopt};
    if (with_cls) nets.cls = Net("TinyCls", kTinyCls);
    return runner::BuildOcrBundle(std::move(nets), {"a", "b"});
  }

  // White page: line 1 = a red-then-blue bar and a blue-then-red bar to its right; line 2 = a
  // blue-then-red bar.
  static std::string Page() {
    media::RgbImage img{320, 160, std::vector<uint8_t>(320 * 160 * 3, 255)};
    auto bar = [&](int x0, int x1, int y0, int y1, bool red_first) {
      for (int y = y0; y < y1; ++y) {
        for (int x = x0; x < x1; ++x) {
          const bool red = (x < (x0 + x1) / 2) == red_first;
          uint8_t* p = &img.pixels[(static_cast<size_t>(y) * 320 + x) * 3];
          p[0] = red ? 200 : 0;
          p[1] = 0;
          p[2] = red ? 0 : 200;
        }
      }
    };
    bar(20, 200, 20, 40, true);
    bar(240, 300, 22, 38, false);
    bar(20, 150, 90, 110, false);
    auto png = media::EncodePng(img);
    EXPECT_TRUE(png.ok());
    return png.ok() ? *png : std::string();
  }

  testing::TempDir dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<runner::ModelExecutor>> executors_;
};

TEST_F(OcrPipelineTest, RunsDetectionRecognitionAndReadingOrder) {
  auto bundle = Bundle(/*with_cls=*/false);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  RunContext ctx = Serve(*bundle);
  auto result = RunImageToText(ctx, Page(), "ignored");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->text, "a b\nb");
  EXPECT_EQ(result->input_width, 320);
  EXPECT_EQ(result->input_height, 160);
  // A blank page has no text.
  media::RgbImage white{64, 64, std::vector<uint8_t>(64 * 64 * 3, 255)};
  auto empty = RunImageToText(ctx, *media::EncodePng(white), "");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->text, "");
  // The warm-up entry runs and returns nothing.
  auto warm =
      ctx.executor->Run({c10::IValue(torch::zeros({1, 3, 40, 40})), c10::IValue(std::string())},
                        absl::Now() + absl::Seconds(60), runner::CancelToken());
  ASSERT_TRUE(warm.ok()) << warm.status();
  EXPECT_EQ(warm->toStringRef(), "");
}

TEST_F(OcrPipelineTest, TheClassifierTurnsUpsideDownLines) {
  auto bundle = Bundle(/*with_cls=*/true);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  RunContext ctx = Serve(*bundle);
  auto result = RunImageToText(ctx, Page(), "");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->text, "b a\na");  // every line turned by 180 degrees
}

TEST_F(OcrPipelineTest, BundleChecksAndContractErrorsAreClear) {
  // Keys that do not match the recogniser's classes.
  runner::OcrNetworks nets{Net("TinyDet", kTinyDet), Net("TinyRec", kTinyRec), std::nullopt};
  auto wrong_keys = runner::BuildOcrBundle(nets, {"a", "b", "c"});
  EXPECT_EQ(wrong_keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_keys.status().message(), HasSubstr("do the keys belong"));
  torch::jit::Module no_forward("Empty");
  auto bad_net =
      runner::BuildOcrBundle({Net("TinyDet", kTinyDet), no_forward, std::nullopt}, {"a", "b"});
  EXPECT_EQ(bad_net.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_net.status().message(), HasSubstr("rec network has no forward"));

  // A module marked as a bundle without recognize.
  torch::jit::Module partial("Partial");
  partial.register_attribute(runner::kOcrContractAttribute, c10::IntType::get(),
                             c10::IValue(int64_t{1}));
  partial.define(R"(
def forward(self, image: Tensor, prompt: str) -> str:
    return ""
def detect(self, image: Tensor) -> Tensor:
    return image[:, :1]
def alphabet(self) -> List[str]:
    return ["", "a"]
)");
  RunContext ctx = Serve(partial);
  auto missing = RunImageToText(ctx, Page(), "");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(missing.status().message(), HasSubstr("has no method 'recognize'"));

  // A newer contract version is refused, not misread.
  torch::jit::Module future("Future");
  future.register_attribute(runner::kOcrContractAttribute, c10::IntType::get(),
                            c10::IValue(int64_t{2}));
  future.define("def forward(self, image: Tensor, prompt: str) -> str:\n    return \"\"\n");
  auto v2 = RunImageToText(Serve(future), Page(), "");
  EXPECT_EQ(v2.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(v2.status().message(), HasSubstr("OCR contract 2"));
}

}  // namespace
}  // namespace switchyard::orchestrator
