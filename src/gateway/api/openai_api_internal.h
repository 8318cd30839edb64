// Pieces of the OpenAI-compatible API (openai_api*.cc) that the tests call directly; not a public
// interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "common/http_server.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::gateway::openai {

using Json = nlohmann::json;

// Limits on what a client may send, checked before any work (docs/openai-api.md). The body's
// size is the HTTP port's (max_message_bytes) and its nesting kMaxJsonDepth (common/json_limits.h).
inline constexpr size_t kMaxMessages = 2048;                 // as OpenAI's own limit
inline constexpr size_t kMaxContentParts = 256;              // text parts of one message's content
inline constexpr size_t kMaxStops = 4;                       // stop strings
inline constexpr size_t kMaxStopBytes = 256;                 // each
inline constexpr size_t kMaxModelIdBytes = 256;              // the model's name
inline constexpr int32_t kCompletionsDefaultMaxTokens = 16;  // OpenAI's for /v1/completions

// One refusal, answered in OpenAI's error shape.
struct Error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" is null
  std::string code;   // "" is null
};

http::Response ToResponse(const Error& error);

// What a chat or text completion request asks for: the gateway's LLM request and how to answer.
struct LlmCallSpec {
  bool chat = true;  // chat.completion(s) or text_completion
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  v1::LLMRequest request;
};

// Reads a POST /v1/chat/completions or /v1/completions body (a parsed JSON object) into `out`;
// the first problem found otherwise.
std::optional<Error> ReadChatRequest(const Json& body, LlmCallSpec* out);
std::optional<Error> ReadCompletionRequest(const Json& body, LlmCallSpec* out);

// The method, content type and JSON of a request body: the parsed object, or the error (400 for
// malformed or too deeply nested JSON, 405, 415).
std::optional<Error> ParseBody(const http::Request& req, Json* body);

// The error for a failed gRPC call, before any token: 400, 401, 404 (model_not_found; the
// caller asks whether any orchestrator is ready first), 429, 503, 504 or 500.
Error ErrorForGrpc(const grpc::Status& status);

}  // namespace switchyard::gateway::openai
