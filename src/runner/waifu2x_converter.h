// Converts a waifu2x "vgg_7" JSON model (the Torch7 models exported as a JSON array of
// convolutions, e.g. models_rgb/noise2_model.json) into a TorchScript module for the
// image-to-image contract (docs/pipelines-image.md), built with libtorch's script compiler.
#pragma once

#include <cstdint>
#include <filesystem>

#include <torch/script.h>

#include "absl/status/statusor.h"

namespace switchyard::runner {

// The JSON is read whole and parsed into a DOM (several times its size in memory); larger files
// are refused before reading. The vgg_7 models are 5.6 MB.
inline constexpr int64_t kMaxWaifu2xJsonBytes = 16 << 20;

// Reads `model_json` and returns a scripted module (eval mode) with
//   forward(image: Tensor[1, 3, H, W] float32 0..255, prompt: str, negative_prompt: str,
//           seed: int, strength: float, guidance_scale: float, image_guidance_scale: float,
//           num_inference_steps: int, num_images: int) -> Tensor[num_images, 3, H, W] ~0..255
// computing what waifu2x's reconstruct.image_rgb computes: the image on 0..1, padded by the
// model's offset (7) on every side with edge pixels repeated, the convolutions with leaky ReLU
// 0.1 between them (none after the last), clamped to 0..1, back to 0..255. Everything but the
// image is ignored (a denoiser has no prompt; the noise level is the model file's); the result is
// repeated num_images times (at least once), as the contract wants one image per requested image.
//
// Accepted: an array of 1..64 objects with class_name nn.SpatialConvolutionMM (or
// cudnn.SpatialConvolution / nn.SpatialConvolution), nInputPlane, nOutputPlane, kW = kH odd,
// dW = dH = 1, padW = padH = 0, weight [out][in][kH][kW], bias [out]; the first has model_config
// with channels 3, scale_factor 1 and offset equal to the convolutions' total (k - 1) / 2. Scale
// models (scale_factor 2, upconv) are refused. The module has an int attribute `scale` = 1.
// Errors: NOT_FOUND for a missing file; INVALID_ARGUMENT naming the layer and field for anything
// malformed, oversized or unsupported; INTERNAL only for unexpected libtorch failures. No
// exception escapes.
absl::StatusOr<torch::jit::Module> ConvertWaifu2xModel(const std::filesystem::path& model_json);

}  // namespace switchyard::runner
