// One TorchScript code generator per ONNX operator (docs/converters.md lists them). Each checks
// the attributes it reads (any other attribute is refused) and the values it supports, and emits
// one assignment; shape arithmetic stays in the generated code, so shapes stay dynamic.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "runner/onnx_converter_impl.h"

namespace switchyard::runner::onnx_impl {

namespace {

std::string TorchDtype(int32_t t) {
  switch (t) {
    case onnx::TensorProto::INT64:
      return "4";  // c10::ScalarType numbers (no torch.int64 in C++-compiled TorchScript)
    case onnx::TensorProto::INT32:
      return "3";
    case onnx::TensorProto::DOUBLE:
      return "7";
    case onnx::TensorProto::BOOL:
      return "11";
    default:
      return "6";
  }
}

// Python slice bound: ONNX clamps out-of-range starts/ends exactly as Python slicing does; huge
// sentinels (INT64_MAX / INT_MAX meaning "to the end") are left out.
std::string Bound(int64_t v) {
  if (v >= (int64_t{1} << 31) - 1 || v <= -(int64_t{1} << 31)) return "";
  return absl::StrCat(v);
}

}  // namespace

absl::Status Converter::Node(const onnx::NodeProto& node) {
  const std::string& op = node.op_type();
  static const std::map<std::string, std::string> kUnary = {{"Relu", "torch.relu"},
                                                            {"Sigmoid", "torch.sigmoid"},
                                                            {"Tanh", "torch.tanh"},
                                                            {"Exp", "torch.exp"},
                                                            {"Log", "torch.log"},
                                                            {"Sqrt", "torch.sqrt"},
                                                            {"Neg", "torch.neg"},
                                                            {"Abs", "torch.abs"},
                                                            {"Erf", "torch.erf"},
                                                            {"Reciprocal", "torch.reciprocal"},
                                                            {"Floor", "torch.floor"},
                                                            {"Ceil", "torch.ceil"},
                                                            {"HardSwish", "torch.hardswish"}};
  if (auto it = kUnary.find(op); it != kUnary.end()) return Unary(node, it->second);
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow") return Binary(node);
  if (op == "Conv") return Conv(node, false);
  if (op == "ConvTranspose") return Conv(node, true);
  if (op == "BatchNormalization") return BatchNorm(node);
  if (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool") return Pool(node);
  if (op == "Shape") return Shape(node);
  if (op == "Cast") return Cast(node);
  if (op == "Slice") return Slice(node);
  if (op == "Squeeze") return SqueezeOrUnsqueeze(node, true);
  if (op == "Unsqueeze") return SqueezeOrUnsqueeze(node, false);
  if (op == "Gather") return Gather(node);
  if (op == "Concat") return Concat(node);
  if (op == "Reshape") return Reshape(node);
  if (op == "Resize") return Resize(node);
  if (op == "Gemm") return Gemm(node);
  if (op == "ReduceMean") return Reduce(node);
  if (op == "HardSigmoid" || op == "LeakyRelu" || op == "Clip" || op == "Softmax" ||
      op == "MatMul" || op == "Transpose" || op == "Flatten" || op == "Identity" ||
      op == "Dropout") {
    return Activation(node);
  }
  return onnx_graph::NodeError(path_, node,
                               absl::StrCat("unsupported operator ", Quote(CommentText(op)),
                                            " (docs/converters.md lists the supported ones)"));
}

absl::Status Converter::Unary(const onnx::NodeProto& node, const std::string& fn) {
  SY_RETURN_IF_ERROR(Attributes(path_, node).Only({}));
  Value* x;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  return Emit(node, absl::StrCat(fn, "(", TensorExpr(*x), ")"), Value::Kind::kTensor, x->dtype);
}

absl::Status Converter::Binary(const onnx::NodeProto& node) {
  SY_RETURN_IF_ERROR(Attributes(path_, node).Only({}));
  if (node.op_type() == "Add") {
    bool fused;
    ONNX_ASSIGN_OR_RETURN(fused, FuseHardSwish(node));
    if (fused) return absl::OkStatus();
  }
  Value *a, *b;
  ONNX_ASSIGN_OR_RETURN(a, In(node, 0));
  ONNX_ASSIGN_OR_RETURN(b, In(node, 1));
  const std::string& op = node.op_type();
  const bool ints = IsIntType(a->dtype) && IsIntType(b->dtype);
  const std::string sym = op == "Add" ? " + " : op == "Sub" ? " - " : op == "Mul" ? " * " : " / ";
  std::string expr;
  const bool a_runtime = !a->constant.defined() && !ints;
  const bool b_runtime = !b->constant.defined() && !ints;
  // A one-element float constant becomes a literal: no parameter, a Tensor-Scalar kernel.
  const std::string lit_b = a_runtime ? ScalarLiteral(*b) : "";
  const std::string lit_a = b_runtime ? ScalarLiteral(*a) : "";
  if (!lit_b.empty()) {
    expr = op == "Pow" ? absl::StrCat("torch.pow(", TensorExpr(*a), ", ", lit_b, ")")
                       : absl::StrCat(TensorExpr(*a), sym, lit_b);
  } else if (!lit_a.empty() && (op == "Add" || op == "Mul")) {
    expr = absl::StrCat(TensorExpr(*b), sym, lit_a);
  } else if (op == "Pow") {
    expr = absl::StrCat("torch.pow(", TensorExpr(*a), ", ", TensorExpr(*b), ")");
  } else if (op == "Div" && ints) {
    // ONNX integer division truncates (C++ semantics); `/` would give floats.
    expr = absl::StrCat("torch.div(", TensorExpr(*a), ", ", TensorExpr(*b),
                        ", rounding_mode='trunc')");
  } else {
    expr = absl::StrCat(TensorExpr(*a), sym, TensorExpr(*b));
  }
  return Emit(node, expr, Value::Kind::kTensor, a->dtype);
}

absl::Status Converter::Shape(const onnx::NodeProto& node) {
  SY_RETURN_IF_ERROR(Attributes(path_, node).Only({}));
  Value* x;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  if (x->kind == Value::Kind::kInts) {
    return Emit(node, x->scalar ? "self._onnx_no_ints()" : absl::StrCat("[len(", x->expr, ")]"),
                Value::Kind::kInts, onnx::TensorProto::INT64);
  }
  return Emit(node, absl::StrCat(TensorExpr(*x), ".size()"), Value::Kind::kInts,
              onnx::TensorProto::INT64);
}

absl::Status Converter::Cast(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"to", "saturate"}));
  int64_t to;
  ONNX_ASSIGN_OR_RETURN(to, attrs.Int("to", 0));
  if (to != onnx::TensorProto::FLOAT && to != onnx::TensorProto::INT64 &&
      to != onnx::TensorProto::INT32 && to != onnx::TensorProto::DOUBLE &&
      to != onnx::TensorProto::BOOL) {
    return attrs.Error(absl::StrCat("cast to ", onnx_graph::ElemTypeName(static_cast<int32_t>(to)),
                                    " is unsupported (FLOAT, DOUBLE, INT64, INT32, BOOL)"));
  }
  Value* x;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  const int32_t type = static_cast<int32_t>(to);
  if (x->kind == Value::Kind::kInts && IsIntType(type)) {
    SY_RETURN_IF_ERROR(Alias(node, *x));  // both are List[int]
    values_[node.output(0)].dtype = type;
    return absl::OkStatus();
  }
  if (x->dtype == type) return Alias(node, *x);
  return Emit(node, absl::StrCat(TensorExpr(*x), ".to(", TorchDtype(type), ")"),
              Value::Kind::kTensor, type);
}

absl::Status Converter::Slice(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  std::vector<int64_t> starts, ends, axes, steps;
  if (opset_ < 10) {
    SY_RETURN_IF_ERROR(attrs.Only({"starts", "ends", "axes"}));
    ONNX_ASSIGN_OR_RETURN(starts, attrs.Ints("starts", {}));
    ONNX_ASSIGN_OR_RETURN(ends, attrs.Ints("ends", {}));
    ONNX_ASSIGN_OR_RETURN(axes, attrs.Ints("axes", {}));
  } else {
    SY_RETURN_IF_ERROR(attrs.Only({}));
    Value *s, *e, *a, *st;
    ONNX_ASSIGN_OR_RETURN(s, In(node, 1));
    ONNX_ASSIGN_OR_RETURN(e, In(node, 2));
    ONNX_ASSIGN_OR_RETURN(a, OptIn(node, 3));
    ONNX_ASSIGN_OR_RETURN(st, OptIn(node, 4));
    ONNX_ASSIGN_OR_RETURN(starts, ConstInts(node, *s));
    ONNX_ASSIGN_OR_RETURN(ends, ConstInts(node, *e));
    if (a != nullptr) {
      ONNX_ASSIGN_OR_RETURN(axes, ConstInts(node, *a));
    }
    if (st != nullptr) {
      ONNX_ASSIGN_OR_RETURN(steps, ConstInts(node, *st));
    }
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (starts.size() != ends.size() || starts.size() != axes.size() ||
      starts.size() != steps.size() || starts.empty()) {
    return attrs.Error("starts, ends, axes and steps differ in length");
  }
  Value* x;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  for (size_t i = 0; i < axes.size(); ++i) {
    if (steps[i] < 1 || axes[i] < -onnx_graph::kMaxTensorRank ||
        axes[i] >= onnx_graph::kMaxTensorRank) {
      return attrs.Error(absl::StrCat(
          "axis ", axes[i], " with step ", steps[i],
          " is unsupported (positive steps, rank <= ", onnx_graph::kMaxTensorRank, ")"));
    }
  }
  auto range = [&](size_t i) {
    std::string r = absl::StrCat(Bound(starts[i]), ":", Bound(ends[i]));
    if (steps[i] != 1) absl::StrAppend(&r, ":", steps[i]);
    return r;
  };
  if (x->kind == Value::Kind::kInts && !x->scalar && axes.size() == 1 &&
      (axes[0] == 0 || axes[0] == -1)) {
    return Emit(node, absl::StrCat("(", x->expr, ")[", range(0), "]"), Value::Kind::kInts,
                x->dtype);
  }
  std::string expr = TensorExpr(*x);
  for (size_t i = 0; i < axes.size(); ++i) {
    std::string index;
    if (axes[i] >= 0) {
      for (int64_t d = 0; d < axes[i]; ++d) index += ":, ";
      index += range(i);
    } else {
      index = "..., " + range(i);
      for (int64_t d = axes[i] + 1; d < 0; ++d) index += ", :";
    }
    expr = absl::StrCat("(", expr, ")[", index, "]");
  }
  return Emit(node, expr, Value::Kind::kTensor, x->dtype);
}

absl::Status Converter::SqueezeOrUnsqueeze(const onnx::NodeProto& node, bool squeeze) {
  Attributes attrs(path_, node);
  std::vector<int64_t> axes;
  if (opset_ < 13) {
    SY_RETURN_IF_ERROR(attrs.Only({"axes"}));
    ONNX_ASSIGN_OR_RETURN(axes, attrs.Ints("axes", {}));
  } else {
    SY_RETURN_IF_ERROR(attrs.Only({}));
    Value* a;
    ONNX_ASSIGN_OR_RETURN(a, OptIn(node, 1));
    if (a != nullptr) {
      ONNX_ASSIGN_OR_RETURN(axes, ConstInts(node, *a));
    }
  }
  if (!squeeze && axes.empty()) return attrs.Error("Unsqueeze needs axes");
  Value* x;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  if (x->kind == Value::Kind::kInts && axes.size() == 1 && (axes[0] == 0 || axes[0] == -1) &&
      x->scalar != squeeze) {
    // A shape element becomes a 1-element shape or back: the same List[int].
    SY_RETURN_IF_ERROR(Alias(node, *x));
    values_[node.output(0)].scalar = squeeze;
    return absl::OkStatus();
  }
  const std::string in = TensorExpr(*x);
  if (axes.empty())
    return Emit(node, absl::StrCat(in, ".squeeze()"), Value::Kind::kTensor, x->dtype);
  bool all_non_negative = true;
  for (int64_t a : axes) all_non_negative = all_non_negative && a >= 0;
  if (!all_non_negative) {
    return Emit(node,
                absl::StrCat("self._onnx_", squeeze ? "squeeze(" : "unsqueeze(", in, ", ",
                             IntList(axes), ")"),
                Value::Kind::kTensor, x->dtype);
  }
  std::sort(axes.begin(), axes.end());
  if (squeeze) std::reverse(axes.begin(), axes.end());
  std::string expr = in;
  for (int64_t a : axes)
    absl::StrAppend(&expr, squeeze ? ".squeeze(" : ".unsqueeze(", IntLit(a), ")");
  return Emit(node, expr, Value::Kind::kTensor, x->dtype);
}

absl::Status Converter::Gather(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"axis"}));
  int64_t axis;
  ONNX_ASSIGN_OR_RETURN(axis, attrs.Int("axis", 0));
  Value *x, *idx;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  ONNX_ASSIGN_OR_RETURN(idx, In(node, 1));
  if (!IsIntType(idx->dtype)) return attrs.Error("indices must be INT64 or INT32");
  const bool const_idx = idx->constant.defined() && idx->constant.dim() <= 1 &&
                         idx->constant.numel() <= kMaxLiteralInts;
  if (x->kind == Value::Kind::kInts && !x->scalar && axis == 0 && const_idx) {
    std::vector<std::string> items;
    for (int64_t i : ToInts(idx->constant))
      items.push_back(absl::StrCat("(", x->expr, ")[", IntLit(i), "]"));
    return Emit(
        node,
        items.empty() ? "self._onnx_no_ints()" : absl::StrCat("[", absl::StrJoin(items, ", "), "]"),
        Value::Kind::kInts, x->dtype, idx->constant.dim() == 0);
  }
  const std::string in = TensorExpr(*x);
  if (const_idx && idx->constant.dim() == 0) {
    return Emit(
        node,
        absl::StrCat(in, ".select(", IntLit(axis), ", ", IntLit(ToInts(idx->constant)[0]), ")"),
        Value::Kind::kTensor, x->dtype);
  }
  return Emit(
      node, absl::StrCat("self._onnx_gather(", in, ", ", IntLit(axis), ", ", TensorExpr(*idx), ")"),
      Value::Kind::kTensor, x->dtype);
}

absl::Status Converter::Concat(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"axis"}));
  if (!attrs.Has("axis")) return attrs.Error("axis is required");
  int64_t axis;
  ONNX_ASSIGN_OR_RETURN(axis, attrs.Int("axis", 0));
  if (node.input_size() < 1) return attrs.Error("needs at least one input");
  std::vector<Value*> in;
  bool all_ints = true;
  for (int i = 0; i < node.input_size(); ++i) {
    Value* v;
    ONNX_ASSIGN_OR_RETURN(v, In(node, i));
    in.push_back(v);
    all_ints = all_ints && v->kind == Value::Kind::kInts && !v->scalar;
  }
  if (all_ints && (axis == 0 || axis == -1)) {
    std::vector<std::string> parts;
    for (Value* v : in) parts.push_back(v->expr);
    return Emit(node, absl::StrJoin(parts, " + "), Value::Kind::kInts, in[0]->dtype);
  }
  std::vector<std::string> parts;
  for (Value* v : in) parts.push_back(TensorExpr(*v));
  return Emit(node,
              absl::StrCat("torch.cat([", absl::StrJoin(parts, ", "), "], ", IntLit(axis), ")"),
              Value::Kind::kTensor, in[0]->dtype);
}

absl::Status Converter::Reshape(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"allowzero"}));
  int64_t allowzero;
  ONNX_ASSIGN_OR_RETURN(allowzero, attrs.Int("allowzero", 0));
  Value *x, *shape;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  ONNX_ASSIGN_OR_RETURN(shape, In(node, 1));
  if (!IsIntType(shape->dtype)) return attrs.Error("the shape must be INT64");
  const std::string in = TensorExpr(*x);
  std::string dims;
  if (shape->constant.defined()) {
    std::vector<int64_t> values;
    ONNX_ASSIGN_OR_RETURN(values, ConstInts(node, *shape));
    std::vector<std::string> items;
    for (size_t i = 0; i < values.size(); ++i) {
      // ONNX's 0 copies the input's dimension (unless allowzero).
      items.push_back(values[i] == 0 && allowzero == 0 ? absl::StrCat(in, ".size(", i, ")")
                                                       : IntLit(values[i]));
    }
    dims = absl::StrCat("[", absl::StrJoin(items, ", "), "]");
  } else {
    dims = allowzero ? IntsExpr(*shape)
                     : absl::StrCat("self._onnx_dims(", in, ", ", IntsExpr(*shape), ")");
  }
  return Emit(node, absl::StrCat(in, ".reshape(", dims, ")"), Value::Kind::kTensor, x->dtype);
}

absl::Status Converter::Gemm(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"alpha", "beta", "transA", "transB"}));
  double alpha, beta;
  int64_t ta, tb;
  ONNX_ASSIGN_OR_RETURN(alpha, attrs.Float("alpha", 1.0));
  ONNX_ASSIGN_OR_RETURN(beta, attrs.Float("beta", 1.0));
  ONNX_ASSIGN_OR_RETURN(ta, attrs.Int("transA", 0));
  ONNX_ASSIGN_OR_RETURN(tb, attrs.Int("transB", 0));
  Value *a, *b, *c;
  ONNX_ASSIGN_OR_RETURN(a, In(node, 0));
  ONNX_ASSIGN_OR_RETURN(b, In(node, 1));
  ONNX_ASSIGN_OR_RETURN(c, OptIn(node, 2));
  const std::string ea = TensorExpr(*a) + (ta ? ".t()" : "");
  const std::string eb = TensorExpr(*b) + (tb ? ".t()" : "");
  if (c == nullptr) {
    std::string expr = absl::StrCat("torch.mm(", ea, ", ", eb, ")");
    if (alpha != 1.0) absl::StrAppend(&expr, " * ", FloatLiteral(alpha));
    return Emit(node, expr);
  }
  return Emit(node, absl::StrCat("torch.addmm(", TensorExpr(*c), ", ", ea, ", ", eb, ", beta=",
                                 FloatLiteral(beta), ", alpha=", FloatLiteral(alpha), ")"));
}

absl::Status Converter::Reduce(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  std::vector<int64_t> axes;
  int64_t keep, noop_empty;
  if (opset_ < 18) {
    SY_RETURN_IF_ERROR(attrs.Only({"axes", "keepdims"}));
    ONNX_ASSIGN_OR_RETURN(axes, attrs.Ints("axes", {}));
  } else {
    SY_RETURN_IF_ERROR(attrs.Only({"keepdims", "noop_with_empty_axes"}));
    Value* a;
    ONNX_ASSIGN_OR_RETURN(a, OptIn(node, 1));
    if (a != nullptr) {
      ONNX_ASSIGN_OR_RETURN(axes, ConstInts(node, *a));
    }
  }
  ONNX_ASSIGN_OR_RETURN(keep, attrs.Int("keepdims", 1));
  ONNX_ASSIGN_OR_RETURN(noop_empty, attrs.Int("noop_with_empty_axes", 0));
  Value* x;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  const std::string in = TensorExpr(*x);
  if (axes.empty() && noop_empty) return Alias(node, *x);
  const std::string dims =
      axes.empty() ? absl::StrCat("self._onnx_range(0, ", in, ".dim())") : IntList(axes);
  return Emit(node, absl::StrCat("torch.mean(", in, ", ", dims, ", ", PyBool(keep != 0), ")"));
}

// The remaining one-input operators (and MatMul).
absl::Status Converter::Activation(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  const std::string& op = node.op_type();
  Value* x;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  if (op == "Identity") {
    SY_RETURN_IF_ERROR(attrs.Only({}));
    return Alias(node, *x);
  }
  if (op == "Dropout") {
    SY_RETURN_IF_ERROR(attrs.Only({"ratio", "seed", "is_test"}));
    Value* training;
    ONNX_ASSIGN_OR_RETURN(training, OptIn(node, 2));
    if (training != nullptr && (!training->constant.defined() || training->constant.numel() != 1 ||
                                training->constant.to(torch::kFloat64).item<double>() != 0)) {
      return attrs.Error("only inference (training_mode absent or false) is supported");
    }
    return Alias(node, *x);
  }
  const std::string in = TensorExpr(*x);
  if (op == "MatMul") {
    SY_RETURN_IF_ERROR(attrs.Only({}));
    Value* b;
    ONNX_ASSIGN_OR_RETURN(b, In(node, 1));
    return Emit(node, absl::StrCat("torch.matmul(", in, ", ", TensorExpr(*b), ")"));
  }
  if (op == "HardSigmoid") {
    SY_RETURN_IF_ERROR(attrs.Only({"alpha", "beta"}));
    double alpha, beta;
    ONNX_ASSIGN_OR_RETURN(alpha, attrs.Float("alpha", 0.2));
    ONNX_ASSIGN_OR_RETURN(beta, attrs.Float("beta", 0.5));
    // In place on the fresh temporary: one allocation, as ONNX Runtime's kernel.
    return Emit(node, absl::StrCat("(", in, " * ", FloatLiteral(alpha), " + ", FloatLiteral(beta),
                                   ").clamp_(0.0, 1.0)"));
  }
  if (op == "LeakyRelu") {
    SY_RETURN_IF_ERROR(attrs.Only({"alpha"}));
    double alpha;
    ONNX_ASSIGN_OR_RETURN(alpha, attrs.Float("alpha", 0.01));
    return Emit(node, absl::StrCat("torch.leaky_relu(", in, ", ", FloatLiteral(alpha), ")"));
  }
  if (op == "Clip") {
    std::string lo = "None", hi = "None";
    if (opset_ < 11) {
      SY_RETURN_IF_ERROR(attrs.Only({"min", "max"}));
      if (attrs.Has("min")) {
        double v;
        ONNX_ASSIGN_OR_RETURN(v, attrs.Float("min", 0));
        lo = FloatLiteral(v);
      }
      if (attrs.Has("max")) {
        double v;
        ONNX_ASSIGN_OR_RETURN(v, attrs.Float("max", 0));
        hi = FloatLiteral(v);
      }
    } else {
      SY_RETURN_IF_ERROR(attrs.Only({}));
      for (int i = 1; i <= 2; ++i) {
        Value* bound;
        ONNX_ASSIGN_OR_RETURN(bound, OptIn(node, i));
        if (bound == nullptr) continue;
        std::string lit = ScalarLiteral(*bound);
        if (lit.empty()) {
          return attrs.Error(absl::StrCat("bound ", Quote(CommentText(bound->name)),
                                          " must be a finite float constant"));
        }
        (i == 1 ? lo : hi) = lit;
      }
    }
    if (lo.find_first_of("ni") != std::string::npos) lo = "None";  // inf / nan from attributes
    if (hi.find_first_of("ni") != std::string::npos) hi = "None";
    return Emit(node, absl::StrCat("torch.clamp(", in, ", ", lo, ", ", hi, ")"));
  }
  if (op == "Softmax") {
    SY_RETURN_IF_ERROR(attrs.Only({"axis"}));
    int64_t axis;
    ONNX_ASSIGN_OR_RETURN(axis, attrs.Int("axis", opset_ < 13 ? 1 : -1));
    if (axis < -onnx_graph::kMaxTensorRank || axis >= onnx_graph::kMaxTensorRank) {
      return attrs.Error(absl::StrCat("axis ", axis, " is out of range"));
    }
    if (opset_ >= 13 || axis == -1) {
      return Emit(node, absl::StrCat("torch.softmax(", in, ", ", axis, ", None)"));
    }
    // Before opset 13 the input is coerced to 2-D at `axis`: softmax over all later dims.
    return Emit(node, absl::StrCat("torch.softmax(", in, ".flatten(", axis, "), -1, None).reshape(",
                                   in, ".size())"));
  }
  if (op == "Transpose") {
    SY_RETURN_IF_ERROR(attrs.Only({"perm"}));
    if (!attrs.Has("perm")) {
      return Emit(node, absl::StrCat(in, ".permute(self._onnx_reverse(", in, "))"),
                  Value::Kind::kTensor, x->dtype);
    }
    std::vector<int64_t> perm;
    ONNX_ASSIGN_OR_RETURN(perm, attrs.Ints("perm", {}));
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (sorted[i] != static_cast<int64_t>(i)) {
        return attrs.Error(absl::StrCat("perm ", IntList(perm), " is not a permutation"));
      }
    }
    return Emit(node, absl::StrCat(in, ".permute(", IntList(perm), ")"), Value::Kind::kTensor,
                x->dtype);
  }
  // Flatten
  SY_RETURN_IF_ERROR(attrs.Only({"axis"}));
  int64_t axis;
  ONNX_ASSIGN_OR_RETURN(axis, attrs.Int("axis", 1));
  if (axis < -onnx_graph::kMaxTensorRank || axis > onnx_graph::kMaxTensorRank) {
    return attrs.Error(absl::StrCat("axis ", axis, " is out of range"));
  }
  return Emit(node, absl::StrCat("self._onnx_flatten(", in, ", ", axis, ")"), Value::Kind::kTensor,
              x->dtype);
}

}  // namespace switchyard::runner::onnx_impl
