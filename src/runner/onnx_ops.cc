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

#define SY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(*tmp)
#define SY_CONCAT_INNER(a, b) a##b
#define SY_CONCAT(a, b) SY_CONCAT_INNER(a, b)
// Local to this file: `lhs = value of expr`, returning its status on error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  SY_ASSIGN_OR_RETURN_IMPL(SY_CONCAT(status_or_, __LINE__), lhs, expr)

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
  ASSIGN_OR_RETURN(x, In(node, 0));
  return Emit(node, absl::StrCat(fn, "(", TensorExpr(*x), ")"), Value::Kind::kTensor, x->dtype);
}

int Converter::OnlyConsumer(const std::string& name) const {
  auto it = consumers_.find(name);
  if (it == consumers_.end() || it->second.size() != 1) return -1;
  return it->second[0];
}

bool Converter::ClipBounds(const onnx::NodeProto& clip, double* lo, double* hi) {
  if (clip.op_type() != "Clip" || clip.output_size() != 1) return false;
  if (opset_ < 11) {
    Attributes attrs(path_, clip);
    auto l = attrs.Float("min", -INFINITY);
    auto h = attrs.Float("max", INFINITY);
    if (!attrs.Only({"min", "max"}).ok() || !l.ok() || !h.ok()) return false;
    *lo = *l, *hi = *h;
    return true;
  }
  if (clip.input_size() != 3 || clip.attribute_size() != 0) return false;
  double bounds[2];
  for (int i = 1; i <= 2; ++i) {
    auto it = values_.find(clip.input(i));
    if (it == values_.end() || ScalarLiteral(it->second).empty()) return false;
    bounds[i - 1] = ToDoubles(it->second.constant)[0];
  }
  *lo = bounds[0], *hi = bounds[1];
  return true;
}

absl::StatusOr<bool> Converter::FuseHardSwish(const onnx::NodeProto& node) {
  const onnx::GraphProto& g = model_.graph();
  if (node.input_size() != 2 || node.attribute_size() != 0) return false;
  auto scalar = [&](const std::string& name, double want) {
    auto it = values_.find(name);
    return it != values_.end() && !ScalarLiteral(it->second).empty() &&
           ToDoubles(it->second.constant)[0] == want;
  };
  int x_index = scalar(node.input(1), 3.0) ? 0 : scalar(node.input(0), 3.0) ? 1 : -1;
  if (x_index < 0) return false;
  const std::string& x_name = node.input(x_index);
  auto x = values_.find(x_name);
  if (x == values_.end() || x->second.kind != Value::Kind::kTensor ||
      x->second.constant.defined() || x->second.dtype != onnx::TensorProto::FLOAT) {
    return false;
  }
  const int clip = OnlyConsumer(node.output(0));
  if (clip < 0) return false;
  double lo, hi;
  if (!ClipBounds(g.node(clip), &lo, &hi) || lo != 0.0 || hi != 6.0 ||
      g.node(clip).input(0) != node.output(0)) {
    return false;
  }
  const int mul = OnlyConsumer(g.node(clip).output(0));
  if (mul < 0) return false;
  const onnx::NodeProto& m = g.node(mul);
  if (m.op_type() != "Mul" || m.input_size() != 2 || m.output_size() != 1 ||
      m.attribute_size() != 0 ||
      !((m.input(0) == x_name && m.input(1) == g.node(clip).output(0)) ||
        (m.input(1) == x_name && m.input(0) == g.node(clip).output(0)))) {
    return false;
  }
  const int div = OnlyConsumer(m.output(0));
  if (div < 0) return false;
  const onnx::NodeProto& d = g.node(div);
  if (d.op_type() != "Div" || d.input_size() != 2 || d.output_size() != 1 ||
      d.attribute_size() != 0 || d.input(0) != m.output(0) || !scalar(d.input(1), 6.0)) {
    return false;
  }
  SY_RETURN_IF_ERROR(Emit(d, absl::StrCat("torch.hardswish(", x->second.expr, ")")));
  skip_.insert({clip, mul, div});
  return true;
}

absl::Status Converter::Binary(const onnx::NodeProto& node) {
  SY_RETURN_IF_ERROR(Attributes(path_, node).Only({}));
  if (node.op_type() == "Add") {
    bool fused;
    ASSIGN_OR_RETURN(fused, FuseHardSwish(node));
    if (fused) return absl::OkStatus();
  }
  Value *a, *b;
  ASSIGN_OR_RETURN(a, In(node, 0));
  ASSIGN_OR_RETURN(b, In(node, 1));
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

int Converter::FoldableBatchNorm(const std::string& conv_out, int64_t channels) {
  auto it = consumers_.find(conv_out);
  if (it == consumers_.end() || it->second.size() != 1 || it->second[0] < 0) return -1;
  const int index = it->second[0];
  const onnx::NodeProto& bn = model_.graph().node(index);
  if (bn.op_type() != "BatchNormalization" || bn.input_size() != 5 || bn.input(0) != conv_out) {
    return -1;
  }
  Attributes attrs(path_, bn);
  if (!attrs.Only({"epsilon", "momentum", "spatial", "training_mode"}).ok()) return -1;
  auto spatial = attrs.Int("spatial", 1);
  auto training = attrs.Int("training_mode", 0);
  if (!spatial.ok() || *spatial != 1 || !training.ok() || *training != 0) return -1;
  for (int i = 1; i < 5; ++i) {
    auto v = values_.find(bn.input(i));
    if (v == values_.end() || !v->second.constant.defined() || IsIntType(v->second.dtype) ||
        v->second.constant.numel() != channels) {
      return -1;
    }
  }
  return index;
}

absl::Status Converter::Conv(const onnx::NodeProto& node, bool transpose) {
  Attributes attrs(path_, node);
  if (transpose) {
    SY_RETURN_IF_ERROR(attrs.Only(
        {"auto_pad", "dilations", "group", "kernel_shape", "output_padding", "pads", "strides"}));
  } else {
    SY_RETURN_IF_ERROR(
        attrs.Only({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}));
  }
  Value *x, *w, *b;
  ASSIGN_OR_RETURN(x, In(node, 0));
  ASSIGN_OR_RETURN(w, In(node, 1));
  ASSIGN_OR_RETURN(b, OptIn(node, 2));
  if (!w->constant.defined() || w->constant.dim() != 4 || IsIntType(w->dtype)) {
    return attrs.Error(
        "only 2-D convolution with constant float weights [O, I, kH, kW] is supported");
  }
  std::string auto_pad;
  ASSIGN_OR_RETURN(auto_pad, attrs.String("auto_pad", "NOTSET"));
  if (auto_pad != "NOTSET" && auto_pad != "VALID") {
    return attrs.Error(absl::StrCat("auto_pad ", Quote(CommentText(auto_pad)),
                                    " is unsupported (only NOTSET, VALID)"));
  }
  torch::Tensor weight = w->constant.to(torch::kFloat32);
  const int64_t kh = weight.size(2), kw = weight.size(3);
  std::vector<int64_t> kernel, strides, dilations, pads, out_pad;
  ASSIGN_OR_RETURN(kernel, attrs.Ints("kernel_shape", {kh, kw}));
  ASSIGN_OR_RETURN(strides, attrs.Ints("strides", {1, 1}));
  ASSIGN_OR_RETURN(dilations, attrs.Ints("dilations", {1, 1}));
  ASSIGN_OR_RETURN(pads, attrs.Ints("pads", {0, 0, 0, 0}));
  ASSIGN_OR_RETURN(out_pad, attrs.Ints("output_padding", {0, 0}));
  int64_t group;
  ASSIGN_OR_RETURN(group, attrs.Int("group", 1));
  if (kernel != std::vector<int64_t>{kh, kw}) {
    return attrs.Error(absl::StrCat("kernel_shape ", IntList(kernel), " does not match the ", kh,
                                    "x", kw, " weights"));
  }
  if (kh < 1 || kw < 1 || kh > kMaxKernel || kw > kMaxKernel) {
    return attrs.Error(absl::StrCat("kernel ", kh, "x", kw, " is outside 1..", kMaxKernel));
  }
  auto in_range = [](const std::vector<int64_t>& v, size_t n, int64_t lo, int64_t hi) {
    if (v.size() != n) return false;
    for (int64_t e : v) {
      if (e < lo || e > hi) return false;
    }
    return true;
  };
  if (!in_range(strides, 2, 1, kMaxKernel) || !in_range(dilations, 2, 1, kMaxKernel) ||
      !in_range(pads, 4, 0, kMaxPad) || !in_range(out_pad, 2, 0, kMaxKernel)) {
    return attrs.Error(absl::StrCat("strides ", IntList(strides), ", dilations ",
                                    IntList(dilations), ", pads ", IntList(pads),
                                    " or output_padding ", IntList(out_pad),
                                    " unsupported (2-D, positive strides and dilations, "
                                    "non-negative pads)"));
  }
  if (auto_pad == "VALID" && pads != std::vector<int64_t>{0, 0, 0, 0}) {
    return attrs.Error("auto_pad VALID with explicit pads");
  }
  const int64_t out_channels = transpose ? weight.size(1) * group : weight.size(0);
  if (group < 1 || weight.size(0) % group != 0) {
    return attrs.Error(
        absl::StrCat("group ", group, " does not divide the ", weight.size(0), " weight rows"));
  }
  torch::Tensor bias;
  if (b != nullptr) {
    if (!b->constant.defined() || b->constant.numel() != out_channels || IsIntType(b->dtype)) {
      return attrs.Error(absl::StrCat("the bias must be a constant of ", out_channels, " floats"));
    }
    bias = b->constant.to(torch::kFloat32).flatten();
  }
  // Conv -> BatchNormalization: the statistics are folded into the weights and bias.
  std::string out_name = node.output(0);
  const int bn_index =
      (transpose && group != 1) ? -1 : FoldableBatchNorm(node.output(0), out_channels);
  if (bn_index >= 0) {
    const onnx::NodeProto& bn = model_.graph().node(bn_index);
    double eps;
    ASSIGN_OR_RETURN(eps, Attributes(path_, bn).Float("epsilon", 1e-5));
    auto stat = [&](int i) {
      return values_.at(bn.input(i)).constant.to(torch::kFloat64).flatten();
    };
    const torch::Tensor s = stat(1) / torch::sqrt(stat(4) + eps);
    const torch::Tensor shift = stat(2) - stat(3) * s;
    torch::Tensor w64 = weight.to(torch::kFloat64);
    w64 = transpose ? w64 * s.view({1, -1, 1, 1}) : w64 * s.view({-1, 1, 1, 1});
    weight = w64.to(torch::kFloat32);
    bias = ((bias.defined() ? bias.to(torch::kFloat64) * s : torch::zeros_like(s)) + shift)
               .to(torch::kFloat32);
    skip_.insert(bn_index);
    out_name = bn.output(0);
  }
  const std::string weight_expr = AddParam(w->name, weight);
  const std::string bias_expr = bias.defined() ? AddParam(node.output(0) + "_bias", bias) : "None";
  std::string input = TensorExpr(*x);
  int64_t pad_h = pads[0], pad_w = pads[1];
  if (pads[0] != pads[2] || pads[1] != pads[3]) {
    if (transpose) return attrs.Error("asymmetric pads are unsupported for ConvTranspose");
    input = absl::StrCat("torch.constant_pad_nd(", input, ", [", pads[1], ", ", pads[3], ", ",
                         pads[0], ", ", pads[2], "], 0.0)");
    pad_h = pad_w = 0;
  }
  std::string expr;
  if (transpose) {
    expr = absl::StrCat("torch.conv_transpose2d(", input, ", ", weight_expr, ", ", bias_expr, ", ",
                        IntList(strides), ", [", pad_h, ", ", pad_w, "], ", IntList(out_pad), ", ",
                        group, ", ", IntList(dilations), ")");
  } else {
    expr = absl::StrCat("torch.conv2d(", input, ", ", weight_expr, ", ", bias_expr, ", ",
                        IntList(strides), ", [", pad_h, ", ", pad_w, "], ", IntList(dilations),
                        ", ", group, ")");
  }
  SY_RETURN_IF_ERROR(Emit(node, expr));
  if (out_name != node.output(0)) {
    // The folded BatchNormalization's output is the convolution's.
    Value v = values_.at(node.output(0));
    v.name = out_name;
    values_[out_name] = v;
  }
  return absl::OkStatus();
}

absl::Status Converter::BatchNorm(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"epsilon", "momentum", "spatial", "training_mode"}));
  int64_t spatial, training;
  double eps;
  ASSIGN_OR_RETURN(spatial, attrs.Int("spatial", 1));
  ASSIGN_OR_RETURN(training, attrs.Int("training_mode", 0));
  ASSIGN_OR_RETURN(eps, attrs.Float("epsilon", 1e-5));
  if (spatial != 1 || training != 0) {
    return attrs.Error("only inference mode (training_mode 0, spatial 1) is supported");
  }
  std::vector<std::string> args;
  for (int i = 0; i < 5; ++i) {
    Value* v;
    ASSIGN_OR_RETURN(v, In(node, i));
    args.push_back(TensorExpr(*v));
  }
  return Emit(node, absl::StrCat("torch.batch_norm(", absl::StrJoin(args, ", "), ", False, 0.0, ",
                                 FloatLiteral(eps), ", False)"));
}

absl::Status Converter::Pool(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  Value* x;
  ASSIGN_OR_RETURN(x, In(node, 0));
  const std::string in = TensorExpr(*x);
  if (node.op_type() == "GlobalAveragePool") {
    SY_RETURN_IF_ERROR(attrs.Only({}));
    return Emit(node,
                absl::StrCat("torch.mean(", in, ", self._onnx_range(2, ", in, ".dim()), True)"));
  }
  const bool max = node.op_type() == "MaxPool";
  if (max) {
    SY_RETURN_IF_ERROR(attrs.Only({"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                                   "storage_order", "strides"}));
  } else {
    SY_RETURN_IF_ERROR(attrs.Only(
        {"auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"}));
  }
  std::string auto_pad;
  ASSIGN_OR_RETURN(auto_pad, attrs.String("auto_pad", "NOTSET"));
  std::vector<int64_t> kernel, strides, pads, dilations;
  ASSIGN_OR_RETURN(kernel, attrs.Ints("kernel_shape", {}));
  ASSIGN_OR_RETURN(strides, attrs.Ints("strides", {1, 1}));
  ASSIGN_OR_RETURN(pads, attrs.Ints("pads", {0, 0, 0, 0}));
  ASSIGN_OR_RETURN(dilations, attrs.Ints("dilations", {1, 1}));
  int64_t ceil_mode, count_include_pad, storage_order;
  ASSIGN_OR_RETURN(ceil_mode, attrs.Int("ceil_mode", 0));
  ASSIGN_OR_RETURN(count_include_pad, attrs.Int("count_include_pad", 0));
  ASSIGN_OR_RETURN(storage_order, attrs.Int("storage_order", 0));
  bool ok = (auto_pad == "NOTSET" || auto_pad == "VALID") && kernel.size() == 2 &&
            strides.size() == 2 && pads.size() == 4 && dilations.size() == 2 &&
            (ceil_mode == 0 || ceil_mode == 1) &&
            (count_include_pad == 0 || count_include_pad == 1) && storage_order == 0;
  for (int i = 0; ok && i < 2; ++i) {
    ok = kernel[i] >= 1 && kernel[i] <= kMaxKernel && strides[i] >= 1 && strides[i] <= kMaxKernel &&
         dilations[i] >= 1 && dilations[i] <= kMaxKernel && pads[i] == pads[i + 2] &&
         pads[i] >= 0 && pads[i] * 2 <= kernel[i];
  }
  if (!ok || (!max && dilations != std::vector<int64_t>{1, 1})) {
    return attrs.Error(absl::StrCat(
        "kernel_shape ", IntList(kernel), ", strides ", IntList(strides), ", pads ", IntList(pads),
        ", dilations ", IntList(dilations), " or auto_pad ", Quote(CommentText(auto_pad)),
        " unsupported (2-D, symmetric pads of at most half the kernel, storage_order 0)"));
  }
  const std::string pad = absl::StrCat("[", pads[0], ", ", pads[1], "]");
  if (max) {
    return Emit(node,
                absl::StrCat("torch.max_pool2d(", in, ", ", IntList(kernel), ", ", IntList(strides),
                             ", ", pad, ", ", IntList(dilations), ", ", PyBool(ceil_mode), ")"));
  }
  return Emit(node, absl::StrCat("torch.avg_pool2d(", in, ", ", IntList(kernel), ", ",
                                 IntList(strides), ", ", pad, ", ", PyBool(ceil_mode), ", ",
                                 PyBool(count_include_pad), ", None)"));
}

absl::Status Converter::Shape(const onnx::NodeProto& node) {
  SY_RETURN_IF_ERROR(Attributes(path_, node).Only({}));
  Value* x;
  ASSIGN_OR_RETURN(x, In(node, 0));
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
  ASSIGN_OR_RETURN(to, attrs.Int("to", 0));
  if (to != onnx::TensorProto::FLOAT && to != onnx::TensorProto::INT64 &&
      to != onnx::TensorProto::INT32 && to != onnx::TensorProto::DOUBLE &&
      to != onnx::TensorProto::BOOL) {
    return attrs.Error(absl::StrCat("cast to ", onnx_graph::ElemTypeName(static_cast<int32_t>(to)),
                                    " is unsupported (FLOAT, DOUBLE, INT64, INT32, BOOL)"));
  }
  Value* x;
  ASSIGN_OR_RETURN(x, In(node, 0));
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
    ASSIGN_OR_RETURN(starts, attrs.Ints("starts", {}));
    ASSIGN_OR_RETURN(ends, attrs.Ints("ends", {}));
    ASSIGN_OR_RETURN(axes, attrs.Ints("axes", {}));
  } else {
    SY_RETURN_IF_ERROR(attrs.Only({}));
    Value *s, *e, *a, *st;
    ASSIGN_OR_RETURN(s, In(node, 1));
    ASSIGN_OR_RETURN(e, In(node, 2));
    ASSIGN_OR_RETURN(a, OptIn(node, 3));
    ASSIGN_OR_RETURN(st, OptIn(node, 4));
    ASSIGN_OR_RETURN(starts, ConstInts(node, *s));
    ASSIGN_OR_RETURN(ends, ConstInts(node, *e));
    if (a != nullptr) {
      ASSIGN_OR_RETURN(axes, ConstInts(node, *a));
    }
    if (st != nullptr) {
      ASSIGN_OR_RETURN(steps, ConstInts(node, *st));
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
  ASSIGN_OR_RETURN(x, In(node, 0));
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
    ASSIGN_OR_RETURN(axes, attrs.Ints("axes", {}));
  } else {
    SY_RETURN_IF_ERROR(attrs.Only({}));
    Value* a;
    ASSIGN_OR_RETURN(a, OptIn(node, 1));
    if (a != nullptr) {
      ASSIGN_OR_RETURN(axes, ConstInts(node, *a));
    }
  }
  if (!squeeze && axes.empty()) return attrs.Error("Unsqueeze needs axes");
  Value* x;
  ASSIGN_OR_RETURN(x, In(node, 0));
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
  for (int64_t a : axes) absl::StrAppend(&expr, squeeze ? ".squeeze(" : ".unsqueeze(", a, ")");
  return Emit(node, expr, Value::Kind::kTensor, x->dtype);
}

absl::Status Converter::Gather(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"axis"}));
  int64_t axis;
  ASSIGN_OR_RETURN(axis, attrs.Int("axis", 0));
  Value *x, *idx;
  ASSIGN_OR_RETURN(x, In(node, 0));
  ASSIGN_OR_RETURN(idx, In(node, 1));
  if (!IsIntType(idx->dtype)) return attrs.Error("indices must be INT64 or INT32");
  const bool const_idx = idx->constant.defined() && idx->constant.dim() <= 1 &&
                         idx->constant.numel() <= kMaxLiteralInts;
  if (x->kind == Value::Kind::kInts && !x->scalar && axis == 0 && const_idx) {
    std::vector<std::string> items;
    for (int64_t i : ToInts(idx->constant))
      items.push_back(absl::StrCat("(", x->expr, ")[", i, "]"));
    return Emit(node, absl::StrCat("[", absl::StrJoin(items, ", "), "]"), Value::Kind::kInts,
                x->dtype, idx->constant.dim() == 0);
  }
  const std::string in = TensorExpr(*x);
  if (const_idx && idx->constant.dim() == 0) {
    return Emit(node, absl::StrCat(in, ".select(", axis, ", ", ToInts(idx->constant)[0], ")"),
                Value::Kind::kTensor, x->dtype);
  }
  return Emit(node, absl::StrCat("self._onnx_gather(", in, ", ", axis, ", ", TensorExpr(*idx), ")"),
              Value::Kind::kTensor, x->dtype);
}

absl::Status Converter::Concat(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"axis"}));
  if (!attrs.Has("axis")) return attrs.Error("axis is required");
  int64_t axis;
  ASSIGN_OR_RETURN(axis, attrs.Int("axis", 0));
  if (node.input_size() < 1) return attrs.Error("needs at least one input");
  std::vector<Value*> in;
  bool all_ints = true;
  for (int i = 0; i < node.input_size(); ++i) {
    Value* v;
    ASSIGN_OR_RETURN(v, In(node, i));
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
  return Emit(node, absl::StrCat("torch.cat([", absl::StrJoin(parts, ", "), "], ", axis, ")"),
              Value::Kind::kTensor, in[0]->dtype);
}

absl::Status Converter::Reshape(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"allowzero"}));
  int64_t allowzero;
  ASSIGN_OR_RETURN(allowzero, attrs.Int("allowzero", 0));
  Value *x, *shape;
  ASSIGN_OR_RETURN(x, In(node, 0));
  ASSIGN_OR_RETURN(shape, In(node, 1));
  if (!IsIntType(shape->dtype)) return attrs.Error("the shape must be INT64");
  const std::string in = TensorExpr(*x);
  std::string dims;
  if (shape->constant.defined()) {
    std::vector<int64_t> values;
    ASSIGN_OR_RETURN(values, ConstInts(node, *shape));
    std::vector<std::string> items;
    for (size_t i = 0; i < values.size(); ++i) {
      // ONNX's 0 copies the input's dimension (unless allowzero).
      items.push_back(values[i] == 0 && allowzero == 0 ? absl::StrCat(in, ".size(", i, ")")
                                                       : absl::StrCat(values[i]));
    }
    dims = absl::StrCat("[", absl::StrJoin(items, ", "), "]");
  } else {
    dims = allowzero ? IntsExpr(*shape)
                     : absl::StrCat("self._onnx_dims(", in, ", ", IntsExpr(*shape), ")");
  }
  return Emit(node, absl::StrCat(in, ".reshape(", dims, ")"), Value::Kind::kTensor, x->dtype);
}

absl::Status Converter::Resize(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(
      attrs.Only({"coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside",
                  "extrapolation_value", "mode", "nearest_mode"}));
  if (opset_ < 11) return attrs.Error("Resize before opset 11 is unsupported");
  std::string mode, ctm, nearest;
  int64_t exclude;
  ASSIGN_OR_RETURN(mode, attrs.String("mode", "nearest"));
  ASSIGN_OR_RETURN(ctm, attrs.String("coordinate_transformation_mode", "half_pixel"));
  ASSIGN_OR_RETURN(nearest, attrs.String("nearest_mode", "round_prefer_floor"));
  ASSIGN_OR_RETURN(exclude, attrs.Int("exclude_outside", 0));
  std::string align;
  if (mode == "nearest" && ctm == "asymmetric" && nearest == "floor" && exclude == 0) {
    align = "";
  } else if (mode == "linear" && (ctm == "half_pixel" || ctm == "align_corners") && exclude == 0) {
    align = ctm == "align_corners" ? "True, " : "False, ";
  } else {
    return attrs.Error(absl::StrCat(
        "mode ", Quote(CommentText(mode)), " with coordinate_transformation_mode ",
        Quote(CommentText(ctm)), " and nearest_mode ", Quote(CommentText(nearest)),
        " is unsupported (nearest asymmetric floor; linear half_pixel or align_corners)"));
  }
  Value *x, *scales, *sizes;
  ASSIGN_OR_RETURN(x, In(node, 0));
  ASSIGN_OR_RETURN(scales, OptIn(node, 2));
  ASSIGN_OR_RETURN(sizes, OptIn(node, 3));
  if (scales != nullptr && scales->constant.defined() && scales->constant.numel() == 0) {
    scales = nullptr;  // an empty scales tensor means "use sizes"
  }
  const std::string in = TensorExpr(*x);
  const std::string fn =
      mode == "nearest" ? "torch.upsample_nearest2d(" : "torch.upsample_bilinear2d(";
  std::string expr;
  if (scales != nullptr && sizes == nullptr) {
    std::vector<double> s;
    ASSIGN_OR_RETURN(s, ConstFloats(node, *scales));
    if (s.size() != 4 || s[0] != 1.0 || s[1] != 1.0 || !(s[2] > 0 && s[2] <= kMaxKernel) ||
        !(s[3] > 0 && s[3] <= kMaxKernel)) {
      return attrs.Error("scales must be 4 constants [1, 1, h, w] with 0 < h, w <= 64");
    }
    expr = absl::StrCat(fn, in, ", None, ", align, "[", FloatLiteral(s[2]), ", ",
                        FloatLiteral(s[3]), "])");
  } else if (sizes != nullptr && scales == nullptr) {
    const std::string l = IntsExpr(*sizes);
    expr = absl::StrCat(fn, in, ", (", l, ")[2:], ", align, "None)");
  } else {
    return attrs.Error("exactly one of scales and sizes must be given");
  }
  return Emit(node, expr);
}

absl::Status Converter::Gemm(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(attrs.Only({"alpha", "beta", "transA", "transB"}));
  double alpha, beta;
  int64_t ta, tb;
  ASSIGN_OR_RETURN(alpha, attrs.Float("alpha", 1.0));
  ASSIGN_OR_RETURN(beta, attrs.Float("beta", 1.0));
  ASSIGN_OR_RETURN(ta, attrs.Int("transA", 0));
  ASSIGN_OR_RETURN(tb, attrs.Int("transB", 0));
  Value *a, *b, *c;
  ASSIGN_OR_RETURN(a, In(node, 0));
  ASSIGN_OR_RETURN(b, In(node, 1));
  ASSIGN_OR_RETURN(c, OptIn(node, 2));
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
    ASSIGN_OR_RETURN(axes, attrs.Ints("axes", {}));
  } else {
    SY_RETURN_IF_ERROR(attrs.Only({"keepdims", "noop_with_empty_axes"}));
    Value* a;
    ASSIGN_OR_RETURN(a, OptIn(node, 1));
    if (a != nullptr) {
      ASSIGN_OR_RETURN(axes, ConstInts(node, *a));
    }
  }
  ASSIGN_OR_RETURN(keep, attrs.Int("keepdims", 1));
  ASSIGN_OR_RETURN(noop_empty, attrs.Int("noop_with_empty_axes", 0));
  Value* x;
  ASSIGN_OR_RETURN(x, In(node, 0));
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
  ASSIGN_OR_RETURN(x, In(node, 0));
  if (op == "Identity") {
    SY_RETURN_IF_ERROR(attrs.Only({}));
    return Alias(node, *x);
  }
  if (op == "Dropout") {
    SY_RETURN_IF_ERROR(attrs.Only({"ratio", "seed", "is_test"}));
    Value* training;
    ASSIGN_OR_RETURN(training, OptIn(node, 2));
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
    ASSIGN_OR_RETURN(b, In(node, 1));
    return Emit(node, absl::StrCat("torch.matmul(", in, ", ", TensorExpr(*b), ")"));
  }
  if (op == "HardSigmoid") {
    SY_RETURN_IF_ERROR(attrs.Only({"alpha", "beta"}));
    double alpha, beta;
    ASSIGN_OR_RETURN(alpha, attrs.Float("alpha", 0.2));
    ASSIGN_OR_RETURN(beta, attrs.Float("beta", 0.5));
    // In place on the fresh temporary: one allocation, as ONNX Runtime's kernel.
    return Emit(node, absl::StrCat("(", in, " * ", FloatLiteral(alpha), " + ", FloatLiteral(beta),
                                   ").clamp_(0.0, 1.0)"));
  }
  if (op == "LeakyRelu") {
    SY_RETURN_IF_ERROR(attrs.Only({"alpha"}));
    double alpha;
    ASSIGN_OR_RETURN(alpha, attrs.Float("alpha", 0.01));
    return Emit(node, absl::StrCat("torch.leaky_relu(", in, ", ", FloatLiteral(alpha), ")"));
  }
  if (op == "Clip") {
    std::string lo = "None", hi = "None";
    if (opset_ < 11) {
      SY_RETURN_IF_ERROR(attrs.Only({"min", "max"}));
      if (attrs.Has("min")) {
        double v;
        ASSIGN_OR_RETURN(v, attrs.Float("min", 0));
        lo = FloatLiteral(v);
      }
      if (attrs.Has("max")) {
        double v;
        ASSIGN_OR_RETURN(v, attrs.Float("max", 0));
        hi = FloatLiteral(v);
      }
    } else {
      SY_RETURN_IF_ERROR(attrs.Only({}));
      for (int i = 1; i <= 2; ++i) {
        Value* bound;
        ASSIGN_OR_RETURN(bound, OptIn(node, i));
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
    ASSIGN_OR_RETURN(axis, attrs.Int("axis", opset_ < 13 ? 1 : -1));
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
    ASSIGN_OR_RETURN(perm, attrs.Ints("perm", {}));
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
  ASSIGN_OR_RETURN(axis, attrs.Int("axis", 1));
  if (axis < -onnx_graph::kMaxTensorRank || axis > onnx_graph::kMaxTensorRank) {
    return attrs.Error(absl::StrCat("axis ", axis, " is out of range"));
  }
  return Emit(node, absl::StrCat("self._onnx_flatten(", in, ", ", axis, ")"), Value::Kind::kTensor,
              x->dtype);
}

}  // namespace switchyard::runner::onnx_impl
