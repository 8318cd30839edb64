#include "runner/tfjs_converter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "support/media_fixtures.h"

namespace switchyard::runner {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::switchyard::testing::ReadFile;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;
using ::testing::HasSubstr;

constexpr double kMaxAbsError = 1.0;  // on the 0..255 scale

const fs::path kFixtureRoot = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures";
const fs::path kModelDir = SWITCHYARD_MODEL_DIR;

// One UpscalerJS model as scripts/prepare-models fetches and converts it, with the folder of its
// TF.js reference fixtures (tools/tfjs-reference/generate.mjs).
struct UpscalerModel {
  std::string id;           // model id and <id>.pt, e.g. "esrgan-medium-x4"
  std::string package_dir;  // under the model dir, as extracted by scripts/prepare-models
  std::string model_json;   // inside <package_dir>/package
  std::string fixture_dir;  // under tests/fixtures
  int scale = 0;
  bool value_range_0_to_1 = false;  // UpscalerJS's inputRange/outputRange [0, 1]
  bool in_default_set = true;       // prepared by `scripts/prepare-models` without --models
};

std::vector<UpscalerModel> UpscalerModels() {
  std::vector<UpscalerModel> models;
  for (int s : {2, 3, 4, 8}) {
    models.push_back({absl::StrCat("esrgan-slim-x", s), "esrgan-slim-1.0.0",
                      absl::StrCat("models/x", s, "/model.json"), "esrgan", s});
  }
  models.push_back({"upscalerjs-default-x2", "upscalerjs-default-1.0.0", "models/model.json",
                    "upscalerjs-default", 2});
  for (int s : {2, 3, 4, 8}) {
    models.push_back({absl::StrCat("esrgan-medium-x", s), "esrgan-medium-1.0.0",
                      absl::StrCat("models/x", s, "/model.json"), "esrgan-medium", s});
  }
  for (int s : {2, 3, 4, 8}) {
    models.push_back({absl::StrCat("esrgan-thick-x", s), "esrgan-thick-1.0.0",
                      absl::StrCat("models/x", s, "/model.json"), "esrgan-thick", s,
                      /*value_range_0_to_1=*/true, /*in_default_set=*/false});
  }
  return models;
}

std::vector<int64_t> JsonShape(const Json& j) { return j.at("shape").get<std::vector<int64_t>>(); }

// The fixture input as a float NCHW tensor [1, 3, H, W] with values 0..255.
torch::Tensor LoadFixtureInput(const fs::path& dir) {
  const Json header = Json::parse(ReadFile(dir / "input.json"));
  const std::vector<int64_t> shape = JsonShape(header);  // HWC
  std::string bytes = ReadFile(dir / header.at("file").get<std::string>());
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), shape[0] * shape[1] * shape[2]);
  return torch::from_blob(bytes.data(), {1, shape[0], shape[1], shape[2]}, torch::kUInt8)
      .permute({0, 3, 1, 2})
      .to(torch::kFloat32)
      .contiguous();
}

// The TF.js output for `scale` as a float NCHW tensor.
torch::Tensor LoadFixtureOutput(const fs::path& dir, int scale) {
  const Json header = Json::parse(ReadFile(dir / absl::StrCat("x", scale, ".json")));
  const std::vector<int64_t> shape = JsonShape(header);  // NHWC
  std::string bytes = ReadFile(dir / header.at("file").get<std::string>());
  EXPECT_EQ(static_cast<int64_t>(bytes.size()),
            shape[0] * shape[1] * shape[2] * shape[3] * static_cast<int64_t>(sizeof(float)));
  return torch::from_blob(bytes.data(), {shape[0], shape[1], shape[2], shape[3]}, torch::kFloat32)
      .permute({0, 3, 1, 2})
      .contiguous();
}

torch::Tensor Forward(torch::jit::Module& module, const torch::Tensor& input) {
  torch::InferenceMode guard;
  return module.forward({input}).toTensor();
}

double MaxAbsError(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

fs::path ModelJson(const UpscalerModel& m) {
  return kModelDir / m.package_dir / "package" / m.model_json;
}

fs::path TorchScriptFile(const UpscalerModel& m) { return kModelDir / (m.id + ".pt"); }

std::string PrepareHint(const UpscalerModel& m) {
  const std::string package = m.id.substr(0, m.id.rfind("-x"));
  return "the model dir " + kModelDir.string() + " is not prepared for " + m.id +
         "; run scripts/prepare-models" + (m.in_default_set ? "" : " --models " + package) +
         " (e.g. --converter build/bin/switchyard-convert-tfjs)";
}

// --- UpscalerJS models against the TF.js reference fixtures -------------------------------
// Models of the default set must be prepared (scripts/test does it); the others (esrgan-thick,
// a 110 MB package) are skipped when absent.

class UpscalerJsModelTest : public ::testing::TestWithParam<UpscalerModel> {};

TEST_P(UpscalerJsModelTest, ConvertedModelMatchesTfjsReference) {
  const UpscalerModel& m = GetParam();
  const fs::path json = ModelJson(m);
  if (!m.in_default_set && !fs::exists(json)) {
    GTEST_SKIP() << json << " missing (not in the default set): " << PrepareHint(m);
  }
  ASSERT_TRUE(fs::exists(json)) << json << " missing: " << PrepareHint(m);

  TfjsConvertOptions options;
  if (m.value_range_0_to_1) options.value_range = TfjsConvertOptions::ValueRange::k0To1;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(json, options);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_EQ(module->attr("scale").toInt(), m.scale);

  const fs::path fixtures = kFixtureRoot / m.fixture_dir;
  const torch::Tensor input = LoadFixtureInput(fixtures);
  const torch::Tensor expected = LoadFixtureOutput(fixtures, m.scale);
  const torch::Tensor actual = Forward(*module, input);
  ASSERT_EQ(actual.sizes(), expected.sizes());
  EXPECT_EQ(actual.size(2), input.size(2) * m.scale);
  EXPECT_EQ(actual.size(3), input.size(3) * m.scale);
  const double error = MaxAbsError(actual, expected);
  std::cout << "[ " << m.id << " ] converted in " << ms << " ms, max abs error vs TF.js: " << error
            << "\n";
  RecordProperty("max_abs_error", std::to_string(error));
  EXPECT_LE(error, kMaxAbsError);
}

TEST_P(UpscalerJsModelTest, PreparedTorchScriptMatchesTfjsReference) {
  const UpscalerModel& m = GetParam();
  const fs::path pt = TorchScriptFile(m);
  if (!m.in_default_set && !fs::exists(pt)) {
    GTEST_SKIP() << pt << " missing (not in the default set): " << PrepareHint(m);
  }
  ASSERT_TRUE(fs::exists(pt)) << pt << " missing: " << PrepareHint(m);

  torch::jit::Module module = torch::jit::load(pt.string());
  module.eval();
  ASSERT_TRUE(module.hasattr("scale"));
  EXPECT_EQ(module.attr("scale").toInt(), m.scale);

  const fs::path fixtures = kFixtureRoot / m.fixture_dir;
  const torch::Tensor expected = LoadFixtureOutput(fixtures, m.scale);
  const torch::Tensor actual = Forward(module, LoadFixtureInput(fixtures));
  ASSERT_EQ(actual.sizes(), expected.sizes());
  const double error = MaxAbsError(actual, expected);
  std::cout << "[ " << m.id << ".pt ] max abs error vs TF.js: " << error << "\n";
  RecordProperty("max_abs_error", std::to_string(error));
  EXPECT_LE(error, kMaxAbsError);
}

INSTANTIATE_TEST_SUITE_P(Models, UpscalerJsModelTest, ::testing::ValuesIn(UpscalerModels()),
                         [](const ::testing::TestParamInfo<UpscalerModel>& info) {
                           std::string name = info.param.id;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// --- synthetic models ---------------------------------------------------------------------

// Builds a small Keras functional model.json with one weight shard.
class SyntheticModel {
 public:
  void Input(const std::string& name, int channels) {
    layers_.push_back({{"class_name", "InputLayer"},
                       {"name", name},
                       {"config",
                        {{"name", name},
                         {"batch_input_shape", {nullptr, nullptr, nullptr, channels}},
                         {"dtype", "float32"}}},
                       {"inbound_nodes", Json::array()}});
    input_ = name;
  }

  void Layer(const std::string& class_name, const std::string& name,
             const std::vector<std::string>& inputs, Json config = Json::object()) {
    Json inbound = Json::array();
    for (const std::string& in : inputs) inbound.push_back({in, 0, 0, Json::object()});
    config["name"] = name;
    layers_.push_back({{"class_name", class_name},
                       {"name", name},
                       {"config", config},
                       {"inbound_nodes", Json::array({inbound})}});
    output_ = name;
  }

  // Kernel in TF layout [kh, kw, in, out].
  void Conv(const std::string& name, const std::string& input, int kh, int kw, int filters,
            const std::string& padding, const std::string& activation) {
    Layer("Conv2D", name, {input},
          {{"filters", filters},
           {"kernel_size", {kh, kw}},
           {"strides", {1, 1}},
           {"padding", padding},
           {"data_format", "channels_last"},
           {"dilation_rate", {1, 1}},
           {"activation", activation},
           {"use_bias", true}});
  }

  void Weight(const std::string& name, const std::vector<int64_t>& shape,
              const std::vector<float>& values) {
    weights_.push_back({{"name", name}, {"shape", shape}, {"dtype", "float32"}});
    const size_t at = shard_.size();
    shard_.resize(at + values.size() * sizeof(float));
    std::memcpy(shard_.data() + at, values.data(), values.size() * sizeof(float));
  }

  std::string& shard() { return shard_; }

  Json ToJson() const {
    return {{"format", "layers-model"},
            {"generatedBy", "keras v2.10.0"},
            {"convertedBy", "TensorFlow.js Converter v1.2.6"},
            {"modelTopology",
             {{"keras_version", "2.10.0"},
              {"backend", "tensorflow"},
              {"model_config",
               {{"class_name", "Functional"},
                {"config",
                 {{"name", "model"},
                  {"layers", layers_},
                  {"input_layers", {{input_, 0, 0}}},
                  {"output_layers", {{output_, 0, 0}}}}}}}}},
            {"weightsManifest", {{{"paths", {"group1-shard1of1.bin"}}, {"weights", weights_}}}}};
  }

  fs::path Write(const TempDir& dir) const {
    WriteFile(dir.path() / "group1-shard1of1.bin", shard_);
    WriteFile(dir.path() / "model.json", ToJson().dump(1));
    return dir.path() / "model.json";
  }

 private:
  Json layers_ = Json::array();
  Json weights_ = Json::array();
  std::string shard_;
  std::string input_;
  std::string output_;
};

// A plain NHWC image for the hand-written reference below.
struct Image {
  int h = 0, w = 0, c = 0;
  std::vector<float> v;
  Image(int h_, int w_, int c_) : h(h_), w(w_), c(c_), v(static_cast<size_t>(h_ * w_ * c_)) {}
  float& at(int y, int x, int ch) { return v[static_cast<size_t>((y * w + x) * c + ch)]; }
  float get(int y, int x, int ch) const {
    if (y < 0 || y >= h || x < 0 || x >= w) return 0.0f;
    return v[static_cast<size_t>((y * w + x) * c + ch)];
  }
};

// TF semantics: cross-correlation, kernel [kh][kw][in][out]; 'same' pads (k-1)/2 before.
Image RefConv(const Image& in, int kh, int kw, int filters, const std::vector<float>& kernel,
              const std::vector<float>& bias, bool same, bool relu) {
  const int oh = same ? in.h : in.h - kh + 1;
  const int ow = same ? in.w : in.w - kw + 1;
  const int top = same ? (kh - 1) / 2 : 0;
  const int left = same ? (kw - 1) / 2 : 0;
  Image out(oh, ow, filters);
  for (int y = 0; y < oh; ++y) {
    for (int x = 0; x < ow; ++x) {
      for (int o = 0; o < filters; ++o) {
        double sum = bias[static_cast<size_t>(o)];
        for (int i = 0; i < kh; ++i) {
          for (int j = 0; j < kw; ++j) {
            for (int ci = 0; ci < in.c; ++ci) {
              sum += in.get(y + i - top, x + j - left, ci) *
                     kernel[static_cast<size_t>(((i * kw + j) * in.c + ci) * filters + o)];
            }
          }
        }
        out.at(y, x, o) = relu ? std::max(0.0f, static_cast<float>(sum)) : static_cast<float>(sum);
      }
    }
  }
  return out;
}

std::vector<float> Values(size_t n, float seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(seed + 0.7f * static_cast<float>(i)) * 0.5f;
  return v;
}

torch::Tensor ToTensor(const Image& img) {  // NHWC image -> [1, C, H, W]
  return torch::from_blob(const_cast<float*>(img.v.data()), {1, img.h, img.w, img.c},
                          torch::kFloat32)
      .permute({0, 3, 1, 2})
      .contiguous();
}

TEST(TfjsConverterTest, SingleConvMatchesHandComputedOutput) {
  // 3x3 'same' conv, 1 -> 1 channel: centre tap 1, right-neighbour tap 10, bias 0.5, so
  // out(y, x) = in(y, x) + 10 * in(y, x + 1) + 0.5 (zero padding past the right edge).
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 1);
  m.Conv("conv", "in", 3, 3, 1, "same", "linear");
  std::vector<float> kernel(9, 0.0f);
  kernel[1 * 3 + 1] = 1.0f;
  kernel[1 * 3 + 2] = 10.0f;
  m.Weight("conv/kernel", {3, 3, 1, 1}, kernel);
  m.Weight("conv/bias", {1}, {0.5f});
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_EQ(module->attr("scale").toInt(), 1);

  const torch::Tensor input =
      torch::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}).view({1, 1, 2, 3});
  const torch::Tensor expected =
      torch::tensor({21.5f, 32.5f, 3.5f, 54.5f, 65.5f, 6.5f}).view({1, 1, 2, 3});
  const torch::Tensor actual = Forward(*module, input);
  ASSERT_EQ(actual.sizes(), expected.sizes());
  EXPECT_LE(MaxAbsError(actual, expected), 1e-6) << actual;
}

TEST(TfjsConverterTest, SmallGraphMatchesReferenceAndSurvivesSaveLoad) {
  // Even kernel ('same' pads asymmetrically), 'valid', relu, Add, Concatenate, UpSampling2D,
  // and a manifest whose order differs from the layer order.
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 3);
  m.Conv("a", "in", 2, 2, 4, "same", "relu");
  m.Conv("b", "in", 3, 3, 4, "same", "linear");
  m.Layer("Add", "c", {"a", "b"});
  m.Layer("Concatenate", "d", {"a", "c"}, {{"axis", 3}});
  m.Layer("Activation", "e", {"d"}, {{"activation", "relu"}});
  m.Layer("UpSampling2D", "f", {"e"},
          {{"size", {2, 2}}, {"interpolation", "nearest"}, {"data_format", "channels_last"}});
  m.Conv("g", "f", 3, 3, 2, "valid", "linear");
  const auto ka = Values(2 * 2 * 3 * 4, 0.1f), ba = Values(4, 0.2f);
  const auto kb = Values(3 * 3 * 3 * 4, 0.3f), bb = Values(4, 0.4f);
  const auto kg = Values(3 * 3 * 8 * 2, 0.5f), bg = Values(2, 0.6f);
  m.Weight("g/kernel", {3, 3, 8, 2}, kg);
  m.Weight("g/bias", {2}, bg);
  m.Weight("a/kernel", {2, 2, 3, 4}, ka);
  m.Weight("a/bias", {4}, ba);
  m.Weight("b/kernel", {3, 3, 3, 4}, kb);
  m.Weight("b/bias", {4}, bb);
  const fs::path json = m.Write(dir);

  Image in(5, 4, 3);
  for (size_t i = 0; i < in.v.size(); ++i) in.v[i] = static_cast<float>((i * 37) % 17) - 8.0f;
  const Image a = RefConv(in, 2, 2, 4, ka, ba, true, true);
  const Image b = RefConv(in, 3, 3, 4, kb, bb, true, false);
  Image e(5, 4, 8);
  for (int y = 0; y < 5; ++y) {
    for (int x = 0; x < 4; ++x) {
      for (int ch = 0; ch < 4; ++ch) {
        e.at(y, x, ch) = std::max(0.0f, a.get(y, x, ch));
        e.at(y, x, 4 + ch) = std::max(0.0f, a.get(y, x, ch) + b.get(y, x, ch));
      }
    }
  }
  Image f(10, 8, 8);
  for (int y = 0; y < 10; ++y) {
    for (int x = 0; x < 8; ++x) {
      for (int ch = 0; ch < 8; ++ch) f.at(y, x, ch) = e.get(y / 2, x / 2, ch);
    }
  }
  const torch::Tensor expected = ToTensor(RefConv(f, 3, 3, 2, kg, bg, false, false));

  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(json);
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_EQ(module->attr("scale").toInt(), 2);
  const torch::Tensor actual = Forward(*module, ToTensor(in));
  ASSERT_EQ(actual.sizes(), expected.sizes());
  EXPECT_LE(MaxAbsError(actual, expected), 1e-4);

  const fs::path pt = dir.path() / "model.pt";
  module->save(pt.string());
  torch::jit::Module loaded = torch::jit::load(pt.string());
  EXPECT_EQ(loaded.attr("scale").toInt(), 2);
  EXPECT_LE(MaxAbsError(Forward(loaded, ToTensor(in)), expected), 1e-4);
}

SyntheticModel OneConvModel() {
  SyntheticModel m;
  m.Input("in", 3);
  m.Conv("conv", "in", 1, 1, 2, "same", "linear");
  m.Weight("conv/kernel", {1, 1, 3, 2}, Values(6, 1.0f));
  m.Weight("conv/bias", {2}, Values(2, 2.0f));
  return m;
}

// TF's depth_to_space (NHWC): output pixel (y * s + i, x * s + j) channel c is input pixel
// (y, x) channel (i * s + j) * C + c.
Image RefDepthToSpace(const Image& in, int s) {
  const int c_out = in.c / (s * s);
  Image out(in.h * s, in.w * s, c_out);
  for (int y = 0; y < in.h; ++y) {
    for (int x = 0; x < in.w; ++x) {
      for (int i = 0; i < s; ++i) {
        for (int j = 0; j < s; ++j) {
          for (int c = 0; c < c_out; ++c) {
            out.at(y * s + i, x * s + j, c) = in.get(y, x, (i * s + j) * c_out + c);
          }
        }
      }
    }
  }
  return out;
}

TEST(TfjsConverterTest, PixelShuffleIsTfDepthToSpaceNotTorchPixelShuffle) {
  for (int s : {2, 3}) {
    SCOPED_TRACE(absl::StrCat("block size ", s));
    TempDir dir;
    SyntheticModel m;
    const int channels = 2 * s * s;
    m.Input("in", channels);
    m.Layer(absl::StrCat("PixelShuffle", s, "x"), "shuffle", {"in"}, {{"scale", s}});
    m.Layer("MultiplyBeta", "beta", {"shuffle"}, {{"beta", 0.2}});
    absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
    ASSERT_TRUE(module.ok()) << module.status();
    EXPECT_EQ(module->attr("scale").toInt(), s);

    Image in(2, 3, channels);
    for (size_t i = 0; i < in.v.size(); ++i) in.v[i] = 10.0f * static_cast<float>(i);
    Image ref = RefDepthToSpace(in, s);
    for (float& v : ref.v) v *= 0.2f;
    const torch::Tensor expected = ToTensor(ref);
    const torch::Tensor actual = Forward(*module, ToTensor(in));
    ASSERT_EQ(actual.sizes(), expected.sizes());
    EXPECT_LE(MaxAbsError(actual, expected), 1e-3) << actual;
    // torch's pixel_shuffle orders the channels differently: the test would notice a mix-up.
    const torch::Tensor torch_order = torch::pixel_shuffle(ToTensor(in), s) * 0.2;
    EXPECT_GT(MaxAbsError(torch_order, expected), 1.0);
  }
}

Image RefNearest(const Image& in, int s) {
  Image out(in.h * s, in.w * s, in.c);
  for (int y = 0; y < out.h; ++y) {
    for (int x = 0; x < out.w; ++x) {
      for (int ch = 0; ch < in.c; ++ch) out.at(y, x, ch) = in.get(y / s, x / s, ch);
    }
  }
  return out;
}

std::string ForwardGraph(torch::jit::Module& module) {
  return module.get_method("forward").graph()->toString();
}

TEST(TfjsConverterTest, UpsampleFoldedIntoTheNextSameConvMatchesReference) {
  // UpSampling2D -> 'same' conv is emitted as one low-resolution conv with s * s times the
  // outputs and torch's pixel_shuffle; the result must be the repeat-then-conv one.
  struct Case {
    int s, k;
    const char* activation;
  };
  for (const Case& c : {Case{2, 3, "linear"}, Case{3, 3, "relu"}, Case{4, 3, "linear"},
                        Case{2, 5, "relu"}, Case{4, 1, "linear"}}) {
    SCOPED_TRACE(absl::StrCat("factor ", c.s, ", kernel ", c.k, ", ", c.activation));
    TempDir dir;
    SyntheticModel m;
    m.Input("in", 3);
    m.Conv("pre", "in", 3, 3, 5, "same", "relu");
    m.Layer("UpSampling2D", "up", {"pre"},
            {{"size", {c.s, c.s}}, {"interpolation", "nearest"}, {"data_format", "channels_last"}});
    m.Conv("sr", "up", c.k, c.k, 2, "same", c.activation);
    const auto kp = Values(3 * 3 * 3 * 5, 0.1f), bp = Values(5, 0.2f);
    const auto ks = Values(static_cast<size_t>(c.k * c.k * 5 * 2), 0.3f), bs = Values(2, 0.4f);
    m.Weight("pre/kernel", {3, 3, 3, 5}, kp);
    m.Weight("pre/bias", {5}, bp);
    m.Weight("sr/kernel", {c.k, c.k, 5, 2}, ks);
    m.Weight("sr/bias", {2}, bs);

    Image in(5, 4, 3);
    for (size_t i = 0; i < in.v.size(); ++i) in.v[i] = static_cast<float>((i * 37) % 17) - 8.0f;
    const Image up = RefNearest(RefConv(in, 3, 3, 5, kp, bp, true, true), c.s);
    const torch::Tensor expected =
        ToTensor(RefConv(up, c.k, c.k, 2, ks, bs, true, std::string(c.activation) == "relu"));

    absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
    ASSERT_TRUE(module.ok()) << module.status();
    EXPECT_EQ(module->attr("scale").toInt(), c.s);
    // Folded: the conv's weight has s * s times the outputs and no repeat is left.
    EXPECT_EQ(module->attr("sr_weight").toTensor().size(0), 2 * c.s * c.s);
    EXPECT_THAT(ForwardGraph(*module), HasSubstr("aten::pixel_shuffle"));
    EXPECT_THAT(ForwardGraph(*module), ::testing::Not(HasSubstr("aten::expand")));
    const torch::Tensor actual = Forward(*module, ToTensor(in));
    ASSERT_EQ(actual.sizes(), expected.sizes());
    EXPECT_LE(MaxAbsError(actual, expected), 1e-3) << actual;
  }
}

TEST(TfjsConverterTest, UpsampleReadByTwoLayersIsNotFolded) {
  // The repeated tensor is needed as it is by the Add: the plain repeat stays.
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 2);
  m.Layer("UpSampling2D", "up", {"in"},
          {{"size", {2, 2}}, {"interpolation", "nearest"}, {"data_format", "channels_last"}});
  m.Conv("sr", "up", 3, 3, 2, "same", "linear");
  m.Layer("Add", "sum", {"sr", "up"});
  const auto ks = Values(3 * 3 * 2 * 2, 0.3f), bs = Values(2, 0.4f);
  m.Weight("sr/kernel", {3, 3, 2, 2}, ks);
  m.Weight("sr/bias", {2}, bs);

  Image in(3, 4, 2);
  for (size_t i = 0; i < in.v.size(); ++i) in.v[i] = static_cast<float>(i % 7) - 3.0f;
  const Image up = RefNearest(in, 2);
  Image expected = RefConv(up, 3, 3, 2, ks, bs, true, false);
  for (size_t i = 0; i < expected.v.size(); ++i) expected.v[i] += up.v[i];

  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_EQ(module->attr("sr_weight").toTensor().size(0), 2);
  EXPECT_THAT(ForwardGraph(*module), ::testing::Not(HasSubstr("aten::pixel_shuffle")));
  const torch::Tensor actual = Forward(*module, ToTensor(in));
  ASSERT_EQ(actual.sizes(), ToTensor(expected).sizes());
  EXPECT_LE(MaxAbsError(actual, ToTensor(expected)), 1e-3) << actual;
}

TEST(TfjsConverterTest, ConvBeforePixelShuffleIsReorderedForTorchPixelShuffle) {
  // Conv -> PixelShuffle<S>x (ESRGAN-thick's tail): the conv's output channels are put in
  // torch's order so the shuffle is torch's pixel_shuffle; the result is still TF's
  // depth_to_space of the conv's output.
  for (int s : {2, 3}) {
    SCOPED_TRACE(absl::StrCat("block size ", s));
    TempDir dir;
    SyntheticModel m;
    const int filters = 2 * s * s;
    m.Input("in", 3);
    m.Conv("pre", "in", 3, 3, filters, "same", "relu");
    m.Layer(absl::StrCat("PixelShuffle", s, "x"), "shuffle", {"pre"}, {{"scale", s}});
    m.Conv("sr", "shuffle", 3, 3, 3, "same", "linear");
    const auto kp = Values(static_cast<size_t>(3 * 3 * 3 * filters), 0.1f);
    const auto bp = Values(static_cast<size_t>(filters), 0.2f);
    const auto ks = Values(3 * 3 * 2 * 3, 0.3f), bs = Values(3, 0.4f);
    m.Weight("pre/kernel", {3, 3, 3, filters}, kp);
    m.Weight("pre/bias", {filters}, bp);
    m.Weight("sr/kernel", {3, 3, 2, 3}, ks);
    m.Weight("sr/bias", {3}, bs);

    Image in(4, 3, 3);
    for (size_t i = 0; i < in.v.size(); ++i) in.v[i] = static_cast<float>((i * 13) % 11) - 5.0f;
    const Image shuffled = RefDepthToSpace(RefConv(in, 3, 3, filters, kp, bp, true, true), s);
    const torch::Tensor expected = ToTensor(RefConv(shuffled, 3, 3, 3, ks, bs, true, false));

    absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
    ASSERT_TRUE(module.ok()) << module.status();
    EXPECT_EQ(module->attr("scale").toInt(), s);
    EXPECT_THAT(ForwardGraph(*module), HasSubstr("aten::pixel_shuffle"));
    EXPECT_THAT(ForwardGraph(*module), ::testing::Not(HasSubstr("aten::permute")));
    const torch::Tensor actual = Forward(*module, ToTensor(in));
    ASSERT_EQ(actual.sizes(), expected.sizes());
    EXPECT_LE(MaxAbsError(actual, expected), 1e-3) << actual;
  }
}

TEST(TfjsConverterTest, ValueRange0To1MapsInputAndOutputTo0To255) {
  // out = conv(x / 255) * 255 with a 1x1 conv of weight 1 and bias 0.5: x + 127.5.
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 1);
  m.Conv("conv", "in", 1, 1, 1, "same", "linear");
  m.Weight("conv/kernel", {1, 1, 1, 1}, {1.0f});
  m.Weight("conv/bias", {1}, {0.5f});
  const fs::path json = m.Write(dir);
  TfjsConvertOptions options;
  options.value_range = TfjsConvertOptions::ValueRange::k0To1;
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(json, options);
  ASSERT_TRUE(module.ok()) << module.status();
  const torch::Tensor input = torch::tensor({0.0f, 51.0f, 255.0f}).view({1, 1, 1, 3});
  const torch::Tensor expected = torch::tensor({127.5f, 178.5f, 382.5f}).view({1, 1, 1, 3});
  EXPECT_LE(MaxAbsError(Forward(*module, input), expected), 1e-3);

  absl::StatusOr<torch::jit::Module> plain = ConvertTfjsLayersModel(json);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_LE(MaxAbsError(Forward(*plain, input), input + 0.5), 1e-5);
}

TEST(TfjsConverterTest, PixelShuffleChannelsNotMultipleOfBlockIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 6);
  m.Layer("PixelShuffle2x", "shuffle", {"in"}, {{"scale", 2}});
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("'shuffle'"));
  EXPECT_THAT(module.status().message(), HasSubstr("multiple of 4"));
}

TEST(TfjsConverterTest, PixelShuffleScaleDisagreeingWithClassNameIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 12);
  m.Layer("PixelShuffle2x", "shuffle", {"in"}, {{"scale", 3}});
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("disagrees"));
}

TEST(TfjsConverterTest, MalformedPixelShuffleClassIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 4);
  m.Layer("PixelShuffleTwo", "shuffle", {"in"});
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("PixelShuffle<S>x"));
}

TEST(TfjsConverterTest, MultiplyBetaOtherThanUpscalerJsConstantIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m = OneConvModel();
  m.Layer("MultiplyBeta", "beta", {"conv"}, {{"beta", 0.5}});
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("beta 0.5"));
}

TEST(TfjsConverterTest, HugeWeightShapeIsInvalidArgumentWithoutAllocating) {
  TempDir dir;
  SyntheticModel m = OneConvModel();
  m.Weight("extra", {int64_t{1} << 40, int64_t{1} << 40}, {});
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("'extra'"));
}

TEST(TfjsConverterTest, TooManyLayersIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m = OneConvModel();
  std::string previous = "conv";
  for (int64_t i = 0; i < kTfjsMaxLayers; ++i) {
    const std::string name = absl::StrCat("relu", i);
    m.Layer("Activation", name, {previous}, {{"activation", "relu"}});
    previous = name;
  }
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("limit"));
}

TEST(TfjsConverterTest, MissingModelJsonIsNotFound) {
  TempDir dir;
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(dir.path() / "model.json");
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kNotFound) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("model.json"));
}

TEST(TfjsConverterTest, MissingShardIsNotFound) {
  TempDir dir;
  const fs::path json = OneConvModel().Write(dir);
  fs::remove(dir.path() / "group1-shard1of1.bin");
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(json);
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kNotFound) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("group1-shard1of1.bin"));
}

TEST(TfjsConverterTest, MalformedJsonIsInvalidArgument) {
  TempDir dir;
  WriteFile(dir.path() / "model.json", "{\"format\": \"layers-model\", \"modelTopology\": {");
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(dir.path() / "model.json");
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("JSON"));
}

TEST(TfjsConverterTest, WrongStructureIsInvalidArgument) {
  TempDir dir;
  WriteFile(dir.path() / "model.json", R"({"modelTopology": {"model_config": {"config": 3}}})");
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(dir.path() / "model.json");
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
}

TEST(TfjsConverterTest, UnsupportedLayerClassIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m = OneConvModel();
  m.Layer("BatchNormalization", "bn", {"conv"}, {{"axis", 3}});
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("BatchNormalization"));
  EXPECT_THAT(module.status().message(), HasSubstr("'bn'"));
}

TEST(TfjsConverterTest, UnsupportedStrideIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 3);
  m.Layer("Conv2D", "strided", {"in"},
          {{"filters", 2}, {"kernel_size", {1, 1}}, {"strides", {2, 2}}, {"padding", "valid"}});
  m.Weight("strided/kernel", {1, 1, 3, 2}, Values(6, 1.0f));
  m.Weight("strided/bias", {2}, Values(2, 2.0f));
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("strides"));
  EXPECT_THAT(module.status().message(), HasSubstr("'strided'"));
}

TEST(TfjsConverterTest, ShortShardIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m = OneConvModel();
  m.shard().resize(m.shard().size() - 4);
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("too short"));
  EXPECT_THAT(module.status().message(), HasSubstr("conv/bias"));
}

TEST(TfjsConverterTest, KernelShapeMismatchIsInvalidArgument) {
  TempDir dir;
  SyntheticModel m;
  m.Input("in", 3);
  m.Conv("conv", "in", 3, 3, 2, "same", "linear");
  m.Weight("conv/kernel", {3, 3, 4, 2}, Values(72, 1.0f));  // expects 3 input channels
  m.Weight("conv/bias", {2}, Values(2, 2.0f));
  absl::StatusOr<torch::jit::Module> module = ConvertTfjsLayersModel(m.Write(dir));
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  EXPECT_THAT(module.status().message(), HasSubstr("kernel weight shape"));
}

}  // namespace
}  // namespace switchyard::runner
