// Internal to the ONNX converter (onnx_converter.cc: the graph's frame and values;
// onnx_ops.cc: one code generator per operator). Not part of the runner's API.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <onnx/onnx_pb.h>
#include <torch/script.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "runner/converter_support.h"
#include "runner/onnx_converter.h"
#include "runner/onnx_graph.h"

namespace switchyard::runner::onnx_impl {

using convert::CommentText;
using convert::FloatLiteral;
using convert::Identifier;
using convert::Quote;
using onnx_graph::Attributes;

inline constexpr int64_t kMaxKernel = 64;
inline constexpr int64_t kMaxPad = 1024;
inline constexpr int64_t kMaxLiteralInts = 64;  // int constants kept as List[int] literals
inline constexpr int kMinOpset = 7;
inline constexpr int kMaxOpset = 21;

// What code generation knows about an ONNX value.
struct Value {
  enum class Kind {
    kTensor,  // a TorchScript Tensor
    kInts,    // a 1-D (or, `scalar`, 0-D) integer tensor kept as a TorchScript List[int]: shapes
  };
  Kind kind = Kind::kTensor;
  std::string name;  // the ONNX name
  std::string expr;  // TorchScript expression; empty for a constant not yet used as a tensor
  int32_t dtype = onnx::TensorProto::FLOAT;
  bool scalar = false;     // kInts of rank 0 (the list has one element)
  torch::Tensor constant;  // defined when the value is known at conversion time
};

inline bool IsIntType(int32_t t) {
  return t == onnx::TensorProto::INT64 || t == onnx::TensorProto::INT32;
}

inline int32_t OnnxType(torch::ScalarType t) {
  switch (t) {
    case torch::kInt64:
      return onnx::TensorProto::INT64;
    case torch::kInt32:
      return onnx::TensorProto::INT32;
    case torch::kFloat64:
      return onnx::TensorProto::DOUBLE;
    default:
      return onnx::TensorProto::FLOAT;
  }
}

inline std::string IntList(const std::vector<int64_t>& v) {
  if (v.empty()) return "self._onnx_no_ints()";  // `[]` alone is List[Tensor]
  return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
}

inline std::string PyBool(bool b) { return b ? "True" : "False"; }

class Converter {
 public:
  explicit Converter(std::filesystem::path path) : path_(std::move(path)) {}

  absl::StatusOr<torch::jit::Module> Run();

 private:
  absl::Status Invalid(const std::string& reason) const {
    return absl::InvalidArgumentError(absl::StrCat(path_.string(), ": ", reason));
  }

  // --- the graph's frame ----------------------------------------------------------------------

  absl::Status CheckModel() {
    if (!model_.has_graph()) return Invalid("the model has no graph (not an ONNX model?)");
    for (const auto& op : model_.opset_import()) {
      if (op.domain().empty() || op.domain() == "ai.onnx") opset_ = op.version();
    }
    if (opset_ < kMinOpset || opset_ > kMaxOpset) {
      return Invalid(absl::StrCat("default-domain opset ", opset_, " is unsupported (", kMinOpset,
                                  "..", kMaxOpset, ")"));
    }
    const onnx::GraphProto& g = model_.graph();
    if (g.node_size() > kMaxOnnxNodes) {
      return Invalid(absl::StrCat("the graph has ", g.node_size(),
                                  " nodes, more than the limit of ", kMaxOnnxNodes));
    }
    if (g.initializer_size() > kMaxOnnxInitializers) {
      return Invalid(absl::StrCat("the graph has ", g.initializer_size(),
                                  " initializers, more than the limit of ", kMaxOnnxInitializers));
    }
    if (g.sparse_initializer_size() > 0) return Invalid("sparse initializers are unsupported");
    for (const onnx::TensorProto& init : g.initializer()) {
      auto t = onnx_graph::TensorFromProto(
          init, absl::StrCat(path_.string(), ": initializer ", Quote(CommentText(init.name()))));
      if (!t.ok()) return absl::InvalidArgumentError(t.status().message());
      SY_RETURN_IF_ERROR(AddConstant(init.name(), *t, nullptr));
    }
    std::vector<const onnx::ValueInfoProto*> inputs;
    for (const onnx::ValueInfoProto& in : g.input()) {
      if (!values_.count(in.name())) inputs.push_back(&in);  // IR < 4 lists initializers too
    }
    if (inputs.size() != 1 || g.output_size() != 1) {
      return Invalid(absl::StrCat("the graph has ", inputs.size(), " inputs and ", g.output_size(),
                                  " outputs; exactly one of each is supported"));
    }
    const onnx::ValueInfoProto& in = *inputs[0];
    if (in.type().has_tensor_type() && in.type().tensor_type().elem_type() != 0 &&
        in.type().tensor_type().elem_type() != onnx::TensorProto::FLOAT) {
      return Invalid(absl::StrCat("the graph input ", Quote(CommentText(in.name())), " is ",
                                  onnx_graph::ElemTypeName(in.type().tensor_type().elem_type()),
                                  "; only FLOAT is supported"));
    }
    Value x;
    x.name = in.name();
    x.expr = "x";
    values_[in.name()] = x;
    // Who reads each value: BatchNormalization is folded into a Conv it alone reads.
    for (int i = 0; i < g.node_size(); ++i) {
      for (const std::string& name : g.node(i).input()) {
        if (!name.empty()) consumers_[name].push_back(i);
      }
    }
    consumers_[g.output(0).name()].push_back(-1);
    return absl::OkStatus();
  }

  absl::Status AddConstant(const std::string& name, const torch::Tensor& t,
                           const onnx::NodeProto* node) {
    if (values_.count(name)) {
      const std::string reason =
          absl::StrCat("value ", Quote(CommentText(name)), " is defined twice");
      return node ? onnx_graph::NodeError(path_, *node, reason) : Invalid(reason);
    }
    Value v;
    v.name = name;
    v.constant = t;
    v.dtype = OnnxType(t.scalar_type());
    if (IsIntType(v.dtype) && t.dim() <= 1 && t.numel() <= kMaxLiteralInts &&
        (t.dim() == 1 || t.numel() == 1)) {
      v.kind = Value::Kind::kInts;
      v.scalar = t.dim() == 0;
      v.expr = IntList(ToInts(t));
    }
    values_[name] = v;
    return absl::OkStatus();
  }

  static std::vector<int64_t> ToInts(const torch::Tensor& t) {
    torch::Tensor c = t.to(torch::kInt64).contiguous().flatten();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  }
  static std::vector<double> ToDoubles(const torch::Tensor& t) {
    torch::Tensor c = t.to(torch::kFloat64).contiguous().flatten();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  }

  // Constant nodes have no inputs, so they are read up front, wherever they sit in the list.
  absl::Status CollectConstants() {
    for (const onnx::NodeProto& node : model_.graph().node()) {
      if (!node.domain().empty() && node.domain() != "ai.onnx") {
        return onnx_graph::NodeError(
            path_, node,
            absl::StrCat("operator domain ", Quote(CommentText(node.domain())),
                         " is unsupported (only the default ONNX domain)"));
      }
      if (node.op_type() != "Constant") continue;
      Attributes attrs(path_, node);
      SY_RETURN_IF_ERROR(
          attrs.Only({"value", "value_float", "value_floats", "value_int", "value_ints"}));
      if (node.output_size() != 1 || node.input_size() != 0) {
        return attrs.Error("expects no inputs and one output");
      }
      torch::Tensor t;
      if (const onnx::TensorProto* proto = attrs.Tensor("value")) {
        auto parsed = onnx_graph::TensorFromProto(
            *proto, absl::StrCat(path_.string(), ": node ", Quote(CommentText(node.name())),
                                 " (Constant) value"));
        if (!parsed.ok()) return parsed.status();
        t = *parsed;
      } else if (attrs.Has("value_float")) {
        auto f = attrs.Float("value_float", 0);
        if (!f.ok()) return f.status();
        t = torch::tensor(static_cast<float>(*f));
      } else if (attrs.Has("value_floats")) {
        auto f = attrs.Floats("value_floats");
        if (!f.ok()) return f.status();
        t = torch::tensor(*f);
      } else if (attrs.Has("value_int")) {
        auto i = attrs.Int("value_int", 0);
        if (!i.ok()) return i.status();
        t = torch::tensor(*i, torch::kInt64);
      } else if (attrs.Has("value_ints")) {
        auto i = attrs.Ints("value_ints", {});
        if (!i.ok()) return i.status();
        t = torch::tensor(*i, torch::kInt64);
      } else {
        return attrs.Error("has no supported value attribute");
      }
      SY_RETURN_IF_ERROR(AddConstant(node.output(0), t, &node));
    }
    return absl::OkStatus();
  }

  // --- values ---------------------------------------------------------------------------------

  absl::StatusOr<Value*> In(const onnx::NodeProto& node, int i) {
    if (i >= node.input_size() || node.input(i).empty()) {
      return onnx_graph::NodeError(path_, node, absl::StrCat("input ", i, " is missing"));
    }
    auto it = values_.find(node.input(i));
    if (it == values_.end()) {
      return onnx_graph::NodeError(
          path_, node,
          absl::StrCat("input ", Quote(CommentText(node.input(i))),
                       " is produced by no earlier node and is no graph input or initializer"));
    }
    return &it->second;
  }
  // An optional input: nullptr when absent.
  absl::StatusOr<Value*> OptIn(const onnx::NodeProto& node, int i) {
    if (i >= node.input_size() || node.input(i).empty()) return nullptr;
    return In(node, i);
  }

  std::string ParamName(const std::string& onnx_name) {
    std::string base = "w_" + Identifier(onnx_name);
    std::string name = base;
    for (int n = 2; used_names_.count(name); ++n) name = absl::StrCat(base, "_", n);
    used_names_.insert(name);
    return name;
  }
  std::string AddParam(const std::string& onnx_name, torch::Tensor t) {
    std::string name = ParamName(onnx_name);
    params_.emplace_back(name, t.contiguous());
    return "self." + name;
  }

  // The value as a TorchScript Tensor expression (a constant becomes a module parameter once).
  std::string TensorExpr(Value& v) {
    if (v.kind == Value::Kind::kInts) {
      const char* type = v.dtype == onnx::TensorProto::INT32 ? "3" : "4";  // c10::ScalarType
      return v.scalar ? absl::StrCat("torch.tensor((", v.expr, ")[0], dtype=", type, ")")
                      : absl::StrCat("torch.tensor(", v.expr, ", dtype=", type, ")");
    }
    if (v.expr.empty()) v.expr = AddParam(v.name, v.constant);
    return v.expr;
  }
  // The value as a TorchScript List[int] expression.
  std::string IntsExpr(Value& v) {
    if (v.kind == Value::Kind::kInts) return v.expr;
    if (v.constant.defined() && v.constant.numel() <= kMaxLiteralInts) {
      return IntList(ToInts(v.constant));
    }
    return absl::StrCat("self._onnx_ints(", TensorExpr(v), ")");
  }
  // A known int list (attribute-free inputs of Slice, Squeeze, Reshape, ...).
  absl::StatusOr<std::vector<int64_t>> ConstInts(const onnx::NodeProto& node, const Value& v) {
    if (!v.constant.defined() || !IsIntType(v.dtype) || v.constant.numel() > kMaxLiteralInts) {
      return onnx_graph::NodeError(
          path_, node,
          absl::StrCat("input ", Quote(CommentText(v.name)),
                       " must be a constant integer tensor of at most ", kMaxLiteralInts,
                       " values (computed ones are unsupported here)"));
    }
    return ToInts(v.constant);
  }
  absl::StatusOr<std::vector<double>> ConstFloats(const onnx::NodeProto& node, const Value& v) {
    if (!v.constant.defined() || v.constant.numel() > kMaxLiteralInts) {
      return onnx_graph::NodeError(
          path_, node,
          absl::StrCat("input ", Quote(CommentText(v.name)), " must be a small constant"));
    }
    return ToDoubles(v.constant);
  }
  // A float literal for a one-element floating constant, else empty.
  static std::string ScalarLiteral(const Value& v) {
    if (!v.constant.defined() || v.constant.numel() != 1 || IsIntType(v.dtype)) return "";
    const double d = ToDoubles(v.constant)[0];
    if (!std::isfinite(d)) return "";
    return FloatLiteral(d);
  }

  // Assigns `expr` to a new variable for the node's (one) output.
  absl::Status Emit(const onnx::NodeProto& node, const std::string& expr,
                    Value::Kind kind = Value::Kind::kTensor,
                    int32_t dtype = onnx::TensorProto::FLOAT, bool scalar = false) {
    SY_RETURN_IF_ERROR(OneOutput(node));
    Value v;
    v.kind = kind;
    v.name = node.output(0);
    v.dtype = dtype;
    v.scalar = scalar;
    v.expr = absl::StrCat("v", var_index_++);
    absl::StrAppend(&body_, "    ", v.expr, " = ", expr, "  # ", CommentText(node.name()), " (",
                    CommentText(node.op_type()), ")\n");
    values_[v.name] = std::move(v);
    return absl::OkStatus();
  }
  absl::Status OneOutput(const onnx::NodeProto& node) {
    int used = 0;
    for (int i = 0; i < node.output_size(); ++i) used += node.output(i).empty() ? 0 : 1;
    if (used != 1 || node.output(0).empty()) {
      return onnx_graph::NodeError(path_, node, "only one output (the first) is supported");
    }
    if (values_.count(node.output(0))) {
      return onnx_graph::NodeError(
          path_, node,
          absl::StrCat("output ", Quote(CommentText(node.output(0))), " is defined twice"));
    }
    return absl::OkStatus();
  }
  // The node's output is its input (Identity, inference Dropout).
  absl::Status Alias(const onnx::NodeProto& node, const Value& in) {
    SY_RETURN_IF_ERROR(OneOutput(node));
    Value v = in;
    v.name = node.output(0);
    values_[v.name] = v;
    return absl::OkStatus();
  }

  // --- nodes ----------------------------------------------------------------------------------

  absl::Status Node(const onnx::NodeProto& node);
  absl::Status Unary(const onnx::NodeProto& node, const std::string& fn);
  absl::Status Binary(const onnx::NodeProto& node);
  absl::Status Conv(const onnx::NodeProto& node, bool transpose);
  absl::Status BatchNorm(const onnx::NodeProto& node);
  absl::Status Pool(const onnx::NodeProto& node);
  absl::Status Shape(const onnx::NodeProto& node);
  absl::Status Cast(const onnx::NodeProto& node);
  absl::Status Slice(const onnx::NodeProto& node);
  absl::Status SqueezeOrUnsqueeze(const onnx::NodeProto& node, bool squeeze);
  absl::Status Gather(const onnx::NodeProto& node);
  absl::Status Concat(const onnx::NodeProto& node);
  absl::Status Reshape(const onnx::NodeProto& node);
  absl::Status Resize(const onnx::NodeProto& node);
  absl::Status Gemm(const onnx::NodeProto& node);
  absl::Status Reduce(const onnx::NodeProto& node);
  absl::Status Activation(const onnx::NodeProto& node);

  // x * clip(x + 3, 0, 6) / 6 (Add, Clip, Mul, Div; how paddle2onnx writes hardswish) starting at
  // the Add `node`: emits torch.hardswish for the Div's output and skips the rest. False when the
  // nodes do not form exactly that chain.
  absl::StatusOr<bool> FuseHardSwish(const onnx::NodeProto& node);
  // The index of the one node reading `name`, or -1.
  int OnlyConsumer(const std::string& name) const;
  // Clip's bounds when both are constants (attributes before opset 11, inputs from it).
  bool ClipBounds(const onnx::NodeProto& clip, double* lo, double* hi);

  // The BatchNormalization node (index) that alone reads `conv_out` and has constant statistics
  // of `channels` values, or -1.
  int FoldableBatchNorm(const std::string& conv_out, int64_t channels);

  std::filesystem::path path_;
  onnx::ModelProto model_;
  int64_t opset_ = 0;
  std::map<std::string, Value> values_;
  std::map<std::string, std::vector<int>> consumers_;
  std::set<int> skip_;  // folded nodes
  std::set<std::string> used_names_ = {"forward", "training", "scale"};
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::string body_;
  int var_index_ = 0;
};

}  // namespace switchyard::runner::onnx_impl
