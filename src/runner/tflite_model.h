// A .tflite flatbuffer as the TFLite converter (tflite_converter.h) reads it: verification of the
// untrusted bytes, the one subgraph's tensors (constants read and checked against their shapes),
// the limits on what conversion accepts, and the names errors use. Kept apart from the operator
// translation so each file stays readable. Internal to switchyard_runner: it includes the header
// flatc generates, whose include directory only the runner's own sources get.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/script.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runner/tflite_schema_generated.h"

// Not `tflite`: that is the generated schema's namespace, which this one would hide.
namespace switchyard::runner::tflite_model {

inline constexpr int64_t kMaxSide = 4096;       // of any activation
inline constexpr int64_t kMaxChannels = 65536;  // of any activation
// Of any activation (1 GiB of float32): the module allocates each at run time.
inline constexpr int64_t kMaxActivationElements = int64_t{1} << 28;
inline constexpr int64_t kMaxKernel = 63;
inline constexpr int64_t kMaxStride = 16;
inline constexpr int64_t kMaxDilation = 16;
inline constexpr int64_t kMaxConstantRank = 4;

// BuiltinOperator values (tensorflow/lite/schema/schema.fbs) the converter reads or names.
enum Op : int32_t {
  kAdd = 0,
  kAveragePool2d = 1,
  kConcatenation = 2,
  kConv2d = 3,
  kDepthwiseConv2d = 4,
  kDequantize = 6,
  kFullyConnected = 9,
  kLogistic = 14,
  kMaxPool2d = 17,
  kMul = 18,
  kRelu = 19,
  kReluN1To1 = 20,
  kRelu6 = 21,
  kReshape = 22,
  kResizeBilinear = 23,
  kSoftmax = 25,
  kTanh = 28,
  kCustom = 32,
  kPad = 34,
  kTranspose = 39,
  kMean = 40,
  kSub = 41,
  kTransposeConv = 67,
  kHardSwish = 117,
  kPlaceholderForGreaterOpCodes = 127,
};

// "CONV_2D"; "builtin op N" for one not listed in Op.
std::string OpName(int32_t op);
// "FLOAT32"; "another type" for one the converter never accepts.
const char* TypeName(tflite::TensorType type);
// "[1, 256, 256, 3]"
std::string ShapeText(const std::vector<int64_t>& shape);
// IEEE half to float, exactly (subnormals, infinities and NaN included).
float HalfToFloat(uint16_t h);

// INVALID_ARGUMENT "<name>: <reason>", the form of every error about the file.
absl::Status Invalid(absl::string_view name, absl::string_view reason);

// What conversion knows about a tensor of the subgraph.
struct Value {
  bool defined = false;        // the graph input, a constant, or produced by an earlier op
  bool constant = false;       // constant: `data` holds it (float32 or int32), NHWC layout
  std::vector<int64_t> shape;  // as the model declares it (NHWC for activations)
  torch::Tensor data;          // constants only
  std::string var;             // activations: the TorchScript variable (NCHW)
  int producer = -1;           // operator index that produced it
  bool half = false;           // a FLOAT16 constant (widened when read): only DEQUANTIZE takes it
};

// Checks the size, the "TFL3" identifier and the whole flatbuffer (flatbuffers' Verifier: every
// offset, vector, string and union bounded, depth and table count limited) before any field is
// read. `data` must stay alive while the model is used, and start aligned as its builder wrote it
// (flatbuffers reads scalars in place). `name` names the file in errors.
absl::StatusOr<const tflite::Model*> VerifyModel(absl::string_view data, const std::string& name);

// The model's one subgraph, its tensors read and its input checked; its operators are not read.
struct Graph {
  const tflite::SubGraph* subgraph = nullptr;
  std::vector<Value> values;  // one per tensor; the input and the constants are `defined`
  int input = -1;             // tensor indexes, in range
  int output = -1;
  int64_t input_h = 0, input_w = 0;
};

// Reads the subgraph of a verified `model`: exactly one, at most kMaxTfliteTensors tensors and
// 1..kMaxTfliteOperators operators; every tensor float32 (constants also FLOAT16, INT32) of rank
// <= kMaxConstantRank, unquantized, not sparse, its constant bytes matching its shape and finite;
// one input [1, H, W, 3] (H, W <= kMaxSide) and one output.
absl::StatusOr<Graph> ReadGraph(const tflite::Model& model, const std::string& name);

}  // namespace switchyard::runner::tflite_model
