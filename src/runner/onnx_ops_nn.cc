// Code generators for the convolutional operators (Conv, ConvTranspose, BatchNormalization,
// pools, Resize) and the two rewrites that keep the converted graph as fast as plain libtorch
// ops: BatchNormalization folded into the Conv before it, and paddle2onnx's hardswish chain
// (Add, Clip, Mul, Div) as one torch.hardswish.
#include <cmath>
#include <string>
#include <vector>

#include "runner/onnx_converter_impl.h"

namespace switchyard::runner::onnx_impl {

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
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  ONNX_ASSIGN_OR_RETURN(w, In(node, 1));
  ONNX_ASSIGN_OR_RETURN(b, OptIn(node, 2));
  if (!w->constant.defined() || w->constant.dim() != 4 || IsIntType(w->dtype)) {
    return attrs.Error(
        "only 2-D convolution with constant float weights [O, I, kH, kW] is supported");
  }
  std::string auto_pad;
  ONNX_ASSIGN_OR_RETURN(auto_pad, attrs.String("auto_pad", "NOTSET"));
  if (auto_pad != "NOTSET" && auto_pad != "VALID") {
    return attrs.Error(absl::StrCat("auto_pad ", Quote(CommentText(auto_pad)),
                                    " is unsupported (only NOTSET, VALID)"));
  }
  torch::Tensor weight = w->constant.to(torch::kFloat32);
  const int64_t kh = weight.size(2), kw = weight.size(3);
  std::vector<int64_t> kernel, strides, dilations, pads, out_pad;
  ONNX_ASSIGN_OR_RETURN(kernel, attrs.Ints("kernel_shape", {kh, kw}));
  ONNX_ASSIGN_OR_RETURN(strides, attrs.Ints("strides", {1, 1}));
  ONNX_ASSIGN_OR_RETURN(dilations, attrs.Ints("dilations", {1, 1}));
  ONNX_ASSIGN_OR_RETURN(pads, attrs.Ints("pads", {0, 0, 0, 0}));
  ONNX_ASSIGN_OR_RETURN(out_pad, attrs.Ints("output_padding", {0, 0}));
  int64_t group;
  ONNX_ASSIGN_OR_RETURN(group, attrs.Int("group", 1));
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
  if (group < 1 || group > weight.size(0) || weight.size(0) % group != 0) {
    return attrs.Error(
        absl::StrCat("group ", group, " does not divide the ", weight.size(0), " weight rows"));
  }
  const int64_t out_channels = transpose ? weight.size(1) * group : weight.size(0);
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
    ONNX_ASSIGN_OR_RETURN(eps, Attributes(path_, bn).Float("epsilon", 1e-5));
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
  ONNX_ASSIGN_OR_RETURN(spatial, attrs.Int("spatial", 1));
  ONNX_ASSIGN_OR_RETURN(training, attrs.Int("training_mode", 0));
  ONNX_ASSIGN_OR_RETURN(eps, attrs.Float("epsilon", 1e-5));
  if (spatial != 1 || training != 0) {
    return attrs.Error("only inference mode (training_mode 0, spatial 1) is supported");
  }
  std::vector<std::string> args;
  for (int i = 0; i < 5; ++i) {
    Value* v;
    ONNX_ASSIGN_OR_RETURN(v, In(node, i));
    args.push_back(TensorExpr(*v));
  }
  return Emit(node, absl::StrCat("torch.batch_norm(", absl::StrJoin(args, ", "), ", False, 0.0, ",
                                 FloatLiteral(eps), ", False)"));
}

absl::Status Converter::Pool(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  Value* x;
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
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
  ONNX_ASSIGN_OR_RETURN(auto_pad, attrs.String("auto_pad", "NOTSET"));
  std::vector<int64_t> kernel, strides, pads, dilations;
  ONNX_ASSIGN_OR_RETURN(kernel, attrs.Ints("kernel_shape", {}));
  ONNX_ASSIGN_OR_RETURN(strides, attrs.Ints("strides", {1, 1}));
  ONNX_ASSIGN_OR_RETURN(pads, attrs.Ints("pads", {0, 0, 0, 0}));
  ONNX_ASSIGN_OR_RETURN(dilations, attrs.Ints("dilations", {1, 1}));
  int64_t ceil_mode, count_include_pad, storage_order;
  ONNX_ASSIGN_OR_RETURN(ceil_mode, attrs.Int("ceil_mode", 0));
  ONNX_ASSIGN_OR_RETURN(count_include_pad, attrs.Int("count_include_pad", 0));
  ONNX_ASSIGN_OR_RETURN(storage_order, attrs.Int("storage_order", 0));
  bool ok = (auto_pad == "NOTSET" || auto_pad == "VALID") && kernel.size() == 2 &&
            strides.size() == 2 && pads.size() == 4 && dilations.size() == 2 &&
            (ceil_mode == 0 || ceil_mode == 1) &&
            (count_include_pad == 0 || count_include_pad == 1) && storage_order == 0;
  for (int i = 0; ok && i < 2; ++i) {
    ok = kernel[i] >= 1 && kernel[i] <= kMaxKernel && strides[i] >= 1 && strides[i] <= kMaxKernel &&
         dilations[i] >= 1 && dilations[i] <= kMaxKernel && pads[i] == pads[i + 2] &&
         pads[i] >= 0 && pads[i] <= kernel[i] / 2;
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

absl::Status Converter::Resize(const onnx::NodeProto& node) {
  Attributes attrs(path_, node);
  SY_RETURN_IF_ERROR(
      attrs.Only({"coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside",
                  "extrapolation_value", "mode", "nearest_mode"}));
  if (opset_ < 11) return attrs.Error("Resize before opset 11 is unsupported");
  std::string mode, ctm, nearest;
  int64_t exclude;
  ONNX_ASSIGN_OR_RETURN(mode, attrs.String("mode", "nearest"));
  ONNX_ASSIGN_OR_RETURN(ctm, attrs.String("coordinate_transformation_mode", "half_pixel"));
  ONNX_ASSIGN_OR_RETURN(nearest, attrs.String("nearest_mode", "round_prefer_floor"));
  ONNX_ASSIGN_OR_RETURN(exclude, attrs.Int("exclude_outside", 0));
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
  ONNX_ASSIGN_OR_RETURN(x, In(node, 0));
  ONNX_ASSIGN_OR_RETURN(scales, OptIn(node, 2));
  ONNX_ASSIGN_OR_RETURN(sizes, OptIn(node, 3));
  if (scales != nullptr && scales->constant.defined() && scales->constant.numel() == 0) {
    scales = nullptr;  // an empty scales tensor means "use sizes"
  }
  const std::string in = TensorExpr(*x);
  const std::string fn =
      mode == "nearest" ? "torch.upsample_nearest2d(" : "torch.upsample_bilinear2d(";
  std::string expr;
  if (scales != nullptr && sizes == nullptr) {
    std::vector<double> s;
    ONNX_ASSIGN_OR_RETURN(s, ConstFloats(node, *scales));
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

}  // namespace switchyard::runner::onnx_impl
