// Float32 tensors as the public API carries them: packed (v1::FloatTensor) or as the Livepeer
// API's JSON nested arrays. The orchestrator fills either; the gateway checks a node's packed
// tensors and prints them as JSON for clients that did not ask for them packed.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard {

// Most dimensions a tensor of the API has (masks are [K, H, W]).
inline constexpr int kMaxFloatTensorDims = 4;

// Appends `data` (row-major, of `shape`; an empty shape is one value) as nested JSON arrays,
// each value in its shortest round-trip form and non-finite ones as null. `as_binary` prints 1
// for values > 0 and 0 for the rest. The shape must have at most kMaxFloatTensorDims entries.
void AppendFloatsAsJson(const float* data, std::span<const int64_t> shape, bool as_binary,
                        std::string* out);

// `out` = `data` packed as little-endian float32 with `shape`.
void PackFloatTensor(const float* data, std::span<const int64_t> shape, v1::FloatTensor* out);

// Checks a tensor from another process before it is read: `dims` dimensions, none negative,
// at most `max_elements` values in all, and exactly 4 bytes per value. `name` is for the error.
absl::Status CheckFloatTensor(const v1::FloatTensor& tensor, absl::string_view name, int dims,
                              int64_t max_elements);

// A tensor as JSON: INVALID_ARGUMENT when its data does not fill its shape exactly,
// RESOURCE_EXHAUSTED when the text would pass `max_bytes`.
absl::StatusOr<std::string> FloatTensorToJson(const v1::FloatTensor& tensor, int64_t max_bytes);

}  // namespace switchyard
