// Upscale pipeline: image bytes -> RGB tensor -> super-resolution model -> PNG.
// TorchScript contract (docs/pipelines.md): forward(x: float32[N,3,H,W] in 0..255)
// -> float32[N,3,H*s,W*s] in 0..255 (clamped and rounded here).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runner/model_executor.h"

namespace switchyard::orchestrator {

struct UpscaleResult {
  std::string png;
  int input_width = 0;
  int input_height = 0;
  int output_width = 0;
  int output_height = 0;
};

// Decodes `image` (PNG/JPEG; INVALID_ARGUMENT if corrupt or over `max_input_pixels`), runs the
// model through `executor`, encodes the result. `is_cancelled` is watched while waiting (runner::WatchForCancel).
absl::StatusOr<UpscaleResult> RunUpscale(runner::ModelExecutor& executor, const std::string& image,
                                         int64_t max_input_pixels, absl::Time deadline,
                                         const std::function<bool()>& is_cancelled);

}  // namespace switchyard::orchestrator
