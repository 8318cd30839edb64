// Conversions between absl::Status (used inside our libraries) and grpc::Status (on the wire).
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

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Name of a gRPC status code, e.g. "UNAVAILABLE".
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace switchyard
