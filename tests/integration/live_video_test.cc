// POST /live-video-to-video end to end: a real gateway and orchestrators on loopback, an in-test
// trickle server (tests/support/trickle_server.h) serving MPEG-TS segments generated with ffmpeg
// and receiving what the gateway publishes, tiny TorchScript models built here. Checks the
// published segments decode with the input's frame count and size, the model's transform was
// applied to the pixels, timestamps continue across segments, audio is carried, events and
// control messages flow, failover when the orchestrator running the stream dies, and the
// request's validation and capacity errors. Also unit tests of the URL parser and HTTP client.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gateway/api/live_video.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"
#include "support/trickle_server.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Inverts every pixel.
constexpr const char* kInvertModel = R"(
def forward(self, frame, params: str):
    return 255.0 - frame
)";

// Every pixel becomes the length of the params JSON text (to see parameter updates).
constexpr const char* kParamsModel = R"(
def forward(self, frame, params: str):
    return frame * 0.0 + float(len(params))
)";

Json LiveModel(const fs::path& dir, const std::string& id, const char* source) {
  const fs::path path = dir / (id + ".pt");
  SaveScriptModule(path, source);
  return {{"id", id},
          {"pipeline", "live-video-to-video"},
          {"path", path.string()},
          {"warm", true},
          {"device", "cpu"},
          {"options", {{"max_width", 640}, {"max_height", 480}, {"preset", "ultrafast"}}}};
}

// `count` MPEG-TS segments of 1 s each (10 fps 160x120 testsrc2, a keyframe per segment, AAC
// sine audio), cut by ffmpeg's segment muxer so their timestamps continue.
std::vector<std::string> MakeSegments(const TempDir& dir, int count) {
  const fs::path pattern = dir.path() / "in%d.ts";
  const std::string cmd = absl::StrCat(
      "ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=160x120:rate=10 -f lavfi "
      "-i sine=frequency=440:sample_rate=48000 -t ",
      count,
      " -c:v libx264 -preset ultrafast -g 10 -keyint_min 10 -sc_threshold 0 -bf 0 -pix_fmt "
      "yuv420p -c:a aac -b:a 64k -f segment -segment_time 1 -segment_format mpegts ",
      pattern.string());
  std::string log;
  if (RunCommand(cmd, &log) != 0) {
    ADD_FAILURE() << log;
    return {};
  }
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(ReadFile(dir.path() / absl::StrCat("in", i, ".ts")));
  }
  return out;
}

// The first video frame of a TS segment as RGB24 bytes (via the ffmpeg CLI).
std::string FirstFrameRgb(const TempDir& dir, const std::string& ts) {
  static int counter = 0;
  const fs::path in = dir.path() / absl::StrCat("frame-", counter, ".ts");
  const fs::path out = dir.path() / absl::StrCat("frame-", counter++, ".rgb");
  WriteFile(in, ts);
  std::string log;
  if (RunCommand(absl::StrCat("ffmpeg -hide_banner -loglevel error -y -i ", in.string(),
                              " -frames:v 1 -f rawvideo -pix_fmt rgb24 ", out.string()),
                 &log) != 0) {
    ADD_FAILURE() << log;
    return "";
  }
  return ReadFile(out);
}

double MeanAbsDiff(const std::string& a, const std::string& b, bool invert_b) {
  if (a.size() != b.size() || a.empty()) return 1e9;
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const int x = static_cast<uint8_t>(a[i]);
    int y = static_cast<uint8_t>(b[i]);
    if (invert_b) y = 255 - y;
    sum += std::abs(x - y);
  }
  return sum / static_cast<double>(a.size());
}

double Mean(const std::string& a) {
  double sum = 0;
  for (char c : a) sum += static_cast<uint8_t>(c);
  return a.empty() ? -1 : sum / static_cast<double>(a.size());
}

std::vector<Json> Events(const TrickleServer& trickle, const std::string& channel) {
  std::vector<Json> out;
  for (const auto& [seq, body] : trickle.Segments(channel)) {
    out.push_back(Json::parse(body, nullptr, false));
  }
  return out;
}

HttpResult Post(int port, const Json& body) {
  return HttpRequest(port, "POST", "/live-video-to-video", "application/json", body.dump());
}

// The 422 body names `field` (["body", field]).
bool NamesField(const HttpResult& r, const std::string& field) {
  if (r.status != 422) return false;
  Json j = Json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j["detail"].is_array()) return false;
  for (const auto& d : j["detail"]) {
    if (d["loc"] == Json::array({"body", field}) && d["msg"].is_string()) return true;
  }
  return false;
}

// The trickle server runs on 127.0.0.1, which the gateway refuses unless the operator opens it:
// the documented way (docs/configuration.md, `live_video.allowed_hosts`).
const Json kAllowLoopback = {{"live_video", {{"allowed_hosts", {"127.0.0.1/32"}}}}};

// The policy the unit tests' requests to the test server need.
const gateway::EgressPolicy& Loopback() {
  static const auto* policy =
      new gateway::EgressPolicy(*gateway::EgressPolicy::Create({"127.0.0.1/32"}));
  return *policy;
}

class LiveVideoTest : public ::testing::Test {
 protected:
  void StartCluster(int orchestrators, Json gateway_config = kAllowLoopback) {
    ClusterOptions options;
    options.orchestrators = orchestrators;
    options.models = {};
    options.gateway_config = std::move(gateway_config);
    options.extra_models = {LiveModel(models_.path(), "live-invert", kInvertModel),
                            LiveModel(models_.path(), "live-params", kParamsModel)};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    port_ = cluster_.gateway().http_port();
    auto trickle = TrickleServer::Start();
    ASSERT_TRUE(trickle.ok()) << trickle.status();
    trickle_ = *std::move(trickle);
  }

  TempDir models_;
  TempDir media_;
  LocalCluster cluster_;
  std::unique_ptr<TrickleServer> trickle_;
  int port_ = 0;
};

TEST_F(LiveVideoTest, RunsTheModelOverEverySegmentAndPublishesThem) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  const auto inputs = MakeSegments(media_, 3);
  ASSERT_EQ(inputs.size(), 3u);
  trickle_->Publish("in", inputs[0]);
  HttpResult r = Post(port_, {{"subscribe_url", trickle_->Url("in")},
                              {"publish_url", trickle_->Url("out")},
                              {"events_url", trickle_->Url("events")},
                              {"model_id", "live-invert"},
                              {"manifest_id", "manifest-1"},
                              {"stream_id", "stream-1"},
                              {"params", {{"prompt", "x"}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body, nullptr, false);
  EXPECT_EQ(j["subscribe_url"], trickle_->Url("in"));
  EXPECT_EQ(j["publish_url"], trickle_->Url("out"));
  EXPECT_EQ(j["events_url"], trickle_->Url("events"));
  EXPECT_EQ(j["control_url"], "");
  EXPECT_EQ(j["manifest_id"], "manifest-1");
  ASSERT_TRUE(j["request_id"].is_string());
  EXPECT_FALSE(j["request_id"].get<std::string>().empty());
  // The rest arrives while the session runs; then the input ends.
  ASSERT_TRUE(trickle_->WaitSegments("out", 1, seconds(60))) << cluster_.Logs();
  trickle_->Publish("in", inputs[1]);
  trickle_->Publish("in", inputs[2]);
  trickle_->Close("in");
  ASSERT_TRUE(trickle_->WaitClosed("out", seconds(60))) << cluster_.Logs();
  ASSERT_TRUE(trickle_->WaitClosed("events", seconds(10)));

  const auto outputs = trickle_->Segments("out");
  ASSERT_EQ(outputs.size(), 3u);
  double last_pts = -1;
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(absl::StrCat("segment ", i));
    ASSERT_EQ(outputs.count(i), 1u);
    const std::string& out = outputs.at(i);
    ProbeResult in_probe = ProbeVideo(media_, inputs[i], "ts");
    ProbeResult out_probe = ProbeVideo(media_, out, "ts");
    ASSERT_TRUE(in_probe.ok && out_probe.ok) << in_probe.error << out_probe.error;
    EXPECT_EQ(out_probe.codec, "h264");
    EXPECT_EQ(out_probe.width, 160);
    EXPECT_EQ(out_probe.height, 120);
    EXPECT_EQ(out_probe.frames, in_probe.frames);
    EXPECT_EQ(out_probe.frames, 10);
    EXPECT_EQ(ProbeStreamCount(media_, out, "ts", "audio"), 1);
    // The model inverted the pixels (up to the encoders' losses).
    const std::string in_rgb = FirstFrameRgb(media_, inputs[i]);
    const std::string out_rgb = FirstFrameRgb(media_, out);
    EXPECT_LT(MeanAbsDiff(out_rgb, in_rgb, /*invert_b=*/true), 8.0);
    EXPECT_GT(MeanAbsDiff(out_rgb, in_rgb, /*invert_b=*/false), 40.0);
    // Timestamps are the input's, so they continue from segment to segment.
    auto in_frames = ProbeFrames(media_, inputs[i], "ts");
    auto out_frames = ProbeFrames(media_, out, "ts");
    ASSERT_EQ(out_frames.size(), in_frames.size());
    ASSERT_FALSE(out_frames.empty());
    EXPECT_TRUE(out_frames[0].key_frame);
    for (size_t f = 0; f < out_frames.size(); ++f) {
      EXPECT_NEAR(out_frames[f].pts_time, in_frames[f].pts_time, 0.002) << "frame " << f;
      EXPECT_GT(out_frames[f].pts_time, last_pts) << "frame " << f;
      last_pts = out_frames[f].pts_time;
    }
  }

  // Events: started, one per segment, ended with the reason.
  auto events = Events(*trickle_, "events");
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0]["state"], "started");
  for (int i = 1; i <= 3; ++i) {
    EXPECT_EQ(events[i]["type"], "status");
    EXPECT_EQ(events[i]["state"], "running");
    EXPECT_EQ(events[i]["input_segment"], i - 1);
    EXPECT_EQ(events[i]["frames"], 10);
    EXPECT_EQ(events[i]["orchestrator"], "orch-1");
    EXPECT_EQ(events[i]["request_id"], j["request_id"]);
    EXPECT_EQ(events[i]["stream_id"], "stream-1");
  }
  EXPECT_EQ(events[4]["state"], "ended");
  EXPECT_EQ(events[4]["reason"], "the input stream ended");
  EXPECT_EQ(events[4]["segments"], 3);

  // Each segment is a job in the gateway's metrics.
  HttpResult metrics = HttpRequest(cluster_.gateway().admin_port(), "GET", "/metrics");
  EXPECT_NE(metrics.body.find("switchyard_gateway_jobs_total{code=\"OK\",model=\"live-invert\","
                              "pipeline=\"live-video-to-video\"} 3"),
            std::string::npos)
      << metrics.body.substr(0, 3000);
}

TEST_F(LiveVideoTest, ControlMessagesUpdateTheParameters) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  const auto inputs = MakeSegments(media_, 2);
  ASSERT_EQ(inputs.size(), 2u);
  trickle_->Publish("in", inputs[0]);
  HttpResult r = Post(port_, {{"subscribe_url", trickle_->Url("in")},
                              {"publish_url", trickle_->Url("out")},
                              {"control_url", trickle_->Url("control")},
                              {"events_url", trickle_->Url("events")},
                              {"model_id", "live-params"},
                              {"params", {{"a", 1}}}});  // {"a":1}: 7 characters
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(trickle_->WaitSegments("out", 1, seconds(60))) << cluster_.Logs();
  const Json update = {{"strength", "0123456789"}};  // 25 characters
  trickle_->Publish("control", update.dump());
  bool updated = false;
  for (int i = 0; i < 200 && !updated; ++i) {
    for (const auto& e : Events(*trickle_, "events")) {
      updated = updated || e.value("type", "") == "params_updated";
    }
    if (!updated) std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_TRUE(updated) << cluster_.Logs();
  trickle_->Publish("in", inputs[1]);
  trickle_->Close("in");
  ASSERT_TRUE(trickle_->WaitClosed("out", seconds(60))) << cluster_.Logs();
  const auto outputs = trickle_->Segments("out");
  ASSERT_EQ(outputs.size(), 2u);
  EXPECT_NEAR(Mean(FirstFrameRgb(media_, outputs.at(0))), 7, 3);
  EXPECT_NEAR(Mean(FirstFrameRgb(media_, outputs.at(1))), 25, 3);
}

TEST_F(LiveVideoTest, StreamMovesToAnotherOrchestratorWhenItsNodeDies) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(2));
  const auto inputs = MakeSegments(media_, 3);
  ASSERT_EQ(inputs.size(), 3u);
  trickle_->Publish("in", inputs[0]);
  HttpResult r = Post(port_, {{"subscribe_url", trickle_->Url("in")},
                              {"publish_url", trickle_->Url("out")},
                              {"events_url", trickle_->Url("events")},
                              {"model_id", "live-invert"}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(trickle_->WaitSegments("out", 1, seconds(60))) << cluster_.Logs();
  std::string first_node;
  for (int i = 0; i < 100 && first_node.empty(); ++i) {
    for (const auto& e : Events(*trickle_, "events")) {
      if (e.value("state", "") == "running") first_node = e.value("orchestrator", "");
    }
    if (first_node.empty()) std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_TRUE(first_node == "orch-1" || first_node == "orch-2") << first_node;
  cluster_.orchestrator(first_node == "orch-1" ? 0 : 1).Kill();
  trickle_->Publish("in", inputs[1]);
  trickle_->Publish("in", inputs[2]);
  trickle_->Close("in");
  ASSERT_TRUE(trickle_->WaitClosed("out", seconds(60))) << cluster_.Logs();
  ASSERT_TRUE(trickle_->WaitClosed("events", seconds(10)));
  EXPECT_EQ(trickle_->Segments("out").size(), 3u) << cluster_.Logs();
  const std::string other = first_node == "orch-1" ? "orch-2" : "orch-1";
  auto events = Events(*trickle_, "events");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["state"], "ended") << events.back().dump();
  int on_other = 0;
  for (const auto& e : events) on_other += e.value("orchestrator", "") == other ? 1 : 0;
  EXPECT_EQ(on_other, 2) << Json(events).dump();
}

TEST_F(LiveVideoTest, ValidationAndCapacityErrors) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  HttpResult empty = Post(port_, Json::object());
  EXPECT_TRUE(NamesField(empty, "subscribe_url")) << empty.body;
  EXPECT_TRUE(NamesField(empty, "publish_url")) << empty.body;
  EXPECT_TRUE(NamesField(empty, "model_id")) << empty.body;
  HttpResult bad = Post(port_, {{"subscribe_url", "ftp://host/in"},
                                {"publish_url", "https://host/out"},
                                {"events_url", "http://:80/x"},
                                {"model_id", "live-invert"},
                                {"params", "not an object"}});
  EXPECT_TRUE(NamesField(bad, "subscribe_url")) << bad.body;
  EXPECT_TRUE(NamesField(bad, "publish_url")) << bad.body;
  EXPECT_TRUE(NamesField(bad, "events_url")) << bad.body;
  EXPECT_TRUE(NamesField(bad, "params")) << bad.body;
  EXPECT_EQ(HttpRequest(port_, "POST", "/live-video-to-video", "application/json", "[1]").status,
            422);
  EXPECT_EQ(HttpRequest(port_, "GET", "/live-video-to-video").status, 405);
  // No orchestrator offers the model: 503, and no session starts.
  HttpResult none = Post(port_, {{"subscribe_url", trickle_->Url("in")},
                                 {"publish_url", trickle_->Url("out")},
                                 {"model_id", "no-such-live-model"}});
  EXPECT_EQ(none.status, 503) << none.body;
  EXPECT_NE(none.body.find("no-such-live-model"), std::string::npos) << none.body;
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(trickle_->held(), 0);
  EXPECT_TRUE(trickle_->Segments("out").empty());
}

// A segment the model cannot take (not MPEG-TS) fails; after max_failures_in_a_row (3) the
// session ends with an error event.
TEST_F(LiveVideoTest, BadSegmentsEndTheSessionWithAnErrorEvent) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  for (int i = 0; i < 3; ++i) trickle_->Publish("in", "this is not MPEG-TS");
  HttpResult r = Post(port_, {{"subscribe_url", trickle_->Url("in")},
                              {"publish_url", trickle_->Url("out")},
                              {"events_url", trickle_->Url("events")},
                              {"model_id", "live-invert"}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(trickle_->WaitClosed("events", seconds(30))) << cluster_.Logs();
  auto events = Events(*trickle_, "events");
  ASSERT_EQ(events.size(), 5u) << Json(events).dump();
  EXPECT_EQ(events[1]["type"], "error");
  EXPECT_NE(events[1]["message"].get<std::string>().find("not MPEG-TS"), std::string::npos)
      << events[1].dump();
  EXPECT_EQ(events[4]["state"], "failed");
  EXPECT_NE(events[4]["reason"].get<std::string>().find("3 segments failed in a row"),
            std::string::npos);
  EXPECT_TRUE(trickle_->Closed("out"));
  EXPECT_TRUE(trickle_->Segments("out").empty());
}

// A gateway shutting down ends its sessions: the output channel is closed and the last event
// says why, even while the session waits for input.
TEST_F(LiveVideoTest, GatewayShutdownEndsTheSessions) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  HttpResult r = Post(port_, {{"subscribe_url", trickle_->Url("in")},
                              {"publish_url", trickle_->Url("out")},
                              {"events_url", trickle_->Url("events")},
                              {"model_id", "live-invert"}});
  ASSERT_EQ(r.status, 200) << r.body;
  for (int i = 0; i < 100 && trickle_->held() == 0; ++i) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_EQ(trickle_->held(), 1);  // the session waits for input segment 0
  // The gateway exits at once: the session ends, and the orchestrator's registration stream is
  // closed by the gateway rather than waited for (it took the whole 10 s grace before).
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(cluster_.gateway().Stop(seconds(20)), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(8));
  ASSERT_TRUE(trickle_->WaitClosed("events", seconds(5)));
  EXPECT_TRUE(trickle_->Closed("out"));
  auto events = Events(*trickle_, "events");
  ASSERT_EQ(events.size(), 2u) << Json(events).dump();
  EXPECT_EQ(events[1]["state"], "ended");
  EXPECT_NE(events[1]["reason"].get<std::string>().find("shutting down"), std::string::npos)
      << events[1].dump();
}

// Default config: the trickle server on 127.0.0.1 is refused in every URL field with 422 naming
// the field and why, before any connection (the gateway used to connect there for anyone).
TEST_F(LiveVideoTest, DefaultConfigRefusesLoopbackUrlsBeforeConnecting) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1, Json::object()));
  trickle_->Publish("in", "segment");
  HttpResult r = Post(port_, {{"subscribe_url", trickle_->Url("in")},
                              {"publish_url", trickle_->Url("out")},
                              {"control_url", trickle_->Url("control")},
                              {"events_url", trickle_->Url("events")},
                              {"model_id", "live-invert"}});
  EXPECT_EQ(r.status, 422) << r.body;
  for (const char* field : {"subscribe_url", "publish_url", "control_url", "events_url"}) {
    EXPECT_TRUE(NamesField(r, field)) << field << ": " << r.body;
  }
  EXPECT_TRUE(absl::StrContains(r.body,
                                "subscribe_url: host 127.0.0.1 resolves to a loopback "
                                "address, which live_video.allowed_hosts does not allow"))
      << r.body;
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_EQ(trickle_->requests(), 0) << cluster_.Logs();
  EXPECT_TRUE(cluster_.gateway().Alive());
}

// live_video.max_sessions_per_key: one key cannot take the gateway's every session; 429 names
// the limit, another key still starts one, and an ended session gives its slot back.
TEST_F(LiveVideoTest, SessionsAreCappedPerApiKey) {
  TempDir keys_dir;
  std::string key_a, key_b;
  Json keys = {{"keys", {NewApiKeyEntry("app-a", &key_a), NewApiKeyEntry("app-b", &key_b)}}};
  ASSERT_FALSE(HasFailure());
  WriteFile(keys_dir.path() / "keys.json", keys.dump());
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {};
  options.extra_models = {LiveModel(models_.path(), "live-invert", kInvertModel)};
  options.api_key = key_a;
  options.gateway_config = {
      {"api_keys_file", (keys_dir.path() / "keys.json").string()},
      {"live_video", {{"allowed_hosts", {"127.0.0.1/32"}}, {"max_sessions_per_key", 1}}}};
  ASSERT_TRUE(cluster_.Start(options).ok()) << cluster_.Logs();
  auto trickle = TrickleServer::Start();
  ASSERT_TRUE(trickle.ok());
  TrickleServer& t = **trickle;
  const int port = cluster_.gateway().http_port();
  auto start = [&](const std::string& key, const std::string& name) {
    HttpCall call;
    call.method = "POST";
    call.path = "/live-video-to-video";
    call.content_type = "application/json";
    call.headers["Authorization"] = absl::StrCat("Bearer ", key);
    call.body = Json{{"subscribe_url", t.Url(name + "-in")},
                     {"publish_url", t.Url(name + "-out")},
                     {"events_url", t.Url(name + "-events")},
                     {"model_id", "live-invert"}}
                    .dump();
    return HttpRequest(port, call);
  };
  HttpResult a1 = start(key_a, "a1");
  ASSERT_EQ(a1.status, 200) << a1.body;
  HttpResult a2 = start(key_a, "a2");
  EXPECT_EQ(a2.status, 429) << a2.body;
  EXPECT_TRUE(absl::StrContains(a2.body, "live_video.max_sessions_per_key")) << a2.body;
  HttpResult b1 = start(key_b, "b1");
  EXPECT_EQ(b1.status, 200) << b1.body;
  // Key A's session ends (its input ends): its slot is free again.
  t.Close("a1-in");
  ASSERT_TRUE(t.WaitClosed("a1-events", seconds(10))) << cluster_.Logs();
  HttpResult a3;
  for (int i = 0; i < 50; ++i) {
    a3 = start(key_a, absl::StrCat("a3-", i));
    if (a3.status != 429) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_EQ(a3.status, 200) << a3.body;
}

// What the sessions' own threads do, in-process: a stub to nowhere (no segment reaches it).
class LiveVideoSessionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TrickleServer::Start();
    ASSERT_TRUE(t.ok()) << t.status();
    trickle_ = *std::move(t);
    stub_ = v1::Gateway::NewStub(
        grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
  }
  std::unique_ptr<TrickleServer> trickle_;
  std::shared_ptr<v1::Gateway::Stub> stub_;
};

// A connection the policy refuses when the session makes it (a name that passed the request's
// check) ends the session with an event that says "refused by policy" and no more: nothing
// connects, and no system error text goes back to the caller.
TEST_F(LiveVideoSessionsTest, RefusedConnectionEndsTheSessionWithoutDetail) {
  auto counter = ConnectionCounter::Start();
  ASSERT_TRUE(counter.ok()) << counter.status();
  gateway::LiveVideoOptions options;
  // "localhost" is opened by name (the events go there); 127.0.0.1 by address is not.
  auto policy = gateway::EgressPolicy::Create({"localhost"});
  ASSERT_TRUE(policy.ok());
  options.egress = *policy;
  gateway::LiveVideoSessions sessions(stub_, options);
  gateway::LiveVideoParams p;
  p.request_id = "live-1";
  p.model_id = "m";
  p.stream_id = "s";
  p.subscribe_url = absl::StrCat("http://127.0.0.1:", (*counter)->port(), "/in");
  p.publish_url = absl::StrCat("http://127.0.0.1:", (*counter)->port(), "/out");
  p.events_url = absl::StrCat("http://localhost:", trickle_->port(), "/events");
  ASSERT_TRUE(sessions.Start(p).ok());
  ASSERT_TRUE(trickle_->WaitClosed("events", seconds(10)));
  auto events = trickle_->Segments("events");
  ASSERT_EQ(events.size(), 2u);
  Json last = Json::parse(events.rbegin()->second, nullptr, false);
  EXPECT_EQ(last["state"], "failed") << last.dump();
  const std::string reason = last.value("reason", "");
  EXPECT_TRUE(absl::EndsWith(reason, ": refused by policy")) << reason;
  EXPECT_FALSE(absl::StrContains(reason, "loopback")) << reason;
  EXPECT_EQ((*counter)->accepted(), 0);
}

// Nothing the policy refuses is connected to at all, at the lowest level either: names that
// resolve to loopback, and the numeric forms of 127.0.0.1 that connect() takes.
TEST_F(LiveVideoSessionsTest, TrickleRequestChecksTheResolvedAddress) {
  auto counter = ConnectionCounter::Start();
  ASSERT_TRUE(counter.ok()) << counter.status();
  const int port = (*counter)->port();
  gateway::EgressPolicy deny;
  for (const std::string host :
       {"127.0.0.1", "localhost", "127.1", "2130706433", "[::ffff:127.0.0.1]"}) {
    auto r = gateway::TrickleRequest(deny, "GET", absl::StrCat("http://", host, ":", port, "/x/0"),
                                     "", "", absl::Seconds(5), 1 << 20, nullptr);
    EXPECT_TRUE(absl::IsPermissionDenied(r.status())) << host << ": " << r.status();
    EXPECT_TRUE(absl::EndsWith(r.status().message(), "refused by policy")) << r.status();
  }
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ((*counter)->accepted(), 0);
  // The allowlist opens it: the connection is made (and the error says no more than that).
  auto allowed = gateway::EgressPolicy::Create({"127.0.0.1/32"});
  ASSERT_TRUE(allowed.ok());
  auto r = gateway::TrickleRequest(*allowed, "GET", absl::StrCat("http://127.0.0.1:", port, "/x/0"),
                                   "", "", absl::Seconds(5), 1 << 20, nullptr);
  EXPECT_FALSE(r.ok());
  for (int i = 0; i < 40 && (*counter)->accepted() == 0; ++i) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_EQ((*counter)->accepted(), 1);
}

// What control_url returns is copied into events and segment calls: a message over
// max_control_bytes or nested past the JSON depth limit is dropped with an error event.
TEST_F(LiveVideoSessionsTest, ControlMessagesAreBoundedAndDepthChecked) {
  gateway::LiveVideoOptions options;
  options.egress = Loopback();
  gateway::LiveVideoSessions sessions(stub_, options);
  gateway::LiveVideoParams p;
  p.request_id = "live-2";
  p.model_id = "m";
  p.stream_id = "s";
  p.subscribe_url = trickle_->Url("in");  // nothing comes: the session waits
  p.publish_url = trickle_->Url("out");
  p.control_url = trickle_->Url("control");
  p.events_url = trickle_->Url("events");
  ASSERT_TRUE(sessions.Start(p).ok());
  trickle_->Publish("control", Json{{"prompt", std::string(100 << 10, 'x')}}.dump());
  trickle_->Publish("control", std::string(200, '[') + std::string(200, ']'));
  trickle_->Publish("control", R"({"a": 1})");
  ASSERT_TRUE(trickle_->WaitSegments("events", 4, seconds(10)));
  std::vector<Json> events;
  for (const auto& [seq, body] : trickle_->Segments("events")) {
    events.push_back(Json::parse(body, nullptr, false));
  }
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[1]["type"], "error") << events[1].dump().substr(0, 300);
  EXPECT_TRUE(absl::StrContains(events[1].value("message", ""), "is over 65536 bytes"))
      << events[1].dump().substr(0, 300);
  EXPECT_EQ(events[2]["type"], "error") << events[2].dump().substr(0, 300);
  EXPECT_TRUE(absl::StrContains(events[2].value("message", ""), "nested deeper than 64"))
      << events[2].dump().substr(0, 300);
  EXPECT_EQ(events[3]["type"], "params_updated") << events[3].dump();
  EXPECT_EQ(events[3]["params"], Json({{"a", 1}}));
  sessions.Stop();
}

// Per key, in-process: the key in Authorization (or the handler's key id) counts; callers with
// no key have the gateway's cap only.
TEST_F(LiveVideoSessionsTest, MaxSessionsPerKey) {
  gateway::LiveVideoOptions options;
  options.egress = Loopback();
  options.max_sessions = 5;
  options.max_sessions_per_key = 2;
  gateway::LiveVideoSessions sessions(stub_, options);
  int n = 0;
  auto start = [&](const std::string& authorization, const std::string& key_id = "") {
    gateway::LiveVideoParams p;
    p.request_id = absl::StrCat("live-", n++);
    p.model_id = std::string("live-model");
    p.stream_id = p.request_id;
    p.subscribe_url = trickle_->Url(p.request_id);
    p.publish_url = trickle_->Url("out");
    p.authorization = authorization;
    p.api_key_id = key_id;
    return sessions.Start(p);
  };
  EXPECT_TRUE(start("Bearer key-a").ok());
  EXPECT_TRUE(start("bearer   key-a ").ok());  // the same key, spelt differently
  absl::Status third = start("Bearer key-a");
  EXPECT_TRUE(absl::IsResourceExhausted(third)) << third;
  EXPECT_TRUE(absl::StrContains(third.message(), "live_video.max_sessions_per_key, is 2")) << third;
  EXPECT_FALSE(absl::StrContains(third.message(), "key-a")) << third;  // never the key
  EXPECT_TRUE(start("Bearer key-b").ok());
  EXPECT_TRUE(start("", "id-1").ok());
  EXPECT_TRUE(start("").ok());  // no key: the gateway's cap only
  absl::Status gateway_full = start("");
  EXPECT_TRUE(absl::IsResourceExhausted(gateway_full)) << gateway_full;
  EXPECT_TRUE(absl::StrContains(gateway_full.message(), "live_video.max_sessions")) << gateway_full;
  EXPECT_EQ(sessions.active(), 5);
  sessions.Stop();
}

TEST(LiveVideoUnitTest, ParsesHttpUrls) {
  auto u = gateway::ParseHttpUrl("http://127.0.0.1:8935/ai/trickle/abc");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "8935");
  EXPECT_EQ(u->target, "/ai/trickle/abc");
  u = gateway::ParseHttpUrl("http://example.com");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, "80");
  EXPECT_EQ(u->target, "/");
  u = gateway::ParseHttpUrl("http://[::1]:9000/x?y=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->target, "/x?y=1");
  EXPECT_FALSE(gateway::ParseHttpUrl("https://example.com/x").ok());
  EXPECT_FALSE(gateway::ParseHttpUrl("ftp://example.com/x").ok());
  EXPECT_FALSE(gateway::ParseHttpUrl("http://:80/x").ok());
  EXPECT_FALSE(gateway::ParseHttpUrl("http://host:99999/x").ok());
  EXPECT_FALSE(gateway::ParseHttpUrl("http://user@host/x").ok());
  EXPECT_FALSE(u->https);
  // https:// only where the caller allows it (peer gateways with state.peer_tls), port 443 by
  // default; trickle URLs stay http:// only.
  u = gateway::ParseUrl("https://gw-b.internal/x", /*allow_https=*/true);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->https);
  EXPECT_EQ(u->host, "gw-b.internal");
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->target, "/x");
  u = gateway::ParseUrl("HTTPS://[::1]:8443", true);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->https);
  EXPECT_EQ(u->port, "8443");
  EXPECT_FALSE(gateway::ParseUrl("https://gw-b.internal/x", false).ok());
  EXPECT_FALSE(gateway::ParseUrl("ftp://gw-b.internal/x", true).ok());
  EXPECT_FALSE(gateway::ParseUrl("https://user@gw-b.internal/x", true).ok());
}

// TrickleRequest with TLS takes https:// only: an http:// URL is refused before any connection
// (no plain fallback), and without TLS an https:// URL is refused.
TEST(LiveVideoUnitTest, TrickleRequestKeepsSchemeAndTlsTogether) {
  auto allowed = gateway::EgressPolicy::Create({"127.0.0.1"});
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  gateway::TrickleTls tls;  // no context: refused as well, never used
  auto plain = gateway::TrickleRequest(*allowed, "GET", "http://127.0.0.1:1/x", "", "",
                                       absl::Seconds(1), 100, nullptr, {}, &tls);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kInvalidArgument) << plain.status();
  EXPECT_THAT(std::string(plain.status().message()), ::testing::HasSubstr("https://"));
  auto https = gateway::TrickleRequest(*allowed, "GET", "https://127.0.0.1:1/x", "", "",
                                       absl::Seconds(1), 100, nullptr);
  EXPECT_EQ(https.status().code(), absl::StatusCode::kInvalidArgument) << https.status();
}

TEST(LiveVideoUnitTest, TrickleRequestsAgainstTheTestServer) {
  auto server = TrickleServer::Start();
  ASSERT_TRUE(server.ok());
  auto& t = **server;
  // A POST with a chunked body is stored under its sequence number.
  auto post = gateway::TrickleRequest(Loopback(), "POST", t.Url("ch") + "/0", "hello", "text/plain",
                                      absl::Seconds(5), 1 << 20, nullptr);
  ASSERT_TRUE(post.ok()) << post.status();
  EXPECT_EQ(post->status, 200);
  EXPECT_EQ(t.Segments("ch").at(0), "hello");
  auto get = gateway::TrickleRequest(Loopback(), "GET", t.Url("ch") + "/0", "", "",
                                     absl::Seconds(5), 1 << 20, nullptr);
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->body, "hello");
  EXPECT_EQ(get->headers["lp-trickle-seq"], "0");
  // A GET for a segment that does not exist yet is held: the timeout and the stop flag end it.
  const auto start = std::chrono::steady_clock::now();
  auto held = gateway::TrickleRequest(Loopback(), "GET", t.Url("ch") + "/1", "", "",
                                      absl::Milliseconds(300), 1 << 20, nullptr);
  EXPECT_TRUE(absl::IsDeadlineExceeded(held.status())) << held.status();
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(200));
    stop = true;
  });
  auto stopped = gateway::TrickleRequest(Loopback(), "GET", t.Url("ch") + "/1", "", "",
                                         absl::Seconds(30), 1 << 20, &stop);
  stopper.join();
  EXPECT_TRUE(absl::IsCancelled(stopped.status())) << stopped.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  // Over the body limit; a closed channel; nobody listening.
  auto big = gateway::TrickleRequest(Loopback(), "GET", t.Url("ch") + "/0", "", "",
                                     absl::Seconds(5), 3, nullptr);
  EXPECT_TRUE(absl::IsResourceExhausted(big.status())) << big.status();
  t.Close("ch");
  auto closed = gateway::TrickleRequest(Loopback(), "GET", t.Url("ch") + "/1", "", "",
                                        absl::Seconds(5), 1 << 20, nullptr);
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(closed->status, 404);
  EXPECT_EQ(closed->headers.count("lp-trickle-closed"), 1u);
  t.Drop("gone", 0);
  auto gone = gateway::TrickleRequest(Loopback(), "GET", t.Url("gone") + "/0", "", "",
                                      absl::Seconds(5), 1 << 20, nullptr);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->status, 470);
  auto refused = gateway::TrickleRequest(Loopback(), "GET", "http://127.0.0.1:1/x/0", "", "",
                                         absl::Seconds(5), 1 << 20, nullptr);
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
}

}  // namespace
}  // namespace switchyard::testing
