// The Livepeer AI gateway HTTP API (../shared/specs/livepeer-ai-gateway.openapi.yaml) on the
// gateway's HTTP port. Each request becomes a call on the gateway's own gRPC API through an
// in-process channel, so an HTTP job is routed exactly once, by the same router, with the same
// retries and errors as a gRPC one.
//
// Implemented: POST /upscale. NOT FINISHED: the other pipelines' paths (text-to-image,
// image-to-image, image-to-video, audio-to-text, segment-anything-2, llm with server-sent events,
// image-to-text, text-to-speech) answer 501 with a message saying so.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/http_server.h"

namespace switchyard::gateway {

std::map<std::string, http::Handler> LivepeerApiRoutes(std::shared_ptr<grpc::Channel> gateway);

// The HTTP status the Livepeer API uses for a gRPC outcome.
int HttpStatusForGrpc(grpc::StatusCode code);

}  // namespace switchyard::gateway
