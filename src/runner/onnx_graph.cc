#include "runner/onnx_graph.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runner/converter_support.h"

namespace switchyard::runner::onnx_graph {

using convert::CommentText;
using convert::Quote;

absl::Status NodeError(const std::filesystem::path& model, const onnx::NodeProto& node,
                       absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(model.string(), ": node ",
                                                 Quote(CommentText(node.name())), " (",
                                                 CommentText(node.op_type()), "): ", reason));
}

std::string ElemTypeName(int32_t elem_type) {
  if (onnx::TensorProto_DataType_IsValid(elem_type)) {
    return onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(elem_type));
  }
  return absl::StrCat("type ", elem_type);
}

namespace {

// Copies `count` little-endian values of `bytes` (which may be unaligned) into a new tensor.
torch::Tensor FromRaw(const std::string& bytes, int64_t count, torch::ScalarType type) {
  torch::Tensor t = torch::empty({count}, torch::TensorOptions().dtype(type));
  if (count > 0) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

template <typename Field>
torch::Tensor FromField(const Field& values, int64_t count, torch::ScalarType type) {
  torch::Tensor t = torch::empty({count}, torch::TensorOptions().dtype(type));
  if (type == torch::kFloat32) {
    float* out = t.data_ptr<float>();
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(values.Get(i));
  } else if (type == torch::kInt64) {
    int64_t* out = t.data_ptr<int64_t>();
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int64_t>(values.Get(i));
  } else if (type == torch::kInt32) {
    int32_t* out = t.data_ptr<int32_t>();
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(values.Get(i));
  } else {
    double* out = t.data_ptr<double>();
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<double>(values.Get(i));
  }
  return t;
}

}  // namespace

absl::StatusOr<torch::Tensor> TensorFromProto(const onnx::TensorProto& proto,
                                              absl::string_view what) {
  auto error = [&](absl::string_view reason) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", reason));
  };
  if (proto.data_location() == onnx::TensorProto::EXTERNAL || proto.external_data_size() > 0) {
    return error("external data is unsupported (the model must be one self-contained file)");
  }
  if (proto.has_segment()) return error("segmented tensors are unsupported");
  if (proto.dims_size() > kMaxTensorRank) {
    return error(
        absl::StrCat("rank ", proto.dims_size(), " is above the limit of ", kMaxTensorRank));
  }
  std::vector<int64_t> dims;
  int64_t count = 1;
  for (int64_t d : proto.dims()) {
    if (d < 0) return error(absl::StrCat("negative dimension ", d));
    // Checked per step so the product cannot overflow.
    if (d > 0 && count > kMaxTensorElements / d) {
      return error(absl::StrCat("more than the limit of ", kMaxTensorElements, " elements"));
    }
    count *= d;
    dims.push_back(d);
  }
  if (count > kMaxTensorElements) {
    return error(absl::StrCat("more than the limit of ", kMaxTensorElements, " elements"));
  }
  torch::ScalarType type;
  int64_t width;
  int64_t field_size;
  switch (proto.data_type()) {
    case onnx::TensorProto::FLOAT:
      type = torch::kFloat32, width = 4, field_size = proto.float_data_size();
      break;
    case onnx::TensorProto::INT64:
      type = torch::kInt64, width = 8, field_size = proto.int64_data_size();
      break;
    case onnx::TensorProto::INT32:
      type = torch::kInt32, width = 4, field_size = proto.int32_data_size();
      break;
    case onnx::TensorProto::DOUBLE:
      type = torch::kFloat64, width = 8, field_size = proto.double_data_size();
      break;
    default:
      return error(absl::StrCat("data type ", ElemTypeName(proto.data_type()),
                                " is unsupported (only FLOAT, INT64, INT32, DOUBLE)"));
  }
  torch::Tensor flat;
  if (proto.has_raw_data()) {
    if (field_size != 0) return error("has both raw_data and typed data");
    const int64_t bytes = static_cast<int64_t>(proto.raw_data().size());
    if (bytes != count * width) {
      return error(absl::StrCat("dims give ", count, " elements (", count * width,
                                " bytes) but raw_data has ", bytes, " bytes"));
    }
    flat = FromRaw(proto.raw_data(), count, type);
  } else {
    if (field_size != count) {
      return error(
          absl::StrCat("dims give ", count, " elements but the data has ", field_size, " values"));
    }
    switch (proto.data_type()) {
      case onnx::TensorProto::FLOAT:
        flat = FromField(proto.float_data(), count, type);
        break;
      case onnx::TensorProto::INT64:
        flat = FromField(proto.int64_data(), count, type);
        break;
      case onnx::TensorProto::INT32:
        flat = FromField(proto.int32_data(), count, type);
        break;
      default:
        flat = FromField(proto.double_data(), count, type);
        break;
    }
  }
  return flat.reshape(dims);
}

const onnx::AttributeProto* Attributes::Find(absl::string_view name) const {
  for (const onnx::AttributeProto& a : node_.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

absl::Status Attributes::Only(std::initializer_list<absl::string_view> allowed) const {
  for (const onnx::AttributeProto& a : node_.attribute()) {
    bool ok = false;
    for (absl::string_view name : allowed) ok = ok || a.name() == name;
    if (!ok) {
      return Error(absl::StrCat("attribute ", Quote(CommentText(a.name())),
                                " is unsupported (supported: ", absl::StrJoin(allowed, ", "), ")"));
    }
    if (!a.ref_attr_name().empty()) {
      return Error(absl::StrCat("attribute ", Quote(CommentText(a.name())),
                                " refers to a function attribute (unsupported)"));
    }
  }
  return absl::OkStatus();
}

absl::Status Attributes::WrongType(const onnx::AttributeProto& attr,
                                   absl::string_view expected) const {
  return Error(absl::StrCat("attribute ", Quote(CommentText(attr.name())), " is not ", expected));
}

absl::StatusOr<int64_t> Attributes::Int(absl::string_view name, int64_t fallback) const {
  const onnx::AttributeProto* a = Find(name);
  if (a == nullptr) return fallback;
  if (a->type() != onnx::AttributeProto::INT) return WrongType(*a, "an int");
  return a->i();
}

absl::StatusOr<double> Attributes::Float(absl::string_view name, double fallback) const {
  const onnx::AttributeProto* a = Find(name);
  if (a == nullptr) return fallback;
  if (a->type() != onnx::AttributeProto::FLOAT) return WrongType(*a, "a float");
  return static_cast<double>(a->f());
}

absl::StatusOr<std::string> Attributes::String(absl::string_view name,
                                               absl::string_view fallback) const {
  const onnx::AttributeProto* a = Find(name);
  if (a == nullptr) return std::string(fallback);
  if (a->type() != onnx::AttributeProto::STRING) return WrongType(*a, "a string");
  return a->s();
}

absl::StatusOr<std::vector<int64_t>> Attributes::Ints(absl::string_view name,
                                                      std::vector<int64_t> fallback) const {
  const onnx::AttributeProto* a = Find(name);
  if (a == nullptr) return fallback;
  if (a->type() != onnx::AttributeProto::INTS) return WrongType(*a, "a list of ints");
  if (a->ints_size() > kMaxTensorRank * 2) {
    return Error(absl::StrCat("attribute ", Quote(CommentText(a->name())), " has ", a->ints_size(),
                              " values, more than the converter takes"));
  }
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

absl::StatusOr<std::vector<float>> Attributes::Floats(absl::string_view name) const {
  const onnx::AttributeProto* a = Find(name);
  if (a == nullptr) return std::vector<float>();
  if (a->type() != onnx::AttributeProto::FLOATS) return WrongType(*a, "a list of floats");
  return std::vector<float>(a->floats().begin(), a->floats().end());
}

const onnx::TensorProto* Attributes::Tensor(absl::string_view name) const {
  const onnx::AttributeProto* a = Find(name);
  if (a == nullptr || a->type() != onnx::AttributeProto::TENSOR) return nullptr;
  return &a->t();
}

}  // namespace switchyard::runner::onnx_graph
