// What every orchestrator RPC handler reads from its gRPC context.
#pragma once

#include <string>

#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchyard::orchestrator {

// The client's request id (metadata "x-request-id"), or "-".
std::string RequestIdOf(const grpc::ServerContext* context);
// The call's deadline (absl::InfiniteFuture() when it has none).
absl::Time DeadlineOf(const grpc::ServerContext* context);
// The units a job reports: the metered count (common/metering.h), or 0 with an error logged when
// the node cannot measure its own result.
int64_t ReportedUnits(const absl::StatusOr<int64_t>& units, const std::string& rid);

}  // namespace switchyard::orchestrator
