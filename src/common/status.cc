#include "common/status.h"

#include <iterator>
#include <string>
#include <utility>

#include "switchyard/node/v1/node.pb.h"

namespace switchyard {

// absl::StatusCode and grpc::StatusCode share their numeric values (both follow google.rpc.Code).
grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

const char* GrpcCodeName(grpc::StatusCode code) {
  // Indexed by the code's value (google.rpc.Code: 0 to 16).
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(std::size(kNames)) ? kNames[i] : "UNKNOWN";
}

const char* ModelStateName(node::v1::ModelState state) {
  static constexpr std::pair<node::v1::ModelState, const char*> kNames[] = {
      {node::v1::MODEL_STATE_LOADING, "loading"},
      {node::v1::MODEL_STATE_READY, "ready"},
      {node::v1::MODEL_STATE_FAILED, "failed"},
      {node::v1::MODEL_STATE_UNLOADED, "unloaded"},
  };
  for (const auto& [value, name] : kNames) {
    if (value == state) return name;
  }
  return "cold";
}

}  // namespace switchyard
