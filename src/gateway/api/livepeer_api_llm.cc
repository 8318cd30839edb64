// The Livepeer AI HTTP API's llm path: one JSON body, or server-sent events as the tokens arrive.
#include <utility>

#include "absl/strings/str_cat.h"
#include "gateway/api/livepeer_api.h"
#include "gateway/api/livepeer_api_internal.h"

namespace switchyard::gateway::livepeer {
namespace {

Json UsageJson(const v1::LLMTokenUsage& u) {
  return Json{{"prompt_tokens", u.prompt_tokens()},
              {"completion_tokens", u.completion_tokens()},
              {"total_tokens", u.total_tokens()}};
}

// What a non-streamed LLM reply may collect from the orchestrator before the gateway gives up:
// the joined text, and the messages (one per token or so) it arrives in. Far above what any
// model's max_tokens makes (a 128k-token reply is well under 1 MiB), low enough that one
// orchestrator that keeps streaming cannot fill the gateway's memory. Streamed replies collect
// nothing: each message is passed on as it arrives.
constexpr size_t kMaxLlmReplyBytes = size_t{8} << 20;
constexpr int64_t kMaxLlmReplyMessages = int64_t{1} << 20;

// One LLM call. Streaming: the first message from the gateway starts the 200 event stream (so an
// error before any token is still a proper HTTP error), each message is one `data:` event as it
// arrives, and `data: [DONE]` ends it. Not streaming: the messages are joined into one body.
// Owns itself; deleted when the call is done.
class LlmCall : public grpc::ClientReadReactor<v1::LLMResponse> {
 public:
  LlmCall(StubPtr stub, bool stream, http::Reply reply)
      : stub_(std::move(stub)), stream_(stream), reply_(std::move(reply)) {}

  grpc::ClientContext* context() { return &context_; }
  v1::LLMRequest* request() { return &request_; }

  void Start() {
    stub_->async()->LLM(&context_, &request_, this);
    StartRead(&message_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream is over; OnDone follows
    if (received_ == 0) {
      id_ = message_.id();
      model_ = message_.model();
      created_ = message_.created();
    }
    ++received_;
    usage_ = message_.usage();
    if (!stream_) {
      for (const auto& c : message_.choices()) {
        content_ += c.delta().content();
        if (!c.finish_reason().empty()) finish_reason_ = c.finish_reason();
      }
      if (content_.size() > kMaxLlmReplyBytes || received_ > kMaxLlmReplyMessages) {
        // Stop reading: OnDone answers the error (the call ends CANCELLED).
        over_limit_ = absl::StrCat(
            "the orchestrator's LLM reply is over the gateway's limit for a non-streamed reply (",
            kMaxLlmReplyBytes, " bytes of text in at most ", kMaxLlmReplyMessages,
            " messages; got ", content_.size(), " bytes in ", received_,
            " messages): ask for fewer max_tokens, or \"stream\": true");
        content_.clear();
        content_.shrink_to_fit();
        context_.TryCancel();
        return;
      }
    }
    if (stream_) {
      StartEvents();
      Json choices = Json::array();
      for (const auto& c : message_.choices()) {
        choices.push_back({{"index", c.index()},
                           {"finish_reason", c.finish_reason()},
                           {"delta",
                            {{"role", c.delta().role().empty() ? "assistant" : c.delta().role()},
                             {"content", c.delta().content()}}}});
      }
      Json event{{"id", message_.id()},
                 {"model", message_.model()},
                 {"created", message_.created()},
                 {"usage", UsageJson(message_.usage())},
                 {"choices", choices}};
      // The client went away: stop generating tokens nobody will read.
      if (!writer_->Write(absl::StrCat("data: ", Dump(event), "\n\n"))) context_.TryCancel();
    }
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    if (writer_) {
      if (!status.ok()) {
        // Headers are out: the error can only be an event now.
        writer_->Write(
            absl::StrCat("data: ",
                         Dump(Json{{"error",
                                    {{"message", status.error_message()},
                                     {"code", HttpStatusForGrpc(status.error_code())}}}}),
                         "\n\n"));
      }
      writer_->Write("data: [DONE]\n\n");
      writer_->Close();
    } else if (!over_limit_.empty()) {
      reply_(HttpError(502, over_limit_));
    } else if (!status.ok()) {
      ReplyGrpcError(stub_, status, std::move(reply_));
    } else if (stream_) {
      StartEvents();
      writer_->Write("data: [DONE]\n\n");
      writer_->Close();
    } else {
      Json body{{"id", id_},
                {"model", model_},
                {"created", created_},
                {"usage", UsageJson(usage_)},
                {"choices",
                 {{{"index", 0},
                   {"finish_reason", finish_reason_},
                   {"message", {{"role", "assistant"}, {"content", content_}}}}}}};
      reply_(http::Json(200, Dump(body)));
    }
    delete this;
  }

 private:
  void StartEvents() {
    if (writer_) return;
    writer_ = std::make_shared<http::StreamWriter>();
    http::Response r;
    r.content_type = "text/event-stream";
    r.headers["Cache-Control"] = "no-cache";
    r.stream = writer_->state();
    reply_(std::move(r));
  }

  StubPtr stub_;
  bool stream_;
  http::Reply reply_;
  grpc::ClientContext context_;
  v1::LLMRequest request_;
  v1::LLMResponse message_;
  std::shared_ptr<http::StreamWriter> writer_;
  int64_t received_ = 0;
  std::string over_limit_;  // why the reply was cut off, if it was
  std::string id_, model_, content_, finish_reason_;
  int64_t created_ = 0;
  v1::LLMTokenUsage usage_;
};

// After "messages", which a Field cannot read.
constexpr Field kLlmFields[] = {
    {"model"}, {"temperature"}, {"max_tokens"}, {"top_p"}, {.name = "top_k", .min = -1}};

}  // namespace

absl::Status CheckLlmFields() { return CheckFields(kLlmFields, *v1::LLMRequest::descriptor()); }

namespace {

// The body's fields into `request` (problems recorded in `p`).
void ReadLlmRequest(Params* p, v1::LLMRequest* request) {
  auto& r = *request;
  if (const Json* messages = p->Raw("messages"); messages == nullptr) {
    p->Fail("messages", "Field required", "missing");
  } else if (!messages->is_array()) {
    p->Fail("messages", "Input should be a valid list", "list_type");
  } else {
    for (size_t i = 0; i < messages->size(); ++i) {
      const Json& m = (*messages)[i];
      if (!m.is_object()) {
        p->Fail(Json::array({"messages", i}), "Input should be a valid dictionary", "model_type");
        continue;
      }
      auto* out = r.add_messages();
      for (const char* key : {"role", "content"}) {
        if (!m.contains(key)) {
          p->Fail(Json::array({"messages", i, key}), "Field required", "missing");
        } else if (!m[key].is_string()) {
          p->Fail(Json::array({"messages", i, key}), "Input should be a valid string",
                  "string_type");
        } else if (std::string(key) == "role") {
          out->set_role(m[key].get<std::string>());
        } else {
          out->set_content(m[key].get<std::string>());
        }
      }
    }
  }
  ReadFields(*p, kLlmFields, &r);
}

}  // namespace

void Llm(const Env& env, const http::Request& req, http::Reply reply) {
  auto p = ReadBody(Body::kJson, req, reply);
  if (!p) return;
  bool stream = false;
  if (auto v = p->Bool("stream")) stream = *v;
  auto* call = new LlmCall(env.stub, stream, reply);
  ReadLlmRequest(&*p, call->request());
  if (!p->ok()) {
    delete call;
    return reply(p->Error());
  }
  ForwardRequestId(req, call->context());
  call->Start();
}

void LlmQuote(const Env& env, const http::Request& req, http::Reply reply) {
  auto p = ReadBody(Body::kJson, req, reply);
  if (!p) return;
  p->Bool("stream");  // checked as the path checks it; a quote does not stream
  v1::QuoteRequest quote;
  ReadLlmRequest(&*p, quote.mutable_llm());
  if (!p->ok()) return reply(p->Error());
  RunQuote(env, req, std::move(quote), nullptr, std::move(reply));
}

}  // namespace switchyard::gateway::livepeer
