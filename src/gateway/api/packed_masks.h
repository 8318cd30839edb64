// segment-anything-2's masks between the gateway and its nodes: the gateway asks every node for
// packed float32 tensors (v1::FloatTensor) and prints the Livepeer API's JSON strings itself for
// clients that did not ask for them packed, so the number printing is done on the gateway, not
// on the GPU box (docs/http-api.md).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::gateway {

// A node's answer: either the three JSON strings (a node that does not pack; passed on as they
// are) or the three tensors and no strings, with masks [K, H, W], scores [K] and logits
// [K, h, w] for one K >= 1. Anything else is INVALID_ARGUMENT naming what is wrong.
absl::Status CheckPackedMasks(const v1::MasksResponse& response);

// Replaces a checked answer's tensors by the JSON strings (nothing to do for an answer in JSON);
// RESOURCE_EXHAUSTED when the strings would pass `max_bytes` in all.
absl::Status UnpackMasksToJson(v1::MasksResponse* response, int64_t max_bytes);

}  // namespace switchyard::gateway
