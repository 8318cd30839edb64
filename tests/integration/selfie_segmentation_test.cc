// MediaPipe's selfie segmentation (converted from TFLite by switchyard-convert tflite) served end
// to end: a real gateway and orchestrator on loopback. The astronaut photo of the committed
// fixtures (tests/fixtures/tflite, made by tools/tflite-reference/reference.py) goes in as a PNG
// through segment-anything-2 over gRPC and the Livepeer HTTP API (the mask must cover the person
// as the NumPy reference's does), and as a live-video segment through selfie-background-blur (the
// person must stay sharp while the background is blurred). Skipped with a message when the
// models are not prepared (scripts/prepare-models --models selfie-segmentation).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

const fs::path kFixtureDir = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "tflite";

std::vector<float> Floats(const std::string& name) {
  const Json index = Json::parse(ReadFile(kFixtureDir / "fixtures.json"));
  const std::string bytes =
      ReadFile(kFixtureDir / index["tensors"][name]["file"].get<std::string>());
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

constexpr int kSide = 128;  // the fixture image is 128x128

// The fixture image (NCHW float32, whole 0..255 values) as RGB.
media::RgbImage FixtureImage() {
  const std::vector<float> v = Floats("input");
  media::RgbImage img{kSide, kSide, std::vector<uint8_t>(static_cast<size_t>(kSide) * kSide * 3)};
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < kSide * kSide; ++i) {
      img.pixels[static_cast<size_t>(i) * 3 + c] =
          static_cast<uint8_t>(v[static_cast<size_t>(c) * kSide * kSide + i]);
    }
  }
  return img;
}

// IoU of the masks thresholded at logit 0.
double Iou(const std::vector<float>& a, const std::vector<float>& b) {
  double inter = 0, uni = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const bool x = a[i] > 0, y = b[i] > 0;
    inter += x && y;
    uni += x || y;
  }
  return uni > 0 ? inter / uni : 0;
}

// The masks JSON of a MasksResponse ([K][H][W]): the first mask, flattened.
std::vector<float> FirstMask(const std::string& masks_json) {
  std::vector<float> out;
  const Json j = Json::parse(masks_json, nullptr, false);
  if (!j.is_array() || j.empty()) return out;
  for (const Json& row : j[0]) {
    for (const Json& v : row) out.push_back(v.is_number() ? v.get<float>() : 0.0f);
  }
  return out;
}

class SelfieSegmentationTest : public ::testing::Test {
 protected:
  bool Start() {
    for (const char* id : {"selfie-segmentation", "selfie-background-blur"}) {
      const fs::path path = ModelDir() / (std::string(id) + ".pt");
      if (!fs::exists(path)) {
        skip_ = absl::StrCat(path.string(),
                             " is not prepared; run scripts/prepare-models --models "
                             "selfie-segmentation");
        return false;
      }
    }
    options_.orchestrators = 1;
    options_.extra_models.push_back({{"id", "selfie-segmentation"},
                                     {"pipeline", "segment-anything-2"},
                                     {"path", (ModelDir() / "selfie-segmentation.pt").string()},
                                     {"warm", false},
                                     {"device", "cpu"},
                                     {"price_per_unit", 0.000001}});
    options_.extra_models.push_back({{"id", "selfie-background-blur"},
                                     {"pipeline", "live-video-to-video"},
                                     {"path", (ModelDir() / "selfie-background-blur.pt").string()},
                                     {"warm", false},
                                     {"device", "cpu"},
                                     {"price_per_unit", 0.000001}});
    auto st = cluster_.Start(options_);
    EXPECT_TRUE(st.ok()) << st;
    stub_ = cluster_.GatewayStub();
    return st.ok();
  }

  ClusterOptions options_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  std::string skip_;
};

TEST_F(SelfieSegmentationTest, PersonMaskOverGrpcAndLivepeerHttp) {
  if (!Start()) {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    return;
  }
  const std::vector<float> reference = Floats("general-masks");  // [1, 128, 128] logits
  auto png = media::EncodePng(FixtureImage());
  ASSERT_TRUE(png.ok()) << png.status();

  // gRPC. The API wants a prompt; the model ignores it (docs/pipelines-image.md).
  v1::SegmentAnything2Request req;
  req.set_model_id("selfie-segmentation");
  req.set_image(*png);
  req.add_point_coords(10);
  req.add_point_coords(10);
  req.add_point_labels(0);
  v1::MasksResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto st = stub_->SegmentAnything2(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  const std::vector<float> grpc_mask = FirstMask(resp.masks());
  ASSERT_EQ(grpc_mask.size(), reference.size()) << resp.masks().substr(0, 200);
  const double grpc_iou = Iou(grpc_mask, reference);
  EXPECT_GE(grpc_iou, 0.95);
  double max_p = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    max_p = std::max(max_p, std::abs(1 / (1 + std::exp(-static_cast<double>(grpc_mask[i]))) -
                                     1 / (1 + std::exp(-static_cast<double>(reference[i])))));
  }
  auto scores = Json::parse(resp.scores(), nullptr, false);
  ASSERT_TRUE(scores.is_array() && scores.size() == 1) << resp.scores();
  EXPECT_GT(scores[0].get<double>(), 0.5);  // a decided mask
  auto low = Json::parse(resp.logits(), nullptr, false);
  ASSERT_TRUE(low.is_array() && low.size() == 1);
  EXPECT_EQ(low[0].size(), 256u);  // the model's input size

  // The Livepeer HTTP API (multipart form), same image.
  const std::string boundary = "selfie-boundary-7f3a";
  std::string body;
  const std::map<std::string, std::string> fields = {{"model_id", "selfie-segmentation"},
                                                     {"point_coords", "[[64, 40]]"},
                                                     {"point_labels", "[1]"},
                                                     {"multimask_output", "false"}};
  for (const auto& [name, value] : fields) {
    absl::StrAppend(&body, "--", boundary, "\r\nContent-Disposition: form-data; name=\"", name,
                    "\"\r\n\r\n", value, "\r\n");
  }
  absl::StrAppend(&body, "--", boundary,
                  "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                  "Content-Type: image/png\r\n\r\n",
                  *png, "\r\n--", boundary, "--\r\n");
  HttpResult r = HttpRequest(cluster_.gateway().http_port(), "POST", "/segment-anything-2",
                             "multipart/form-data; boundary=" + boundary, body);
  ASSERT_EQ(r.status, 200) << r.body << cluster_.Logs();
  const Json j = Json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j["masks"].is_string()) << r.body.substr(0, 300);
  const std::vector<float> http_mask = FirstMask(j["masks"].get<std::string>());
  ASSERT_EQ(http_mask.size(), reference.size());
  const double http_iou = Iou(http_mask, reference);
  EXPECT_GE(http_iou, 0.95);
  std::cout << "[ selfie   ] segment-anything-2 IoU vs NumPy reference: gRPC " << grpc_iou
            << ", Livepeer HTTP " << http_iou << "; max abs error of the probability " << max_p
            << "\n";
}

// Decodes a video segment's frames to RGB24 with ffmpeg (ext names its container).
std::vector<std::vector<uint8_t>> DecodeFrames(const TempDir& dir, const std::string& data,
                                               const std::string& name, int w, int h) {
  const fs::path in = dir.path() / (name + ".ts"), out = dir.path() / (name + ".rgb");
  WriteFile(in, data);
  std::string log;
  if (RunCommand(absl::StrCat("ffmpeg -nostdin -loglevel error -y -i ", in.string(),
                              " -f rawvideo -pix_fmt rgb24 ", out.string()),
                 &log) != 0) {
    ADD_FAILURE() << log;
    return {};
  }
  const std::string raw = ReadFile(out);
  const size_t frame = static_cast<size_t>(w) * h * 3;
  std::vector<std::vector<uint8_t>> frames;
  for (size_t at = 0; at + frame <= raw.size(); at += frame) {
    frames.emplace_back(raw.begin() + static_cast<std::ptrdiff_t>(at),
                        raw.begin() + static_cast<std::ptrdiff_t>(at + frame));
  }
  return frames;
}

// Mean absolute horizontal+vertical gradient over the pixels where `select` holds (a sharpness
// measure: blurring lowers it).
double Sharpness(const std::vector<uint8_t>& rgb, const std::vector<bool>& select) {
  double sum = 0;
  int n = 0;
  for (int y = 0; y + 1 < kSide; ++y) {
    for (int x = 0; x + 1 < kSide; ++x) {
      if (!select[static_cast<size_t>(y) * kSide + x]) continue;
      for (int c = 0; c < 3; ++c) {
        const int v = rgb[(static_cast<size_t>(y) * kSide + x) * 3 + c];
        sum += std::abs(v - rgb[(static_cast<size_t>(y) * kSide + x + 1) * 3 + c]) +
               std::abs(v - rgb[(static_cast<size_t>(y + 1) * kSide + x) * 3 + c]);
        ++n;
      }
    }
  }
  return n > 0 ? sum / n : 0;
}

TEST_F(SelfieSegmentationTest, BackgroundBlurKeepsThePersonSharp) {
  if (!Start()) {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    return;
  }
  // A 1 s segment of the still photo, 5 fps, H.264 in MPEG-TS.
  TempDir dir;
  auto png = media::EncodePng(FixtureImage());
  ASSERT_TRUE(png.ok());
  WriteFile(dir.path() / "photo.png", *png);
  std::string log;
  ASSERT_EQ(RunCommand(absl::StrCat("ffmpeg -nostdin -loglevel error -y -loop 1 -framerate 5 -i ",
                                    (dir.path() / "photo.png").string(),
                                    " -t 1 -c:v libx264 -pix_fmt yuv420p -qp 0 -g 5 -f mpegts ",
                                    (dir.path() / "in.ts").string()),
                       &log),
            0)
      << log;
  const std::string segment = ReadFile(dir.path() / "in.ts");
  v1::LiveVideoSegmentRequest req;
  req.set_model_id("selfie-background-blur");
  req.set_segment(segment);
  req.set_stream_id("selfie-live");
  v1::LiveVideoSegmentResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto st = stub_->LiveVideoSegment(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(resp.frames(), 5);
  EXPECT_EQ(resp.width(), kSide);
  EXPECT_EQ(resp.height(), kSide);
  const ProbeResult probe = ProbeVideo(dir, resp.segment(), "ts");
  ASSERT_TRUE(probe.ok) << probe.error;
  EXPECT_EQ(probe.width, kSide);
  EXPECT_EQ(probe.height, kSide);
  EXPECT_EQ(probe.frames, 5);

  const auto inputs = DecodeFrames(dir, segment, "decoded-in", kSide, kSide);
  const auto outputs = DecodeFrames(dir, resp.segment(), "decoded-out", kSide, kSide);
  ASSERT_FALSE(inputs.empty());
  ASSERT_EQ(outputs.size(), 5u);
  // Person and background as the reference mask sees them, away from the edge between them.
  const std::vector<float> mask = Floats("general-masks");
  std::vector<bool> person(mask.size()), background(mask.size());
  for (size_t i = 0; i < mask.size(); ++i) {
    person[i] = mask[i] > 4;       // p > 0.98
    background[i] = mask[i] < -4;  // p < 0.02
  }
  const std::vector<float> blurred = Floats("general-blurred");  // NCHW
  // What the codec alone costs: the decoded input against the fixture image it was made from
  // (4:2:0 chroma). The output went through the decoder and a second, lossy encode as well.
  const std::vector<float> original = Floats("input");
  double codec_err = 0;
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < kSide * kSide; ++i) {
      codec_err += std::abs(inputs[0][static_cast<size_t>(i) * 3 + c] -
                            original[static_cast<size_t>(c) * kSide * kSide + i]);
    }
  }
  codec_err /= 3.0 * kSide * kSide;
  for (size_t f = 0; f < outputs.size(); ++f) {
    SCOPED_TRACE(f);
    const double person_ratio = Sharpness(outputs[f], person) / Sharpness(inputs[0], person);
    const double background_ratio =
        Sharpness(outputs[f], background) / Sharpness(inputs[0], background);
    // Against the reference's blurred frame: mean abs error over all pixels, within what two
    // lossy passes through H.264 4:2:0 cost (not the converter's own 1.0).
    double err = 0;
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < kSide * kSide; ++i) {
        err += std::abs(outputs[f][static_cast<size_t>(i) * 3 + c] -
                        blurred[static_cast<size_t>(c) * kSide * kSide + i]);
      }
    }
    err /= 3.0 * kSide * kSide;
    if (f == 0) {
      std::cout << "[ selfie   ] background blur: sharpness kept on the person " << person_ratio
                << ", on the background " << background_ratio
                << "; mean abs difference from the NumPy reference " << err
                << " (the input's own codec loss: " << codec_err << ")\n";
    }
    EXPECT_GT(person_ratio, 0.85);
    EXPECT_LT(background_ratio, 0.6);
    EXPECT_LT(err, 2.0 * codec_err + 1.0);
  }
}

}  // namespace
}  // namespace switchyard::testing
