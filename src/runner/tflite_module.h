// Wraps the TorchScript of a converted TFLite network into the module ConvertTfliteBuffer returns
// (tflite_converter.h): the contract's `forward`, `person_logits` and, for live video, the blur.
// Internal to the TFLite converter; kept apart from the operator translation (tflite_converter.cc).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/script.h>

#include "absl/status/statusor.h"
#include "runner/tflite_converter.h"

namespace switchyard::runner {

// `network` is the body of `network(self, x: Tensor) -> Tensor` (lines indented four spaces, x
// the [1, 3, input_h, input_w] 0..1 image) and `logits_var` the variable it returns; `params` the
// module parameters it reads as self.<name>. The blur kernels are added as blur_v and blur_h, names
// the converter keeps free. A script that does not compile is INTERNAL naming `name` (the
// converter's bug; convert::BuildModule).
absl::StatusOr<torch::jit::Module> BuildTfliteModule(
    const std::string& network, const std::string& logits_var, int64_t input_h, int64_t input_w,
    TfliteContract contract, std::vector<std::pair<std::string, torch::Tensor>> params,
    const std::string& name);

}  // namespace switchyard::runner
