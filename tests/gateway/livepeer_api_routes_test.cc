// The Livepeer AI HTTP API's handlers (gateway::LivepeerApiRoutes) called directly, in process,
// against a fake gateway gRPC service: what they do with hostile bodies, what they collect from an
// orchestrator that keeps streaming, and whom their stored results belong to (issue 18).
#include "gateway/api/livepeer_api.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "gateway/api/live_video.h"
#include "gateway/billing/api_keys.h"
#include "gateway/billing/auth_interceptor.h"
#include "support/media_fixtures.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {
namespace {

using Json = nlohmann::json;

// Streams `messages` LLM messages of `bytes` characters each, then OK; stops when the client
// cancels.
class LlmFlood final : public grpc::ServerWriteReactor<v1::LLMResponse> {
 public:
  LlmFlood(int messages, size_t bytes, std::atomic<int>* sent, std::atomic<int>* active)
      : left_(messages), sent_(sent), active_(active) {
    active_->fetch_add(1);
    msg_.set_id("flood");
    msg_.set_model("flood-llm");
    msg_.set_created(1);
    msg_.add_choices()->mutable_delta()->set_content(std::string(bytes, 'a'));
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    sent_->fetch_add(1);
    Next();
  }
  void OnDone() override {
    active_->fetch_sub(1);
    delete this;
  }

 private:
  void Next() {
    if (left_-- > 0) {
      StartWrite(&msg_);
    } else {
      Finish(grpc::Status::OK);
    }
  }
  int left_;
  std::atomic<int>* sent_;
  std::atomic<int>* active_;
  v1::LLMResponse msg_;
};

// The gateway's gRPC API as the routes see it: a video for every image-to-video, an LLM that
// streams as much as the test says, and one live-video-to-video model on offer.
class FakeGateway final : public v1::Gateway::CallbackService {
 public:
  grpc::ServerUnaryReactor* ImageToVideo(grpc::CallbackServerContext* context,
                                         const v1::ImageToVideoRequest* request,
                                         v1::VideoResponse* response) override {
    auto* m = response->add_images();
    m->set_data(absl::StrCat("mp4 of ", request->model_id()));
    m->set_content_type("video/mp4");
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerWriteReactor<v1::LLMResponse>* LLM(grpc::CallbackServerContext*,
                                                 const v1::LLMRequest*) override {
    return new LlmFlood(llm_messages, llm_bytes, &llm_sent, &llm_active);
  }
  grpc::ServerUnaryReactor* ListCapabilities(grpc::CallbackServerContext* context,
                                             const v1::ListCapabilitiesRequest*,
                                             v1::ListCapabilitiesResponse* response) override {
    auto* cap = response->add_capabilities();
    cap->set_pipeline("live-video-to-video");
    cap->set_model_id("live-model");
    cap->set_orchestrators(1);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  // Quotes every request at 7 units, keeping what it was asked and the caps it was sent.
  grpc::ServerUnaryReactor* Quote(grpc::CallbackServerContext* context,
                                  const v1::QuoteRequest* request,
                                  v1::QuoteResponse* response) override {
    {
      std::lock_guard<std::mutex> lock(mu);
      quoted = *request;
      quoted_total_cap.clear();
      auto cap = context->client_metadata().find("x-max-total-price");
      if (cap != context->client_metadata().end()) {
        quoted_total_cap.assign(cap->second.data(), cap->second.size());
      }
      ++quotes;
    }
    response->set_pipeline("live-video-to-video");
    response->set_units(7);
    response->set_units_basis("estimate");
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  std::mutex mu;
  v1::QuoteRequest quoted;       // the last Quote's request
  std::string quoted_total_cap;  // and its x-max-total-price
  int quotes = 0;
  std::atomic<int> llm_messages{3};
  std::atomic<size_t> llm_bytes{4};
  std::atomic<int> llm_sent{0};
  std::atomic<int> llm_active{0};  // LLM streams not done yet
};

class LivepeerApiRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    // Calls the routes started after replying (a streamed LLM) end before the server goes: the
    // in-process channel must not outlive it mid-call.
    for (int i = 0; i < 500 && service_.llm_active > 0; ++i) {  // bounded: 5 s
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(service_.llm_active, 0);
    if (live_) live_->Stop();
    routes_.clear();
    server_->Shutdown();
  }

  // Builds the routes, with API keys "key-a" (id "a") and "key-b" (id "b") when `with_keys`.
  // With `with_live`, live-video sessions whose URLs may point at 127.0.0.1 (the documented
  // live_video.allowed_hosts; the default policy refuses loopback).
  void MakeRoutes(bool with_keys, bool with_live = false) {
    if (with_keys) {
      const auto file = tmp_.path() / "keys.json";
      std::ofstream(file) << Json{{"keys",
                                   {{{"id", "a"}, {"sha256", Sha256Hex("key-a")}},
                                    {{"id", "b"}, {"sha256", Sha256Hex("key-b")}}}}}
                                 .dump();
      auto auth = ApiKeyAuth::Create(file);
      ASSERT_TRUE(auth.ok()) << auth.status();
      auth_ = *std::move(auth);
    }
    auto channel = server_->InProcessChannel(grpc::ChannelArguments());
    if (with_live) {
      LiveVideoOptions options;
      auto egress = EgressPolicy::Create({"127.0.0.1/32"});
      ASSERT_TRUE(egress.ok()) << egress.status();
      options.egress = *std::move(egress);
      live_ = std::make_shared<LiveVideoSessions>(v1::Gateway::NewStub(channel), options);
    }
    routes_ = LivepeerApiRoutes(channel, live_, auth_.get());
  }

  // Calls the route for `req.path` (exact, else "/stream/*") and waits (bounded) for its reply.
  http::Response Call(http::Request req) {
    if (req.path.empty()) req.path = req.target;
    auto it = routes_.find(req.path);
    if (it == routes_.end() && req.path.rfind("/stream/", 0) == 0) it = routes_.find("/stream/*");
    EXPECT_NE(it, routes_.end()) << req.path;
    if (it == routes_.end()) return {};
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

  http::Response PostJson(const std::string& path, std::string body, const std::string& key = "") {
    http::Request req;
    req.method = "POST";
    req.path = req.target = path;
    req.headers["content-type"] = "application/json";
    if (!key.empty()) req.headers["authorization"] = "Bearer " + key;
    req.body = std::move(body);
    return Call(std::move(req));
  }

  FakeGateway service_;
  std::unique_ptr<grpc::Server> server_;
  testing::TempDir tmp_;
  std::unique_ptr<ApiKeyAuth> auth_;
  std::shared_ptr<LiveVideoSessions> live_;  // null unless MakeRoutes(..., true)
  std::map<std::string, http::Handler> routes_;
};

std::string Deep(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

// {"detail": {"msg": M}} with `status`, M containing `text`.
::testing::AssertionResult IsError(const http::Response& r, int status, const std::string& text) {
  Json j = Json::parse(r.body, nullptr, false);
  if (r.status != status || j.is_discarded() || !j["detail"]["msg"].is_string() ||
      j["detail"]["msg"].get<std::string>().find(text) == std::string::npos) {
    return ::testing::AssertionFailure() << "want " << status << " with '" << text << "', got "
                                         << r.status << " " << r.body.substr(0, 300);
  }
  return ::testing::AssertionSuccess();
}

// A body nested a million levels (2 MB) parsed, and then crashed the process in dump() (the
// live-video params) or any copy of the value; now every JSON body is refused past 64 levels.
TEST_F(LivepeerApiRoutesTest, DeepJsonBodiesAre400NamingTheLimit) {
  MakeRoutes(false);
  const std::string deep = Deep(1000000);
  EXPECT_TRUE(IsError(
      PostJson("/live-video-to-video",
               absl::StrCat(R"({"subscribe_url":"http://127.0.0.1:1/in",)",
                            R"("publish_url":"http://127.0.0.1:1/out","model_id":"live-model",)",
                            R"("params":{"a":)", deep, "}}")),
      400, "nested deeper than 64 levels"));
  EXPECT_TRUE(IsError(PostJson("/text-to-image",
                               absl::StrCat(R"({"model_id":"m","prompt":"p","loras":)", deep, "}")),
                      400, "nested deeper than 64 levels"));
  EXPECT_TRUE(IsError(PostJson("/llm", absl::StrCat(R"({"messages":)", deep, "}")), 400,
                      "nested deeper than 64 levels"));
  // Just past the limit is refused the same way; at the limit it is an ordinary body.
  EXPECT_TRUE(IsError(
      PostJson("/text-to-speech", absl::StrCat(R"({"model_id":"m","text":)", Deep(64), "}")), 400,
      "request body: JSON nested deeper than 64 levels"));
  const http::Response at_limit =
      PostJson("/text-to-speech", absl::StrCat(R"({"model_id":"m","text":)", Deep(63), "}"));
  EXPECT_EQ(at_limit.status, 422) << at_limit.body;  // text: not a string
  // Malformed JSON stays the reference API's 422.
  EXPECT_EQ(PostJson("/text-to-image", "{nope").status, 422);
}

// POST /quote/<pipeline> reads its body with the pipeline's own reader: the same limits and
// field errors, before the gateway is asked; other /quote paths are 404 listing what is quotable.
TEST_F(LivepeerApiRoutesTest, QuotePathsReadTheirBodyLikeThePipelinesPath) {
  MakeRoutes(false);
  const std::string deep = Deep(1000000);
  EXPECT_TRUE(IsError(PostJson("/quote/text-to-image",
                               absl::StrCat(R"({"model_id":"m","prompt":"p","loras":)", deep, "}")),
                      400, "nested deeper than 64 levels"));
  EXPECT_TRUE(IsError(PostJson("/quote/llm", absl::StrCat(R"({"messages":)", deep, "}")), 400,
                      "nested deeper than 64 levels"));
  const http::Response missing = PostJson("/quote/text-to-image", R"({"prompt":"p"})");
  EXPECT_EQ(missing.status, 422) << missing.body;
  EXPECT_NE(missing.body.find("model_id"), std::string::npos) << missing.body;
  for (const std::string path : {"/quote", "/quote/transcode", "/quote/nope"}) {
    auto it = routes_.find(path);
    if (it == routes_.end()) it = routes_.find("/quote/*");
    ASSERT_NE(it, routes_.end()) << path;
    http::Request req;
    req.method = "POST";
    req.path = req.target = path;
    std::optional<http::Response> got;
    it->second(req, [&got](http::Response r) { got = std::move(r); });  // answers at once
    ASSERT_TRUE(got.has_value()) << path;
    EXPECT_TRUE(IsError(*got, 404, "POST /quote/<pipeline>")) << path;
    EXPECT_NE(got->body.find("text-to-image"), std::string::npos) << got->body;
  }
  for (const char* pipeline :
       {"text-to-image", "image-to-image", "upscale", "image-to-video", "segment-anything-2",
        "audio-to-text", "image-to-text", "text-to-speech", "llm", "live-video-to-video"}) {
    EXPECT_EQ(routes_.count(absl::StrCat("/quote/", pipeline)), 1u) << pipeline;
  }
}

// A multipart body with text `fields` and, unless nullopt, the file `video`.
http::Request LiveQuoteForm(const std::map<std::string, std::string>& fields,
                            const std::optional<std::string>& video) {
  http::Request req;
  req.method = "POST";
  req.path = req.target = "/quote/live-video-to-video";
  req.headers["content-type"] = "multipart/form-data; boundary=LQ";
  for (const auto& [name, value] : fields) {
    absl::StrAppend(&req.body, "--LQ\r\nContent-Disposition: form-data; name=\"", name,
                    "\"\r\n\r\n", value, "\r\n");
  }
  if (video) {
    absl::StrAppend(&req.body,
                    "--LQ\r\nContent-Disposition: form-data; name=\"video\"; filename=\"0.ts\"\r\n"
                    "Content-Type: video/mp2t\r\n\r\n",
                    *video, "\r\n");
  }
  absl::StrAppend(&req.body, "--LQ--\r\n");
  return req;
}

// POST /quote/live-video-to-video: the sample segment (multipart `video`) and `model_id` become
// the QuoteRequest's live_video_segment, sent with the client's caps; a missing, empty or
// oversized segment, a missing model and a body of another type are refused before the gateway
// is asked.
TEST_F(LivepeerApiRoutesTest, LiveVideoQuoteSendsTheSegmentAndRefusesBadBodiesFirst) {
  MakeRoutes(false);
  http::Request good = LiveQuoteForm({{"model_id", "live-model"}}, "TS bytes");
  good.headers["x-max-total-price"] = "12.5";
  http::Response r = Call(good);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["units"], "7");
  {
    std::lock_guard<std::mutex> lock(service_.mu);
    ASSERT_TRUE(service_.quoted.has_live_video_segment()) << service_.quoted.DebugString();
    EXPECT_EQ(service_.quoted.live_video_segment().model_id(), "live-model");
    EXPECT_EQ(service_.quoted.live_video_segment().segment(), "TS bytes");
    EXPECT_EQ(service_.quoted_total_cap, "12.5");
    EXPECT_EQ(service_.quotes, 1);
  }

  r = Call(LiveQuoteForm({}, std::nullopt));
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_NE(r.body.find(R"(["body","video"])"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"(["body","model_id"])"), std::string::npos) << r.body;
  r = Call(LiveQuoteForm({{"model_id", "live-model"}}, ""));  // an empty file is no file
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_NE(r.body.find(R"(["body","video"])"), std::string::npos) << r.body;
  r = Call(LiveQuoteForm({{"model_id", ""}}, "TS bytes"));
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_NE(r.body.find("model_id must name a live-video-to-video model"), std::string::npos)
      << r.body;
  // One byte over what a session takes as an input segment (64 MiB).
  const int64_t limit = LiveVideoOptions{}.max_segment_bytes;
  EXPECT_TRUE(IsError(Call(LiveQuoteForm({{"model_id", "live-model"}},
                                         std::string(static_cast<size_t>(limit) + 1, 'G'))),
                      413, absl::StrCat("video: ", limit + 1, " bytes, more than the ", limit)));
  EXPECT_TRUE(IsError(PostJson("/quote/live-video-to-video", R"({"model_id":"live-model"})"), 415,
                      "multipart/form-data"));
  http::Request cut = good;
  cut.body.resize(cut.body.size() - 8);  // no closing boundary
  EXPECT_EQ(Call(cut).status, 400);
  std::lock_guard<std::mutex> lock(service_.mu);
  EXPECT_EQ(service_.quotes, 1);  // none of these reached the gateway
}

// JSON inside a multipart field (segment-anything-2's point_coords etc.) has the same limit.
TEST_F(LivepeerApiRoutesTest, DeepJsonInAFormFieldIs400NamingTheField) {
  MakeRoutes(false);
  http::Request req;
  req.method = "POST";
  req.path = req.target = "/segment-anything-2";
  req.headers["content-type"] = "multipart/form-data; boundary=BB";
  req.body = absl::StrCat(
      "--BB\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\nsam\r\n"
      "--BB\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nPNG\r\n"
      "--BB\r\nContent-Disposition: form-data; name=\"point_coords\"\r\n\r\n",
      Deep(200000), "\r\n--BB--\r\n");
  EXPECT_TRUE(IsError(Call(req), 400, "point_coords: JSON nested deeper than 64 levels"));
}

// A non-streamed /llm joined every message an orchestrator relayed, without limit: one that kept
// streaming filled the gateway's memory. Now the reply is cut at 8 MiB of text: 502 naming it,
// and the stream is cancelled.
TEST_F(LivepeerApiRoutesTest, NonStreamedLlmReplyOverTheLimitIs502) {
  MakeRoutes(false);
  const std::string body = R"({"messages":[{"role":"user","content":"hi"}]})";
  http::Response small = PostJson("/llm", body);
  ASSERT_EQ(small.status, 200) << small.body;
  EXPECT_EQ(Json::parse(small.body)["choices"][0]["message"]["content"], "aaaaaaaaaaaa");

  service_.llm_messages = 64;
  service_.llm_bytes = size_t{1} << 20;  // 64 MiB in all
  service_.llm_sent = 0;
  http::Response flood = PostJson("/llm", body);
  EXPECT_TRUE(IsError(flood, 502, "over the gateway's limit for a non-streamed reply (8388608"))
      << "messages sent: " << service_.llm_sent;
  // Cancelled once over the limit: the fake did not get to send everything (flow control lets
  // a few MiB run ahead at most).
  EXPECT_LT(service_.llm_sent.load(), 64);

  // Streamed, the same flood is passed on as it comes (nothing collected).
  service_.llm_messages = 12;
  http::Response streamed =
      PostJson("/llm", R"({"stream":true,"messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(streamed.status, 200);
  EXPECT_EQ(streamed.content_type, "text/event-stream");
  // Read to the end (bounded), as a client would: the body ends with [DONE].
  ASSERT_NE(streamed.stream, nullptr);
  std::string events;
  bool closed = false;
  for (int i = 0; i < 1000 && !closed; ++i) {  // bounded: 10 s
    {
      MutexLock lock(&streamed.stream->mu);
      while (!streamed.stream->pending.empty()) {
        events += streamed.stream->pending.front();
        streamed.stream->pending.pop_front();
      }
      // What the connection does when it has sent the pieces: the writer may queue more
      // (StreamWriter's backpressure).
      streamed.stream->pending_bytes = 0;
      closed = streamed.stream->closed;
    }
    streamed.stream->drained.SignalAll();
    if (!closed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(closed);
  EXPECT_NE(events.find("data: [DONE]"), std::string::npos);
}

std::string Hex32() { return "[0-9a-f]{32}"; }

// Async results and served videos belonged to nobody: anyone with an id (from mt19937_64, whose
// state a client can rebuild) fetched them. Now ids are 128-bit CSPRNG hex and, with API keys
// configured, a result or video is the key's that made it: another key, or none, gets 404.
TEST_F(LivepeerApiRoutesTest, ResultsAndVideosBelongToTheKeyThatMadeThem) {
  MakeRoutes(true);
  http::Request start;
  start.method = "POST";
  start.path = start.target = "/image-to-video";
  start.headers["content-type"] = "multipart/form-data; boundary=BB";
  start.headers["prefer"] = "respond-async";
  start.headers["authorization"] = "Bearer key-a";
  start.headers["host"] = "gw.test";
  start.body =
      "--BB\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\ni2v\r\n"
      "--BB\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nPNG\r\n"
      "--BB--\r\n";
  http::Response accepted = Call(start);
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  const std::string id = Json::parse(accepted.body)["request_id"];
  EXPECT_TRUE(std::regex_match(id, std::regex(Hex32()))) << id;

  const std::string ask = Json{{"request_id", id}}.dump();
  Json done;
  for (int i = 0; i < 200; ++i) {  // bounded: 200 x 10 ms
    http::Response r = PostJson("/image-to-video/result", ask, "key-a");
    ASSERT_EQ(r.status, 200) << r.body;
    done = Json::parse(r.body);
    if (done["status"] == "complete") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(done["status"], "complete") << done.dump();
  const std::string url = done["result"]["images"][0]["url"];
  std::smatch m;
  ASSERT_TRUE(std::regex_match(
      url, m, std::regex("http://gw\\.test(/stream/" + Hex32() + "/video-0\\.mp4)")))
      << url;
  const std::string path = m[1];

  // Another key, no key, and x-api-key of the right key.
  EXPECT_TRUE(IsError(PostJson("/image-to-video/result", ask, "key-b"), 404, id));
  EXPECT_TRUE(IsError(PostJson("/image-to-video/result", ask), 404, id));
  auto get = [&](const std::map<std::string, std::string>& headers) {
    http::Request req;
    req.method = "GET";
    req.path = req.target = path;
    req.headers = headers;
    return Call(req);
  };
  http::Response video = get({{"authorization", "Bearer key-a"}});
  EXPECT_EQ(video.status, 200);
  EXPECT_EQ(video.body, "mp4 of i2v");
  EXPECT_EQ(get({{"x-api-key", "key-a"}}).status, 200);
  EXPECT_TRUE(IsError(get({{"authorization", "Bearer key-b"}}), 404, "no media"));
  EXPECT_TRUE(IsError(get({}), 404, "no media"));
}

// The live-video request id (also the stream id when the client names none) was "live-" and 64
// bits of mt19937_64; the log line about the session had the client's ids raw, so a newline in
// one forged a log line. Now the id is 128 bits and every client string is cut and escaped.
TEST_F(LivepeerApiRoutesTest, LiveVideoIdIs128BitAndItsLogLineEscapesClientStrings) {
  MakeRoutes(false, /*with_live=*/true);
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  sink->set_pattern("%v");
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("routes-test", sink));
  const Json body = {{"subscribe_url", "http://127.0.0.1:1/in"},
                     {"publish_url", "http://127.0.0.1:1/out"},
                     {"model_id", "live-model"},
                     {"stream_id", "s1\n2026-12-03 00:00:00.000 error [gateway] forged\x1b[2J"},
                     {"manifest_id", std::string(10000, 'm')}};
  http::Response live = PostJson("/live-video-to-video", body.dump());
  // The session's thread logs through the default logger (a raw pointer): it is joined before
  // the capturing logger is swapped out and freed, or it may log into a freed logger.
  live_->Stop();
  spdlog::set_default_logger(previous);
  std::string line;
  for (const std::string& l : sink->last_formatted()) {
    if (l.find("/live-video-to-video model") != std::string::npos) line = l;
  }
  if (!line.empty() && line.back() == '\n') line.pop_back();  // the formatter's end of line
  std::smatch m;
  ASSERT_TRUE(std::regex_search(line, m, std::regex("^\\[(live-[0-9a-f]+)\\]"))) << line;
  EXPECT_TRUE(std::regex_match(m[1].str(), std::regex("live-" + Hex32()))) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  EXPECT_EQ(line.find('\x1b'), std::string::npos) << line;
  EXPECT_NE(line.find("s1\\n2026-12-03"), std::string::npos) << line;
  EXPECT_NE(line.find("\\u001b[2J"), std::string::npos) << line;
  EXPECT_NE(line.find("...(10000 bytes)"), std::string::npos) << line;
  EXPECT_LT(line.size(), 1000u) << line;
  // The reply names the same id (once the URLs are allowed; 200 here, before live_video.cc's
  // URL policy).
  if (live.status == 200) {
    EXPECT_EQ(Json::parse(live.body)["request_id"], m[1].str());
  }
}

}  // namespace
}  // namespace switchyard::gateway
