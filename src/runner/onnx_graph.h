// Reading an ONNX model (protobuf, Debian's libonnx-dev classes) for the ONNX converter: tensors
// (initializers, Constant values) into libtorch tensors under element-count limits, node
// attributes with type checks, and errors that name the node and its operator.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>
#include <torch/script.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::runner::onnx_graph {

// Elements of one initializer or Constant tensor (1 << 28 float32 values is 1 GiB, the file cap).
inline constexpr int64_t kMaxTensorElements = int64_t{1} << 28;
inline constexpr int kMaxTensorRank = 8;

// "<model>: node 'name' (Op): <reason>" as INVALID_ARGUMENT.
absl::Status NodeError(const std::filesystem::path& model, const onnx::NodeProto& node,
                       absl::string_view reason);

// The tensor a TensorProto holds (FLOAT, INT64, INT32 or DOUBLE->float64; raw_data or the typed
// fields). The element count the dims give is checked against the limit and against the bytes or
// values present before anything is allocated. `what` names it in errors.
absl::StatusOr<torch::Tensor> TensorFromProto(const onnx::TensorProto& proto,
                                              absl::string_view what);

// The name of an ONNX element type, for messages ("FLOAT", "INT64", "type 42").
std::string ElemTypeName(int32_t elem_type);

// Typed attribute access for one node. Every attribute the node carries must be in the list given
// to Only(): an attribute the converter does not read would silently change the meaning.
class Attributes {
 public:
  Attributes(const std::filesystem::path& model, const onnx::NodeProto& node)
      : model_(model), node_(node) {}

  absl::Status Only(std::initializer_list<absl::string_view> allowed) const;
  bool Has(absl::string_view name) const { return Find(name) != nullptr; }

  absl::StatusOr<int64_t> Int(absl::string_view name, int64_t fallback) const;
  absl::StatusOr<double> Float(absl::string_view name, double fallback) const;
  absl::StatusOr<std::string> String(absl::string_view name, absl::string_view fallback) const;
  absl::StatusOr<std::vector<int64_t>> Ints(absl::string_view name,
                                            std::vector<int64_t> fallback) const;
  absl::StatusOr<std::vector<float>> Floats(absl::string_view name) const;
  // The tensor of attribute `name` (Constant's `value`); NOT an error when absent: nullptr.
  const onnx::TensorProto* Tensor(absl::string_view name) const;

  absl::Status Error(absl::string_view reason) const { return NodeError(model_, node_, reason); }

 private:
  const onnx::AttributeProto* Find(absl::string_view name) const;
  absl::Status WrongType(const onnx::AttributeProto& attr, absl::string_view expected) const;

  const std::filesystem::path& model_;
  const onnx::NodeProto& node_;
};

}  // namespace switchyard::runner::onnx_graph
