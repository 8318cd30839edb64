// Model outputs (float32 RGB planes, nominally 0..255) to the interleaved 8-bit pixels that the
// PNG and video encoders take, and decoded pixels to a model's input, each in one pass.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "common/media/image_codec.h"

namespace switchyard::orchestrator {

// Converts `pixels` values of three consecutive float planes (R, G, B, each `pixels` long) to
// interleaved RGB24 at `out` (3 * pixels bytes): NaN becomes 0, values are clamped to 0..255 and
// rounded half to even, the same bytes as
// nan_to_num(x, 0, 255, 0).clamp(0, 255).round().to(kByte) permuted to HWC.
void PlanesToRgb24(const float* planes, int64_t pixels, uint8_t* out);

// One image [3, H, W] (any real dtype or strides) as an RgbImage; INTERNAL for another shape.
absl::StatusOr<media::RgbImage> TensorToImage(const at::Tensor& chw);

// Images [N, 3, H, W] (any real dtype or strides) as uint8 [N, H, W, 3]; INTERNAL for another
// shape.
absl::StatusOr<at::Tensor> TensorsToRgb24(const at::Tensor& nchw);

// RGB24 pixels as float32 [1, 3, H, W] in 0..255 (the same values as from_blob(...).permute(2, 0,
// 1).unsqueeze(0).to(kFloat)). Written out on the calling thread because the request handlers call
// it: ATen's copy splits tensors above 32768 elements into a parallel region of the caller's own
// OpenMP team, whose threads then spin on the cores next to the executor's forward.
at::Tensor Rgb24ToTensor(const media::RgbImage& image);

}  // namespace switchyard::orchestrator
