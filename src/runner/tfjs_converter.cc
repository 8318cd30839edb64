#include "runner/tfjs_converter.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "runner/converter_support.h"
#include "runner/tfjs_model.h"

namespace switchyard::runner {
namespace {

using Json = nlohmann::json;

using convert::CommentText;
using convert::Identifier;
using convert::Quote;

// What we know about a tensor (a layer's output) while generating code.
struct TensorInfo {
  std::string var;                  // TorchScript variable holding it
  std::optional<int64_t> channels;  // unknown for an input declared with channels = null
  int64_t scale_h = 1;              // size ratio to the model input, from UpSampling2D layers
  int64_t scale_w = 1;
  // An UpSampling2D output that was never materialised: its only consumer, a Conv2D, reads
  // `folded_from` (the low-resolution tensor) with weights that do the repeat (FoldedConv).
  std::string folded_from;
  int64_t folded_factor = 0;
  // A Conv2D output whose channels were permuted so that torch's pixel_shuffle with this block
  // size gives TF's depth_to_space order (its only consumer is that PixelShuffle layer).
  int64_t torch_shuffle_block = 0;
};

// Folding an upsample into the following convolution multiplies its output channels by s * s:
// beyond these bounds (no UpscalerJS model comes near them) the plain repeat is emitted instead.
constexpr int64_t kMaxFoldedFactor = 16;
constexpr int64_t kMaxFoldedWeightValues = int64_t{1} << 24;

using tfjs::Layer;
using tfjs::ShapeString;
using tfjs::Weight;

class Converter {
 public:
  Converter(std::filesystem::path model_json, const TfjsConvertOptions& options)
      : path_(std::move(model_json)), options_(options) {}

  absl::StatusOr<torch::jit::Module> Run() {
    auto text = convert::ReadFileLimited(path_, "TF.js model.json", kTfjsMaxModelJsonBytes);
    if (!text.ok()) return text.status();
    Json root = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) return Invalid("not valid JSON");
    if (!root.is_object()) return Invalid("top level is not a JSON object");

    SY_RETURN_IF_ERROR(tfjs::ParseTopology(path_, root, &graph_));
    SY_RETURN_IF_ERROR(tfjs::ReadWeights(path_, root, &weights_));
    SY_RETURN_IF_ERROR(GenerateForward());
    for (const auto& [name, weight] : weights_) {
      if (!weight.used) {
        return Invalid(
            absl::StrCat("weight ", Quote(name), " in the manifest is used by no layer"));
      }
    }
    return BuildModule();
  }

 private:
  absl::Status Invalid(const std::string& reason) const { return tfjs::ModelError(path_, reason); }
  absl::Status LayerError(const Layer& layer, const std::string& reason) const {
    return tfjs::LayerError(path_, layer, reason);
  }

  // Finds "<layer>/<suffix>" (also "<prefix>/<layer>/<suffix>") in the manifest.
  Weight* FindWeight(const Layer& layer, const std::string& suffix) {
    for (auto& [name, weight] : weights_) {
      const std::string tail = absl::StrCat(layer.name, "/", suffix);
      if (name == tail || (name.size() > tail.size() &&
                           name.compare(name.size() - tail.size(), tail.size(), tail) == 0 &&
                           name[name.size() - tail.size() - 1] == '/')) {
        return &weight;
      }
    }
    return nullptr;
  }

  // --- code generation --------------------------------------------------------------------

  absl::Status GenerateForward() {
    for (size_t i = 0; i < graph_.layers.size(); ++i) {
      for (const std::string& name : graph_.layers[i].inputs) consumers_[name].push_back(i);
    }
    std::map<std::string, TensorInfo> tensors;
    std::set<std::string> used_names = {"forward", "training", "scale"};
    int var_index = 0;
    for (size_t i : graph_.order) {
      const Layer& layer = graph_.layers[i];
      std::vector<const TensorInfo*> in;
      for (const std::string& name : layer.inputs) in.push_back(&tensors.at(name));
      TensorInfo out;
      out.var = absl::StrCat("t", var_index++);
      std::string expr;

      if (layer.class_name == "InputLayer") {
        if (layer.name != graph_.input_layer) {
          return LayerError(layer, "only one model input is supported");
        }
        SY_RETURN_IF_ERROR(InputLayer(layer, &out));
        // A model working on 0..1 gets 0..255 input mapped into its range.
        expr = options_.value_range == TfjsConvertOptions::ValueRange::k0To1 ? "x / 255.0" : "x";
      } else if (layer.name == graph_.input_layer) {
        return LayerError(layer, "model input is not an InputLayer");
      } else if (in.empty()) {
        return LayerError(layer, "layer has no inputs");
      } else if (layer.class_name == "Conv2D") {
        SY_RETURN_IF_ERROR(Conv2D(layer, in, &used_names, &out, &expr));
      } else if (layer.class_name == "Activation") {
        SY_RETURN_IF_ERROR(ExpectInputs(layer, in, 1));
        out = Derived(*in[0], out.var);
        std::string activation;
        SY_RETURN_IF_ERROR(GetString(layer, "activation", &activation));
        SY_RETURN_IF_ERROR(Activate(layer, activation, in[0]->var, &expr));
      } else if (layer.class_name == "Concatenate") {
        SY_RETURN_IF_ERROR(Concatenate(layer, in, &out, &expr));
      } else if (layer.class_name == "Add") {
        if (in.size() < 2) return LayerError(layer, "needs at least 2 inputs");
        out = Derived(*in[0], out.var);
        std::vector<std::string> vars;
        for (const TensorInfo* t : in) {
          SY_RETURN_IF_ERROR(SameGrid(layer, *in[0], *t));
          if (t->channels && in[0]->channels && *t->channels != *in[0]->channels) {
            return LayerError(layer, absl::StrCat("inputs have different channel counts ",
                                                  *in[0]->channels, " and ", *t->channels));
          }
          if (t->channels) out.channels = t->channels;
          vars.push_back(t->var);
        }
        expr = absl::StrJoin(vars, " + ");
      } else if (layer.class_name == "UpSampling2D") {
        SY_RETURN_IF_ERROR(UpSampling2D(layer, in, &out, &expr));
      } else if (layer.class_name == "MultiplyBeta") {
        SY_RETURN_IF_ERROR(MultiplyBeta(layer, in, &out, &expr));
      } else if (layer.class_name.starts_with("PixelShuffle")) {
        SY_RETURN_IF_ERROR(PixelShuffle(layer, in, &out, &expr));
      } else {
        return LayerError(layer, absl::StrCat("unsupported layer class ", Quote(layer.class_name)));
      }
      if (!out.folded_from.empty()) {
        absl::StrAppend(&source_, "    # ", CommentText(layer.name), " (",
                        CommentText(layer.class_name), "): folded into the next convolution\n");
      } else {
        absl::StrAppend(&source_, "    ", out.var, " = ", expr, "  # ", CommentText(layer.name),
                        " (", CommentText(layer.class_name), ")\n");
      }
      tensors[layer.name] = out;
    }
    const TensorInfo& result = tensors.at(graph_.output_layer);
    if (result.scale_h != result.scale_w) {
      return Invalid(absl::StrCat("output is scaled ", result.scale_h, "x", result.scale_w,
                                  "; only equal height and width scales are supported"));
    }
    scale_ = result.scale_h;
    const std::string output =
        options_.value_range == TfjsConvertOptions::ValueRange::k0To1 ? " * 255.0" : "";
    source_ = absl::StrCat("def forward(self, x: Tensor) -> Tensor:\n", source_, "    return ",
                           result.var, output, "\n");
    return absl::OkStatus();
  }

  static TensorInfo Derived(const TensorInfo& from, const std::string& var) {
    TensorInfo t = from;
    t.var = var;
    t.folded_from.clear();
    t.folded_factor = 0;
    t.torch_shuffle_block = 0;
    return t;
  }

  // The one layer that reads `layer`'s output, or nullptr when it has several or none or is the
  // model's output (then its tensor must exist as it is).
  const Layer* OnlyConsumer(const Layer& layer) const {
    if (layer.name == graph_.output_layer) return nullptr;
    auto it = consumers_.find(layer.name);
    if (it == consumers_.end() || it->second.size() != 1) return nullptr;
    return &graph_.layers[it->second[0]];
  }

  // A Conv2D that an upsample can be folded into: stride 1, no dilation, odd kernel, 'same'
  // padding (zero padding at the high resolution is zero padding at the low one), its config
  // readable. A conv whose config is bad is not folded and reports the error itself.
  bool FoldableConv(const Layer& layer) const {
    if (layer.class_name != "Conv2D" || layer.inputs.size() != 1) return false;
    const Json& c = *layer.config;
    std::pair<int64_t, int64_t> kernel, strides, dilation;
    std::string padding;
    if (!GetPair(layer, "kernel_size", &kernel, std::nullopt).ok() ||
        !GetPair(layer, "strides", &strides, std::pair<int64_t, int64_t>{1, 1}).ok() ||
        !GetPair(layer, "dilation_rate", &dilation, std::pair<int64_t, int64_t>{1, 1}).ok() ||
        !GetString(layer, "padding", &padding, "valid").ok() || !ChannelsLast(layer).ok()) {
      return false;
    }
    if (c.contains("groups") && c["groups"] != 1) return false;
    if (!c.contains("filters") || !c["filters"].is_number_integer() || c["filters"] < 1) {
      return false;
    }
    return padding == "same" && strides == std::pair<int64_t, int64_t>{1, 1} &&
           dilation == std::pair<int64_t, int64_t>{1, 1} && kernel.first % 2 == 1 &&
           kernel.second % 2 == 1;
  }

  absl::Status ExpectInputs(const Layer& layer, const std::vector<const TensorInfo*>& in,
                            size_t n) const {
    if (in.size() != n) {
      return LayerError(layer, absl::StrCat("expects ", n, " input(s), has ", in.size()));
    }
    return absl::OkStatus();
  }

  absl::Status SameGrid(const Layer& layer, const TensorInfo& a, const TensorInfo& b) const {
    if (a.scale_h != b.scale_h || a.scale_w != b.scale_w) {
      return LayerError(layer, "inputs are upsampled by different factors");
    }
    return absl::OkStatus();
  }

  absl::Status GetString(const Layer& layer, const char* key, std::string* out,
                         const char* fallback = nullptr) const {
    const Json& c = *layer.config;
    if (!c.contains(key) || c[key].is_null()) {
      if (fallback != nullptr) {
        *out = fallback;
        return absl::OkStatus();
      }
      return LayerError(layer, absl::StrCat("missing \"", key, "\""));
    }
    if (!c[key].is_string()) {
      return LayerError(layer, absl::StrCat("\"", key, "\" is not a string: ", c[key].dump()));
    }
    *out = c[key].get<std::string>();
    return absl::OkStatus();
  }

  // Reads an int pair such as kernel_size; a single int means both.
  absl::Status GetPair(const Layer& layer, const char* key, std::pair<int64_t, int64_t>* out,
                       std::optional<std::pair<int64_t, int64_t>> fallback) const {
    const Json& c = *layer.config;
    if (!c.contains(key) || c[key].is_null()) {
      if (fallback) {
        *out = *fallback;
        return absl::OkStatus();
      }
      return LayerError(layer, absl::StrCat("missing \"", key, "\""));
    }
    const Json& v = c[key];
    if (v.is_number_integer()) {
      *out = {v.get<int64_t>(), v.get<int64_t>()};
    } else if (v.is_array() && v.size() == 2 && v[0].is_number_integer() &&
               v[1].is_number_integer()) {
      *out = {v[0].get<int64_t>(), v[1].get<int64_t>()};
    } else {
      return LayerError(layer, absl::StrCat("\"", key, "\" is not an int pair: ", v.dump()));
    }
    if (out->first < 1 || out->second < 1) {
      return LayerError(layer, absl::StrCat("\"", key, "\" must be positive: ", v.dump()));
    }
    return absl::OkStatus();
  }

  absl::Status ChannelsLast(const Layer& layer) const {
    std::string format;
    SY_RETURN_IF_ERROR(GetString(layer, "data_format", &format, "channels_last"));
    if (format != "channels_last") {
      return LayerError(layer, absl::StrCat("data_format ", format, " is unsupported"));
    }
    return absl::OkStatus();
  }

  absl::Status Activate(const Layer& layer, const std::string& activation, const std::string& arg,
                        std::string* expr) const {
    if (activation == "linear") {
      *expr = arg;
    } else if (activation == "relu") {
      *expr = absl::StrCat("torch.relu(", arg, ")");
    } else {
      return LayerError(layer, absl::StrCat("unsupported activation ", Quote(activation)));
    }
    return absl::OkStatus();
  }

  absl::Status InputLayer(const Layer& layer, TensorInfo* out) const {
    const Json& c = *layer.config;
    const char* key = c.contains("batch_input_shape") ? "batch_input_shape" : "batch_shape";
    if (c.contains(key)) {
      const Json& shape = c[key];
      if (!shape.is_array() || shape.size() != 4) {
        return LayerError(layer, absl::StrCat("input shape ", shape.dump(),
                                              " is not [batch, height, width, channels]"));
      }
      if (shape[3].is_number_integer()) out->channels = shape[3].get<int64_t>();
    }
    std::string dtype;
    SY_RETURN_IF_ERROR(GetString(layer, "dtype", &dtype, "float32"));
    if (dtype != "float32") return LayerError(layer, absl::StrCat("input dtype ", dtype));
    return absl::OkStatus();
  }

  absl::Status Conv2D(const Layer& layer, const std::vector<const TensorInfo*>& in,
                      std::set<std::string>* used_names, TensorInfo* out, std::string* expr) {
    SY_RETURN_IF_ERROR(ExpectInputs(layer, in, 1));
    SY_RETURN_IF_ERROR(ChannelsLast(layer));
    const Json& c = *layer.config;
    std::pair<int64_t, int64_t> kernel, strides, dilation;
    SY_RETURN_IF_ERROR(GetPair(layer, "kernel_size", &kernel, std::nullopt));
    SY_RETURN_IF_ERROR(GetPair(layer, "strides", &strides, std::pair<int64_t, int64_t>{1, 1}));
    SY_RETURN_IF_ERROR(
        GetPair(layer, "dilation_rate", &dilation, std::pair<int64_t, int64_t>{1, 1}));
    if (strides != std::pair<int64_t, int64_t>{1, 1}) {
      return LayerError(layer,
                        absl::StrCat("strides ", c["strides"].dump(), " are unsupported (only 1)"));
    }
    if (c.contains("groups") && c["groups"] != 1) {
      return LayerError(layer, absl::StrCat("groups ", c["groups"].dump(), " is unsupported"));
    }
    if (!c.contains("filters") || !c["filters"].is_number_integer() || c["filters"] < 1) {
      return LayerError(layer, "missing or bad \"filters\"");
    }
    const int64_t filters = c["filters"].get<int64_t>();
    const bool use_bias = !c.contains("use_bias") || c["use_bias"] == true;
    std::string padding, activation;
    SY_RETURN_IF_ERROR(GetString(layer, "padding", &padding, "valid"));
    SY_RETURN_IF_ERROR(GetString(layer, "activation", &activation, "linear"));

    Weight* kernel_w = FindWeight(layer, "kernel");
    if (kernel_w == nullptr) return LayerError(layer, "no kernel weight in the manifest");
    if (kernel_w->shape.size() != 4 || kernel_w->shape[0] != kernel.first ||
        kernel_w->shape[1] != kernel.second || kernel_w->shape[3] != filters ||
        (in[0]->channels && kernel_w->shape[2] != *in[0]->channels)) {
      return LayerError(layer,
                        absl::StrCat("kernel weight shape ", ShapeString(kernel_w->shape),
                                     " does not match [", kernel.first, ", ", kernel.second, ", ",
                                     in[0]->channels ? std::to_string(*in[0]->channels) : "?", ", ",
                                     filters, "]"));
    }
    Weight* bias_w = nullptr;
    if (use_bias) {
      bias_w = FindWeight(layer, "bias");
      if (bias_w == nullptr) return LayerError(layer, "no bias weight in the manifest");
      if (bias_w->shape != std::vector<int64_t>{filters}) {
        return LayerError(layer, absl::StrCat("bias weight shape ", ShapeString(bias_w->shape),
                                              " is not [", filters, "]"));
      }
    }

    // Parameter names, unique and valid identifiers.
    std::string base = Identifier(layer.name);
    for (int n = 2; used_names->count(base + "_weight") || used_names->count(base + "_bias"); ++n) {
      base = absl::StrCat(Identifier(layer.name), "_", n);
    }
    used_names->insert(base + "_weight");
    used_names->insert(base + "_bias");
    const std::string weight_name = base + "_weight";
    {
      const auto& s = kernel_w->shape;  // [kh, kw, in, out] -> [out, in, kh, kw]
      torch::Tensor t =
          torch::from_blob(kernel_w->data.data(), {s[0], s[1], s[2], s[3]}, torch::kFloat32)
              .permute({3, 2, 0, 1})
              .clone(at::MemoryFormat::Contiguous);
      params_.emplace_back(weight_name, t);
      kernel_w->used = true;
    }
    std::string bias_arg = "None";
    if (bias_w != nullptr) {
      bias_arg = "self." + base + "_bias";
      params_.emplace_back(
          base + "_bias",
          torch::from_blob(bias_w->data.data(), {filters}, torch::kFloat32).clone());
      bias_w->used = true;
    }
    torch::Tensor* weight = &params_[params_.size() - (bias_w != nullptr ? 2 : 1)].second;
    torch::Tensor* bias = bias_w != nullptr ? &params_.back().second : nullptr;

    if (in[0]->folded_factor > 0) {
      if (!FoldableConv(layer) || padding != "same") {
        return absl::InternalError(
            absl::StrCat(path_.string(), ": layer ", Quote(layer.name),
                         " was chosen for folding an upsample but cannot take it"));
      }
      return FoldedConv(layer, *in[0], kernel, activation, weight, bias, bias_arg, weight_name, out,
                        expr);
    }
    if (const Layer* next = OnlyConsumer(layer);
        next != nullptr && next->class_name.starts_with("PixelShuffle")) {
      absl::StatusOr<int64_t> block = ShuffleBlock(*next);
      if (block.ok() && filters % (*block * *block) == 0) {
        // TF's depth_to_space reads channel (i * S + j) * C + c for sub-pixel (i, j) of output
        // channel c; torch's pixel_shuffle reads c * S * S + i * S + j. Reordering this conv's
        // output channels once here lets the PixelShuffle layer be torch's one-kernel
        // pixel_shuffle instead of a reshape-permute-reshape copy.
        const int64_t b = *block, channels = filters / (b * b);
        std::vector<int64_t> order;
        order.reserve(static_cast<size_t>(filters));
        for (int64_t ch = 0; ch < channels; ++ch) {
          for (int64_t i = 0; i < b; ++i) {
            for (int64_t j = 0; j < b; ++j) order.push_back((i * b + j) * channels + ch);
          }
        }
        const torch::Tensor index = torch::tensor(order, torch::kInt64);
        *weight = weight->index_select(0, index).contiguous();
        if (bias != nullptr) *bias = bias->index_select(0, index).contiguous();
        out->torch_shuffle_block = b;
      }
    }

    // Padding: 'same' with stride 1 pads (k - 1) * d in total, the extra one after (TF rule).
    std::string input = in[0]->var;
    int64_t pad_h = 0, pad_w = 0;
    if (padding == "same") {
      const int64_t total_h = (kernel.first - 1) * dilation.first;
      const int64_t total_w = (kernel.second - 1) * dilation.second;
      if (total_h % 2 == 0 && total_w % 2 == 0) {
        pad_h = total_h / 2;
        pad_w = total_w / 2;
      } else {
        input = absl::StrCat("torch.constant_pad_nd(", input, ", [", total_w / 2, ", ",
                             total_w - total_w / 2, ", ", total_h / 2, ", ", total_h - total_h / 2,
                             "], 0.0)");
      }
    } else if (padding != "valid") {
      return LayerError(layer, absl::StrCat("padding ", Quote(padding), " is unsupported"));
    }
    const std::string conv =
        absl::StrCat("torch.conv2d(", input, ", self.", weight_name, ", ", bias_arg, ", [1, 1], [",
                     pad_h, ", ", pad_w, "], [", dilation.first, ", ", dilation.second, "], 1)");
    SY_RETURN_IF_ERROR(Activate(layer, activation, conv, expr));
    const std::string var = out->var;
    const int64_t shuffle_block = out->torch_shuffle_block;
    *out = Derived(*in[0], var);
    out->channels = filters;
    out->torch_shuffle_block = shuffle_block;
    return absl::OkStatus();
  }

  // A 'same' conv (kernel kh x kw, both odd, radius r = (k - 1) / 2) on x repeated s times
  // (nearest) computes output pixel (s * h + i, s * w + j) from the repeated pixels
  // (s * h + i + dy, s * w + j + dx), |dy| <= r, which are low-resolution pixels
  // (h + floor((i + dy) / s), ...). So each of the s * s sub-pixels (i, j) is a conv on x itself,
  // radius R = ceil(r / s), whose taps sum the original taps that land on the same pixel; zero
  // padding past the edge is the same at both resolutions. One conv with s * s times the output
  // channels (channel o * s * s + i * s + j: torch's pixel_shuffle order) and pixel_shuffle give
  // the same result without the s * s times larger repeated tensor, and with the same
  // multiply-adds or fewer (the same for 3x3).
  absl::Status FoldedConv(const Layer& layer, const TensorInfo& input,
                          std::pair<int64_t, int64_t> kernel, const std::string& activation,
                          torch::Tensor* weight, torch::Tensor* bias, const std::string& bias_arg,
                          const std::string& weight_name, TensorInfo* out, std::string* expr) {
    const int64_t s = input.folded_factor;
    const int64_t rh = (kernel.first - 1) / 2, rw = (kernel.second - 1) / 2;
    const int64_t big_rh = (rh + s - 1) / s, big_rw = (rw + s - 1) / s;
    const int64_t filters = weight->size(0), channels = weight->size(1);
    // Summed in double: the taps that land on one pixel are added once here instead of at
    // run time, in another order; double keeps that difference far below float's.
    const torch::Tensor w = weight->to(torch::kFloat64);
    torch::Tensor folded =
        torch::zeros({filters, s, s, channels, 2 * big_rh + 1, 2 * big_rw + 1}, torch::kFloat64);
    for (int64_t i = 0; i < s; ++i) {
      for (int64_t j = 0; j < s; ++j) {
        torch::Tensor phase = folded.select(1, i).select(1, j);  // [out, in, KH, KW]
        for (int64_t dy = -rh; dy <= rh; ++dy) {
          const int64_t oy = FloorDiv(i + dy, s);
          for (int64_t dx = -rw; dx <= rw; ++dx) {
            const int64_t ox = FloorDiv(j + dx, s);
            phase.select(2, big_rh + oy)
                .select(2, big_rw + ox)
                .add_(w.select(2, rh + dy).select(2, rw + dx));
          }
        }
      }
    }
    *weight = folded.reshape({filters * s * s, channels, 2 * big_rh + 1, 2 * big_rw + 1})
                  .to(torch::kFloat32)
                  .contiguous();
    if (bias != nullptr) {
      *bias = bias->unsqueeze(1).expand({filters, s * s}).reshape({filters * s * s}).contiguous();
    }
    const std::string conv =
        absl::StrCat("torch.conv2d(", input.folded_from, ", self.", weight_name, ", ", bias_arg,
                     ", [1, 1], [", big_rh, ", ", big_rw, "], [1, 1], 1)");
    std::string activated;
    SY_RETURN_IF_ERROR(Activate(layer, activation, conv, &activated));
    *expr = absl::StrCat("torch.pixel_shuffle(", activated, ", ", s, ")");
    const std::string var = out->var;
    *out = Derived(input, var);
    out->channels = filters;
    return absl::OkStatus();
  }

  static int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

  absl::Status Concatenate(const Layer& layer, const std::vector<const TensorInfo*>& in,
                           TensorInfo* out, std::string* expr) const {
    if (in.size() < 2) return LayerError(layer, "needs at least 2 inputs");
    const Json& c = *layer.config;
    int64_t axis = -1;
    if (c.contains("axis")) {
      if (!c["axis"].is_number_integer()) return LayerError(layer, "\"axis\" is not an int");
      axis = c["axis"].get<int64_t>();
    }
    if (axis < 0) axis += 4;
    if (axis != 3) {
      return LayerError(layer, absl::StrCat("concatenation axis ", c["axis"].dump(),
                                            " is unsupported (only channels, 3 or -1)"));
    }
    std::vector<std::string> vars;
    const std::string var = out->var;
    *out = Derived(*in[0], var);
    out->channels = 0;
    for (const TensorInfo* t : in) {
      SY_RETURN_IF_ERROR(SameGrid(layer, *in[0], *t));
      vars.push_back(t->var);
      out->channels = (out->channels && t->channels)
                          ? std::optional<int64_t>(*out->channels + *t->channels)
                          : std::nullopt;
    }
    const int dim = 1;  // NHWC channels -> NCHW channels
    *expr = absl::StrCat("torch.cat([", absl::StrJoin(vars, ", "), "], ", dim, ")");
    return absl::OkStatus();
  }

  absl::Status UpSampling2D(const Layer& layer, const std::vector<const TensorInfo*>& in,
                            TensorInfo* out, std::string* expr) const {
    SY_RETURN_IF_ERROR(ExpectInputs(layer, in, 1));
    SY_RETURN_IF_ERROR(ChannelsLast(layer));
    std::pair<int64_t, int64_t> size;
    SY_RETURN_IF_ERROR(GetPair(layer, "size", &size, std::pair<int64_t, int64_t>{2, 2}));
    std::string interpolation;
    SY_RETURN_IF_ERROR(GetString(layer, "interpolation", &interpolation, "nearest"));
    if (interpolation != "nearest") {
      return LayerError(layer, absl::StrCat("interpolation ", Quote(interpolation),
                                            " is unsupported (only nearest)"));
    }
    const std::string var = out->var;
    *out = Derived(*in[0], var);
    out->scale_h *= size.first;
    out->scale_w *= size.second;
    if (const Layer* next = OnlyConsumer(layer);
        next != nullptr && size.first == size.second && in[0]->channels &&
        FoldsWithinLimits(*next, size.first, *in[0]->channels)) {
      out->folded_from = in[0]->var;
      out->folded_factor = size.first;
      return absl::OkStatus();
    }
    // Exact nearest-neighbour repeat: [N,C,H,W] -> [N,C,H,sh,W,sw] -> [N,C,H*sh,W*sw].
    const std::string& x = in[0]->var;
    *expr = absl::StrCat(x, ".unsqueeze(3).unsqueeze(5).expand(-1, -1, -1, ", size.first, ", -1, ",
                         size.second, ").reshape(", x, ".size(0), ", x, ".size(1), ", x,
                         ".size(2) * ", size.first, ", ", x, ".size(3) * ", size.second, ")");
    return absl::OkStatus();
  }

  // Whether an upsample by `factor` of a tensor with `channels` channels may be folded into
  // `conv` (FoldedConv): a foldable conv, and a folded weight of bounded size (every factor is
  // checked before the product, which cannot overflow then).
  bool FoldsWithinLimits(const Layer& conv, int64_t factor, int64_t channels) const {
    if (factor < 2 || factor > kMaxFoldedFactor || !FoldableConv(conv)) return false;
    std::pair<int64_t, int64_t> kernel;
    if (!GetPair(conv, "kernel_size", &kernel, std::nullopt).ok()) return false;
    const int64_t filters = (*conv.config)["filters"].get<int64_t>();
    const int64_t kh = 2 * ((kernel.first / 2 + factor - 1) / factor) + 1;
    const int64_t kw = 2 * ((kernel.second / 2 + factor - 1) / factor) + 1;
    int64_t values = 1;
    for (int64_t f : {filters, factor * factor, channels, kh, kw}) {
      if (f < 1 || f > kMaxFoldedWeightValues || values > kMaxFoldedWeightValues / f) return false;
      values *= f;
    }
    return true;
  }

  // UpscalerJS's MultiplyBeta (dist/*/packages/shared/src/esrgan/esrgan.js in its npm packages):
  // call() returns x * 0.2, a constant of the class; the layer config's "beta" is not read by
  // it, so a config that says otherwise is refused rather than guessed at.
  absl::Status MultiplyBeta(const Layer& layer, const std::vector<const TensorInfo*>& in,
                            TensorInfo* out, std::string* expr) const {
    SY_RETURN_IF_ERROR(ExpectInputs(layer, in, 1));
    constexpr double kBeta = 0.2;
    const Json& c = *layer.config;
    if (c.contains("beta") && !c["beta"].is_null() &&
        (!c["beta"].is_number() || c["beta"].get<double>() != kBeta)) {
      return LayerError(layer,
                        absl::StrCat("beta ", c["beta"].dump(), " is unsupported (UpscalerJS",
                                     "'s MultiplyBeta always multiplies by 0.2)"));
    }
    const std::string var = out->var;
    *out = Derived(*in[0], var);
    *expr = absl::StrCat(in[0]->var, " * 0.2");
    return absl::OkStatus();
  }

  // The block size S of a PixelShuffle<S>x layer, checked against its config's "scale".
  absl::StatusOr<int64_t> ShuffleBlock(const Layer& layer) const {
    const std::string prefix = "PixelShuffle";
    const std::string digits =
        layer.class_name.size() > prefix.size() + 1 && layer.class_name.back() == 'x'
            ? layer.class_name.substr(prefix.size(), layer.class_name.size() - prefix.size() - 1)
            : "";
    int64_t block = 0;
    if (digits.empty() || digits.size() > 2 ||
        !std::all_of(digits.begin(), digits.end(), [](char d) { return d >= '0' && d <= '9'; }) ||
        (block = std::stoll(digits)) < 2) {
      return LayerError(layer, "unsupported layer class (expected PixelShuffle<S>x, S = 2..99)");
    }
    const Json& c = *layer.config;
    if (c.contains("scale") && !c["scale"].is_null() && c["scale"] != block) {
      return LayerError(layer, absl::StrCat("config scale ", c["scale"].dump(),
                                            " disagrees with the class name's ", block));
    }
    return block;
  }

  // UpscalerJS's PixelShuffle<S>x: tf.depthToSpace(x, S, 'NHWC'). In NHWC, output pixel
  // (h * S + i, w * S + j) channel c is input pixel (h, w) channel (i * S + j) * C + c.
  // On our NCHW tensor [N, S*S*C, H, W]: reshape to [N, S(i), S(j), C, H, W], permute to
  // [N, C, H, S(i), W, S(j)], reshape to [N, C, H*S, W*S] (one copy of the whole tensor).
  // torch's pixel_shuffle reads channel c * S * S + i * S + j instead; it is used when the conv
  // before has had its output channels put in that order (Conv2D).
  absl::Status PixelShuffle(const Layer& layer, const std::vector<const TensorInfo*>& in,
                            TensorInfo* out, std::string* expr) const {
    SY_RETURN_IF_ERROR(ExpectInputs(layer, in, 1));
    absl::StatusOr<int64_t> parsed = ShuffleBlock(layer);
    if (!parsed.ok()) return parsed.status();
    const int64_t block = *parsed;
    if (in[0]->channels && *in[0]->channels % (block * block) != 0) {
      return LayerError(layer, absl::StrCat("input has ", *in[0]->channels,
                                            " channels, not a multiple of ", block * block));
    }
    const std::string var = out->var;
    *out = Derived(*in[0], var);
    if (in[0]->channels) out->channels = *in[0]->channels / (block * block);
    out->scale_h *= block;
    out->scale_w *= block;
    const std::string& x = in[0]->var;
    const std::string b = std::to_string(block);
    if (in[0]->torch_shuffle_block == block) {  // the conv before reordered its channels
      *expr = absl::StrCat("torch.pixel_shuffle(", x, ", ", block, ")");
      return absl::OkStatus();
    }
    *expr = absl::StrCat(
        x, ".reshape(", x, ".size(0), ", b, ", ", b, ", ", x, ".size(1) // ", block * block, ", ",
        x, ".size(2), ", x, ".size(3)).permute(0, 3, 4, 1, 5, 2).reshape(", x, ".size(0), ", x,
        ".size(1) // ", block * block, ", ", x, ".size(2) * ", b, ", ", x, ".size(3) * ", b, ")");
    return absl::OkStatus();
  }

  // --- module -----------------------------------------------------------------------------

  absl::StatusOr<torch::jit::Module> BuildModule() {
    return convert::BuildModule("TfjsLayersModel", params_, scale_, source_, path_);
  }

  std::filesystem::path path_;
  TfjsConvertOptions options_;
  tfjs::Graph graph_;
  std::map<std::string, Weight> weights_;
  std::map<std::string, std::vector<size_t>> consumers_;  // layer name -> layers reading it
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::string source_;
  int64_t scale_ = 1;
};

}  // namespace

absl::StatusOr<torch::jit::Module> ConvertTfjsLayersModel(const std::filesystem::path& model_json,
                                                          const TfjsConvertOptions& options) {
  return convert::NoExceptions(model_json, [&] { return Converter(model_json, options).Run(); });
}

}  // namespace switchyard::runner
