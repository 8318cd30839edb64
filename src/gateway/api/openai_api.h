// The OpenAI-compatible HTTP API on the gateway's HTTP port (next to the Livepeer AI API):
// POST /v1/chat/completions, POST /v1/completions, GET /v1/models and GET /v1/models/<id>, with
// OpenAI's request fields, response objects (chat.completion, chat.completion.chunk,
// text_completion, list/model), server-sent events ending with `data: [DONE]` and error shape
// {"error": {"message", "type", "param", "code"}}, so an OpenAI client library works by changing
// its base URL to http://<gateway>/v1. Each request becomes one call of the gateway's own gRPC
// LLM (or ListCapabilities) method through an in-process channel, as the Livepeer API's /llm does:
// the same routing, retries, metering, usage ledger and API key check. docs/openai-api.md lists
// the fields honoured, ignored and refused.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/http_server.h"

namespace switchyard::gateway {

// The routes: "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/*" and
// "/v1/*" (any other /v1 path: 404 in OpenAI's error shape).
std::map<std::string, http::Handler> OpenAiApiRoutes(std::shared_ptr<grpc::Channel> gateway);

// Whether `path` is one of this API's (under /v1/), so that errors about it (the HTTP port's API
// key check) take OpenAI's error shape.
bool IsOpenAiPath(const std::string& path);

// An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}; empty `param` or
// `code` are null.
http::Response OpenAiError(int status, const std::string& message,
                           const std::string& type = "invalid_request_error",
                           const std::string& param = "", const std::string& code = "");

}  // namespace switchyard::gateway
