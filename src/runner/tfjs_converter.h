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
absl::StatusOr<torch::jit::Module> ConvertTfjsLayersModel(const std::filesystem::path& model_json);

}  // namespace switchyard::runner
