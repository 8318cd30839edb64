// The OpenAI-compatible HTTP API (docs/openai-api.md) on a local cluster's gateway HTTP port:
// /v1/chat/completions in one piece and streamed, /v1/completions, /v1/models, the errors real
// clients meet (unknown model, refused parameters, an oversized or too deep body) and the API key
// check, with the tiny deterministic TorchScript LLM (kTinyLlmReply, one byte per token).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// The tiny LLM's prompt for one user message "Hi" (its chat template), in tokens (bytes).
const int kPromptTokens = static_cast<int>(std::string("<|user|>\nHi\n<|assistant|>\n").size());
const int kReplyTokens = static_cast<int>(std::string(kTinyLlmReply).size());

Json Parse(const HttpResult& r) {
  Json j = Json::parse(r.body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.status << " " << r.body;
  return j;
}

// OpenAI's error shape with `status`, the message containing `text`.
::testing::AssertionResult IsError(const HttpResult& r, int status, const std::string& text,
                                   const Json& code = Json()) {
  Json j = Json::parse(r.body, nullptr, false);
  if (r.status != status || j.is_discarded() || !j["error"]["message"].is_string() ||
      !j["error"]["type"].is_string() || !j["error"].contains("param") ||
      !j["error"].contains("code") ||
      !absl::StrContains(j["error"]["message"].get<std::string>(), text) ||
      (!code.is_null() && j["error"]["code"] != code)) {
    return ::testing::AssertionFailure() << "want " << status << " with '" << text << "', got "
                                         << r.status << " " << r.body.substr(0, 400);
  }
  return ::testing::AssertionSuccess();
}

// The `data:` events of a server-sent event stream, parsed; "[DONE]" as a string.
std::vector<Json> Events(const std::string& body) {
  std::vector<Json> out;
  for (absl::string_view event : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    if (!absl::ConsumePrefix(&event, "data: ")) {
      ADD_FAILURE() << "not a data event: " << event;
      continue;
    }
    out.push_back(event == "[DONE]" ? Json("[DONE]") : Json::parse(event, nullptr, false));
  }
  return out;
}

// What the node asks per token (for the price caps).
constexpr double kLlmPrice = 0.002;

std::vector<Json> TinyLlm(const fs::path& dir) {
  SaveScriptModule(dir / "llm.pt", kTinyLlmSource, TinyLlmAttributes(0, kTinyLlmReply));
  return {{{"id", "tiny-llm"},
           {"pipeline", "llm"},
           {"path", (dir / "llm.pt").string()},
           {"warm", true},
           {"device", "cpu"},
           {"price_per_unit", kLlmPrice},
           {"options", {{"max_tokens", 512}}}}};
}

class OpenAiApiClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_dir_ = new TempDir();
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {};
    options.extra_models = TinyLlm(models_dir_->path());
    cluster_ = new LocalCluster();
    start_status_ = new absl::Status(cluster_->Start(options));
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete models_dir_;
    models_dir_ = nullptr;
    delete start_status_;
    start_status_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(start_status_->ok()) << *start_status_ << "\n" << cluster_->Logs();
    port_ = cluster_->gateway().http_port();
  }

  HttpResult Post(const std::string& path, const Json& body, bool http11 = false,
                  std::map<std::string, std::string> headers = {}) {
    HttpCall call;
    call.method = "POST";
    call.path = path;
    call.content_type = "application/json";
    call.body = body.dump();
    call.http11 = http11;
    call.headers = std::move(headers);
    return HttpRequest(port_, call);
  }

  static Json Chat(const std::string& model = "tiny-llm") {
    return {{"model", model},
            {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
            {"temperature", 0}};
  }

  static TempDir* models_dir_;
  static LocalCluster* cluster_;
  static absl::Status* start_status_;
  int port_ = 0;
};

TempDir* OpenAiApiClusterTest::models_dir_ = nullptr;
LocalCluster* OpenAiApiClusterTest::cluster_ = nullptr;
absl::Status* OpenAiApiClusterTest::start_status_ = nullptr;

TEST_F(OpenAiApiClusterTest, ChatCompletion) {
  HttpResult r = Post("/v1/chat/completions", Chat());
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  Json j = Parse(r);
  EXPECT_EQ(j["object"], "chat.completion");
  ASSERT_TRUE(j["id"].is_string());
  EXPECT_TRUE(absl::StartsWith(j["id"].get<std::string>(), "chatcmpl-")) << r.body;
  EXPECT_EQ(r.headers["x-request-id"], j["id"].get<std::string>().substr(9));
  EXPECT_GT(j["created"].get<int64_t>(), 1700000000);
  EXPECT_EQ(j["model"], "tiny-llm");
  ASSERT_EQ(j["choices"].size(), 1u) << r.body;
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], kTinyLlmReply);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"], Json({{"prompt_tokens", kPromptTokens},
                              {"completion_tokens", kReplyTokens},
                              {"total_tokens", kPromptTokens + kReplyTokens}}));

  // max_completion_tokens cuts it: finish_reason "length".
  Json short_body = Chat();
  short_body["max_completion_tokens"] = 5;
  HttpResult cut = Post("/v1/chat/completions", short_body);
  ASSERT_EQ(cut.status, 200) << cut.body;
  EXPECT_EQ(Parse(cut)["choices"][0]["message"]["content"], std::string(kTinyLlmReply, 5));
  EXPECT_EQ(Parse(cut)["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(Parse(cut)["usage"]["completion_tokens"], 5);
}

TEST_F(OpenAiApiClusterTest, ChatCompletionStreamWithUsage) {
  Json body = Chat();
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  HttpResult r = Post("/v1/chat/completions", body, /*http11=*/true);
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  std::vector<Json> events = Events(r.body);
  ASSERT_GE(events.size(), 3u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]");
  const Json& usage = events[events.size() - 2];
  EXPECT_EQ(usage["choices"], Json::array()) << usage;
  EXPECT_EQ(usage["usage"]["completion_tokens"], kReplyTokens);
  EXPECT_EQ(usage["usage"]["prompt_tokens"], kPromptTokens);
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const Json& c = events[i];
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["id"], events[0]["id"]);
    EXPECT_TRUE(c["usage"].is_null()) << c;
    ASSERT_EQ(c["choices"].size(), 1u) << c;
    EXPECT_EQ(c["choices"][0]["delta"].contains("role"), i == 0) << c;
    text += c["choices"][0]["delta"].value("content", "");
    if (c["choices"][0]["finish_reason"].is_string()) finish = c["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, kTinyLlmReply);
  EXPECT_EQ(finish, "stop");
}

TEST_F(OpenAiApiClusterTest, StopStringsEndTheReply) {
  Json body = Chat();
  body["stop"] = {"tiny", "zzz"};
  HttpResult r = Post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Parse(r)["choices"][0]["message"]["content"], "Hello from the ") << r.body;
  EXPECT_EQ(Parse(r)["choices"][0]["finish_reason"], "stop");
}

// A raw prompt is not templated: the tiny model counts "Hi" as the start of its reply (it
// replies after the prompt's last newline) and continues from there.
TEST_F(OpenAiApiClusterTest, TextCompletion) {
  const std::string continued = std::string(kTinyLlmReply).substr(2);
  // OpenAI's default for /v1/completions is 16 tokens.
  HttpResult r = Post("/v1/completions",
                      {{"model", "tiny-llm"}, {"prompt", "Hi"}, {"seed", 3}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  Json j = Parse(r);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_TRUE(absl::StartsWith(j["id"].get<std::string>(), "cmpl-")) << r.body;
  EXPECT_EQ(j["choices"][0]["text"], continued.substr(0, 16));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 16);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 2);  // "Hi", no chat template

  HttpResult s = Post("/v1/completions",
                      {{"model", "tiny-llm"},
                       {"prompt", "Hi"},
                       {"max_tokens", 100},
                       {"temperature", 0},
                       {"stream", true}},
                      true);
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<Json> events = Events(s.body);
  ASSERT_GE(events.size(), 2u) << s.body;
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i]["object"], "text_completion");
    text += events[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, continued);
}

TEST_F(OpenAiApiClusterTest, ModelsListsTheLlm) {
  HttpResult r = HttpRequest(port_, "GET", "/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Parse(r), Json({{"object", "list"},
                            {"data",
                             {{{"id", "tiny-llm"},
                               {"object", "model"},
                               {"created", 0},
                               {"owned_by", "switchyard"}}}}}));
  EXPECT_EQ(HttpRequest(port_, "GET", "/v1/models/tiny-llm").status, 200);
  EXPECT_TRUE(
      IsError(HttpRequest(port_, "GET", "/v1/models/nope"), 404, "nope", "model_not_found"));
}

TEST_F(OpenAiApiClusterTest, ErrorsInOpenAisShape) {
  // Unknown model, streaming or not: 404 model_not_found before any event.
  for (bool stream : {false, true}) {
    Json body = Chat("no-such-llm");
    body["stream"] = stream;
    EXPECT_TRUE(IsError(Post("/v1/chat/completions", body), 404, "no-such-llm", "model_not_found"));
  }
  Json n2 = Chat();
  n2["n"] = 2;
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", n2), 400, "n = 1"));
  Json stops = Chat();
  stops["stop"] = {"a", "b", "c", "d", "e"};
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", stops), 400, "at most 4"));
  Json empty = Chat();
  empty["messages"] = Json::array();
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", empty), 400, "at least one message"));
  // The orchestrator's own validation (a message's role the template does not know is caught at
  // the gateway; an empty content only there) comes back as 400 too.
  Json blank = Chat();
  blank["messages"][0]["content"] = "";
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", blank), 400, "content"));
  // Deep JSON: 400 naming the limit.
  HttpResult deep = HttpRequest(
      port_, "POST", "/v1/chat/completions", "application/json",
      absl::StrCat(R"({"messages":)", std::string(100000, '['), std::string(100000, ']'), "}"));
  EXPECT_TRUE(IsError(deep, 400, "nested deeper than 64 levels"));
  // A body over the HTTP port's limit is refused from its header: 413, the same shape.
  HttpCall huge;
  huge.method = "POST";
  huge.path = "/v1/chat/completions";
  huge.content_type = "application/json";
  huge.content_length = size_t{1} << 30;
  EXPECT_TRUE(IsError(HttpRequest(port_, huge), 413, "request body over"));
  EXPECT_TRUE(IsError(HttpRequest(port_, "GET", "/v1/embeddings"), 404, "/v1/chat/completions"));
  // The gateway still serves.
  EXPECT_EQ(Post("/v1/chat/completions", Chat()).status, 200);
}

// The price caps of the gRPC and Livepeer APIs (docs/metering.md) as HTTP headers: a cap under
// the node's price is 400 price_over_cap naming the cap (streaming too, before any event), a
// malformed one 400, and a cap at the price is served.
TEST_F(OpenAiApiClusterTest, PriceCapHeadersAreChecked) {
  for (bool stream : {false, true}) {
    Json body = Chat();
    body["stream"] = stream;
    HttpResult under = Post("/v1/chat/completions", body, false,
                            {{"X-Max-Price-Per-Unit", absl::StrCat(kLlmPrice / 2)}});
    EXPECT_TRUE(IsError(under, 400, absl::StrCat("price cap of ", kLlmPrice / 2), "price_over_cap"))
        << "stream " << stream;
  }
  EXPECT_TRUE(IsError(Post("/v1/completions", {{"model", "tiny-llm"}, {"prompt", "Hi"}}, false,
                           {{"X-Max-Price-Per-Unit", "lots"}}),
                      400, "x-max-price-per-unit"));
  // A whole-job cap far under max_tokens x the price.
  EXPECT_TRUE(IsError(Post("/v1/chat/completions", Chat(), false,
                           {{"X-Max-Total-Price", absl::StrCat(kLlmPrice / 1000)}}),
                      400, "x-max-total-price", "price_over_cap"));
  HttpResult at = Post("/v1/chat/completions", Chat(), false,
                       {{"X-Max-Price-Per-Unit", absl::StrCat(kLlmPrice)}});
  ASSERT_EQ(at.status, 200) << at.body;
  EXPECT_EQ(Parse(at)["choices"][0]["message"]["content"], kTinyLlmReply);
}

// With API keys configured: 401 in OpenAI's shape without a key or with a wrong one, before the
// body is read; the right key is served.
TEST(OpenAiApiAuthTest, KeysAreCheckedAsForTheLivepeerApi) {
  TempDir tmp;
  std::string key;
  Json entry = NewApiKeyEntry("app", &key);
  ASSERT_TRUE(entry.is_object());
  WriteFile(tmp.path() / "keys.json", Json{{"keys", {entry}}}.dump());
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {};
  options.extra_models = TinyLlm(tmp.path());
  options.gateway_config = {{"api_keys_file", (tmp.path() / "keys.json").string()}};
  options.api_key = key;
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  const int port = cluster.gateway().http_port();
  const std::string body =
      R"({"model":"tiny-llm","temperature":0,"messages":[{"role":"user","content":"Hi"}]})";
  auto call = [&](const std::string& auth, const std::string& path, const std::string& method) {
    HttpCall c;
    c.method = method;
    c.path = path;
    if (method == "POST") {
      c.content_type = "application/json";
      c.body = body;
    }
    if (!auth.empty()) c.headers["Authorization"] = auth;
    return HttpRequest(port, c);
  };
  EXPECT_TRUE(IsError(call("", "/v1/chat/completions", "POST"), 401, "API key required",
                      "invalid_api_key"));
  EXPECT_TRUE(
      IsError(call("Bearer sy_wrong", "/v1/chat/completions", "POST"), 401, "", "invalid_api_key"));
  EXPECT_TRUE(IsError(call("", "/v1/models", "GET"), 401, "", "invalid_api_key"));
  HttpResult ok = call("Bearer " + key, "/v1/chat/completions", "POST");
  ASSERT_EQ(ok.status, 200) << ok.body << cluster.Logs();
  EXPECT_EQ(Parse(ok)["choices"][0]["message"]["content"], kTinyLlmReply);
  EXPECT_EQ(call("Bearer " + key, "/v1/models", "GET").status, 200);
}

}  // namespace
}  // namespace switchyard::testing
