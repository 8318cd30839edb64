// The node's side of a known-answer hardware challenge (common/hardware_challenge.h): the
// matrices are made on the device from index arithmetic, multiplied there in float32 (exact for
// these integers) and each product's digest is taken on the host.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "switchyard/node/v1/node.pb.h"

namespace switchyard::runner {

struct ChallengeAnswer {
  std::vector<std::string> digests;  // one per matrix, in order
  std::string device;                // where it ran ("cuda:0", "cpu")
};

// Runs a validated challenge on `device_spec` ("auto": the first CUDA device if any, else the
// CPU; see ResolveDevice). libtorch errors come back as statuses.
absl::StatusOr<ChallengeAnswer> RunHardwareChallenge(
    const node::v1::HardwareChallengeRequest& request, const std::string& device_spec);

}  // namespace switchyard::runner
