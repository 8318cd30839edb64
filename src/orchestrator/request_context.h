// What every orchestrator RPC handler reads from its gRPC context.
#pragma once

#include <string>

#include <grpcpp/server_context.h>

#include "absl/time/time.h"

namespace switchyard::orchestrator {

// The client's request id (metadata "x-request-id"), or "-".
std::string RequestIdOf(const grpc::ServerContext* context);
// The call's deadline (absl::InfiniteFuture() when it has none).
absl::Time DeadlineOf(const grpc::ServerContext* context);

}  // namespace switchyard::orchestrator
