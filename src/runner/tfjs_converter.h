// Converts a TensorFlow.js "layers-model" (Keras functional graph: model.json + weight shards)
// into a TorchScript module, built with libtorch's script compiler (no Python needed).
#pragma once

#include <filesystem>

#include <torch/script.h>

#include "absl/status/statusor.h"

namespace switchyard::runner {

// Reads `model_json` and the weight shards beside it and returns a scripted module whose
//   forward(x: Tensor[N, C, H, W] float32) -> Tensor[N, C', H', W'] float32
// computes what the Keras graph computes (the graph is NHWC; the module takes and returns NCHW).
// Supported layers: InputLayer, Conv2D (stride 1, 'same'/'valid', linear/relu activation),
// Activation (relu, linear), Concatenate, Add, UpSampling2D (nearest).
// Errors: NOT_FOUND for missing files; INVALID_ARGUMENT for a malformed or unsupported model
// (naming the layer and what is unsupported) or weights that do not match the manifest.
// (INTERNAL only for unexpected libtorch failures; no exception escapes.)
//
// The module also has an int attribute `scale`: the output/input size ratio, i.e. the product of
// the UpSampling2D sizes on the way to the output (1 without upsampling; height and width must
// agree). Conv2D weights become parameters `<layer>_weight` (OIHW) and `<layer>_bias` (layer
// names made identifier-safe); 'same' padding follows TF (the odd extra pixel goes after), and
// UpSampling2D is an exact nearest-neighbour repeat. The module is returned in eval mode.
absl::StatusOr<torch::jit::Module> ConvertTfjsLayersModel(const std::filesystem::path& model_json);

}  // namespace switchyard::runner
