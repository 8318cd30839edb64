// GET /usage on the gateway's HTTP port: the caller's usage from the ledger as JSON
// (docs/metering.md), answered through the gateway's own GetUsage so the API key check is the
// gRPC API's.
#pragma once

#include <memory>

#include <grpcpp/grpcpp.h>

#include "common/http_server.h"

namespace switchyard::gateway {

// Query parameters: since, until (Unix seconds), api_key_id (operators: another key or "*").
// The Authorization header is passed on. 200 with GetUsageResponse as JSON (proto field names);
// errors as {"error": {"message": ...}} with 400, 401, 403, 404 (no ledger), 405 or 502.
http::Handler UsageHttpRoute(std::shared_ptr<grpc::Channel> channel);

}  // namespace switchyard::gateway
