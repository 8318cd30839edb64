// Reading a .tflite file for the converter: verification, the subgraph's tensors and constants,
// and the names errors use (tflite_model.h). The operators are translated in tflite_converter.cc.
#include "runner/tflite_model.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "runner/converter_support.h"
#include "runner/tflite_converter.h"

namespace switchyard::runner::tflite_model {
namespace {

using convert::CommentText;
using convert::Quote;

absl::Status ReadTensor(const tflite::Model& model, const std::string& name,
                        const tflite::SubGraph& graph, int index, Value* value) {
  const tflite::Tensor* t = graph.tensors()->Get(index);
  const std::string tname = t->name() ? CommentText(t->name()->str()) : "";
  auto bad = [&](const std::string& reason) {
    return Invalid(name, absl::StrCat("tensor ", index, " ", Quote(tname), ": ", reason));
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
  const auto* buffers = model.buffers();
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
        return bad(absl::StrCat("has shape ", ShapeText(value->shape), " of ", TypeName(t->type()),
                                " (", count * element, " bytes) but its buffer ", buffer_index,
                                " has ", bytes, " bytes"));
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

}  // namespace

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

absl::Status Invalid(absl::string_view name, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", reason));
}

absl::StatusOr<const tflite::Model*> VerifyModel(absl::string_view data, const std::string& name) {
  if (data.size() < 8) {
    return Invalid(name, absl::StrCat("is ", data.size(), " bytes, too short for a TFLite model"));
  }
  if (!flatbuffers::BufferHasIdentifier(data.data(), tflite::ModelIdentifier())) {
    return Invalid(name, "is not a TFLite model (no \"TFL3\" file identifier at byte 4)");
  }
  // The Verifier checks every offset, vector, string and union inside the buffer against its
  // end, bounded in depth and table count, so nothing read below can point outside it.
  flatbuffers::Verifier verifier(reinterpret_cast<const uint8_t*>(data.data()), data.size(),
                                 /*max_depth=*/64, /*max_tables=*/1000000);
  if (!tflite::VerifyModelBuffer(verifier)) {
    return Invalid(
        name,
        "fails flatbuffer verification (truncated or corrupt: an offset, vector or string "
        "points outside the file)");
  }
  return tflite::GetModel(data.data());
}

absl::StatusOr<Graph> ReadGraph(const tflite::Model& model, const std::string& name) {
  if (model.subgraphs() == nullptr || model.subgraphs()->size() != 1) {
    return Invalid(name, absl::StrCat("has ", model.subgraphs() ? model.subgraphs()->size() : 0,
                                      " subgraphs (exactly 1 is supported)"));
  }
  const tflite::SubGraph& graph = *model.subgraphs()->Get(0);
  if (graph.tensors() == nullptr || graph.tensors()->size() == 0) {
    return Invalid(name, "the subgraph has no tensors");
  }
  if (graph.tensors()->size() > kMaxTfliteTensors) {
    return Invalid(name, absl::StrCat("has ", graph.tensors()->size(),
                                      " tensors, more than the limit of ", kMaxTfliteTensors));
  }
  if (graph.operators() == nullptr || graph.operators()->size() == 0) {
    return Invalid(name, "the subgraph has no operators");
  }
  if (graph.operators()->size() > kMaxTfliteOperators) {
    return Invalid(name, absl::StrCat("has ", graph.operators()->size(),
                                      " operators, more than the limit of ", kMaxTfliteOperators));
  }
  Graph result;
  result.subgraph = &graph;
  std::vector<Value>& values = result.values;
  values.resize(graph.tensors()->size());
  for (uint32_t i = 0; i < graph.tensors()->size(); ++i) {
    SY_RETURN_IF_ERROR(ReadTensor(model, name, graph, static_cast<int>(i), &values[i]));
  }
  if (graph.inputs() == nullptr || graph.inputs()->size() != 1 || graph.outputs() == nullptr ||
      graph.outputs()->size() != 1) {
    return Invalid(name, "the subgraph must have exactly one input and one output tensor");
  }
  const int input = graph.inputs()->Get(0);
  const int output = graph.outputs()->Get(0);
  if (input < 0 || input >= static_cast<int>(values.size()) || output < 0 ||
      output >= static_cast<int>(values.size())) {
    return Invalid(name, "the subgraph's input or output tensor index is out of range");
  }
  Value& in = values[static_cast<size_t>(input)];
  if (in.constant || in.shape.size() != 4 || in.shape[0] != 1 || in.shape[3] != 3 ||
      in.shape[1] > kMaxSide || in.shape[2] > kMaxSide) {
    return Invalid(name, absl::StrCat("the input tensor has shape ", ShapeText(in.shape),
                                      "; [1, H, W, 3] (H, W <= ", kMaxSide, ") is supported"));
  }
  in.defined = true;
  result.input = input;
  result.output = output;
  result.input_h = in.shape[1];
  result.input_w = in.shape[2];
  return result;
}

}  // namespace switchyard::runner::tflite_model
