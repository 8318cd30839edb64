#include "runner/tflite_converter.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "runner/converter_support.h"
#include "runner/tflite_schema_generated.h"

namespace switchyard::runner {
namespace {

using convert::CommentText;
using convert::FloatLiteral;
using convert::Identifier;
using convert::Quote;

constexpr int64_t kMaxSide = 4096;       // of any activation
constexpr int64_t kMaxChannels = 65536;  // of any activation
// Of any activation (1 GiB of float32): the module allocates each at run time.
constexpr int64_t kMaxActivationElements = int64_t{1} << 28;
constexpr int64_t kMaxKernel = 63;
constexpr int64_t kMaxStride = 16;
constexpr int64_t kMaxDilation = 16;
constexpr int64_t kMaxConstantRank = 4;

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

std::string OpName(int32_t op) {
  static const std::map<int32_t, const char*> kNames = {
      {kAdd, "ADD"},
      {kAveragePool2d, "AVERAGE_POOL_2D"},
      {kConcatenation, "CONCATENATION"},
      {kConv2d, "CONV_2D"},
      {kDepthwiseConv2d, "DEPTHWISE_CONV_2D"},
      {kDequantize, "DEQUANTIZE"},
      {kFullyConnected, "FULLY_CONNECTED"},
      {kLogistic, "LOGISTIC"},
      {kMaxPool2d, "MAX_POOL_2D"},
      {kMul, "MUL"},
      {kRelu, "RELU"},
      {kReluN1To1, "RELU_N1_TO_1"},
      {kRelu6, "RELU6"},
      {kReshape, "RESHAPE"},
      {kResizeBilinear, "RESIZE_BILINEAR"},
      {kSoftmax, "SOFTMAX"},
      {kTanh, "TANH"},
      {kCustom, "CUSTOM"},
      {kPad, "PAD"},
      {kTranspose, "TRANSPOSE"},
      {kMean, "MEAN"},
      {kSub, "SUB"},
      {kTransposeConv, "TRANSPOSE_CONV"},
      {kHardSwish, "HARD_SWISH"},
  };
  auto it = kNames.find(op);
  return it != kNames.end() ? it->second : absl::StrCat("builtin op ", op);
}

const char* TypeName(tflite::TensorType type) {
  switch (type) {
    case tflite::TensorType_FLOAT32:
      return "FLOAT32";
    case tflite::TensorType_FLOAT16:
      return "FLOAT16";
    case tflite::TensorType_INT32:
      return "INT32";
    case tflite::TensorType_UINT8:
      return "UINT8";
    case tflite::TensorType_INT64:
      return "INT64";
    case tflite::TensorType_INT8:
      return "INT8";
    default:
      return "another type";
  }
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// IEEE half to float, exactly (subnormals, infinities and NaN included).
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000 | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

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

class Converter {
 public:
  Converter(absl::string_view data, std::string name, TfliteConvertOptions options)
      : data_(data), name_(std::move(name)), options_(options) {}

  absl::StatusOr<torch::jit::Module> Run() {
    SY_RETURN_IF_ERROR(Verify());
    SY_RETURN_IF_ERROR(ReadGraph());
    return BuildModule();
  }

 private:
  absl::Status Invalid(const std::string& reason) const {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": ", reason));
  }
  absl::Status OpError(const std::string& reason) const {
    return Invalid(absl::StrCat("operator ", op_index_, " (", op_name_, "): ", reason));
  }

  absl::Status Verify() {
    if (data_.size() < 8) {
      return Invalid(absl::StrCat("is ", data_.size(), " bytes, too short for a TFLite model"));
    }
    if (!flatbuffers::BufferHasIdentifier(data_.data(), tflite::ModelIdentifier())) {
      return Invalid("is not a TFLite model (no \"TFL3\" file identifier at byte 4)");
    }
    // The Verifier checks every offset, vector, string and union inside the buffer against its
    // end, bounded in depth and table count, so nothing read below can point outside it.
    flatbuffers::Verifier verifier(reinterpret_cast<const uint8_t*>(data_.data()), data_.size(),
                                   /*max_depth=*/64, /*max_tables=*/1000000);
    if (!tflite::VerifyModelBuffer(verifier)) {
      return Invalid(
          "fails flatbuffer verification (truncated or corrupt: an offset, vector or string "
          "points outside the file)");
    }
    model_ = tflite::GetModel(data_.data());
    return absl::OkStatus();
  }

  absl::Status ReadTensor(const tflite::SubGraph& graph, int index, Value* value) {
    const tflite::Tensor* t = graph.tensors()->Get(index);
    const std::string tname = t->name() ? CommentText(t->name()->str()) : "";
    auto bad = [&](const std::string& reason) {
      return Invalid(absl::StrCat("tensor ", index, " ", Quote(tname), ": ", reason));
    };
    if (t->shape() == nullptr) return bad("has no shape");
    if (t->shape()->size() > static_cast<uint32_t>(kMaxConstantRank)) {
      return bad(absl::StrCat("has rank ", t->shape()->size(), " (at most 4 is supported)"));
    }
    int64_t count = 1;
    for (int32_t d : *t->shape()) {
      if (d < 1 || d > (1 << 20)) return bad(absl::StrCat("has dimension ", d));
      value->shape.push_back(d);
      count *= d;
      if (count > (int64_t{1} << 31)) return bad("has too many elements");
    }
    if (t->quantization() != nullptr &&
        ((t->quantization()->scale() && t->quantization()->scale()->size() > 0) ||
         (t->quantization()->zero_point() && t->quantization()->zero_point()->size() > 0))) {
      return bad("is quantized (unsupported)");
    }
    if (t->sparsity() != nullptr) return bad("is sparse (unsupported)");
    if (t->is_variable()) return bad("is a variable (unsupported)");
    const uint32_t buffer_index = t->buffer();
    const auto* buffers = model_->buffers();
    if (buffer_index != 0) {
      if (buffers == nullptr || buffer_index >= buffers->size()) {
        return bad(
            absl::StrCat("refers to buffer ", buffer_index, " of ", buffers ? buffers->size() : 0));
      }
      const tflite::Buffer* buffer = buffers->Get(buffer_index);
      if (buffer->offset() > 1 || buffer->size() > 0) {
        return bad("has its data outside the flatbuffer (models over 2 GB: unsupported)");
      }
      if (buffer->data() != nullptr && buffer->data()->size() > 0) {
        int64_t element = 0;
        torch::ScalarType dtype = torch::kFloat32;
        switch (t->type()) {
          case tflite::TensorType_FLOAT32:
            element = 4;
            break;
          case tflite::TensorType_FLOAT16:
            element = 2;
            break;
          case tflite::TensorType_INT32:
            element = 4;
            dtype = torch::kInt32;
            break;
          default:
            return bad(absl::StrCat("is a constant of type ", TypeName(t->type()),
                                    " (only FLOAT32, FLOAT16, INT32)"));
        }
        const int64_t bytes = static_cast<int64_t>(buffer->data()->size());
        if (bytes != count * element) {
          return bad(absl::StrCat(
              "has shape ", ShapeText(value->shape), " of ", TypeName(t->type()), " (",
              count * element, " bytes) but its buffer ", buffer_index, " has ", bytes, " bytes"));
        }
        const uint8_t* src = buffer->data()->data();
        if (element == 2) {
          std::vector<float> values(static_cast<size_t>(count));
          for (int64_t i = 0; i < count; ++i) {
            uint16_t h;
            std::memcpy(&h, src + 2 * i, 2);
            values[static_cast<size_t>(i)] = HalfToFloat(h);
          }
          value->data = torch::from_blob(values.data(), value->shape, torch::kFloat32).clone();
          if (!torch::isfinite(value->data).all().item<bool>()) {
            return bad("has a value that is not finite");
          }
          value->constant = true;
          value->defined = true;
          value->half = true;
          return absl::OkStatus();
        }
        // memcpy: the flatbuffer guarantees no alignment a float view could rely on here.
        value->data = torch::empty(value->shape, dtype);
        std::memcpy(value->data.data_ptr(), src, static_cast<size_t>(bytes));
        if (dtype == torch::kFloat32 && !torch::isfinite(value->data).all().item<bool>()) {
          return bad("has a value that is not finite");
        }
        value->constant = true;
        value->defined = true;
        return absl::OkStatus();
      }
    }
    if (t->type() != tflite::TensorType_FLOAT32) {
      return bad(
          absl::StrCat("is a computed tensor of type ", TypeName(t->type()), " (only FLOAT32)"));
    }
    return absl::OkStatus();
  }

  absl::Status ReadGraph() {
    if (model_->subgraphs() == nullptr || model_->subgraphs()->size() != 1) {
      return Invalid(absl::StrCat("has ", model_->subgraphs() ? model_->subgraphs()->size() : 0,
                                  " subgraphs (exactly 1 is supported)"));
    }
    const tflite::SubGraph& graph = *model_->subgraphs()->Get(0);
    if (graph.tensors() == nullptr || graph.tensors()->size() == 0) {
      return Invalid("the subgraph has no tensors");
    }
    if (graph.tensors()->size() > kMaxTfliteTensors) {
      return Invalid(absl::StrCat("has ", graph.tensors()->size(),
                                  " tensors, more than the limit of ", kMaxTfliteTensors));
    }
    if (graph.operators() == nullptr || graph.operators()->size() == 0) {
      return Invalid("the subgraph has no operators");
    }
    if (graph.operators()->size() > kMaxTfliteOperators) {
      return Invalid(absl::StrCat("has ", graph.operators()->size(),
                                  " operators, more than the limit of ", kMaxTfliteOperators));
    }
    values_.resize(graph.tensors()->size());
    for (uint32_t i = 0; i < graph.tensors()->size(); ++i) {
      SY_RETURN_IF_ERROR(ReadTensor(graph, static_cast<int>(i), &values_[i]));
    }
    if (graph.inputs() == nullptr || graph.inputs()->size() != 1 || graph.outputs() == nullptr ||
        graph.outputs()->size() != 1) {
      return Invalid("the subgraph must have exactly one input and one output tensor");
    }
    const int input = graph.inputs()->Get(0);
    const int output = graph.outputs()->Get(0);
    if (input < 0 || input >= static_cast<int>(values_.size()) || output < 0 ||
        output >= static_cast<int>(values_.size())) {
      return Invalid("the subgraph's input or output tensor index is out of range");
    }
    Value& in = values_[static_cast<size_t>(input)];
    if (in.constant || in.shape.size() != 4 || in.shape[0] != 1 || in.shape[3] != 3 ||
        in.shape[1] > kMaxSide || in.shape[2] > kMaxSide) {
      return Invalid(absl::StrCat("the input tensor has shape ", ShapeText(in.shape),
                                  "; [1, H, W, 3] (H, W <= ", kMaxSide, ") is supported"));
    }
    in.defined = true;
    in.var = "x";
    input_h_ = in.shape[1];
    input_w_ = in.shape[2];

    for (uint32_t i = 0; i < graph.operators()->size(); ++i) {
      op_index_ = static_cast<int>(i);
      SY_RETURN_IF_ERROR(Operator(*graph.operators()->Get(i)));
    }

    const Value& out = values_[static_cast<size_t>(output)];
    if (!out.defined || out.constant)
      return Invalid("the output tensor is computed by no operator");
    if (out.shape != std::vector<int64_t>{1, input_h_, input_w_, 1}) {
      return Invalid(absl::StrCat("the output tensor has shape ", ShapeText(out.shape),
                                  "; a mask of the input's size [1, ", input_h_, ", ", input_w_,
                                  ", 1] is needed"));
    }
    if (out.producer < 0 || logistic_input_.count(output) == 0) {
      return Invalid(
          "the output tensor is not produced by LOGISTIC (the contracts need a probability "
          "mask whose logits they can return)");
    }
    logits_var_ = logistic_input_[output];
    return absl::OkStatus();
  }

  // --- operators ---------------------------------------------------------------------------

  absl::Status Operator(const tflite::Operator& op) {
    const auto* codes = model_->operator_codes();
    if (codes == nullptr || op.opcode_index() >= codes->size()) {
      op_name_ = "?";
      return OpError(absl::StrCat("opcode_index ", op.opcode_index(), " is out of range"));
    }
    const tflite::OperatorCode* code = codes->Get(op.opcode_index());
    // As TFLite reads it: the wider field wins (the old byte field stops at 127).
    const int32_t builtin =
        std::max<int32_t>(code->deprecated_builtin_code(), code->builtin_code());
    op_name_ = OpName(builtin);
    if (builtin == kCustom) {
      op_name_ = absl::StrCat(
          "CUSTOM ", Quote(code->custom_code() ? CommentText(code->custom_code()->str()) : ""));
    }
    if (op.large_custom_options_offset() > 1 || op.large_custom_options_size() > 0) {
      return OpError("has custom options outside the flatbuffer (unsupported)");
    }
    if (op.intermediates() && op.intermediates()->size() > 0) {
      return OpError("has intermediate tensors (unsupported)");
    }
    // Inputs: -1 is an absent optional input.
    std::vector<int> inputs, outputs;
    if (op.inputs()) {
      for (int32_t t : *op.inputs()) {
        if (t < -1 || t >= static_cast<int32_t>(values_.size())) {
          return OpError(absl::StrCat("input tensor index ", t, " is out of range"));
        }
        if (t >= 0 && !values_[static_cast<size_t>(t)].defined) {
          return OpError(absl::StrCat("input tensor ", t,
                                      " is neither a constant, the graph input nor an earlier "
                                      "operator's output"));
        }
        inputs.push_back(t);
      }
    }
    if (op.outputs()) {
      for (int32_t t : *op.outputs()) {
        if (t < 0 || t >= static_cast<int32_t>(values_.size())) {
          return OpError(absl::StrCat("output tensor index ", t, " is out of range"));
        }
        if (values_[static_cast<size_t>(t)].defined) {
          return OpError(absl::StrCat("output tensor ", t, " is already defined"));
        }
        outputs.push_back(t);
      }
    }
    if (outputs.size() != 1) {
      return OpError(absl::StrCat("has ", outputs.size(), " outputs (1 is supported)"));
    }
    if (builtin != kCustom && op.custom_options() && op.custom_options()->size() > 0) {
      return OpError("has custom options on a builtin operator");
    }
    out_index_ = outputs[0];
    Value& out = values_[static_cast<size_t>(out_index_)];
    std::string expr;
    switch (builtin) {
      case kDequantize:
        return Dequantize(op, inputs, &out);
      case kConv2d:
        SY_RETURN_IF_ERROR(Conv(op, inputs, out, /*depthwise=*/false, &expr));
        break;
      case kDepthwiseConv2d:
        SY_RETURN_IF_ERROR(Conv(op, inputs, out, /*depthwise=*/true, &expr));
        break;
      case kAveragePool2d:
        SY_RETURN_IF_ERROR(AveragePool(op, inputs, out, &expr));
        break;
      case kMean:
        SY_RETURN_IF_ERROR(Mean(op, inputs, out, &expr));
        break;
      case kAdd:
      case kMul:
        SY_RETURN_IF_ERROR(Elementwise(op, builtin, inputs, out, &expr));
        break;
      case kHardSwish:
      case kRelu:
      case kLogistic:
        SY_RETURN_IF_ERROR(Unary(op, builtin, inputs, out, &expr));
        break;
      case kResizeBilinear:
        SY_RETURN_IF_ERROR(ResizeBilinear(op, inputs, out, &expr));
        break;
      case kCustom:
        SY_RETURN_IF_ERROR(TransposeConvBias(op, code, inputs, out, &expr));
        break;
      default:
        return OpError(
            "unsupported operator (supported: CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, MEAN, "
            "ADD, MUL, HARD_SWISH, RELU, LOGISTIC, RESIZE_BILINEAR, DEQUANTIZE, CUSTOM "
            "'Convolution2DTransposeBias')");
    }
    if (builtin == kLogistic)
      logistic_input_[out_index_] = values_[static_cast<size_t>(inputs[0])].var;
    out.defined = true;
    out.producer = op_index_;
    out.var = absl::StrCat("t", out_index_);
    absl::StrAppend(&network_, "    ", out.var, " = ", expr, "  # ", op_index_, " ", op_name_,
                    "\n");
    return absl::OkStatus();
  }

  absl::Status ExpectInputs(const std::vector<int>& inputs, size_t min, size_t max) const {
    if (inputs.size() < min || inputs.size() > max) {
      return OpError(absl::StrCat("has ", inputs.size(), " inputs, expected ", min,
                                  min == max ? "" : absl::StrCat("..", max)));
    }
    return absl::OkStatus();
  }

  // An activation input (rank 4, computed or the graph input), NHWC.
  absl::StatusOr<const Value*> Activation(const std::vector<int>& inputs, size_t i) const {
    if (i >= inputs.size() || inputs[i] < 0)
      return OpError(absl::StrCat("input ", i, " is absent"));
    const Value& v = values_[static_cast<size_t>(inputs[i])];
    if (v.constant) return OpError(absl::StrCat("input ", i, " is a constant, not an activation"));
    if (v.shape.size() != 4 || v.shape[0] != 1) {
      return OpError(absl::StrCat("input ", i, " has shape ", ShapeText(v.shape),
                                  " (activations of shape [1, H, W, C] are supported)"));
    }
    return &v;
  }

  absl::StatusOr<const Value*> Constant(const std::vector<int>& inputs, size_t i,
                                        const std::vector<int64_t>& shape,
                                        torch::ScalarType dtype) const {
    if (i >= inputs.size() || inputs[i] < 0)
      return OpError(absl::StrCat("input ", i, " is absent"));
    const Value& v = values_[static_cast<size_t>(inputs[i])];
    if (!v.constant) return OpError(absl::StrCat("input ", i, " must be a constant"));
    if (v.half) {
      return OpError(absl::StrCat("constant input ", i, " is FLOAT16 without a DEQUANTIZE"));
    }
    if (v.data.scalar_type() != dtype) {
      return OpError(absl::StrCat("constant input ", i, " has the wrong type"));
    }
    if (!shape.empty() && v.shape != shape) {
      return OpError(absl::StrCat("constant input ", i, " has shape ", ShapeText(v.shape),
                                  ", expected ", ShapeText(shape)));
    }
    return &v;
  }

  absl::Status CheckOutput(const Value& out, const std::vector<int64_t>& expected) const {
    if (out.shape != expected) {
      return OpError(absl::StrCat("output tensor ", out_index_, " is declared ",
                                  ShapeText(out.shape), " but the operator computes ",
                                  ShapeText(expected)));
    }
    if (expected[1] > kMaxSide || expected[2] > kMaxSide || expected[3] > kMaxChannels ||
        expected[1] * expected[2] * expected[3] > kMaxActivationElements) {
      return OpError(absl::StrCat("output shape ", ShapeText(expected), " is over the limits (",
                                  kMaxSide, " pixels a side, ", kMaxChannels, " channels, ",
                                  kMaxActivationElements, " elements)"));
    }
    return absl::OkStatus();
  }

  std::string AddParam(const std::string& base, torch::Tensor tensor) {
    std::string stem = Identifier(base);
    std::string name = stem;
    for (int n = 2; used_names_.count(name); ++n) name = absl::StrCat(stem, "_", n);
    used_names_.insert(name);
    params_.emplace_back(name, tensor.contiguous());
    return name;
  }

  std::string TensorName(int index) const { return absl::StrCat("tensor", index); }

  absl::StatusOr<std::string> FusedActivation(int8_t activation, const std::string& x) const {
    switch (activation) {
      case tflite::ActivationFunctionType_NONE:
        return x;
      case tflite::ActivationFunctionType_RELU:
        return absl::StrCat("torch.relu(", x, ")");
      case tflite::ActivationFunctionType_RELU_N1_TO_1:
        return absl::StrCat("torch.clamp(", x, ", -1.0, 1.0)");
      case tflite::ActivationFunctionType_RELU6:
        return absl::StrCat("torch.clamp(", x, ", 0.0, 6.0)");
      case tflite::ActivationFunctionType_TANH:
        return absl::StrCat("torch.tanh(", x, ")");
      default:
        return OpError(
            absl::StrCat("fused activation ", static_cast<int>(activation), " is unsupported"));
    }
  }

  // TFLite's output size and padding (ComputePaddingHeightWidth): SAME pads so the output is
  // ceil(in / stride), the odd extra pixel going after; VALID does not pad.
  struct Padding1d {
    int64_t out = 0, before = 0, after = 0;
  };
  static Padding1d SamePadding(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                               bool same) {
    const int64_t effective = (kernel - 1) * dilation + 1;
    Padding1d p;
    if (same) {
      p.out = (in + stride - 1) / stride;
      const int64_t total = std::max<int64_t>((p.out - 1) * stride + effective - in, 0);
      p.before = total / 2;
      p.after = total - p.before;
    } else {
      p.out = in >= effective ? (in - effective + stride) / stride : 0;
    }
    return p;
  }

  static std::string Padded(const std::string& x, const Padding1d& h, const Padding1d& w) {
    if (h.before == 0 && h.after == 0 && w.before == 0 && w.after == 0) return x;
    return absl::StrCat("torch.constant_pad_nd(", x, ", [", w.before, ", ", w.after, ", ", h.before,
                        ", ", h.after, "], 0.0)");
  }

  absl::Status Dequantize(const tflite::Operator& op, const std::vector<int>& inputs, Value* out) {
    SY_RETURN_IF_ERROR(ExpectInputs(inputs, 1, 1));
    if (op.builtin_options_type() != tflite::BuiltinOptions_NONE &&
        op.builtin_options_type() != tflite::BuiltinOptions_DequantizeOptions) {
      return OpError("has options of another operator");
    }
    const Value& in = values_[static_cast<size_t>(inputs[0])];
    if (!in.constant || !in.half) {
      return OpError("only DEQUANTIZE of a FLOAT16 constant is supported (folded at conversion)");
    }
    if (in.shape != out->shape) {
      return OpError(absl::StrCat("output tensor ", out_index_, " is declared ",
                                  ShapeText(out->shape), " but the input is ",
                                  ShapeText(in.shape)));
    }
    // The constant was widened to float32 when read (exactly); the output is that constant.
    out->data = in.data;
    out->constant = true;
    out->defined = true;
    out->producer = op_index_;
    return absl::OkStatus();
  }

  absl::Status Conv(const tflite::Operator& op, const std::vector<int>& inputs, const Value& out,
                    bool depthwise, std::string* expr) {
    SY_RETURN_IF_ERROR(ExpectInputs(inputs, 2, 3));
    auto x = Activation(inputs, 0);
    if (!x.ok()) return x.status();
    const int64_t h = (*x)->shape[1], w = (*x)->shape[2], c = (*x)->shape[3];
    auto weight = Constant(inputs, 1, {}, torch::kFloat32);
    if (!weight.ok()) return weight.status();
    const std::vector<int64_t>& ws = (*weight)->shape;
    if (ws.size() != 4) return OpError(absl::StrCat("weights have shape ", ShapeText(ws)));
    int64_t out_c, kh = ws[1], kw = ws[2];
    if (depthwise) {
      out_c = ws[3];
      if (ws[0] != 1 || out_c % c != 0) {
        return OpError(absl::StrCat("depthwise weights ", ShapeText(ws),
                                    " are not [1, KH, KW, a multiple of the ", c,
                                    " input channels]"));
      }
    } else {
      out_c = ws[0];
      if (ws[3] != c) {
        return OpError(
            absl::StrCat("weights ", ShapeText(ws), " do not take the ", c, " input channels"));
      }
    }
    if (kh > kMaxKernel || kw > kMaxKernel) {
      return OpError(absl::StrCat("kernel ", kh, "x", kw, " is over the limit of ", kMaxKernel));
    }
    int8_t padding, activation;
    int64_t sh, sw, dh, dw;
    if (depthwise) {
      if (op.builtin_options_type() != tflite::BuiltinOptions_DepthwiseConv2DOptions) {
        return OpError("has no DepthwiseConv2DOptions");
      }
      const auto* o = op.builtin_options_as_DepthwiseConv2DOptions();
      padding = o->padding();
      activation = o->fused_activation_function();
      sh = o->stride_h();
      sw = o->stride_w();
      dh = o->dilation_h_factor();
      dw = o->dilation_w_factor();
      // depth_multiplier is redundant (TFLite itself ignores it in new versions); when given it
      // must agree with the weights.
      if (o->depth_multiplier() != 0 && o->depth_multiplier() != out_c / c) {
        return OpError(absl::StrCat("depth_multiplier ", o->depth_multiplier(),
                                    " disagrees with the weights ", ShapeText(ws)));
      }
    } else {
      if (op.builtin_options_type() != tflite::BuiltinOptions_Conv2DOptions) {
        return OpError("has no Conv2DOptions");
      }
      const auto* o = op.builtin_options_as_Conv2DOptions();
      padding = o->padding();
      activation = o->fused_activation_function();
      sh = o->stride_h();
      sw = o->stride_w();
      dh = o->dilation_h_factor();
      dw = o->dilation_w_factor();
    }
    if (sh < 1 || sw < 1 || sh > kMaxStride || sw > kMaxStride) {
      return OpError(absl::StrCat("stride ", sh, "x", sw, " is outside 1..", kMaxStride));
    }
    if (dh < 1 || dw < 1 || dh > kMaxDilation || dw > kMaxDilation) {
      return OpError(absl::StrCat("dilation ", dh, "x", dw, " is outside 1..", kMaxDilation));
    }
    if (padding != tflite::Padding_SAME && padding != tflite::Padding_VALID) {
      return OpError(
          absl::StrCat("padding ", static_cast<int>(padding), " is neither SAME nor VALID"));
    }
    const bool same = padding == tflite::Padding_SAME;
    const Padding1d ph = SamePadding(h, kh, sh, dh, same), pw = SamePadding(w, kw, sw, dw, same);
    if (ph.out < 1 || pw.out < 1) return OpError("the kernel is larger than the input");
    SY_RETURN_IF_ERROR(CheckOutput(out, {1, ph.out, pw.out, out_c}));
    std::string bias = "None";
    if (inputs.size() == 3 && inputs[2] >= 0) {
      auto b = Constant(inputs, 2, {out_c}, torch::kFloat32);
      if (!b.ok()) return b.status();
      bias = "self." + AddParam(TensorName(inputs[2]), (*b)->data);
    }
    // TFLite OHWI (depthwise: 1HW(C*m)) to torch's OIHW (depthwise: (C*m)1HW, groups C).
    torch::Tensor wt =
        depthwise ? (*weight)->data.permute({3, 0, 1, 2}) : (*weight)->data.permute({0, 3, 1, 2});
    const std::string wname = AddParam(TensorName(inputs[1]), wt);
    const std::string conv = absl::StrCat("torch.conv2d(", Padded((*x)->var, ph, pw), ", self.",
                                          wname, ", ", bias, ", [", sh, ", ", sw, "], [0, 0], [",
                                          dh, ", ", dw, "], ", depthwise ? c : 1, ")");
    auto act = FusedActivation(activation, conv);
    if (!act.ok()) return act.status();
    *expr = *act;
    return absl::OkStatus();
  }

  absl::Status AveragePool(const tflite::Operator& op, const std::vector<int>& inputs,
                           const Value& out, std::string* expr) {
    SY_RETURN_IF_ERROR(ExpectInputs(inputs, 1, 1));
    auto x = Activation(inputs, 0);
    if (!x.ok()) return x.status();
    if (op.builtin_options_type() != tflite::BuiltinOptions_Pool2DOptions) {
      return OpError("has no Pool2DOptions");
    }
    const auto* o = op.builtin_options_as_Pool2DOptions();
    const int64_t fh = o->filter_height(), fw = o->filter_width(), sh = o->stride_h(),
                  sw = o->stride_w();
    if (fh < 1 || fw < 1 || fh > kMaxSide || fw > kMaxSide) {
      return OpError(absl::StrCat("filter ", fh, "x", fw, " is outside 1..", kMaxSide));
    }
    if (sh < 1 || sw < 1 || sh > kMaxSide || sw > kMaxSide) {
      return OpError(absl::StrCat("stride ", sh, "x", sw, " is outside 1..", kMaxSide));
    }
    if (o->padding() != tflite::Padding_SAME && o->padding() != tflite::Padding_VALID) {
      return OpError(
          absl::StrCat("padding ", static_cast<int>(o->padding()), " is neither SAME nor VALID"));
    }
    const bool same = o->padding() == tflite::Padding_SAME;
    const Padding1d ph = SamePadding((*x)->shape[1], fh, sh, 1, same),
                    pw = SamePadding((*x)->shape[2], fw, sw, 1, same);
    if (ph.out < 1 || pw.out < 1) return OpError("the filter is larger than the input");
    SY_RETURN_IF_ERROR(CheckOutput(out, {1, ph.out, pw.out, (*x)->shape[3]}));
    const std::string args = absl::StrCat("[", fh, ", ", fw, "], [", sh, ", ", sw, "], [0, 0]");
    std::string pooled =
        absl::StrCat("torch.avg_pool2d(", Padded((*x)->var, ph, pw), ", ", args, ")");
    if (Padded("p", ph, pw) != "p") {
      // TFLite averages only the pixels inside the image: divide by the padded ones' average.
      pooled = absl::StrCat(
          "(", pooled, " / torch.avg_pool2d(",
          Padded(absl::StrCat("torch.ones_like(", (*x)->var, ".narrow(1, 0, 1))"), ph, pw), ", ",
          args, "))");
    }
    auto act = FusedActivation(o->fused_activation_function(), pooled);
    if (!act.ok()) return act.status();
    *expr = *act;
    return absl::OkStatus();
  }

  absl::Status Mean(const tflite::Operator& op, const std::vector<int>& inputs, const Value& out,
                    std::string* expr) {
    SY_RETURN_IF_ERROR(ExpectInputs(inputs, 2, 2));
    auto x = Activation(inputs, 0);
    if (!x.ok()) return x.status();
    auto axes = Constant(inputs, 1, {}, torch::kInt32);
    if (!axes.ok()) return axes.status();
    if (op.builtin_options_type() != tflite::BuiltinOptions_ReducerOptions ||
        !op.builtin_options_as_ReducerOptions()->keep_dims()) {
      return OpError("only keep_dims=true is supported (activations stay [1, H, W, C])");
    }
    if ((*axes)->data.numel() < 1 || (*axes)->data.numel() > 2) {
      return OpError("reduces over other than 1 or 2 axes");
    }
    std::vector<int64_t> shape = (*x)->shape;
    std::set<int64_t> dims;  // NCHW
    for (int64_t i = 0; i < (*axes)->data.numel(); ++i) {
      int64_t axis = (*axes)->data.data_ptr<int32_t>()[i];
      if (axis < 0) axis += 4;
      if (axis != 1 && axis != 2) {
        return OpError(absl::StrCat("axis ", (*axes)->data.data_ptr<int32_t>()[i],
                                    " is unsupported (only H and W, 1 and 2)"));
      }
      shape[static_cast<size_t>(axis)] = 1;
      dims.insert(axis + 1);
    }
    SY_RETURN_IF_ERROR(CheckOutput(out, shape));
    *expr = absl::StrCat("torch.mean(", (*x)->var, ", [", absl::StrJoin(dims, ", "), "], True)");
    return absl::OkStatus();
  }

  absl::Status Elementwise(const tflite::Operator& op, int32_t builtin,
                           const std::vector<int>& inputs, const Value& out, std::string* expr) {
    SY_RETURN_IF_ERROR(ExpectInputs(inputs, 2, 2));
    int8_t activation = tflite::ActivationFunctionType_NONE;
    if (builtin == kAdd) {
      if (op.builtin_options_type() == tflite::BuiltinOptions_AddOptions) {
        activation = op.builtin_options_as_AddOptions()->fused_activation_function();
      } else if (op.builtin_options_type() != tflite::BuiltinOptions_NONE) {
        return OpError("has options of another operator");
      }
    } else {
      if (op.builtin_options_type() == tflite::BuiltinOptions_MulOptions) {
        activation = op.builtin_options_as_MulOptions()->fused_activation_function();
      } else if (op.builtin_options_type() != tflite::BuiltinOptions_NONE) {
        return OpError("has options of another operator");
      }
    }
    std::string operands[2];
    std::vector<int64_t> shapes[2];
    int activations = 0;
    for (size_t i = 0; i < 2; ++i) {
      if (inputs[i] < 0) return OpError(absl::StrCat("input ", i, " is absent"));
      const Value& v = values_[static_cast<size_t>(inputs[i])];
      std::vector<int64_t> s = v.shape;
      while (s.size() < 4) s.insert(s.begin(), 1);  // NHWC broadcasting aligns the last axis
      shapes[i] = s;
      if (v.constant) {
        if (v.data.scalar_type() != torch::kFloat32 || v.half) {
          return OpError(absl::StrCat("constant input ", i, " is not FLOAT32"));
        }
        operands[i] =
            "self." + AddParam(TensorName(inputs[i]), v.data.reshape(s).permute({0, 3, 1, 2}));
      } else {
        auto a = Activation(inputs, i);
        if (!a.ok()) return a.status();
        operands[i] = v.var;
        ++activations;
      }
    }
    if (activations == 0) return OpError("both inputs are constants (unsupported)");
    std::vector<int64_t> shape(4);
    for (size_t d = 0; d < 4; ++d) {
      const int64_t a = shapes[0][d], b = shapes[1][d];
      if (a != b && a != 1 && b != 1) {
        return OpError(absl::StrCat("input shapes ", ShapeText(shapes[0]), " and ",
                                    ShapeText(shapes[1]), " do not broadcast"));
      }
      shape[d] = std::max(a, b);
    }
    SY_RETURN_IF_ERROR(CheckOutput(out, shape));
    auto act = FusedActivation(
        activation,
        absl::StrCat("(", operands[0], builtin == kAdd ? " + " : " * ", operands[1], ")"));
    if (!act.ok()) return act.status();
    *expr = *act;
    return absl::OkStatus();
  }

  absl::Status Unary(const tflite::Operator& op, int32_t builtin, const std::vector<int>& inputs,
                     const Value& out, std::string* expr) {
    SY_RETURN_IF_ERROR(ExpectInputs(inputs, 1, 1));
    auto x = Activation(inputs, 0);
    if (!x.ok()) return x.status();
    if (op.builtin_options_type() != tflite::BuiltinOptions_NONE &&
        !(builtin == kHardSwish &&
          op.builtin_options_type() == tflite::BuiltinOptions_HardSwishOptions)) {
      return OpError("has options of another operator");
    }
    SY_RETURN_IF_ERROR(CheckOutput(out, (*x)->shape));
    const std::string& v = (*x)->var;
    if (builtin == kHardSwish) {
      // TFLite: x * relu6(x + 3) / 6
      *expr = absl::StrCat(v, " * torch.clamp(", v, " + 3.0, 0.0, 6.0) / 6.0");
    } else if (builtin == kRelu) {
      *expr = absl::StrCat("torch.relu(", v, ")");
    } else {
      *expr = absl::StrCat("torch.sigmoid(", v, ")");
    }
    return absl::OkStatus();
  }

  absl::Status ResizeBilinear(const tflite::Operator& op, const std::vector<int>& inputs,
                              const Value& out, std::string* expr) {
    SY_RETURN_IF_ERROR(ExpectInputs(inputs, 2, 2));
    auto x = Activation(inputs, 0);
    if (!x.ok()) return x.status();
    auto size = Constant(inputs, 1, {2}, torch::kInt32);
    if (!size.ok()) return size.status();
    const int64_t oh = (*size)->data.data_ptr<int32_t>()[0];
    const int64_t ow = (*size)->data.data_ptr<int32_t>()[1];
    if (oh < 1 || ow < 1 || oh > kMaxSide || ow > kMaxSide) {
      return OpError(absl::StrCat("size ", oh, "x", ow, " is outside 1..", kMaxSide));
    }
    bool align_corners = false, half_pixel = false;
    if (op.builtin_options_type() == tflite::BuiltinOptions_ResizeBilinearOptions) {
      align_corners = op.builtin_options_as_ResizeBilinearOptions()->align_corners();
      half_pixel = op.builtin_options_as_ResizeBilinearOptions()->half_pixel_centers();
    } else if (op.builtin_options_type() != tflite::BuiltinOptions_NONE) {
      return OpError("has options of another operator");
    }
    if (align_corners == half_pixel) {
      // Both is invalid in TFLite; neither is TF1's legacy sampling (source = dst * in / out),
      // which torch has no mode for.
      return OpError(absl::StrCat("align_corners=", align_corners ? "true" : "false",
                                  " half_pixel_centers=", half_pixel ? "true" : "false",
                                  " is unsupported (exactly one must be true)"));
    }
    SY_RETURN_IF_ERROR(CheckOutput(out, {1, oh, ow, (*x)->shape[3]}));
    // half_pixel_centers: source = (dst + 0.5) * in / out - 0.5, clamped to the image: what
    // torch's bilinear does with align_corners=False.
    *expr = absl::StrCat("torch.upsample_bilinear2d(", (*x)->var, ", [", oh, ", ", ow, "], ",
                         align_corners ? "True" : "False", ", None, None)");
    return absl::OkStatus();
  }

  // MediaPipe's Convolution2DTransposeBias (mediapipe/util/tflite/operations/
  // transpose_conv_bias.cc): a transposed convolution with weights [O, KH, KW, I] and a bias,
  // its options TfLiteTransposeConvParams {padding (1 SAME, 2 VALID), stride_w, stride_h} as raw
  // int32s.
  absl::Status TransposeConvBias(const tflite::Operator& op, const tflite::OperatorCode* code,
                                 const std::vector<int>& inputs, const Value& out,
                                 std::string* expr) {
    if (code->custom_code() == nullptr ||
        code->custom_code()->str() != "Convolution2DTransposeBias") {
      return OpError("unsupported custom operator (only 'Convolution2DTransposeBias')");
    }
    SY_RETURN_IF_ERROR(ExpectInputs(inputs, 3, 3));
    auto x = Activation(inputs, 0);
    if (!x.ok()) return x.status();
    auto weight = Constant(inputs, 1, {}, torch::kFloat32);
    if (!weight.ok()) return weight.status();
    const std::vector<int64_t>& ws = (*weight)->shape;
    const int64_t h = (*x)->shape[1], w = (*x)->shape[2], c = (*x)->shape[3];
    if (ws.size() != 4 || ws[3] != c) {
      return OpError(absl::StrCat("weights ", ShapeText(ws), " are not [O, KH, KW, ", c, "]"));
    }
    const int64_t out_c = ws[0], kh = ws[1], kw = ws[2];
    if (kh > kMaxKernel || kw > kMaxKernel) {
      return OpError(absl::StrCat("kernel ", kh, "x", kw, " is over the limit of ", kMaxKernel));
    }
    auto bias = Constant(inputs, 2, {out_c}, torch::kFloat32);
    if (!bias.ok()) return bias.status();
    if (op.custom_options() == nullptr || op.custom_options()->size() != 12) {
      return OpError(absl::StrCat("custom options are ",
                                  op.custom_options() ? op.custom_options()->size() : 0,
                                  " bytes; 12 (padding, stride_w, stride_h) are expected"));
    }
    int32_t params[3];
    std::memcpy(params, op.custom_options()->data(), 12);
    const int32_t padding = params[0], sw = params[1], sh = params[2];
    if (padding != 1 && padding != 2) {
      return OpError(absl::StrCat("padding ", padding, " is neither 1 (SAME) nor 2 (VALID)"));
    }
    if (sh < 1 || sw < 1 || sh > kMaxStride || sw > kMaxStride) {
      return OpError(absl::StrCat("stride ", sh, "x", sw, " is outside 1..", kMaxStride));
    }
    const bool same = padding == 1;
    // The transposed output: in * stride (SAME) or (in - 1) * stride + kernel (VALID).
    const int64_t oh = same ? h * sh : (h - 1) * sh + kh;
    const int64_t ow = same ? w * sw : (w - 1) * sw + kw;
    SY_RETURN_IF_ERROR(CheckOutput(out, {1, oh, ow, out_c}));
    // The padding TFLite computes for the forward convolution that this one transposes, from the
    // output size (TRANSPOSE_CONV's way). MediaPipe's op computes it from the input size; where
    // the two disagree the model is refused rather than guessed.
    const Padding1d from_out_h = SamePadding(oh, kh, sh, 1, same);
    const Padding1d from_out_w = SamePadding(ow, kw, sw, 1, same);
    const Padding1d from_in_h = SamePadding(h, kh, sh, 1, same);
    const Padding1d from_in_w = SamePadding(w, kw, sw, 1, same);
    if (from_out_h.before != from_in_h.before || from_out_w.before != from_in_w.before) {
      return OpError("its padding is ambiguous (computed from the input or the output size)");
    }
    const int64_t full_h = (h - 1) * sh + kh, full_w = (w - 1) * sw + kw;
    if (from_out_h.before + oh > full_h || from_out_w.before + ow > full_w) {
      return OpError("its output reaches past the transposed convolution (unsupported)");
    }
    // [O, KH, KW, I] -> torch's [I, O, KH, KW]
    const std::string wname =
        AddParam(TensorName(inputs[1]), (*weight)->data.permute({3, 0, 1, 2}));
    const std::string bname = AddParam(TensorName(inputs[2]), (*bias)->data);
    *expr = absl::StrCat("torch.conv_transpose2d(", (*x)->var, ", self.", wname, ", self.", bname,
                         ", [", sh, ", ", sw, "], [0, 0], [0, 0], 1, [1, 1])");
    if (from_out_h.before != 0 || oh != full_h) {
      absl::StrAppend(expr, ".narrow(2, ", from_out_h.before, ", ", oh, ")");
    }
    if (from_out_w.before != 0 || ow != full_w) {
      absl::StrAppend(expr, ".narrow(3, ", from_out_w.before, ", ", ow, ")");
    }
    return absl::OkStatus();
  }

  // --- module -----------------------------------------------------------------------------

  absl::StatusOr<torch::jit::Module> BuildModule() {
    const std::string size = absl::StrCat("[", input_h_, ", ", input_w_, "]");
    std::string source = absl::StrCat(
        "def network(self, x: Tensor) -> Tensor:\n", network_, "    return ", logits_var_, "\n\n",
        // The 0..255 image, resized to the model's input as MediaPipe's graph does
        // (bilinear, aspect not kept), on 0..1; logits resized back to H x W.
        "def person_logits(self, image: Tensor) -> Tuple[Tensor, Tensor]:\n",
        "    x = torch.upsample_bilinear2d(image * ", FloatLiteral(1.0 / 255.0), ", ", size,
        ", False, None, None)\n", "    low = self.network(x)\n",
        "    full = torch.upsample_bilinear2d(low, [image.size(2), image.size(3)], "
        "False, None, None)\n",
        "    return full, low\n\n");
    if (options_.contract == TfliteContract::kSegmentAnything2) {
      absl::StrAppend(
          &source,
          "def forward(self, image: Tensor, point_coords: Tensor, point_labels: Tensor, "
          "box: Tensor, mask_input: Tensor, multimask_output: bool, normalize_coords: bool) "
          "-> Tuple[Tensor, Tensor, Tensor]:\n",
          "    # a person mask: the prompts are ignored (this is not SAM 2)\n",
          "    full, low = self.person_logits(image)\n",
          "    score = torch.mean(torch.abs(torch.sigmoid(low) * 2.0 - 1.0)).reshape([1])\n",
          "    return full[0], score, low[0]\n");
    } else {
      const int64_t taps = 2 * kTfliteBlurRadius + 1;
      std::vector<float> kernel(static_cast<size_t>(taps));
      double sum = 0;
      for (int64_t i = 0; i < taps; ++i) {
        const double d = static_cast<double>(i - kTfliteBlurRadius);
        sum += std::exp(-d * d / (2.0 * kTfliteBlurSigma * kTfliteBlurSigma));
      }
      for (int64_t i = 0; i < taps; ++i) {
        const double d = static_cast<double>(i - kTfliteBlurRadius);
        kernel[static_cast<size_t>(i)] = static_cast<float>(
            std::exp(-d * d / (2.0 * kTfliteBlurSigma * kTfliteBlurSigma)) / sum);
      }
      torch::Tensor k = torch::from_blob(kernel.data(), {taps}, torch::kFloat32).clone();
      params_.emplace_back("blur_v", k.reshape({1, 1, taps, 1}).repeat({3, 1, 1, 1}));
      params_.emplace_back("blur_h", k.reshape({1, 1, 1, taps}).repeat({3, 1, 1, 1}));
      const std::string r = absl::StrCat(kTfliteBlurRadius);
      absl::StrAppend(
          &source, "def blur(self, f: Tensor) -> Tensor:\n",
          "    # separable Gaussian, edge pixels repeated\n",
          "    f = torch.cat([f.narrow(2, 0, 1).expand(-1, -1, ", r, ", -1), f, ",
          "f.narrow(2, f.size(2) - 1, 1).expand(-1, -1, ", r, ", -1)], 2)\n",
          "    f = torch.conv2d(f, self.blur_v, None, [1, 1], [0, 0], [1, 1], 3)\n",
          "    f = torch.cat([f.narrow(3, 0, 1).expand(-1, -1, -1, ", r, "), f, ",
          "f.narrow(3, f.size(3) - 1, 1).expand(-1, -1, -1, ", r, ")], 3)\n",
          "    return torch.conv2d(f, self.blur_h, None, [1, 1], [0, 0], [1, 1], 3)\n\n",
          "def forward(self, frame: Tensor, params: str) -> Tensor:\n",
          "    # params are ignored\n", "    full, low = self.person_logits(frame)\n",
          "    p = torch.sigmoid(full)\n", "    y = frame * p + self.blur(frame) * (1.0 - p)\n",
          "    # live-video-to-video wants even sizes\n",
          "    return y.narrow(2, 0, y.size(2) - y.size(2) % 2)"
          ".narrow(3, 0, y.size(3) - y.size(3) % 2)\n");
    }
    return convert::BuildModule("TfliteModel", params_, 1, source, name_);
  }

  absl::string_view data_;
  std::string name_;
  TfliteConvertOptions options_;
  const tflite::Model* model_ = nullptr;
  std::vector<Value> values_;
  std::map<int, std::string> logistic_input_;  // LOGISTIC output tensor -> its input's variable
  std::set<std::string> used_names_ = {"forward", "network", "person_logits", "blur",
                                       "blur_v",  "blur_h",  "training",      "scale"};
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::string network_;
  std::string logits_var_;
  int64_t input_h_ = 0, input_w_ = 0;
  int op_index_ = -1;
  std::string op_name_;
  int out_index_ = -1;
};

}  // namespace

absl::StatusOr<torch::jit::Module> ConvertTfliteBuffer(absl::string_view data,
                                                       const std::string& name,
                                                       const TfliteConvertOptions& options) {
  return convert::NoExceptions(name, [&]() -> absl::StatusOr<torch::jit::Module> {
    // flatbuffers reads scalars in place (reinterpret_cast), so the buffer must start aligned
    // as its builder wrote it: a view at another address is copied to fresh memory first.
    std::string copy;
    if (reinterpret_cast<uintptr_t>(data.data()) % 16 != 0) {
      copy.assign(data.data(), data.size());
      data = copy;
    }
    return Converter(data, name, options).Run();
  });
}

absl::StatusOr<torch::jit::Module> ConvertTfliteModel(const std::filesystem::path& path,
                                                      const TfliteConvertOptions& options) {
  auto bytes = convert::ReadFileLimited(path, "TFLite model", kMaxTfliteBytes);
  if (!bytes.ok()) return bytes.status();
  return ConvertTfliteBuffer(*bytes, path.string(), options);
}

}  // namespace switchyard::runner
