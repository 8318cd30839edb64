// The OpenAI-compatible API's routes: the chat and text completions (one gateway LLM call each,
// answered as one JSON object or as server-sent events) and the models list.
#include "gateway/api/openai_api.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/secure_random.h"
#include "gateway/api/openai_api_internal.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {
namespace openai {
namespace {

using StubPtr = std::shared_ptr<v1::Gateway::Stub>;

std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// What a non-streamed reply may collect before the gateway gives up, as the Livepeer API's /llm
// (livepeer_api_llm.cc): far above any model's max_tokens, low enough that an orchestrator that
// keeps streaming cannot fill the gateway's memory.
constexpr size_t kMaxReplyBytes = size_t{8} << 20;
constexpr int64_t kMaxReplyMessages = int64_t{1} << 20;

// gRPC metadata values are printable ASCII; anything else aborts gRPC (livepeer_api.cc).
bool IsMetadataValue(const std::string& value) {
  return std::all_of(value.begin(), value.end(),
                     [](unsigned char c) { return c >= 0x20 && c <= 0x7E; });
}

// The request id: the client's X-Request-Id when it is a short plain token (it becomes part of
// the completion's id), else 128 random bits.
std::string RequestIdOf(const http::Request& req) {
  if (auto it = req.headers.find("x-request-id"); it != req.headers.end()) {
    const std::string& id = it->second;
    const bool plain =
        !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](unsigned char c) {
          return std::isalnum(c) || c == '-' || c == '_' || c == '.';
        });
    if (plain) return id;
  }
  return SecureRandomHex(16);
}

// The call's metadata: the request id (so every log line has it), the client's Authorization
// header (so the gRPC API's API key check, quotas and ledger cover these calls too) and the job's
// price caps (docs/metering.md), which the gRPC API checks. A cap that cannot be metadata is
// still sent, as a value that fails that check: a cap is never dropped silently.
void Forward(const http::Request& req, const std::string& request_id,
             grpc::ClientContext* context) {
  context->AddMetadata("x-request-id", request_id);
  if (auto it = req.headers.find("authorization");
      it != req.headers.end() && IsMetadataValue(it->second)) {
    context->AddMetadata("authorization", it->second);
  }
  for (const char* cap : {"x-max-price-per-unit", "x-max-total-price"}) {
    if (auto it = req.headers.find(cap); it != req.headers.end()) {
      context->AddMetadata(cap, IsMetadataValue(it->second) ? it->second : "<not printable ASCII>");
    }
  }
}

Json UsageJson(const v1::LLMTokenUsage& u) {
  return Json{{"prompt_tokens", u.prompt_tokens()},
              {"completion_tokens", u.completion_tokens()},
              {"total_tokens", u.total_tokens()}};
}

Json FinishReason(const std::string& reason) {
  return reason.empty() ? Json(nullptr) : Json(reason);
}

template <typename Req, typename Resp>
struct UnaryCall {
  grpc::ClientContext context;
  Req request;
  Resp response;
};

// Answers a failed call. NOT_FOUND ("no orchestrator offers model ...") is 404 model_not_found
// while the gateway has orchestrators to route to, 503 when it has none at all (its own
// ListCapabilities says which).
void ReplyGrpcError(const StubPtr& stub, const grpc::Status& status, http::Reply reply) {
  Error error = ErrorForGrpc(status);
  if (status.error_code() != grpc::StatusCode::NOT_FOUND) return reply(ToResponse(error));
  auto call =
      std::make_shared<UnaryCall<v1::ListCapabilitiesRequest, v1::ListCapabilitiesResponse>>();
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  stub->async()->ListCapabilities(
      &call->context, &call->request, &call->response,
      [call, error = std::move(error), reply = std::move(reply)](grpc::Status st) mutable {
        int ready = 0;
        for (const auto& o : call->response.orchestrators()) ready += o.ready() ? 1 : 0;
        if (st.ok() && ready == 0) {
          error = Error{503, absl::StrCat("no orchestrator available: ", error.message),
                        "server_error", "", "no_orchestrator"};
        }
        reply(ToResponse(error));
      });
}

// One chat or text completion: one gateway LLM call. Streaming: the first message starts the 200
// event stream (so an error before any token is still a proper HTTP error), each message with
// text or a finish reason is one chunk, the usage chunk follows when asked for, and
// `data: [DONE]` ends it; an error after the start is an `error` event, with no [DONE]. Not
// streaming: the messages are joined into one object. Owns itself; deleted when the call is done.
class CompletionCall : public grpc::ClientReadReactor<v1::LLMResponse> {
 public:
  CompletionCall(StubPtr stub, LlmCallSpec spec, std::string request_id, http::Reply reply)
      : stub_(std::move(stub)),
        spec_(std::move(spec)),
        id_(absl::StrCat(spec_.chat ? "chatcmpl-" : "cmpl-", request_id)),
        request_id_(std::move(request_id)),
        reply_(std::move(reply)) {}

  grpc::ClientContext* context() { return &context_; }

  void Start() {
    stub_->async()->LLM(&context_, &spec_.request, this);
    StartRead(&message_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream is over; OnDone follows
    if (received_++ == 0) {
      model_ = message_.model().empty() ? spec_.request.model() : message_.model();
      created_ = message_.created() > 0 ? message_.created()
                                        : std::chrono::duration_cast<std::chrono::seconds>(
                                              std::chrono::system_clock::now().time_since_epoch())
                                              .count();
    }
    usage_ = message_.usage();
    if (spec_.stream) {
      if (!StreamMessage()) {
        context_.TryCancel();  // the client went away: stop generating tokens nobody reads
        return;
      }
    } else {
      for (const auto& c : message_.choices()) {
        content_ += c.delta().content();
        if (!c.finish_reason().empty()) finish_reason_ = c.finish_reason();
      }
      if (content_.size() > kMaxReplyBytes || received_ > kMaxReplyMessages) {
        over_limit_ = absl::StrCat(
            "the orchestrator's reply is over the gateway's limit for a non-streamed reply (",
            kMaxReplyBytes, " bytes of text in at most ", kMaxReplyMessages, " messages; got ",
            content_.size(), " bytes in ", received_,
            " messages): ask for fewer max_tokens, or \"stream\": true");
        content_.clear();
        content_.shrink_to_fit();
        context_.TryCancel();  // OnDone answers 502
        return;
      }
    }
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    if (writer_) {
      if (!status.ok()) {
        // Headers are out: the error can only be an event now.
        Error e = ErrorForGrpc(status);
        writer_->Write(
            absl::StrCat("data: ",
                         Dump(Json{{"error",
                                    {{"message", e.message},
                                     {"type", e.type},
                                     {"param", nullptr},
                                     {"code", e.code.empty() ? Json(nullptr) : Json(e.code)}}}}),
                         "\n\n"));
      } else {
        FinishEvents();
      }
      writer_->Close();
    } else if (!over_limit_.empty()) {
      reply_(ToResponse(Error{502, over_limit_, "server_error", "", "reply_too_large"}));
    } else if (!status.ok()) {
      ReplyGrpcError(stub_, status, std::move(reply_));
    } else if (spec_.stream) {
      StartEvents();
      FinishEvents();
      writer_->Close();
    } else {
      Json choice{
          {"index", 0}, {"logprobs", nullptr}, {"finish_reason", FinishReason(finish_reason_)}};
      if (spec_.chat) {
        choice["message"] = {{"role", "assistant"}, {"content", content_}, {"refusal", nullptr}};
      } else {
        choice["text"] = content_;
      }
      Json body{{"id", id_},
                {"object", spec_.chat ? "chat.completion" : "text_completion"},
                {"created", created_},
                {"model", model_},
                {"choices", Json::array({choice})},
                {"usage", UsageJson(usage_)}};
      http::Response r = http::Json(200, Dump(body));
      r.headers["X-Request-Id"] = request_id_;
      reply_(std::move(r));
    }
    delete this;
  }

 private:
  Json Chunk(Json choices) const {
    Json chunk{{"id", id_},
               {"object", spec_.chat ? "chat.completion.chunk" : "text_completion"},
               {"created", created_},
               {"model", model_},
               {"choices", std::move(choices)}};
    if (spec_.include_usage) chunk["usage"] = nullptr;  // as OpenAI: only the last has it
    return chunk;
  }

  // Sends the message's choices as one chunk (nothing when it has no text and no finish
  // reason). False when the client is gone.
  bool StreamMessage() {
    StartEvents();
    Json choices = Json::array();
    for (const auto& c : message_.choices()) {
      const std::string& text = c.delta().content();
      if (text.empty() && c.finish_reason().empty() && sent_chunks_ > 0) continue;
      Json choice{{"index", c.index()},
                  {"logprobs", nullptr},
                  {"finish_reason", FinishReason(c.finish_reason())}};
      if (spec_.chat) {
        Json delta = Json::object();
        if (sent_chunks_ == 0) delta["role"] = "assistant";
        if (!text.empty() || sent_chunks_ == 0) delta["content"] = text;
        choice["delta"] = std::move(delta);
      } else {
        choice["text"] = text;
      }
      choices.push_back(std::move(choice));
    }
    if (choices.empty()) return !writer_->gone();
    ++sent_chunks_;
    return writer_->Write(absl::StrCat("data: ", Dump(Chunk(std::move(choices))), "\n\n"));
  }

  void FinishEvents() {
    if (spec_.include_usage) {
      Json chunk = Chunk(Json::array());
      chunk["usage"] = UsageJson(usage_);
      writer_->Write(absl::StrCat("data: ", Dump(chunk), "\n\n"));
    }
    writer_->Write("data: [DONE]\n\n");
  }

  void StartEvents() {
    if (writer_) return;
    if (created_ == 0) {
      created_ = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
      model_ = spec_.request.model();
    }
    writer_ = std::make_shared<http::StreamWriter>();
    http::Response r;
    r.content_type = "text/event-stream";
    r.headers["Cache-Control"] = "no-cache";
    r.headers["X-Request-Id"] = request_id_;
    r.stream = writer_->state();
    reply_(std::move(r));
  }

  StubPtr stub_;
  LlmCallSpec spec_;
  const std::string id_;
  const std::string request_id_;
  http::Reply reply_;
  grpc::ClientContext context_;
  v1::LLMResponse message_;
  std::shared_ptr<http::StreamWriter> writer_;
  int64_t received_ = 0;
  int64_t sent_chunks_ = 0;
  std::string over_limit_;  // why the reply was cut off, if it was
  std::string model_, content_, finish_reason_;
  int64_t created_ = 0;
  v1::LLMTokenUsage usage_;
};

void ServeCompletion(bool chat, const StubPtr& stub, const http::Request& req, http::Reply reply) {
  Json body;
  if (auto e = ParseBody(req, &body)) return reply(ToResponse(*e));
  LlmCallSpec spec;
  if (auto e = chat ? ReadChatRequest(body, &spec) : ReadCompletionRequest(body, &spec)) {
    return reply(ToResponse(*e));
  }
  body = Json();  // the request proto has it all now
  const std::string request_id = RequestIdOf(req);
  auto* call = new CompletionCall(stub, std::move(spec), request_id, std::move(reply));
  Forward(req, request_id, call->context());
  call->Start();
}

Json ModelJson(const std::string& id) {
  return Json{{"id", id}, {"object", "model"}, {"created", 0}, {"owned_by", "switchyard"}};
}

// GET /v1/models (`one` empty) or /v1/models/<one>: the llm models some orchestrator offers now.
void ServeModels(const StubPtr& stub, const http::Request& req, std::string one,
                 http::Reply reply) {
  if (req.method != "GET") {
    return reply(
        ToResponse(Error{405, "Use GET.", "invalid_request_error", "", "method_not_allowed"}));
  }
  auto call =
      std::make_shared<UnaryCall<v1::ListCapabilitiesRequest, v1::ListCapabilitiesResponse>>();
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  Forward(req, RequestIdOf(req), &call->context);
  stub->async()->ListCapabilities(
      &call->context, &call->request, &call->response,
      [call, one = std::move(one), reply = std::move(reply)](grpc::Status status) {
        if (!status.ok()) return reply(ToResponse(ErrorForGrpc(status)));
        std::set<std::string> ids;
        for (const auto& cap : call->response.capabilities()) {
          if (cap.pipeline() == "llm" && cap.orchestrators() > 0) ids.insert(cap.model_id());
        }
        if (!one.empty()) {
          if (ids.count(one) == 0) {
            return reply(ToResponse(Error{
                404,
                absl::StrCat("The model '", one, "' does not exist or no orchestrator offers it."),
                "invalid_request_error", "model", "model_not_found"}));
          }
          return reply(http::Json(200, Dump(ModelJson(one))));
        }
        Json data = Json::array();
        for (const auto& id : ids) data.push_back(ModelJson(id));
        reply(http::Json(200, Dump(Json{{"object", "list"}, {"data", std::move(data)}})));
      });
}

}  // namespace
}  // namespace openai

bool IsOpenAiPath(const std::string& path) { return absl::StartsWith(path, "/v1/"); }

http::Response OpenAiError(int status, const std::string& message, const std::string& type,
                           const std::string& param, const std::string& code) {
  return openai::ToResponse(openai::Error{status, message, type, param, code});
}

std::map<std::string, http::Handler> OpenAiApiRoutes(std::shared_ptr<grpc::Channel> gateway) {
  auto stub = openai::StubPtr(v1::Gateway::NewStub(gateway));
  std::map<std::string, http::Handler> routes;
  routes["/v1/chat/completions"] = [stub](const http::Request& req, http::Reply reply) {
    openai::ServeCompletion(true, stub, req, std::move(reply));
  };
  routes["/v1/completions"] = [stub](const http::Request& req, http::Reply reply) {
    openai::ServeCompletion(false, stub, req, std::move(reply));
  };
  routes["/v1/models"] = [stub](const http::Request& req, http::Reply reply) {
    openai::ServeModels(stub, req, "", std::move(reply));
  };
  routes["/v1/models/*"] = [stub](const http::Request& req, http::Reply reply) {
    std::string id(absl::StripPrefix(req.path, "/v1/models/"));
    if (id.empty() || id.size() > openai::kMaxModelIdBytes) {
      return reply(OpenAiError(404, "No model named here.", "invalid_request_error", "model",
                               "model_not_found"));
    }
    openai::ServeModels(stub, req, std::move(id), std::move(reply));
  };
  routes["/v1/*"] = [](const http::Request& req, http::Reply reply) {
    reply(OpenAiError(404,
                      absl::StrCat("Unknown path ", req.path.substr(0, 200),
                                   ": this gateway serves /v1/chat/completions, /v1/completions "
                                   "and /v1/models."),
                      "invalid_request_error", "", "unknown_url"));
  };
  return routes;
}

}  // namespace switchyard::gateway
