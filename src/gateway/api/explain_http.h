// GET /explain on the gateway's HTTP port: Gateway.ExplainRoute as JSON (docs/operations.md,
// "Why does my node get no work?"), answered through the gateway's own gRPC API so the API key
// check (operators' keys only) is the gRPC API's.
#pragma once

#include <memory>

#include <grpcpp/grpcpp.h>

#include "common/http_server.h"

namespace switchyard::gateway {

// Query parameters: pipeline, model (required), max_price (price cap per unit; optional). The
// Authorization and x-api-key headers are passed on. 200 with ExplainRouteResponse as JSON (proto
// field names); errors as {"error": {"message": ...}} with 400, 401, 403, 405 or 502.
http::Handler ExplainHttpRoute(std::shared_ptr<grpc::Channel> channel);

}  // namespace switchyard::gateway
