#include "runner/waifu2x_converter.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status.h"
#include "runner/converter_support.h"

namespace switchyard::runner {
namespace {

using Json = nlohmann::json;

using convert::FloatLiteral;

constexpr size_t kMaxLayers = 64;
constexpr int64_t kMaxPlanes = 4096;
constexpr int64_t kMaxKernel = 15;
// The weights nest [out][in][kh][kw]; 4 levels inside a layer object inside the array.
constexpr int kMaxDepth = 8;

class Converter {
 public:
  explicit Converter(std::filesystem::path path) : path_(std::move(path)) {}

  absl::StatusOr<torch::jit::Module> Run() {
    auto text = convert::ReadFileLimited(path_, "waifu2x model JSON", kMaxWaifu2xJsonBytes);
    if (!text.ok()) return text.status();
    auto root = ParseJson(*text, kMaxDepth);
    if (!root.ok()) return Invalid(std::string(root.status().message()));
    // The DOM holds the model now; the text need not stay alongside it while tensors are built.
    text->clear();
    text->shrink_to_fit();
    SY_RETURN_IF_ERROR(Parse(*root));
    return BuildModule();
  }

 private:
  absl::Status Invalid(const std::string& reason) const {
    return absl::InvalidArgumentError(absl::StrCat(path_.string(), ": ", reason));
  }
  absl::Status LayerError(size_t i, const std::string& reason) const {
    return Invalid(absl::StrCat("layer ", i, ": ", reason));
  }

  absl::Status GetInt(size_t i, const Json& layer, const char* key, int64_t* out) const {
    if (!layer.contains(key) || !layer[key].is_number_integer()) {
      return LayerError(i, absl::StrCat("\"", key, "\" is missing or not an integer"));
    }
    *out = layer[key].get<int64_t>();
    return absl::OkStatus();
  }

  // Reads a nested array of exactly `shape` finite numbers, row-major, into `out`.
  absl::Status ReadNested(size_t i, const char* what, const Json& value,
                          const std::vector<int64_t>& shape, size_t dim,
                          std::vector<float>* out) const {
    if (!value.is_array() || static_cast<int64_t>(value.size()) != shape[dim]) {
      return LayerError(
          i, absl::StrCat("\"", what, "\" level ", dim, " is not an array of ", shape[dim]));
    }
    for (const Json& item : value) {
      if (dim + 1 < shape.size()) {
        SY_RETURN_IF_ERROR(ReadNested(i, what, item, shape, dim + 1, out));
        continue;
      }
      if (!item.is_number()) {
        return LayerError(i, absl::StrCat("\"", what, "\" holds a non-number ", item.dump()));
      }
      const double v = item.get<double>();
      if (!std::isfinite(v) || std::abs(v) > std::numeric_limits<float>::max()) {
        return LayerError(
            i, absl::StrCat("\"", what, "\" holds ", item.dump(), ", not a finite float32"));
      }
      out->push_back(static_cast<float>(v));
    }
    return absl::OkStatus();
  }

  absl::Status Parse(const Json& root) {
    if (!root.is_array() || root.empty() || root.size() > kMaxLayers) {
      return Invalid(absl::StrCat("expected a JSON array of 1..", kMaxLayers,
                                  " convolution layers (a waifu2x vgg_7 model)"));
    }
    int64_t channels = 3;
    int64_t total_offset = 0;
    for (size_t i = 0; i < root.size(); ++i) {
      const Json& layer = root[i];
      if (!layer.is_object()) return LayerError(i, "is not an object");
      const std::string class_name = layer.contains("class_name") && layer["class_name"].is_string()
                                         ? layer["class_name"].get<std::string>()
                                         : std::string();
      if (class_name != "nn.SpatialConvolutionMM" && class_name != "nn.SpatialConvolution" &&
          class_name != "cudnn.SpatialConvolution") {
        return LayerError(i, absl::StrCat("class_name ", Json(class_name).dump(),
                                          " is unsupported (only spatial convolutions; upconv "
                                          "models with SpatialFullConvolution are not read)"));
      }
      int64_t n_in, n_out, kw, kh, dw, dh, pw, ph;
      SY_RETURN_IF_ERROR(GetInt(i, layer, "nInputPlane", &n_in));
      SY_RETURN_IF_ERROR(GetInt(i, layer, "nOutputPlane", &n_out));
      SY_RETURN_IF_ERROR(GetInt(i, layer, "kW", &kw));
      SY_RETURN_IF_ERROR(GetInt(i, layer, "kH", &kh));
      SY_RETURN_IF_ERROR(GetInt(i, layer, "dW", &dw));
      SY_RETURN_IF_ERROR(GetInt(i, layer, "dH", &dh));
      SY_RETURN_IF_ERROR(GetInt(i, layer, "padW", &pw));
      SY_RETURN_IF_ERROR(GetInt(i, layer, "padH", &ph));
      if (n_in != channels) {
        return LayerError(i, absl::StrCat("nInputPlane ", n_in, " does not match the ", channels,
                                          " channels coming in"));
      }
      if (n_out < 1 || n_out > kMaxPlanes) {
        return LayerError(i, absl::StrCat("nOutputPlane ", n_out, " is outside 1..", kMaxPlanes));
      }
      if (kw != kh || kw < 1 || kw > kMaxKernel || kw % 2 == 0) {
        return LayerError(i, absl::StrCat("kernel ", kw, "x", kh,
                                          " is unsupported (square, odd, "
                                          "at most ",
                                          kMaxKernel, ")"));
      }
      if (dw != 1 || dh != 1 || pw != 0 || ph != 0) {
        return LayerError(i, absl::StrCat("stride ", dw, "x", dh, " / padding ", pw, "x", ph,
                                          " is unsupported (only stride 1, no padding)"));
      }
      if (i == 0) SY_RETURN_IF_ERROR(ModelConfig(layer));
      if (!layer.contains("weight") || !layer.contains("bias")) {
        return LayerError(i, "\"weight\" or \"bias\" is missing");
      }
      // Not reserved from the declared sizes: a hostile file may declare far more than it holds.
      std::vector<float> weight, bias;
      SY_RETURN_IF_ERROR(
          ReadNested(i, "weight", layer["weight"], {n_out, n_in, kh, kw}, 0, &weight));
      SY_RETURN_IF_ERROR(ReadNested(i, "bias", layer["bias"], {n_out}, 0, &bias));
      weights_.push_back(
          torch::from_blob(weight.data(), {n_out, n_in, kh, kw}, torch::kFloat32).clone());
      biases_.push_back(torch::from_blob(bias.data(), {n_out}, torch::kFloat32).clone());
      channels = n_out;
      total_offset += (kw - 1) / 2;
    }
    if (channels != 3) {
      return Invalid(absl::StrCat("the last layer has ", channels,
                                  " outputs; an RGB model has 3 (Y-channel models are not read)"));
    }
    if (total_offset != offset_) {
      return Invalid(absl::StrCat("model_config.offset ", offset_, " does not match the ",
                                  total_offset, " pixels the convolutions take off each side"));
    }
    return absl::OkStatus();
  }

  absl::Status ModelConfig(const Json& layer) {
    if (!layer.contains("model_config") || !layer["model_config"].is_object()) {
      return LayerError(0, "\"model_config\" is missing");
    }
    const Json& c = layer["model_config"];
    auto get = [&](const char* key, int64_t* out) -> absl::Status {
      if (!c.contains(key) || !c[key].is_number_integer()) {
        return LayerError(0, absl::StrCat("model_config.", key, " is missing or not an integer"));
      }
      *out = c[key].get<int64_t>();
      return absl::OkStatus();
    };
    int64_t scale_factor, channels;
    SY_RETURN_IF_ERROR(get("scale_factor", &scale_factor));
    SY_RETURN_IF_ERROR(get("channels", &channels));
    SY_RETURN_IF_ERROR(get("offset", &offset_));
    if (c.contains("arch_name") && c["arch_name"] != "vgg_7") {
      return LayerError(0, absl::StrCat("model_config.arch_name ", c["arch_name"].dump(),
                                        " is unsupported (only vgg_7)"));
    }
    if (scale_factor != 1) {
      return LayerError(0, absl::StrCat("model_config.scale_factor ", scale_factor,
                                        " is unsupported (only the noise models, 1)"));
    }
    if (channels != 3) {
      return LayerError(
          0, absl::StrCat("model_config.channels ", channels, " is unsupported (only RGB, 3)"));
    }
    if (offset_ < 0 || offset_ > 64 * kMaxKernel) {
      return LayerError(0, absl::StrCat("model_config.offset ", offset_, " is out of range"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<torch::jit::Module> BuildModule() {
    std::vector<std::pair<std::string, torch::Tensor>> params;
    std::string body;
    std::string x = "x";
    for (size_t i = 0; i < weights_.size(); ++i) {
      params.emplace_back(absl::StrCat("conv", i, "_weight"), weights_[i]);
      params.emplace_back(absl::StrCat("conv", i, "_bias"), biases_[i]);
      std::string conv = absl::StrCat("torch.conv2d(", x, ", self.conv", i, "_weight, self.conv", i,
                                      "_bias, [1, 1], [0, 0], [1, 1], 1)");
      if (i + 1 < weights_.size()) conv = absl::StrCat("torch.leaky_relu(", conv, ", 0.1)");
      absl::StrAppend(&body, "    x = ", conv, "\n");
    }
    const std::string pad = std::to_string(offset_);
    const std::string source = absl::StrCat(
        "def network(self, x: Tensor) -> Tensor:\n", body, "    return x\n\n",
        "def forward(self, image: Tensor, prompt: str, negative_prompt: str, seed: int,\n",
        "            strength: float, guidance_scale: float, image_guidance_scale: float,\n",
        "            num_inference_steps: int, num_images: int) -> Tensor:\n",
        // waifu2x pads with edge pixels (iproc.padding: image.warp with 'clamp').
        "    x = torch.replication_pad2d(image * ", FloatLiteral(1.0 / 255.0), ", [", pad, ", ",
        pad, ", ", pad, ", ", pad, "])\n",
        "    y = torch.clamp(self.network(x), 0.0, 1.0) * 255.0\n",
        "    n = num_images if num_images > 1 else 1\n", "    return y.repeat([n, 1, 1, 1])\n");
    return convert::BuildModule("Waifu2xVgg7", params, /*scale=*/1, source, path_);
  }

  std::filesystem::path path_;
  int64_t offset_ = 0;
  std::vector<torch::Tensor> weights_;
  std::vector<torch::Tensor> biases_;
};

}  // namespace

absl::StatusOr<torch::jit::Module> ConvertWaifu2xModel(const std::filesystem::path& model_json) {
  return convert::NoExceptions(model_json, [&] { return Converter(model_json).Run(); });
}

}  // namespace switchyard::runner
