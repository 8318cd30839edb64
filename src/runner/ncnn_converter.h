// Converts an ncnn model (.param text graph + .bin weights) into a TorchScript module, built with
// libtorch's script compiler (no Python, no ncnn needed). Written for the Real-ESRGAN models that
// ship as ncnn files (realesr-animevideov3-x{2,3,4}, realesrgan-x4plus-anime); docs/converters.md.
#pragma once

#include <cstdint>
#include <filesystem>

#include <torch/script.h>

#include "absl/status/statusor.h"

namespace switchyard::runner {

// Which pipeline contract the module's `forward` follows (docs/pipelines.md,
// docs/pipelines-image.md).
enum class NcnnContract {
  // upscale: forward(x: Tensor[N, 3, H, W] float32 0..255) -> Tensor[N, 3, H*s, W*s] ~0..255.
  kUpscale,
  // live-video-to-video: forward(frame: Tensor[1, 3, H, W] 0..255, params: str) -> Tensor ~0..255.
  // `params` is ignored. The contract wants even output sizes, so an odd last row or column (x3
  // on an odd input) is cropped off.
  kLiveVideo,
};

struct NcnnConvertOptions {
  NcnnContract contract = NcnnContract::kUpscale;
  // The pixel value the network takes and returns for full white: 1 for networks on 0..1 (the
  // Real-ESRGAN models), 255 for networks on 0..255. The module divides its 0..255 input by
  // 255 / value_range and multiplies the network's output back, so it meets the contract.
  double value_range = 1.0;
};

// Limits that keep a hostile file from making the converter allocate or loop without bound. The
// .param is read whole (at most kMaxNcnnParamBytes), the .bin is read whole after its size is
// checked (at most kMaxNcnnBinBytes), and every weight count is checked against the graph and the
// bytes left before anything is allocated for it.
inline constexpr int64_t kMaxNcnnParamBytes = 4 << 20;
inline constexpr int64_t kMaxNcnnBinBytes = int64_t{1} << 30;
inline constexpr int64_t kMaxNcnnLayers = 10000;

// Reads `param_path` and `bin_path` and returns a scripted module (eval mode) that computes what
// ncnn computes for the graph, wrapped to `options.contract` and `options.value_range`.
//
// Layers: Input (one; channels 3 if given), Split, Convolution (stride 1, non-negative padding,
// any dilation, bias or not, activation none/ReLU/leaky ReLU; fp16-tagged or fp32 weights),
// PReLU, PixelShuffle (mode 0, torch's pixel_shuffle order), Interp (nearest with an integer
// scale, or bicubic with align_corner 0 and a scale factor), BinaryOp (add/sub/mul of two blobs or
// a blob and a scalar), Eltwise (sum, with or without coefficients), Concat (channels). Any other
// layer type, or any parameter outside those, is INVALID_ARGUMENT naming the layer and the key.
// The graph's one unconsumed blob is the output; the .bin must be consumed exactly.
//
// The module has an int attribute `scale` (output size / input size, from PixelShuffle and Interp
// on the way to the output); a graph whose overall scale is not a whole number is refused.
// Parameters are named `<layer>_weight`, `<layer>_bias`, `<layer>_slope` (identifier-safe).
// Errors: NOT_FOUND for a missing file; INVALID_ARGUMENT for a malformed, oversized or unsupported
// model; INTERNAL only for unexpected libtorch failures. No exception escapes.
absl::StatusOr<torch::jit::Module> ConvertNcnnModel(const std::filesystem::path& param_path,
                                                    const std::filesystem::path& bin_path,
                                                    const NcnnConvertOptions& options = {});

}  // namespace switchyard::runner
