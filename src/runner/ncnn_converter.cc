#include "runner/ncnn_converter.h"

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status.h"
#include "runner/converter_support.h"
#include "runner/ncnn_param.h"

namespace switchyard::runner {
namespace {

using convert::CommentText;
using convert::FloatLiteral;
using convert::Identifier;
using convert::Quote;
using ncnn::BinReader;
using ncnn::Layer;

constexpr int64_t kMaxChannels = 65536;  // of any blob
constexpr int64_t kMaxKernel = 63;
constexpr int64_t kMaxScale = 16;  // PixelShuffle factor, nearest Interp factor
// Of any blob against the input, up or down: chains of upsampling layers in a hostile file would
// otherwise ask for images of unbounded size at run time (and overflow the scale).
constexpr double kMaxTotalScale = 64;

// What code generation knows about a blob.
struct Blob {
  std::string var;       // TorchScript variable
  int64_t channels = 0;  // known for every blob (the input has 3)
  double scale = 1.0;    // spatial size / the model input's
  bool consumed = false;
};

class Converter {
 public:
  Converter(std::filesystem::path param_path, std::filesystem::path bin_path,
            NcnnConvertOptions options)
      : param_path_(std::move(param_path)), bin_path_(std::move(bin_path)), options_(options) {}

  absl::StatusOr<torch::jit::Module> Run() {
    if (!(options_.value_range > 0) || !std::isfinite(options_.value_range)) {
      return absl::InvalidArgumentError(
          absl::StrCat("value_range must be positive, got ", options_.value_range));
    }
    auto param_text = convert::ReadFileLimited(param_path_, "ncnn .param", kMaxNcnnParamBytes);
    if (!param_text.ok()) return param_text.status();
    SY_RETURN_IF_ERROR(ncnn::ParseParam(param_path_, *param_text, &layers_));
    auto bin = convert::ReadFileLimited(bin_path_, "ncnn .bin", kMaxNcnnBinBytes);
    if (!bin.ok()) return bin.status();
    BinReader reader(*bin);
    SY_RETURN_IF_ERROR(Generate(&reader));
    if (reader.left() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(bin_path_.string(), ": the graph's weights end at byte ", reader.offset(),
                       " but the .bin has ", bin->size(), " bytes (wrong .bin for this .param?)"));
    }
    return BuildModule();
  }

 private:
  absl::Status Invalid(const std::string& reason) const {
    return ncnn::ParamError(param_path_, reason);
  }
  absl::Status LayerError(const Layer& layer, const std::string& reason) const {
    return ncnn::LayerError(param_path_, layer, reason);
  }
  absl::Status OnlyParams(const Layer& layer, std::initializer_list<int> allowed) const {
    return ncnn::OnlyParams(param_path_, layer, allowed);
  }
  absl::Status GetInt(const Layer& layer, int key, int64_t fallback, int64_t* out) const {
    return ncnn::GetInt(param_path_, layer, key, fallback, out);
  }
  // Several int parameters whose fallbacks are constants, read in order.
  struct IntParam {
    int key;
    int64_t fallback;
    int64_t* out;
  };
  absl::Status GetInts(const Layer& layer, std::initializer_list<IntParam> params) const {
    for (const IntParam& p : params) SY_RETURN_IF_ERROR(GetInt(layer, p.key, p.fallback, p.out));
    return absl::OkStatus();
  }
  absl::Status GetFloat(const Layer& layer, int key, double fallback, double* out) const {
    return ncnn::GetFloat(param_path_, layer, key, fallback, out);
  }
  absl::Status GetFloatArray(const Layer& layer, int key, std::vector<double>* out) const {
    return ncnn::GetFloatArray(param_path_, layer, key, out);
  }

  // --- code generation --------------------------------------------------------------------

  absl::Status Generate(BinReader* reader) {
    std::map<std::string, Blob> blobs;
    bool have_input = false;
    int var_index = 0;
    for (const Layer& layer : layers_) {
      std::vector<Blob*> in;
      for (const std::string& name : layer.bottoms) {
        auto it = blobs.find(name);
        if (it == blobs.end()) {
          return LayerError(layer, absl::StrCat("bottom blob ", Quote(CommentText(name)),
                                                " is produced by no earlier layer"));
        }
        it->second.consumed = true;
        in.push_back(&it->second);
      }
      auto expect = [&](size_t bottoms, size_t tops) -> absl::Status {
        if (layer.bottoms.size() != bottoms || layer.tops.size() != tops) {
          return LayerError(
              layer, absl::StrCat("has ", layer.bottoms.size(), " bottom and ", layer.tops.size(),
                                  " top blobs, expected ", bottoms, " and ", tops));
        }
        return absl::OkStatus();
      };
      Blob out;
      std::string expr;
      if (layer.type == "Input") {
        SY_RETURN_IF_ERROR(expect(0, 1));
        if (have_input) return LayerError(layer, "only one Input layer is supported");
        have_input = true;
        SY_RETURN_IF_ERROR(OnlyParams(layer, {0, 1, 2}));
        int64_t w, h, c;
        SY_RETURN_IF_ERROR(GetInt(layer, 0, 0, &w));
        SY_RETURN_IF_ERROR(GetInt(layer, 1, 0, &h));
        SY_RETURN_IF_ERROR(GetInt(layer, 2, 0, &c));
        if (c != 0 && c != 3) {
          return LayerError(
              layer, absl::StrCat("declares ", c, " channels; the contract's images have 3"));
        }
        out.channels = 3;
        expr = "x";
      } else if (layer.type == "Split") {
        if (layer.bottoms.size() != 1 || layer.tops.empty()) {
          return LayerError(layer, "expects 1 bottom and at least 1 top blob");
        }
        SY_RETURN_IF_ERROR(OnlyParams(layer, {}));
        for (const std::string& top : layer.tops) {
          Blob copy = *in[0];
          copy.consumed = false;
          blobs[top] = copy;  // the same tensor: nothing in the module writes in place
        }
        continue;
      } else if (layer.type == "Convolution") {
        SY_RETURN_IF_ERROR(expect(1, 1));
        SY_RETURN_IF_ERROR(Convolution(layer, *in[0], reader, &out, &expr));
      } else if (layer.type == "PReLU") {
        SY_RETURN_IF_ERROR(expect(1, 1));
        SY_RETURN_IF_ERROR(PRelu(layer, *in[0], reader, &out, &expr));
      } else if (layer.type == "PixelShuffle") {
        SY_RETURN_IF_ERROR(expect(1, 1));
        SY_RETURN_IF_ERROR(PixelShuffle(layer, *in[0], &out, &expr));
      } else if (layer.type == "Interp") {
        SY_RETURN_IF_ERROR(expect(1, 1));
        SY_RETURN_IF_ERROR(Interp(layer, *in[0], &out, &expr));
      } else if (layer.type == "BinaryOp") {
        SY_RETURN_IF_ERROR(BinaryOp(layer, in, &out, &expr));
      } else if (layer.type == "Eltwise") {
        SY_RETURN_IF_ERROR(Eltwise(layer, in, &out, &expr));
      } else if (layer.type == "Concat") {
        SY_RETURN_IF_ERROR(Concat(layer, in, &out, &expr));
      } else {
        return LayerError(layer,
                          absl::StrCat("unsupported layer type ", Quote(CommentText(layer.type)),
                                       " (supported: Input, Split, Convolution, PReLU, "
                                       "PixelShuffle, Interp, BinaryOp, Eltwise, Concat)"));
      }
      if (!(out.scale <= kMaxTotalScale && out.scale >= 1.0 / kMaxTotalScale)) {
        return LayerError(layer, absl::StrCat("scales the image by ", out.scale,
                                              " in all, beyond the limit of ", kMaxTotalScale));
      }
      out.var = absl::StrCat("t", var_index++);
      absl::StrAppend(&network_, "    ", out.var, " = ", expr, "  # ", CommentText(layer.name),
                      " (", CommentText(layer.type), ")\n");
      blobs[layer.tops[0]] = out;
    }
    if (!have_input) return Invalid("the graph has no Input layer");
    std::vector<std::string> outputs;
    const Blob* result = nullptr;
    for (const auto& [name, blob] : blobs) {
      if (!blob.consumed) {
        outputs.push_back(Quote(CommentText(name)));
        result = &blob;
      }
    }
    if (outputs.size() != 1) {
      return Invalid(
          absl::StrCat("the graph must have exactly one output (a blob no layer "
                       "consumes), it has ",
                       outputs.size(), ": ", absl::StrJoin(outputs, ", ")));
    }
    if (result->channels != 3) {
      return Invalid(absl::StrCat("the output has ", result->channels,
                                  " channels; the contract's images have 3"));
    }
    const double rounded = std::round(result->scale);
    if (rounded < 1 || std::abs(result->scale - rounded) > 1e-6) {
      return Invalid(absl::StrCat("the output is scaled by ", result->scale,
                                  ", not a whole number of times the input"));
    }
    scale_ = static_cast<int64_t>(rounded);
    output_var_ = result->var;
    return absl::OkStatus();
  }

  std::string ParamName(const Layer& layer, const std::string& suffix) {
    std::string base = Identifier(layer.name);
    std::string name = absl::StrCat(base, "_", suffix);
    for (int n = 2; used_names_.count(name); ++n) name = absl::StrCat(base, "_", n, "_", suffix);
    used_names_.insert(name);
    return name;
  }

  absl::Status CheckFinite(const Layer& layer, const std::vector<float>& values,
                           const char* what) const {
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) {
        return LayerError(layer, absl::StrCat(what, " value ", i, " is not finite"));
      }
    }
    return absl::OkStatus();
  }

  // Reads `count` raw float32 values (ncnn's "type 1" blob: a bias, PReLU slopes) into a new
  // parameter `<layer>_<suffix>` and returns its name; `what` names them in errors.
  absl::StatusOr<std::string> RawParam(const Layer& layer, BinReader* reader, int64_t count,
                                       const char* what, const char* suffix) {
    std::vector<float> values;
    if (absl::Status st = reader->ReadRaw(count, &values); !st.ok()) {
      return LayerError(layer, absl::StrCat(what, ": ", st.message()));
    }
    SY_RETURN_IF_ERROR(CheckFinite(layer, values, suffix));
    std::string name = ParamName(layer, suffix);
    params_.emplace_back(name, torch::from_blob(values.data(), {count}, torch::kFloat32).clone());
    return name;
  }

  absl::Status Convolution(const Layer& layer, const Blob& in, BinReader* reader, Blob* out,
                           std::string* expr) {
    SY_RETURN_IF_ERROR(
        OnlyParams(layer, {0, 1, 11, 2, 12, 3, 13, 4, 15, 14, 16, 18, 5, 6, 8, 9, 10, 19}));
    int64_t num_output, kw, kh, dw, dh, sw, sh, pl, pr, pt, pb, bias_term, weight_size, int8,
        activation, dynamic;
    double pad_value;
    SY_RETURN_IF_ERROR(GetInt(layer, 0, 0, &num_output));
    SY_RETURN_IF_ERROR(GetInt(layer, 1, 0, &kw));
    SY_RETURN_IF_ERROR(GetInt(layer, 11, kw, &kh));
    SY_RETURN_IF_ERROR(GetInt(layer, 2, 1, &dw));
    SY_RETURN_IF_ERROR(GetInt(layer, 12, dw, &dh));
    SY_RETURN_IF_ERROR(GetInt(layer, 3, 1, &sw));
    SY_RETURN_IF_ERROR(GetInt(layer, 13, sw, &sh));
    SY_RETURN_IF_ERROR(GetInt(layer, 4, 0, &pl));
    SY_RETURN_IF_ERROR(GetInt(layer, 15, pl, &pr));
    SY_RETURN_IF_ERROR(GetInt(layer, 14, pl, &pt));
    SY_RETURN_IF_ERROR(GetInt(layer, 16, pt, &pb));
    SY_RETURN_IF_ERROR(GetFloat(layer, 18, 0.0, &pad_value));
    SY_RETURN_IF_ERROR(GetInt(layer, 5, 0, &bias_term));
    SY_RETURN_IF_ERROR(GetInt(layer, 6, 0, &weight_size));
    SY_RETURN_IF_ERROR(GetInt(layer, 8, 0, &int8));
    SY_RETURN_IF_ERROR(GetInt(layer, 9, 0, &activation));
    SY_RETURN_IF_ERROR(GetInt(layer, 19, 0, &dynamic));
    if (num_output < 1 || num_output > kMaxChannels) {
      return LayerError(
          layer, absl::StrCat("num_output (0) ", num_output, " is outside 1..", kMaxChannels));
    }
    if (kw < 1 || kh < 1 || kw > kMaxKernel || kh > kMaxKernel) {
      return LayerError(layer, absl::StrCat("kernel ", kw, "x", kh, " is outside 1..", kMaxKernel));
    }
    if (dw < 1 || dh < 1 || dw > kMaxKernel || dh > kMaxKernel) {
      return LayerError(layer, absl::StrCat("dilation ", dw, "x", dh, " is unsupported"));
    }
    if (sw != 1 || sh != 1) {
      return LayerError(layer, absl::StrCat("stride ", sw, "x", sh, " is unsupported (only 1)"));
    }
    if (pl < 0 || pr < 0 || pt < 0 || pb < 0 || pl > kMaxKernel * kMaxKernel ||
        pr > kMaxKernel * kMaxKernel || pt > kMaxKernel * kMaxKernel ||
        pb > kMaxKernel * kMaxKernel) {
      return LayerError(layer, absl::StrCat("padding ", pl, ",", pr, ",", pt, ",", pb,
                                            " is unsupported (only explicit non-negative "
                                            "padding; -233/-234 'same' modes are not read)"));
    }
    if (pad_value != 0.0) {
      return LayerError(layer,
                        absl::StrCat("pad_value (18) ", pad_value, " is unsupported (only 0)"));
    }
    if (bias_term != 0 && bias_term != 1) {
      return LayerError(layer, absl::StrCat("bias_term (5) ", bias_term, " is not 0 or 1"));
    }
    if (int8 != 0) return LayerError(layer, "int8 convolution (8) is unsupported");
    if (dynamic != 0) return LayerError(layer, "dynamic_weight (19) is unsupported");
    const int64_t per_input = num_output * kw * kh;
    if (weight_size < 1 || weight_size % per_input != 0 || weight_size / per_input != in.channels) {
      return LayerError(
          layer, absl::StrCat("weight_data_size (6) ", weight_size, " is not ", num_output,
                              " outputs x ", in.channels, " input channels x ", kw, "x", kh));
    }
    std::string activation_fmt = "{}";
    std::vector<double> activation_params;
    SY_RETURN_IF_ERROR(GetFloatArray(layer, 10, &activation_params));
    if (activation == 0 || activation == 1) {
      if (!activation_params.empty()) {
        return LayerError(layer,
                          "activation parameters (10) given without an activation that "
                          "takes them");
      }
      if (activation == 1) activation_fmt = "torch.relu({})";
    } else if (activation == 2) {
      double slope = 0.0;
      if (activation_params.size() == 1) {
        slope = activation_params[0];
      } else if (!activation_params.empty()) {
        return LayerError(layer, "leaky ReLU takes one activation parameter (10)");
      }
      activation_fmt = absl::StrCat("torch.leaky_relu({}, ", FloatLiteral(slope), ")");
    } else {
      return LayerError(layer, absl::StrCat("activation_type (9) ", activation,
                                            " is unsupported (only 0 none, 1 ReLU, 2 leaky ReLU)"));
    }

    std::vector<float> weights;
    if (absl::Status st = reader->ReadTagged(weight_size, &weights); !st.ok()) {
      return LayerError(layer, absl::StrCat("weights: ", st.message()));
    }
    SY_RETURN_IF_ERROR(CheckFinite(layer, weights, "weight"));
    const std::string weight_name = ParamName(layer, "weight");
    params_.emplace_back(
        weight_name,
        torch::from_blob(weights.data(), {num_output, in.channels, kh, kw}, torch::kFloat32)
            .clone());
    std::string bias_arg = "None";
    if (bias_term) {
      auto bias_name = RawParam(layer, reader, num_output, "bias", "bias");
      if (!bias_name.ok()) return bias_name.status();
      bias_arg = "self." + *bias_name;
    }
    std::string input = in.var;
    int64_t pad_h = pt, pad_w = pl;
    if (pl != pr || pt != pb) {
      input = absl::StrCat("torch.constant_pad_nd(", input, ", [", pl, ", ", pr, ", ", pt, ", ", pb,
                           "], 0.0)");
      pad_h = pad_w = 0;
    }
    const std::string conv =
        absl::StrCat("torch.conv2d(", input, ", self.", weight_name, ", ", bias_arg, ", [1, 1], [",
                     pad_h, ", ", pad_w, "], [", dh, ", ", dw, "], 1)");
    *expr = absl::StrReplaceAll(activation_fmt, {{"{}", conv}});
    *out = in;
    out->consumed = false;
    out->channels = num_output;
    return absl::OkStatus();
  }

  absl::Status PRelu(const Layer& layer, const Blob& in, BinReader* reader, Blob* out,
                     std::string* expr) {
    SY_RETURN_IF_ERROR(OnlyParams(layer, {0}));
    int64_t num_slope;
    SY_RETURN_IF_ERROR(GetInt(layer, 0, 0, &num_slope));
    if (num_slope != 1 && num_slope != in.channels) {
      return LayerError(layer, absl::StrCat("num_slope (0) ", num_slope, " is neither 1 nor the ",
                                            in.channels, " channels"));
    }
    auto name = RawParam(layer, reader, num_slope, "slopes", "slope");
    if (!name.ok()) return name.status();
    *expr = absl::StrCat("torch.prelu(", in.var, ", self.", *name, ")");
    *out = in;
    out->consumed = false;
    return absl::OkStatus();
  }

  absl::Status PixelShuffle(const Layer& layer, const Blob& in, Blob* out,
                            std::string* expr) const {
    SY_RETURN_IF_ERROR(OnlyParams(layer, {0, 1}));
    int64_t factor, mode;
    SY_RETURN_IF_ERROR(GetInt(layer, 0, 1, &factor));
    SY_RETURN_IF_ERROR(GetInt(layer, 1, 0, &mode));
    if (factor < 1 || factor > kMaxScale) {
      return LayerError(layer,
                        absl::StrCat("upscale_factor (0) ", factor, " is outside 1..", kMaxScale));
    }
    // ncnn mode 0 reads input channel p*r*r + sh*r + sw for output channel p, row offset sh,
    // column offset sw: exactly torch.pixel_shuffle. Mode 1 (TF's depth-to-space) is not done.
    if (mode != 0) {
      return LayerError(layer, absl::StrCat("mode (1) ", mode, " is unsupported (only 0)"));
    }
    if (in.channels % (factor * factor) != 0) {
      return LayerError(
          layer, absl::StrCat(in.channels, " channels do not divide by ", factor, "x", factor));
    }
    *expr = absl::StrCat("torch.pixel_shuffle(", in.var, ", ", factor, ")");
    *out = in;
    out->consumed = false;
    out->channels = in.channels / (factor * factor);
    out->scale = in.scale * static_cast<double>(factor);
    return absl::OkStatus();
  }

  absl::Status Interp(const Layer& layer, const Blob& in, Blob* out, std::string* expr) const {
    SY_RETURN_IF_ERROR(OnlyParams(layer, {0, 1, 2, 3, 4, 5, 6}));
    int64_t type, out_h, out_w, dynamic, align_corner;
    double hs, ws;
    SY_RETURN_IF_ERROR(GetInt(layer, 0, 0, &type));
    SY_RETURN_IF_ERROR(GetFloat(layer, 1, 1.0, &hs));
    SY_RETURN_IF_ERROR(GetFloat(layer, 2, 1.0, &ws));
    SY_RETURN_IF_ERROR(
        GetInts(layer, {{3, 0, &out_h}, {4, 0, &out_w}, {5, 0, &dynamic}, {6, 0, &align_corner}}));
    if (out_h != 0 || out_w != 0 || dynamic != 0) {
      return LayerError(layer,
                        "a fixed or dynamic output size (3, 4, 5) is unsupported (only "
                        "scale factors)");
    }
    if (align_corner != 0) return LayerError(layer, "align_corner (6) 1 is unsupported");
    if (hs != ws) {
      return LayerError(layer, absl::StrCat("height scale ", hs, " and width scale ", ws,
                                            " differ (unsupported)"));
    }
    *out = in;
    out->consumed = false;
    const std::string& x = in.var;
    if (type == 1) {
      // ncnn's nearest reads source pixel floor(y / scale); for a whole scale that is an exact
      // repeat, done with expand + reshape: [N,C,H,W] -> [N,C,H,s,W,s] -> [N,C,H*s,W*s].
      const double k = std::round(hs);
      if (k < 1 || k > kMaxScale || k != hs) {
        return LayerError(
            layer, absl::StrCat("nearest scale ", hs, " is unsupported (only whole numbers 1..",
                                kMaxScale, ")"));
      }
      const int64_t s = static_cast<int64_t>(k);
      *expr = absl::StrCat(x, ".unsqueeze(3).unsqueeze(5).expand(-1, -1, -1, ", s, ", -1, ", s,
                           ").reshape(", x, ".size(0), ", x, ".size(1), ", x, ".size(2) * ", s,
                           ", ", x, ".size(3) * ", s, ")");
      out->scale = in.scale * k;
    } else if (type == 3) {
      // ncnn's bicubic: A = -0.75, source x = (dx + 0.5) * in/out - 0.5, taps outside the image
      // clamped to the edge (its coefficient folding is the same as clamping), output size
      // int(size * scale): what aten's upsample_bicubic2d does given that output size. (The
      // size is computed in double here, float32 in ncnn: they agree for 0.5 and 0.75.)
      if (!(hs > 0) || hs > kMaxScale) {
        return LayerError(layer,
                          absl::StrCat("bicubic scale ", hs, " is outside (0, ", kMaxScale, "]"));
      }
      const std::string s = FloatLiteral(hs);
      *expr = absl::StrCat("torch.upsample_bicubic2d(", x, ", [int(float(", x, ".size(2)) * ", s,
                           "), int(float(", x, ".size(3)) * ", s, ")], False, None, None)");
      out->scale = in.scale * hs;
    } else {
      return LayerError(layer, absl::StrCat("resize_type (0) ", type,
                                            " is unsupported (only 1 nearest, 3 bicubic)"));
    }
    return absl::OkStatus();
  }

  absl::Status SameGrid(const Layer& layer, const std::vector<Blob*>& in) const {
    for (const Blob* b : in) {
      if (b->channels != in[0]->channels) {
        return LayerError(layer, absl::StrCat("inputs have different channel counts ",
                                              in[0]->channels, " and ", b->channels));
      }
      if (b->scale != in[0]->scale) {
        return LayerError(layer, absl::StrCat("inputs are scaled differently (", in[0]->scale,
                                              " and ", b->scale, ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status BinaryOp(const Layer& layer, const std::vector<Blob*>& in, Blob* out,
                        std::string* expr) const {
    SY_RETURN_IF_ERROR(OnlyParams(layer, {0, 1, 2}));
    int64_t op, with_scalar;
    double b;
    SY_RETURN_IF_ERROR(GetInt(layer, 0, 0, &op));
    SY_RETURN_IF_ERROR(GetInt(layer, 1, 0, &with_scalar));
    SY_RETURN_IF_ERROR(GetFloat(layer, 2, 0.0, &b));
    static const char* const kOps[] = {" + ", " - ", " * "};
    if (op < 0 || op > 2) {
      return LayerError(
          layer, absl::StrCat("op_type (0) ", op, " is unsupported (only 0 add, 1 sub, 2 mul)"));
    }
    if (layer.tops.size() != 1) return LayerError(layer, "expects 1 top blob");
    if (with_scalar == 1) {
      if (in.size() != 1) return LayerError(layer, "with_scalar=1 expects 1 bottom blob");
      *expr = absl::StrCat(in[0]->var, kOps[op], FloatLiteral(b));
    } else if (with_scalar == 0) {
      if (in.size() != 2) return LayerError(layer, "expects 2 bottom blobs");
      if (layer.params.count(2)) return LayerError(layer, "b (2) given without with_scalar=1");
      // ncnn broadcasts blobs of different shapes; only equal shapes are converted.
      SY_RETURN_IF_ERROR(SameGrid(layer, in));
      *expr = absl::StrCat(in[0]->var, kOps[op], in[1]->var);
    } else {
      return LayerError(layer, absl::StrCat("with_scalar (1) ", with_scalar, " is not 0 or 1"));
    }
    *out = *in[0];
    out->consumed = false;
    return absl::OkStatus();
  }

  absl::Status Eltwise(const Layer& layer, const std::vector<Blob*>& in, Blob* out,
                       std::string* expr) const {
    SY_RETURN_IF_ERROR(OnlyParams(layer, {0, 1}));
    if (in.size() < 2 || layer.tops.size() != 1) {
      return LayerError(layer, "expects at least 2 bottom blobs and 1 top blob");
    }
    SY_RETURN_IF_ERROR(SameGrid(layer, in));
    int64_t op;
    std::vector<double> coeffs;
    SY_RETURN_IF_ERROR(GetInt(layer, 0, 0, &op));
    SY_RETURN_IF_ERROR(GetFloatArray(layer, 1, &coeffs));
    if (op != 1) {
      return LayerError(layer, absl::StrCat("op_type (0) ", op, " is unsupported (only 1 sum)"));
    }
    if (!coeffs.empty() && coeffs.size() != in.size()) {
      return LayerError(
          layer, absl::StrCat(coeffs.size(), " coefficients (1) for ", in.size(), " inputs"));
    }
    std::vector<std::string> terms;
    for (size_t i = 0; i < in.size(); ++i) {
      terms.push_back(coeffs.empty() ? in[i]->var
                                     : absl::StrCat(in[i]->var, " * ", FloatLiteral(coeffs[i])));
    }
    *expr = absl::StrJoin(terms, " + ");
    *out = *in[0];
    out->consumed = false;
    return absl::OkStatus();
  }

  absl::Status Concat(const Layer& layer, const std::vector<Blob*>& in, Blob* out,
                      std::string* expr) const {
    SY_RETURN_IF_ERROR(OnlyParams(layer, {0}));
    if (in.empty() || layer.tops.size() != 1) {
      return LayerError(layer, "expects at least 1 bottom blob and 1 top blob");
    }
    int64_t axis;
    SY_RETURN_IF_ERROR(GetInt(layer, 0, 0, &axis));
    if (axis != 0) {
      return LayerError(layer, absl::StrCat("axis (0) ", axis,
                                            " is unsupported (only 0, "
                                            "channels)"));
    }
    std::vector<std::string> vars;
    int64_t channels = 0;
    for (const Blob* b : in) {
      if (b->scale != in[0]->scale) {
        return LayerError(layer, "inputs are scaled differently");
      }
      vars.push_back(b->var);
      channels += b->channels;
    }
    if (channels > kMaxChannels) return LayerError(layer, "too many channels");
    *expr = absl::StrCat("torch.cat([", absl::StrJoin(vars, ", "), "], 1)");
    *out = *in[0];
    out->consumed = false;
    out->channels = channels;
    return absl::OkStatus();
  }

  // --- module -----------------------------------------------------------------------------

  absl::StatusOr<torch::jit::Module> BuildModule() {
    // The network runs on 0..value_range; the contracts are on 0..255.
    const std::string to_net = FloatLiteral(options_.value_range / 255.0);
    const std::string from_net = FloatLiteral(255.0 / options_.value_range);
    std::string source = absl::StrCat("def network(self, x: Tensor) -> Tensor:\n", network_,
                                      "    return ", output_var_, "\n\n");
    if (options_.contract == NcnnContract::kUpscale) {
      absl::StrAppend(&source, "def forward(self, x: Tensor) -> Tensor:\n",
                      "    return self.network(x * ", to_net, ") * ", from_net, "\n");
    } else {
      absl::StrAppend(&source, "def forward(self, frame: Tensor, params: str) -> Tensor:\n",
                      "    y = self.network(frame * ", to_net, ") * ", from_net, "\n",
                      "    # live-video-to-video wants even sizes (x3 of an odd frame is odd)\n",
                      "    return y.narrow(2, 0, y.size(2) - y.size(2) % 2)"
                      ".narrow(3, 0, y.size(3) - y.size(3) % 2)\n");
    }
    return convert::BuildModule("NcnnModel", params_, scale_, source, param_path_);
  }

  std::filesystem::path param_path_;
  std::filesystem::path bin_path_;
  NcnnConvertOptions options_;
  std::vector<Layer> layers_;
  std::set<std::string> used_names_ = {"forward", "network", "training", "scale"};
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::string network_;
  std::string output_var_;
  int64_t scale_ = 1;
};

}  // namespace

absl::StatusOr<torch::jit::Module> ConvertNcnnModel(const std::filesystem::path& param_path,
                                                    const std::filesystem::path& bin_path,
                                                    const NcnnConvertOptions& options) {
  return convert::NoExceptions(param_path,
                               [&] { return Converter(param_path, bin_path, options).Run(); });
}

}  // namespace switchyard::runner
