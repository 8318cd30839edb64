// Known-answer hardware challenges (docs/security.md, "Hardware claims"): the gateway asks a node
// to multiply `matrices` pairs of seed-derived `size` x `size` matrices on its compute device and
// answer with a SHA-256 per product; it then recomputes one product, chosen after the answer
// came, here on its CPU. The elements are integers in [-8, 8], so each float32 product element
// (at most 1024 x 64 in magnitude) is exact on any device, a GPU's TF32 included, and the digests
// of honest nodes are bit-identical.
//
// The elements are defined so that a tensor library can make a whole matrix at once from index
// arithmetic that never overflows int64 (runner/hardware_challenge.cc does, with libtorch):
//   x0 = (row * 2654435761 + col * 40503 + s) mod 2147483647      s: ChallengeStream(...)
//   x1 = (x0 * 48271) mod 2147483647,  x2 = (x1 * 48271) mod 2147483647
//   element = (x2 mod 17) - 8
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "switchyard/node/v1/node.pb.h"

namespace switchyard {

constexpr int kChallengeMinSeedBytes = 16;
constexpr int kChallengeMaxSeedBytes = 64;
constexpr int kChallengeMaxMatrices = 64;
constexpr int kChallengeMinSize = 8;
constexpr int kChallengeMaxSize = 1024;
// matrices x size x size; with size <= 1024, at most 2^34 multiply-adds per challenge.
constexpr int64_t kChallengeMaxElements = int64_t{1} << 24;
constexpr int64_t kChallengeModulus = 2147483647;  // 2^31 - 1

// The message of a node's RESOURCE_EXHAUSTED refusal of a challenge (matrix or video) while it
// runs another: one at a time, a challenge takes the whole device. The gateway tells this refusal
// ("busy": most likely another gateway's challenge) by its exact message from any other
// RESOURCE_EXHAUSTED, such as gRPC's own refusal of an answer over the channel's max receive size.
inline constexpr char kChallengeBusyMessage[] =
    "a hardware challenge is already running on this node";

// INVALID_ARGUMENT, naming the field, unless the request is within the limits above.
absl::Status ValidateChallenge(const node::v1::HardwareChallengeRequest& request);

// The stream value `s` of one operand (0: left, 1: right) of one matrix: derived from the seed
// by SHA-256, in [0, 2^31 - 1).
int64_t ChallengeStream(absl::string_view seed, int matrix, int operand);

// One element, as defined above.
int32_t ChallengeElement(int64_t stream, int row, int col);

// SHA-256 of a product's values, row-major, each as 4 little-endian bytes.
std::string ChallengeProductDigest(const int32_t* values, int64_t count);

// The digest of product `matrix` of `request` (validated), computed here on the CPU (O(size^3)).
std::string ReferenceChallengeDigest(const node::v1::HardwareChallengeRequest& request, int matrix);

}  // namespace switchyard
