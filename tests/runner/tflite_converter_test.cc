#include "runner/tflite_converter.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
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
#include "runner/tflite_schema_generated.h"

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

constexpr double kMaxProbabilityError = 1e-3;  // of the mask probability (issue 20)
constexpr double kMaxPixelError = 1.0;         // of the blurred frame, on 0..255

const fs::path kFixtureDir = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "tflite";
const fs::path kPackageDir =
    fs::path(SWITCHYARD_MODEL_DIR) / "selfie-segmentation-0.1.1675465747" / "package";

// --- tiny hand-built models -------------------------------------------------------------------

// input x [1, 4, 4, 3] -> CONV_2D 1x1 (weights [1, 1, 1, 3], bias [1]) -> [1, 4, 4, 1] ->
// LOGISTIC -> output. Fields are public so a test can break one thing.
struct TinyModel {
  int32_t side = 4;          // of the input
  int32_t out_channels = 1;  // of the convolution (weights [out_channels, 1, 1, 3])
  int32_t conv_code = 3;     // BuiltinOperator of the first op
  std::vector<int32_t> conv_out_shape = {1, 4, 4, 1};
  std::vector<float> weights = {0.5f, -1.0f, 2.0f};
  size_t weight_bytes = 12;  // bytes of the weight buffer actually written
  int8_t padding = tflite::Padding_SAME;

  std::string Build() const {
    flatbuffers::FlatBufferBuilder fbb;
    auto tensor = [&](std::vector<int32_t> shape, uint32_t buffer, const char* name) {
      return tflite::CreateTensorDirect(fbb, &shape, tflite::TensorType_FLOAT32, buffer, name);
    };
    std::vector<flatbuffers::Offset<tflite::Tensor>> tensors = {
        tensor({1, side, side, 3}, 0, "x"), tensor({out_channels, 1, 1, 3}, 1, "w"),
        tensor({out_channels}, 2, "b"), tensor(conv_out_shape, 0, "conv"),
        tensor({1, 4, 4, 1}, 0, "mask")};
    std::vector<uint8_t> wbytes(weight_bytes);
    std::memcpy(wbytes.data(), weights.data(), std::min(weight_bytes, weights.size() * 4));
    const std::vector<float> bias(static_cast<size_t>(out_channels), 0.25f);
    std::vector<uint8_t> bbytes(bias.size() * 4);
    std::memcpy(bbytes.data(), bias.data(), bbytes.size());
    std::vector<uint8_t> empty;
    std::vector<flatbuffers::Offset<tflite::Buffer>> buffers = {
        tflite::CreateBufferDirect(fbb, &empty), tflite::CreateBufferDirect(fbb, &wbytes),
        tflite::CreateBufferDirect(fbb, &bbytes)};
    std::vector<flatbuffers::Offset<tflite::OperatorCode>> codes = {
        tflite::CreateOperatorCode(fbb, static_cast<int8_t>(std::min(conv_code, 127)), 0, 1,
                                   conv_code),
        tflite::CreateOperatorCode(fbb, 14, 0, 1, 14)};
    std::vector<int32_t> conv_in = {0, 1, 2}, conv_out = {3}, sig_in = {3}, sig_out = {4};
    auto conv_options =
        tflite::CreateConv2DOptions(fbb, static_cast<tflite::Padding>(padding), 1, 1);
    std::vector<flatbuffers::Offset<tflite::Operator>> ops = {
        tflite::CreateOperatorDirect(fbb, 0, &conv_in, &conv_out,
                                     tflite::BuiltinOptions_Conv2DOptions, conv_options.Union()),
        tflite::CreateOperatorDirect(fbb, 1, &sig_in, &sig_out)};
    std::vector<int32_t> inputs = {0}, outputs = {4};
    std::vector<flatbuffers::Offset<tflite::SubGraph>> graphs = {
        tflite::CreateSubGraphDirect(fbb, &tensors, &inputs, &outputs, &ops, "main")};
    auto model = tflite::CreateModelDirect(fbb, 3, &codes, &graphs, "tiny", &buffers);
    tflite::FinishModelBuffer(fbb, model);
    return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
  }
};

absl::StatusOr<torch::jit::Module> Convert(
    const std::string& bytes, TfliteContract contract = TfliteContract::kSegmentAnything2) {
  return ConvertTfliteBuffer(bytes, "tiny.tflite", {.contract = contract});
}

void ExpectInvalid(const absl::StatusOr<torch::jit::Module>& m, const std::string& what) {
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(what));
}

torch::Tensor SamForward(torch::jit::Module& m, const torch::Tensor& image, int index) {
  torch::InferenceMode guard;
  auto out = m.forward({image, torch::zeros({1, 2}), torch::ones({1}, torch::kLong),
                        torch::zeros({0, 4}), torch::zeros({0, 256, 256}), true, true})
                 .toTuple();
  return out->elements()[static_cast<size_t>(index)].toTensor();
}

TEST(TfliteConverterTest, TinyModelComputesConvAndSigmoid) {
  auto m = Convert(TinyModel().Build());
  ASSERT_TRUE(m.ok()) << m.status();
  torch::InferenceMode guard;
  const torch::Tensor x = torch::rand({1, 3, 4, 4});
  const torch::Tensor logits = m->run_method("network", x).toTensor();
  const torch::Tensor expected = x[0][0] * 0.5 - x[0][1] + x[0][2] * 2.0 + 0.25;
  EXPECT_LE(MaxAbsError(logits[0][0], expected), 1e-6);
  // The contract: prompts ignored, masks at the image's size, a score in 0..1.
  const torch::Tensor image = torch::rand({1, 3, 6, 10}) * 255;
  const torch::Tensor masks = SamForward(*m, image, 0);
  EXPECT_EQ(masks.sizes(), (std::vector<int64_t>{1, 6, 10}));
  const torch::Tensor scores = SamForward(*m, image, 1);
  ASSERT_EQ(scores.numel(), 1);
  EXPECT_GE(scores.item<float>(), 0.0f);
  EXPECT_LE(scores.item<float>(), 1.0f);
  EXPECT_EQ(SamForward(*m, image, 2).sizes(), (std::vector<int64_t>{1, 4, 4}));
}

TEST(TfliteConverterTest, RefusesMissingFile) {
  auto m = ConvertTfliteModel("/nonexistent/model.tflite");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound) << m.status();
}

TEST(TfliteConverterTest, ConvertsAViewAtAnyAlignment) {
  const std::string bytes = TinyModel().Build();
  std::string shifted = "xyz" + bytes;  // the model starts 3 bytes into the buffer
  auto m = ConvertTfliteBuffer(absl::string_view(shifted).substr(3), "shifted.tflite");
  ASSERT_TRUE(m.ok()) << m.status();
}

TEST(TfliteConverterTest, RefusesHugeActivations) {
  // 4096x4096 is within the per-side limit, but 17 channels of it are over 2^28 elements.
  TinyModel model;
  model.side = 4096;
  model.out_channels = 17;
  model.weights.assign(17 * 3, 0.5f);
  model.weight_bytes = 17 * 3 * 4;
  model.conv_out_shape = {1, 4096, 4096, 17};
  ExpectInvalid(Convert(model.Build()),
                "operator 0 (CONV_2D): output shape [1, 4096, 4096, 17] "
                "is over the limits");
}

TEST(TfliteConverterTest, RefusesTooShortAndWrongIdentifier) {
  ExpectInvalid(Convert("TFL3"), "too short");
  std::string bytes = TinyModel().Build();
  bytes[4] = 'X';
  ExpectInvalid(Convert(bytes), "no \"TFL3\" file identifier");
}

TEST(TfliteConverterTest, RefusesTruncatedModel) {
  const std::string bytes = TinyModel().Build();
  for (size_t keep : {size_t{8}, bytes.size() / 4, bytes.size() / 2, bytes.size() - 4}) {
    ExpectInvalid(Convert(bytes.substr(0, keep)), "fails flatbuffer verification");
  }
}

TEST(TfliteConverterTest, RefusesGarbage) {
  std::mt19937 rng(20);
  for (int round = 0; round < 50; ++round) {
    std::string bytes(64 + round * 13, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    std::memcpy(bytes.data() + 4, "TFL3", 4);
    ExpectInvalid(Convert(bytes), "");
  }
}

TEST(TfliteConverterTest, RefusesBufferThatFailsVerification) {
  std::string bytes = TinyModel().Build();
  // The root table offset, pointed past the end of the file.
  const uint32_t past_end = static_cast<uint32_t>(bytes.size()) + 64;
  std::memcpy(bytes.data(), &past_end, 4);
  ExpectInvalid(Convert(bytes), "fails flatbuffer verification");
}

TEST(TfliteConverterTest, RefusesUnknownOperatorNamingIt) {
  TinyModel model;
  model.conv_code = 25;  // SOFTMAX
  ExpectInvalid(Convert(model.Build()), "operator 0 (SOFTMAX): unsupported operator");
  model.conv_code = 150;  // GELU, only in the wide builtin_code field
  ExpectInvalid(Convert(model.Build()), "operator 0 (builtin op 150): unsupported operator");
}

TEST(TfliteConverterTest, RefusesShapeMismatch) {
  TinyModel model;
  model.conv_out_shape = {1, 4, 5, 1};
  ExpectInvalid(Convert(model.Build()),
                "operator 0 (CONV_2D): output tensor 3 is declared [1, 4, 5, 1] but the operator "
                "computes [1, 4, 4, 1]");
}

TEST(TfliteConverterTest, RefusesBufferSizeMismatch) {
  TinyModel model;
  model.weight_bytes = 8;
  ExpectInvalid(Convert(model.Build()),
                "tensor 1 'w': has shape [1, 1, 1, 3] of FLOAT32 (12 bytes) but its buffer 1 has 8 "
                "bytes");
}

TEST(TfliteConverterTest, RefusesBadPaddingAndNonFiniteWeights) {
  TinyModel model;
  model.padding = 7;
  ExpectInvalid(Convert(model.Build()), "padding 7 is neither SAME nor VALID");
  TinyModel nan;
  nan.weights[1] = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid(Convert(nan.Build()), "not finite");
}

// Random byte changes of a valid model: each converts or is INVALID_ARGUMENT, never a crash.
void CheckMutations(const std::string& original, int rounds) {
  std::mt19937 rng(1234);
  int converted = 0;
  for (int round = 0; round < rounds; ++round) {
    std::string bytes = original;
    const int changes = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < changes; ++i) {
      bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    auto m = Convert(bytes);
    if (m.ok()) {
      ++converted;
      continue;
    }
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument)
        << "round " << round << ": " << m.status();
  }
  std::cout << "[ mutated  ] " << rounds << " rounds, " << converted << " still converted\n";
}

TEST(TfliteConverterTest, SurvivesMutatedTinyModels) { CheckMutations(TinyModel().Build(), 300); }

// --- the real models, against the NumPy reference ------------------------------------------

struct Fixtures {
  Json index;
  torch::Tensor Load(const std::string& name) const {
    return LoadF32(kFixtureDir, index.at("tensors").at(name));
  }
};

Fixtures LoadFixtures() { return {Json::parse(ReadBytes(kFixtureDir / "fixtures.json"))}; }

TEST(TfliteRealModelTest, SelfieSegmentationMatchesNumpyReference) {
  const fs::path path = kPackageDir / "selfie_segmentation.tflite";
  if (!fs::exists(path)) {
    GTEST_SKIP() << path.string() << " not found: run scripts/prepare-models --models "
                 << "selfie-segmentation";
  }
  const Fixtures f = LoadFixtures();
  const torch::Tensor input = f.Load("input");
  const torch::Tensor probability = f.Load("general-probability");
  const torch::Tensor masks_ref = f.Load("general-masks");
  ASSERT_TRUE(input.defined() && probability.defined() && masks_ref.defined());

  const auto start = std::chrono::steady_clock::now();
  auto m = ConvertTfliteModel(path);
  const double convert_ms = MillisecondsSince(start);
  ASSERT_TRUE(m.ok()) << m.status();

  torch::InferenceMode guard;
  auto logits = m->run_method("person_logits", input).toTuple();
  const torch::Tensor low = logits->elements()[1].toTensor();
  ASSERT_EQ(low.sizes(), probability.sizes());
  const double network_error = MaxAbsError(torch::sigmoid(low), probability);
  const torch::Tensor masks = SamForward(*m, input, 0);
  ASSERT_EQ(masks.sizes(), masks_ref.sizes());
  const double mask_error = MaxAbsError(torch::sigmoid(masks), torch::sigmoid(masks_ref));
  // The person is found: most of the thresholded reference mask, and IoU.
  const torch::Tensor a = masks > 0, b = masks_ref > 0;
  const double iou = (a & b).sum().item<double>() / (a | b).sum().item<double>();

  // Timing: one 256x256 network run, and the contract on a 720p frame.
  const torch::Tensor x256 = torch::rand({1, 3, 256, 256});
  m->run_method("network", x256);
  auto t0 = std::chrono::steady_clock::now();
  m->run_method("network", x256);
  const double net_ms = MillisecondsSince(t0);
  const torch::Tensor frame = torch::rand({1, 3, 720, 1280}) * 255;
  SamForward(*m, frame, 0);
  t0 = std::chrono::steady_clock::now();
  SamForward(*m, frame, 0);
  const double frame_ms = MillisecondsSince(t0);
  std::cout << "[ tflite   ] selfie_segmentation: converted in " << convert_ms
            << " ms; max abs error of the probability vs NumPy reference: network " << network_error
            << ", masks at 128x128 " << mask_error << "; IoU " << iou << "; network 256x256 "
            << net_ms << " ms, segment-anything-2 forward on 1280x720 " << frame_ms << " ms\n";
  EXPECT_LE(network_error, kMaxProbabilityError);
  EXPECT_LE(mask_error, kMaxProbabilityError);
  EXPECT_GE(iou, 0.99);

  // The saved file gives the same result.
  ScratchDir dir;
  m->save((dir.path() / "m.pt").string());
  torch::jit::Module loaded = torch::jit::load((dir.path() / "m.pt").string());
  EXPECT_EQ(MaxAbsError(SamForward(loaded, input, 0), masks), 0.0);
}

TEST(TfliteRealModelTest, LandscapeMatchesNumpyReference) {
  const fs::path path = kPackageDir / "selfie_segmentation_landscape.tflite";
  if (!fs::exists(path)) {
    GTEST_SKIP() << path.string() << " not found: run scripts/prepare-models --models "
                 << "selfie-segmentation";
  }
  const Fixtures f = LoadFixtures();
  const torch::Tensor input = f.Load("input");
  const torch::Tensor probability = f.Load("landscape-probability");
  auto m = ConvertTfliteModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  torch::InferenceMode guard;
  auto logits = m->run_method("person_logits", input).toTuple();
  const torch::Tensor low = logits->elements()[1].toTensor();
  ASSERT_EQ(low.sizes(), probability.sizes());
  const double error = MaxAbsError(torch::sigmoid(low), probability);
  std::cout << "[ tflite   ] selfie_segmentation_landscape: max abs error of the probability vs "
            << "NumPy reference " << error << "\n";
  EXPECT_LE(error, kMaxProbabilityError);
}

TEST(TfliteRealModelTest, BackgroundBlurMatchesNumpyReference) {
  const fs::path path = kPackageDir / "selfie_segmentation.tflite";
  if (!fs::exists(path)) {
    GTEST_SKIP() << path.string() << " not found: run scripts/prepare-models --models "
                 << "selfie-segmentation";
  }
  const Fixtures f = LoadFixtures();
  const torch::Tensor input = f.Load("input");
  const torch::Tensor blurred = f.Load("general-blurred");
  auto m = ConvertTfliteModel(path, {.contract = TfliteContract::kLiveVideo});
  ASSERT_TRUE(m.ok()) << m.status();
  torch::InferenceMode guard;
  const torch::Tensor y = m->forward({input, std::string("{}")}).toTensor();
  ASSERT_EQ(y.sizes(), blurred.sizes());
  const double error = MaxAbsError(y, blurred);
  // An odd frame comes back cropped to even sizes.
  const torch::Tensor odd = m->forward({input.narrow(2, 0, 127), std::string("{}")}).toTensor();
  EXPECT_EQ(odd.sizes(), (std::vector<int64_t>{1, 3, 126, 128}));

  const torch::Tensor frame = torch::rand({1, 3, 720, 1280}) * 255;
  m->forward({frame, std::string("{}")});
  const auto t0 = std::chrono::steady_clock::now();
  const torch::Tensor out = m->forward({frame, std::string("{}")}).toTensor();
  const double frame_ms = MillisecondsSince(t0);
  EXPECT_EQ(out.sizes(), frame.sizes());
  std::cout << "[ tflite   ] selfie-background-blur: max abs error vs NumPy reference " << error
            << " (0..255); forward on 1280x720 " << frame_ms << " ms\n";
  EXPECT_LE(error, kMaxPixelError);
}

TEST(TfliteRealModelTest, SurvivesMutatedRealModel) {
  const fs::path path = kPackageDir / "selfie_segmentation.tflite";
  if (!fs::exists(path)) {
    GTEST_SKIP() << path.string() << " not found: run scripts/prepare-models --models "
                 << "selfie-segmentation";
  }
  CheckMutations(ReadBytes(path), 200);
}

// --- the tool ---------------------------------------------------------------------------------

TEST(TfliteConverterToolTest, ConvertsTinyModel) {
  ScratchDir dir;
  WriteBytes(dir.path() / "tiny.tflite", TinyModel().Build());
  const std::string tool = (fs::path(SWITCHYARD_BIN_DIR) / "switchyard-convert").string();
  const std::string cmd =
      absl::StrCat(tool, " tflite --in ", (dir.path() / "tiny.tflite").string(), " --out ",
                   (dir.path() / "tiny.pt").string(), " --contract live-video-to-video 2>&1");
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof(buf), pipe)) out += buf;
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_THAT(out, HasSubstr("(tflite)"));
  torch::jit::Module m = torch::jit::load((dir.path() / "tiny.pt").string());
  torch::InferenceMode guard;
  const torch::Tensor y =
      m.forward({torch::rand({1, 3, 8, 10}) * 255, std::string("{}")}).toTensor();
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 3, 8, 10}));

  // A broken file is a non-zero exit with the converter's message.
  WriteBytes(dir.path() / "bad.tflite", "garbage!");
  const std::string bad = absl::StrCat(tool, " tflite --in ", (dir.path() / "bad.tflite").string(),
                                       " --out ", (dir.path() / "bad.pt").string(), " 2>&1");
  pipe = popen(bad.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  out.clear();
  while (fgets(buf, sizeof(buf), pipe)) out += buf;
  EXPECT_NE(pclose(pipe), 0);
  EXPECT_THAT(out, HasSubstr("not a TFLite model"));
  EXPECT_FALSE(fs::exists(dir.path() / "bad.pt"));
}

}  // namespace
}  // namespace switchyard::runner
