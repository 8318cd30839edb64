// The Livepeer AI HTTP API's audio and text paths: audio-to-text, image-to-text, text-to-speech
// and llm (one JSON body, or server-sent events as the tokens arrive).
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/livepeer_api.h"
#include "gateway/livepeer_api_internal.h"

namespace switchyard::gateway::livepeer {
namespace {

// What the pipeline says about the uploaded audio, as the reference runner answers it: 415 for a
// file that is not audio it can decode, 413 for audio longer than the model takes.
int AudioInputStatus(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) return 0;
  const std::string& m = status.error_message();
  if (absl::StartsWith(m, "audio could not be read") ||
      absl::StartsWith(m, "audio has no decodable audio stream") ||
      absl::StartsWith(m, "audio decoder could not be opened") ||
      absl::StartsWith(m, "audio stream parameters are invalid")) {
    return 415;
  }
  if (absl::StrContains(m, "max_audio_seconds")) return 413;
  return 0;
}

Json UsageJson(const v1::LLMTokenUsage& u) {
  return Json{{"prompt_tokens", u.prompt_tokens()},
              {"completion_tokens", u.completion_tokens()},
              {"total_tokens", u.total_tokens()}};
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

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

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

}  // namespace

void AudioToText(const StubPtr& stub, const http::Request& req, http::Reply reply) {
  auto p = ReadForm(req, reply);
  if (!p) return;
  auto call = std::make_shared<UnaryCall<v1::AudioToTextRequest, v1::TextResponse>>();
  auto& r = call->request;
  if (auto v = p->File("audio", true)) r.set_audio(std::move(*v));
  if (auto v = p->Str("model_id", true)) r.set_model_id(*v);
  if (auto v = p->Str("return_timestamps")) r.set_return_timestamps(*v);
  if (!p->ok()) return reply(p->Error());
  ForwardRequestId(req, &call->context);
  RunUnary(
      stub, call,
      [stub](auto* c, auto* rq, auto* rs, auto cb) {
        stub->async()->AudioToText(c, rq, rs, std::move(cb));
      },
      [](const v1::TextResponse& resp) {
        Json chunks = Json::array();
        for (const auto& c : resp.chunks()) {
          chunks.push_back(
              {{"timestamp", Json(std::vector<double>(c.timestamp().begin(), c.timestamp().end()))},
               {"text", c.text()}});
        }
        return Json{{"text", resp.text()}, {"chunks", chunks}};
      },
      std::move(reply), AudioInputStatus);
}

void ImageToText(const StubPtr& stub, const http::Request& req, http::Reply reply) {
  auto p = ReadForm(req, reply);
  if (!p) return;
  auto call = std::make_shared<UnaryCall<v1::ImageToTextRequest, v1::ImageToTextResponse>>();
  auto& r = call->request;
  if (auto v = p->File("image", true)) r.set_image(std::move(*v));
  if (auto v = p->Str("model_id", true)) r.set_model_id(*v);
  if (auto v = p->Str("prompt")) r.set_prompt(*v);
  if (!p->ok()) return reply(p->Error());
  ForwardRequestId(req, &call->context);
  RunUnary(
      stub, call,
      [stub](auto* c, auto* rq, auto* rs, auto cb) {
        stub->async()->ImageToText(c, rq, rs, std::move(cb));
      },
      [](const v1::ImageToTextResponse& resp) {
        return Json{{"text", resp.text()}};
      },
      std::move(reply), ImageInputStatus);
}

void TextToSpeech(const StubPtr& stub, const http::Request& req, http::Reply reply) {
  auto p = ReadJson(req, reply);
  if (!p) return;
  auto call = std::make_shared<UnaryCall<v1::TextToSpeechRequest, v1::AudioResponse>>();
  auto& r = call->request;
  if (auto v = p->Str("model_id", true)) r.set_model_id(*v);
  if (auto v = p->Str("text")) r.set_text(*v);
  // Absent: the orchestrator applies the spec's default speaker description.
  if (auto v = p->Str("description")) r.set_description(*v);
  if (!p->ok()) return reply(p->Error());
  ForwardRequestId(req, &call->context);
  RunUnary(
      stub, call,
      [stub](auto* c, auto* rq, auto* rs, auto cb) {
        stub->async()->TextToSpeech(c, rq, rs, std::move(cb));
      },
      [](const v1::AudioResponse& resp) {
        const std::string type =
            resp.audio().content_type().empty() ? "audio/wav" : resp.audio().content_type();
        return Json{{"audio", {{"url", DataUrl(type, resp.audio().data())}}}};
      },
      std::move(reply));
}

void Llm(const StubPtr& stub, const http::Request& req, http::Reply reply) {
  auto p = ReadJson(req, reply);
  if (!p) return;
  bool stream = false;
  if (auto v = p->Bool("stream")) stream = *v;
  auto* call = new LlmCall(stub, stream, reply);
  auto& r = *call->request();
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
  if (auto v = p->Str("model")) r.set_model(*v);
  if (auto v = p->Number("temperature")) r.set_temperature(static_cast<float>(*v));
  if (auto v = p->Int("max_tokens", 1, kMaxInt32)) r.set_max_tokens(static_cast<int32_t>(*v));
  if (auto v = p->Number("top_p")) r.set_top_p(static_cast<float>(*v));
  if (auto v = p->Int("top_k", -1, kMaxInt32)) r.set_top_k(static_cast<int32_t>(*v));
  if (!p->ok()) {
    delete call;
    return reply(p->Error());
  }
  ForwardRequestId(req, call->context());
  call->Start();
}

}  // namespace switchyard::gateway::livepeer
