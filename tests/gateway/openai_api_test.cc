// The OpenAI-compatible HTTP API's handlers (gateway::OpenAiApiRoutes) called directly, in
// process, against a fake gateway gRPC service: how request fields map onto the gateway's
// LLMRequest, the response objects and event streams, the error shapes for every gRPC outcome,
// and what hostile bodies get (issue 21).
#include "gateway/api/openai_api.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/grpc_services.h"
#include "common/http_server.h"
#include "gateway/api/openai_api_internal.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {
namespace {

using Json = nlohmann::json;

// Streams the reply "Hello" in `pieces` messages (the last with finish_reason "stop" and the
// usage), or fails with `status` before any message, or with `then` after them.
class FakeLlm final : public grpc::ServerWriteReactor<v1::LLMResponse> {
 public:
  FakeLlm(std::vector<std::string> pieces, grpc::Status status, grpc::Status then,
          std::atomic<int>* active)
      : pieces_(std::move(pieces)), then_(std::move(then)), active_(active) {
    active_->fetch_add(1);
    if (!status.ok()) {
      Finish(status);
      return;
    }
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    Next();
  }
  void OnDone() override {
    active_->fetch_sub(1);
    delete this;
  }

 private:
  void Next() {
    if (at_ >= pieces_.size()) return Finish(then_);
    msg_.Clear();
    msg_.set_id("orch-id");
    msg_.set_model("fake-llm");
    msg_.set_created(1700000000);
    auto* choice = msg_.add_choices();
    choice->mutable_delta()->set_role("assistant");
    choice->mutable_delta()->set_content(pieces_[at_]);
    const bool last = at_ + 1 == pieces_.size();
    if (last) choice->set_finish_reason("stop");
    auto* usage = msg_.mutable_usage();
    usage->set_prompt_tokens(7);
    usage->set_completion_tokens(static_cast<int32_t>(at_ + 1));
    usage->set_total_tokens(static_cast<int32_t>(8 + at_));
    ++at_;
    StartWrite(&msg_);
  }
  std::vector<std::string> pieces_;
  grpc::Status then_;
  size_t at_ = 0;
  std::atomic<int>* active_;
  v1::LLMResponse msg_;
};

class FakeGateway final : public v1::Gateway::CallbackService {
 public:
  grpc::ServerWriteReactor<v1::LLMResponse>* LLM(grpc::CallbackServerContext* context,
                                                 const v1::LLMRequest* request) override {
    {
      std::lock_guard<std::mutex> lock(mu);
      last_request = *request;
      last_metadata.clear();
      for (const auto& [k, v] : context->client_metadata()) {
        last_metadata[std::string(k.data(), k.size())] = std::string(v.data(), v.size());
      }
    }
    return new FakeLlm(pieces, llm_status, llm_status_after, &llm_active);
  }
  grpc::ServerUnaryReactor* ListCapabilities(grpc::CallbackServerContext* context,
                                             const v1::ListCapabilitiesRequest*,
                                             v1::ListCapabilitiesResponse* response) override {
    for (const char* id : {"llm-b", "llm-a", "llm-a"}) {  // two orchestrators offer llm-a
      auto* cap = response->add_capabilities();
      cap->set_pipeline("llm");
      cap->set_model_id(id);
      cap->set_orchestrators(1);
    }
    auto* gone = response->add_capabilities();  // offered by nobody now
    gone->set_pipeline("llm");
    gone->set_model_id("llm-gone");
    gone->set_orchestrators(0);
    auto* other = response->add_capabilities();
    other->set_pipeline("upscale");
    other->set_model_id("esrgan");
    other->set_orchestrators(1);
    if (orchestrator_ready) response->add_orchestrators()->set_ready(true);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  std::mutex mu;
  v1::LLMRequest last_request;
  std::map<std::string, std::string> last_metadata;
  std::vector<std::string> pieces = {"Hel", "lo"};
  grpc::Status llm_status = grpc::Status::OK;
  grpc::Status llm_status_after = grpc::Status::OK;  // once the pieces are sent
  bool orchestrator_ready = true;
  std::atomic<int> llm_active{0};
};

class OpenAiApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    routes_ = OpenAiApiRoutes(
        ReleasedOffGrpcThreads(server_->InProcessChannel(grpc::ChannelArguments())));
  }
  void TearDown() override {
    for (int i = 0; i < 500 && service_.llm_active > 0; ++i) {  // bounded: 5 s
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(service_.llm_active, 0);
    routes_.clear();
    server_->Shutdown();
  }

  // Calls the route for `req.path` (exact, else the longest "/v1/.../*") and waits (bounded).
  http::Response Call(http::Request req) {
    auto it = routes_.find(req.path);
    if (it == routes_.end()) {
      it = routes_.find(req.path.rfind("/v1/models/", 0) == 0 ? "/v1/models/*" : "/v1/*");
    }
    struct Answer {
      std::mutex mu;
      std::condition_variable cv;
      std::optional<http::Response> response;
    };
    auto answer = std::make_shared<Answer>();
    it->second(req, [answer](http::Response r) {
      std::lock_guard<std::mutex> lock(answer->mu);
      answer->response = std::move(r);
      answer->cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(answer->mu);
    EXPECT_TRUE(answer->cv.wait_for(lock, std::chrono::seconds(30),
                                    [&] { return answer->response.has_value(); }))
        << "no reply within 30 s from " << req.path;
    return answer->response.value_or(http::Response{});
  }

  http::Response Post(const std::string& path, const std::string& body,
                      std::map<std::string, std::string> headers = {}) {
    http::Request req;
    req.method = "POST";
    req.path = req.target = path;
    req.headers = std::move(headers);
    req.headers.emplace("content-type", "application/json");
    req.body = body;
    return Call(std::move(req));
  }
  http::Response Get(const std::string& path) {
    http::Request req;
    req.method = "GET";
    req.path = req.target = path;
    return Call(std::move(req));
  }

  // A streamed reply's body, read to its end (bounded: 10 s) as the connection would.
  static std::string Drain(http::Response& r) {
    std::string events;
    if (r.stream == nullptr) return r.body;
    bool closed = false;
    for (int i = 0; i < 1000 && !closed; ++i) {
      {
        MutexLock lock(&r.stream->mu);
        while (!r.stream->pending.empty()) {
          events += r.stream->pending.front();
          r.stream->pending.pop_front();
        }
        r.stream->pending_bytes = 0;
        closed = r.stream->closed;
      }
      r.stream->drained.SignalAll();
      if (!closed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(closed);
    return events;
  }

  v1::LLMRequest LastRequest() {
    std::lock_guard<std::mutex> lock(service_.mu);
    return service_.last_request;
  }

  FakeGateway service_;
  std::unique_ptr<grpc::Server> server_;
  std::map<std::string, http::Handler> routes_;
};

const char kChat[] = R"({"model":"llm-a","messages":[{"role":"user","content":"Hi"}]})";

// The body with `field` set to `value` (JSON text).
std::string ChatWith(const std::string& field, const std::string& value) {
  Json body = Json::parse(kChat);
  body[field] = Json::parse(value);
  return body.dump();
}

// {"error": {"message", "type", "param", "code"}} with `status`, the message containing `text`
// and, when given, `param`.
::testing::AssertionResult IsError(const http::Response& r, int status, const std::string& text,
                                   const std::string& param = "") {
  Json j = Json::parse(r.body, nullptr, false);
  if (r.status != status || j.is_discarded() || !j.contains("error") ||
      !j["error"]["message"].is_string() || !j["error"]["type"].is_string() ||
      !j["error"].contains("param") || !j["error"].contains("code") ||
      j["error"]["message"].get<std::string>().find(text) == std::string::npos ||
      (!param.empty() && j["error"]["param"] != param)) {
    return ::testing::AssertionFailure()
           << "want " << status << " with '" << text << "' param '" << param << "', got "
           << r.status << " " << r.body.substr(0, 400);
  }
  return ::testing::AssertionSuccess();
}

TEST_F(OpenAiApiTest, ChatCompletionMapsEveryHonouredField) {
  http::Response r = Post("/v1/chat/completions", R"({
      "model": "llm-a",
      "messages": [{"role": "developer", "content": "Be brief."},
                   {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                 {"type": "text", "text": "there"}],
                    "name": "ann"},
                   {"role": "assistant", "content": "Hello"},
                   {"role": "user", "content": "Again"}],
      "max_completion_tokens": 12, "temperature": 0.5, "top_p": 0.9, "top_k": 3,
      "stop": ["\n\n", "END"], "seed": 42, "n": 1, "user": "u-1", "metadata": {"a": "b"},
      "store": false, "logprobs": false, "presence_penalty": 0, "frequency_penalty": 0,
      "logit_bias": {}, "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
      "stream": false, "stream_options": null})",
                          {{"x-request-id", "req-123"}, {"authorization", "Bearer k"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["X-Request-Id"], "req-123");
  const v1::LLMRequest req = LastRequest();
  EXPECT_EQ(req.model(), "llm-a");
  ASSERT_EQ(req.messages_size(), 4);
  EXPECT_EQ(req.messages(0).role(), "system");
  EXPECT_EQ(req.messages(0).content(), "Be brief.");
  EXPECT_EQ(req.messages(1).role(), "user");
  EXPECT_EQ(req.messages(1).content(), "Hi there");
  EXPECT_EQ(req.messages(2).role(), "assistant");
  EXPECT_FALSE(req.has_prompt());
  EXPECT_EQ(req.max_tokens(), 12);
  EXPECT_FLOAT_EQ(req.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(req.top_p(), 0.9f);
  EXPECT_EQ(req.top_k(), 3);
  ASSERT_EQ(req.stop_size(), 2);
  EXPECT_EQ(req.stop(0), "\n\n");
  EXPECT_EQ(req.stop(1), "END");
  ASSERT_TRUE(req.has_seed());
  EXPECT_EQ(req.seed(), 42);
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    EXPECT_EQ(service_.last_metadata["x-request-id"], "req-123");
    EXPECT_EQ(service_.last_metadata["authorization"], "Bearer k");
  }

  Json j = Json::parse(r.body);
  EXPECT_EQ(j["id"], "chatcmpl-req-123");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "fake-llm");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["usage"],
            Json({{"prompt_tokens", 7}, {"completion_tokens", 2}, {"total_tokens", 9}}));

  // max_tokens is the older name; without either nothing is set (the model's default).
  ASSERT_EQ(Post("/v1/chat/completions", ChatWith("max_tokens", "5")).status, 200);
  EXPECT_EQ(LastRequest().max_tokens(), 5);
  ASSERT_EQ(Post("/v1/chat/completions", kChat).status, 200);
  EXPECT_FALSE(LastRequest().has_max_tokens());
  EXPECT_FALSE(LastRequest().has_seed());
  EXPECT_EQ(LastRequest().stop_size(), 0);
  // One stop string as a string.
  ASSERT_EQ(Post("/v1/chat/completions", ChatWith("stop", R"("###")")).status, 200);
  ASSERT_EQ(LastRequest().stop_size(), 1);
  EXPECT_EQ(LastRequest().stop(0), "###");
}

TEST_F(OpenAiApiTest, ChatStreamIsChunksThenUsageThenDone) {
  service_.pieces = {"He", "ll", "o"};
  http::Response r =
      Post("/v1/chat/completions",
           ChatWith("stream", "true").insert(1, R"("stream_options":{"include_usage":true},)"),
           {{"x-request-id", "s1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "text/event-stream");
  const std::string body = Drain(r);
  std::vector<std::string> events = absl::StrSplit(body, "\n\n", absl::SkipEmpty());
  ASSERT_EQ(events.size(), 5u) << body;  // 3 chunks, the usage, [DONE]
  EXPECT_EQ(events.back(), "data: [DONE]");
  std::string text;
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_EQ(events[i].rfind("data: ", 0), 0u) << events[i];
    Json c = Json::parse(events[i].substr(6));
    EXPECT_EQ(c["id"], "chatcmpl-s1");
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["created"], 1700000000);
    EXPECT_EQ(c["model"], "fake-llm");
    EXPECT_TRUE(c.contains("usage") && c["usage"].is_null()) << events[i];
    ASSERT_EQ(c["choices"].size(), 1u);
    const Json& delta = c["choices"][0]["delta"];
    // The role in the first chunk only.
    EXPECT_EQ(delta.contains("role"), i == 0) << events[i];
    text += delta["content"].get<std::string>();
    if (i < 2) {
      EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null()) << events[i];
    } else {
      EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
    }
  }
  EXPECT_EQ(text, "Hello");
  Json usage = Json::parse(events[3].substr(6));
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  EXPECT_EQ(usage["choices"], Json::array());
  EXPECT_EQ(usage["usage"],
            Json({{"prompt_tokens", 7}, {"completion_tokens", 3}, {"total_tokens", 10}}));

  // Without include_usage: no usage chunk and no usage field.
  http::Response plain = Post("/v1/chat/completions", ChatWith("stream", "true"));
  const std::string plain_body = Drain(plain);
  std::vector<std::string> plain_events = absl::StrSplit(plain_body, "\n\n", absl::SkipEmpty());
  ASSERT_EQ(plain_events.size(), 4u) << plain_body;
  EXPECT_FALSE(Json::parse(plain_events[0].substr(6)).contains("usage"));
}

// An error after the first chunk can only be an event: OpenAI's error object, with no [DONE]
// after it (a client must not take the cut reply for a whole one).
TEST_F(OpenAiApiTest, ErrorMidStreamIsAnErrorEventWithoutDone) {
  service_.llm_status_after =
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "orchestrator went away mid-stream");
  http::Response r = Post("/v1/chat/completions", ChatWith("stream", "true"));
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string body = Drain(r);
  std::vector<std::string> events = absl::StrSplit(body, "\n\n", absl::SkipEmpty());
  ASSERT_EQ(events.size(), 3u) << body;  // 2 chunks, the error
  Json error = Json::parse(events.back().substr(6), nullptr, false);
  EXPECT_EQ(error["error"]["message"], "orchestrator went away mid-stream") << body;
  EXPECT_EQ(error["error"]["type"], "server_error");
  EXPECT_EQ(body.find("[DONE]"), std::string::npos) << body;

  // Not streamed, the same failure is a plain 503.
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", kChat), 503, "mid-stream"));
}

TEST_F(OpenAiApiTest, CompletionsSendAPromptWithOpenAisDefaultOf16Tokens) {
  http::Response r = Post("/v1/completions", R"({"model":"llm-a","prompt":"Once","seed":7})",
                          {{"x-request-id", "c1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  v1::LLMRequest req = LastRequest();
  EXPECT_EQ(req.prompt(), "Once");
  EXPECT_EQ(req.messages_size(), 0);
  EXPECT_EQ(req.max_tokens(), 16);
  EXPECT_EQ(req.seed(), 7);
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["id"], "cmpl-c1");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "Hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 9);

  // An array of one prompt is that prompt; max_tokens as given.
  ASSERT_EQ(
      Post("/v1/completions", R"({"model":"llm-a","prompt":["Twice"],"max_tokens":3})").status,
      200);
  EXPECT_EQ(LastRequest().prompt(), "Twice");
  EXPECT_EQ(LastRequest().max_tokens(), 3);

  http::Response s = Post("/v1/completions", R"({"model":"llm-a","prompt":"x","stream":true})");
  const std::string body = Drain(s);
  std::vector<std::string> events = absl::StrSplit(body, "\n\n", absl::SkipEmpty());
  ASSERT_EQ(events.size(), 3u) << body;
  Json c = Json::parse(events[0].substr(6));
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "Hel");
  EXPECT_EQ(events[2], "data: [DONE]");

  EXPECT_TRUE(IsError(Post("/v1/completions", R"({"model":"llm-a","prompt":["a","b"]})"), 400,
                      "one prompt per request", "prompt"));
  EXPECT_TRUE(IsError(Post("/v1/completions", R"({"model":"llm-a","prompt":[1,2,3]})"), 400,
                      "token ids", "prompt"));
  EXPECT_TRUE(IsError(Post("/v1/completions", R"({"model":"llm-a"})"), 400, "'prompt'", "prompt"));
  EXPECT_TRUE(IsError(Post("/v1/completions", R"({"model":"llm-a","prompt":"a","echo":true})"), 400,
                      "not echoed", "echo"));
  EXPECT_TRUE(IsError(Post("/v1/completions", R"({"model":"llm-a","prompt":"a","best_of":2})"), 400,
                      "best_of", "best_of"));
  EXPECT_TRUE(IsError(Post("/v1/completions", R"({"model":"llm-a","prompt":"a","logprobs":2})"),
                      400, "log probabilities", "logprobs"));
  EXPECT_TRUE(IsError(Post("/v1/completions", R"({"model":"llm-a","prompt":"a","suffix":"z"})"),
                      400, "suffix", "suffix"));
  EXPECT_TRUE(IsError(Post("/v1/completions", R"({"model":"llm-a","messages":[]})"), 400,
                      "Unrecognized request argument supplied: messages", "messages"));
}

TEST_F(OpenAiApiTest, ModelsListsTheLlmModelsSomeOrchestratorOffers) {
  http::Response r = Get("/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u) << r.body;  // not llm-gone, not the upscale model
  EXPECT_EQ(j["data"][0]["id"], "llm-a");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["owned_by"], "switchyard");
  EXPECT_EQ(j["data"][1]["id"], "llm-b");

  http::Response one = Get("/v1/models/llm-b");
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(Json::parse(one.body)["id"], "llm-b");
  EXPECT_TRUE(IsError(Get("/v1/models/llm-gone"), 404, "llm-gone", "model"));
  EXPECT_TRUE(IsError(Get("/v1/models/" + std::string(300, 'm')), 404, "No model"));
  EXPECT_TRUE(IsError(Post("/v1/models", "{}"), 405, "GET"));
  EXPECT_TRUE(IsError(Get("/v1/embeddings"), 404, "/v1/chat/completions"));
}

// Every gRPC outcome before the first token, in OpenAI's shape with OpenAI's status.
TEST_F(OpenAiApiTest, GatewayErrorsMapToOpenAiStatuses) {
  struct Case {
    grpc::StatusCode code;
    int status;
    const char* type;
    const char* code_name;
  };
  for (const Case& c :
       {Case{grpc::StatusCode::INVALID_ARGUMENT, 400, "invalid_request_error", ""},
        Case{grpc::StatusCode::UNAUTHENTICATED, 401, "invalid_request_error", "invalid_api_key"},
        Case{grpc::StatusCode::NOT_FOUND, 404, "invalid_request_error", "model_not_found"},
        Case{grpc::StatusCode::RESOURCE_EXHAUSTED, 429, "rate_limit_error", "rate_limit_exceeded"},
        Case{grpc::StatusCode::UNAVAILABLE, 503, "server_error", "service_unavailable"},
        Case{grpc::StatusCode::DEADLINE_EXCEEDED, 504, "server_error", "timeout"},
        Case{grpc::StatusCode::INTERNAL, 500, "server_error", ""}}) {
    for (const bool stream : {false, true}) {
      service_.llm_status = grpc::Status(c.code, "why it failed");
      http::Response r =
          Post("/v1/chat/completions", ChatWith("stream", stream ? "true" : "false"));
      EXPECT_TRUE(IsError(r, c.status, "why it failed")) << c.status << " stream " << stream;
      Json j = Json::parse(r.body, nullptr, false);
      EXPECT_EQ(j["error"]["type"], c.type) << r.body;
      EXPECT_EQ(j["error"]["code"], *c.code_name ? Json(c.code_name) : Json(nullptr)) << r.body;
    }
  }
  // NOT_FOUND with no orchestrator ready at all is 503.
  service_.llm_status = grpc::Status(grpc::StatusCode::NOT_FOUND, "no orchestrator offers it");
  service_.orchestrator_ready = false;
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", kChat), 503, "no orchestrator available"));
}

// The price caps (X-Max-Price-Per-Unit, X-Max-Total-Price) reach the gateway's LLM method as
// the gRPC API's metadata; one that cannot be metadata still goes, as a value the check refuses;
// a refusal for want of a node under the cap is 400 price_over_cap, not 404 model_not_found.
TEST_F(OpenAiApiTest, PriceCapsTravelAsMetadataAndAnOverCapRefusalIs400) {
  ASSERT_EQ(Post("/v1/chat/completions", kChat,
                 {{"x-max-price-per-unit", "0.25"}, {"x-max-total-price", "3.5"}})
                .status,
            200);
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    EXPECT_EQ(service_.last_metadata["x-max-price-per-unit"], "0.25");
    EXPECT_EQ(service_.last_metadata["x-max-total-price"], "3.5");
  }
  ASSERT_EQ(Post("/v1/completions", R"({"model":"llm-a","prompt":"Once"})",
                 {{"x-max-price-per-unit", "0.5\xff"}})
                .status,
            200);  // the fake takes any metadata; the gateway's check is its business
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    EXPECT_EQ(service_.last_metadata["x-max-price-per-unit"], "<not printable ASCII>");
    EXPECT_EQ(service_.last_metadata.count("x-max-total-price"), 0u);
  }
  for (const bool stream : {false, true}) {
    service_.llm_status = grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        "no orchestrator offers model 'llm-a' for pipeline llm at or under the price cap of 0.25 "
        "per unit (cheapest: 1)");
    http::Response r = Post("/v1/chat/completions", ChatWith("stream", stream ? "true" : "false"),
                            {{"x-max-price-per-unit", "0.25"}});
    EXPECT_TRUE(IsError(r, 400, "at or under the price cap of 0.25")) << "stream " << stream;
    EXPECT_EQ(Json::parse(r.body, nullptr, false)["error"]["code"], "price_over_cap") << r.body;
  }
}

// Hostile and malformed bodies: each refused with 400 (405, 415) naming the problem, before any
// call to the gateway's LLM method.
TEST_F(OpenAiApiTest, HostileBodiesAreRefusedBeforeAnyWork) {
  service_.llm_status = grpc::Status(grpc::StatusCode::INTERNAL, "must not be called");
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", absl::StrCat(R"({"messages":)", deep, "}")), 400,
                      "nested deeper than 64 levels"));
  EXPECT_TRUE(IsError(Post("/v1/completions", absl::StrCat(R"({"prompt":)", deep, "}")), 400,
                      "nested deeper than 64 levels"));
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", "{nope"), 400, "could not parse the JSON"));
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", "[1]"), 400, "must be an object"));
  http::Request form;
  form.method = "POST";
  form.path = "/v1/chat/completions";
  form.headers["content-type"] = "text/plain";
  form.body = kChat;
  EXPECT_TRUE(IsError(Call(form), 415, "application/json"));
  form.method = "GET";
  EXPECT_TRUE(IsError(Call(form), 405, "POST"));

  const std::string chat = "/v1/chat/completions";
  EXPECT_TRUE(IsError(Post(chat, ChatWith("n", "2")), 400, "n = 1", "n"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("n", "0")), 400, "at least 1", "n"));
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("stop", R"(["a","b","c","d","e"])")), 400, "at most 4", "stop"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("stop", Json(std::string(257, 's')).dump())), 400,
                      "1 to 256 bytes", "stop"));
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("stop", R"(["ok",""])")), 400, "1 to 256 bytes", "stop[1]"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("stop", R"(["ok",5])")), 400, "string", "stop[1]"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", "[]")), 400, "at least one", "messages"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", R"("hi")")), 400, "array", "messages"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", R"([{"role":"user"}])")), 400,
                      "messages[0].content", "messages[0].content"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", R"([{"role":"user","content":null}])")), 400,
                      "Missing required parameter: 'messages[0].content'", "messages[0].content"));
  EXPECT_TRUE(IsError(
      Post(chat,
           ChatWith(
               "messages",
               R"([{"role":"user","content":"x"},{"role":"user","content":"y","tool_calls":[]}])")),
      400, "tool and function calling", "messages[1].tool_calls"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", R"([{"role":"user","content":"x","x":1}])")),
                      400, "Unrecognized field 'x'", "messages[0].x"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", R"([{"content":"x"}])")), 400,
                      "messages[0].role", "messages[0].role"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", R"([{"role":"king","content":"x"}])")), 400,
                      "must be one of", "messages[0].role"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", R"([{"role":"user","content":5}])")), 400,
                      "Invalid type", "messages[0].content"));
  EXPECT_TRUE(IsError(
      Post(chat, ChatWith("messages",
                          R"([{"role":"user","content":[{"type":"image_url","image_url":{}}]}])")),
      400, "only text content parts", "messages[0].content[0].type"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("messages", R"([{"role":"tool","content":"x"}])")), 400,
                      "tool and function calling", "messages[0].role"));
  Json many = Json::array();
  for (int i = 0; i < 2049; ++i) many.push_back({{"role", "user"}, {"content", "x"}});
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("messages", many.dump())), 400, "at most 2048", "messages"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("model", "5")), 400, "Invalid type", "model"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("model", Json(std::string(300, 'm')).dump())), 400,
                      "over 256 bytes", "model"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("model", R"("")")), 400, "must name a model", "model"));
  EXPECT_TRUE(IsError(Post(chat, R"({"messages":[{"role":"user","content":"x"}]})"), 400, "'model'",
                      "model"));
  EXPECT_TRUE(IsError(Post(chat, R"({"model":"m"})"), 400, "'messages'", "messages"));
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("temperature", R"("hot")")), 400, "number", "temperature"));
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("temperature", "3")), 400, "between 0 and 2", "temperature"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("top_p", "1.5")), 400, "between 0 and 1", "top_p"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("max_tokens", "0")), 400, "at least 1", "max_tokens"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("max_tokens", "1.5")), 400, "integer", "max_tokens"));
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("max_tokens", "99999999999")), 400, "at most", "max_tokens"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("seed", R"("7")")), 400, "integer", "seed"));
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("seed", "18446744073709551615")), 400, "at most", "seed"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("stream", R"("yes")")), 400, "boolean", "stream"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("stream_options", R"({"include_usage":true})")), 400,
                      "only allowed when 'stream' is enabled", "stream_options"));
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("logprobs", "true")), 400, "log probabilities", "logprobs"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("tools", R"([{"type":"function"}])")), 400,
                      "tool and function calling", "tools"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("tool_choice", R"("required")")), 400,
                      "tool and function calling", "tool_choice"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("response_format", R"({"type":"json_object"})")), 400,
                      "JSON mode", "response_format"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("presence_penalty", "0.5")), 400, "no penalty",
                      "presence_penalty"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("logit_bias", R"({"50256":-100})")), 400, "token biases",
                      "logit_bias"));
  EXPECT_TRUE(IsError(Post(chat, ChatWith("frobnicate", "1")), 400,
                      "Unrecognized request argument supplied: frobnicate", "frobnicate"));
  EXPECT_TRUE(
      IsError(Post(chat, ChatWith("max_completion_tokens", "9").insert(1, R"("max_tokens":8,)")),
              400, "differ"));
  EXPECT_EQ(service_.llm_active, 0);
}

// A client's X-Request-Id becomes the completion's id only when it is a short plain token; any
// other is replaced by a random one (it never reaches the id or the gRPC metadata).
TEST_F(OpenAiApiTest, OddRequestIdsAreReplaced) {
  http::Response r = Post("/v1/chat/completions", kChat, {{"x-request-id", "bad id\"<>"}});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string id = Json::parse(r.body)["id"];
  EXPECT_EQ(id.size(), std::string("chatcmpl-").size() + 32) << id;
  EXPECT_EQ(id.find_first_not_of("chatmpl-0123456789abcdef"), std::string::npos) << id;
}

}  // namespace
}  // namespace switchyard::gateway
