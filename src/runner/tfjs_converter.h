// Converts a TensorFlow.js "layers-model" (Keras functional graph: model.json + weight shards)
// into a TorchScript module, built with libtorch's script compiler (no Python needed).
#pragma once

#include <cstdint>
#include <filesystem>

#include <torch/script.h>

#include "absl/status/statusor.h"

namespace switchyard::runner {

struct TfjsConvertOptions {
  // The value range the TF.js model works in (UpscalerJS's inputRange/outputRange). The module
  // always takes and returns values on the 0..255 scale: with k0To1 its forward divides the input
  // by 255 before the graph and multiplies the graph's output by 255 (no clamping).
  enum class ValueRange { k0To255, k0To1 };
  ValueRange value_range = ValueRange::k0To255;
};

// Limits on hostile input, checked before the work they would cause.
inline constexpr int64_t kTfjsMaxModelJsonBytes = 64 << 20;       // model.json
inline constexpr int64_t kTfjsMaxWeightBytes = int64_t{2} << 30;  // all shards together
inline constexpr int64_t kTfjsMaxLayers = 20000;

// Reads `model_json` and the weight shards beside it and returns a scripted module whose
//   forward(x: Tensor[N, C, H, W] float32) -> Tensor[N, C', H', W'] float32
// computes what the Keras graph computes (the graph is NHWC; the module takes and returns NCHW).
// Supported layers: InputLayer, Conv2D (stride 1, 'same'/'valid', linear/relu activation),
// Activation (relu, linear), Concatenate, Add, UpSampling2D (nearest), and UpscalerJS's custom
// layers of its ESRGAN RRDN models: MultiplyBeta (x * 0.2) and PixelShuffle<S>x (TF's
// depth_to_space with block size S, NHWC channel order: output channel c of sub-pixel (i, j)
// is input channel (i * S + j) * C + c, which is not torch's pixel_shuffle order).
// Errors: NOT_FOUND for missing files; INVALID_ARGUMENT for a malformed or unsupported model
// (naming the layer and what is unsupported), weights that do not match the manifest, or files
// over the limits above. (INTERNAL only for unexpected libtorch failures; no exception escapes.)
//
// The module also has an int attribute `scale`: the output/input size ratio, i.e. the product of
// the UpSampling2D sizes and PixelShuffle block sizes on the way to the output (1 without
// upsampling; height and width must agree). Conv2D weights become parameters `<layer>_weight`
// (OIHW) and `<layer>_bias` (layer names made identifier-safe); 'same' padding follows TF (the odd
// extra pixel goes after), and UpSampling2D is an exact nearest-neighbour repeat. The module is
// returned in eval mode.
absl::StatusOr<torch::jit::Module> ConvertTfjsLayersModel(const std::filesystem::path& model_json,
                                                          const TfjsConvertOptions& options = {});

}  // namespace switchyard::runner
