// Conversions between absl::Status (used inside our libraries) and grpc::Status (on the wire), and
// the names of status codes and model states.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

// Early return of a non-OK absl::Status.
#define SY_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status sy_status_ = (expr);      \
    if (!sy_status_.ok()) return sy_status_; \
  } while (0)

namespace switchyard {
namespace node::v1 {
enum ModelState : int;  // switchyard/node/v1/node.proto
}  // namespace node::v1

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Name of a gRPC status code, e.g. "UNAVAILABLE".
const char* GrpcCodeName(grpc::StatusCode code);

// A model's state as metrics labels and logs name it: "cold", "loading", "ready", "failed" or
// "unloaded" (unspecified and unknown states are "cold").
const char* ModelStateName(node::v1::ModelState state);

}  // namespace switchyard
