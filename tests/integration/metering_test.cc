// Metering on a local cluster (docs/metering.md): the gateway checks each job's units against its
// own count, pays an honest orchestrator and disputes one that misreports (test_inflate_units),
// keeps every completed job in its SQLite ledger across a kill -9, and answers GetUsage and the
// `switchyard usage` CLI. KServe ModelInfer calls and live-video-to-video segments (tiny
// TorchScript models made here) are metered the same way.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inference/open_inference_grpc.grpc.pb.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"
#include "support/trickle_server.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;

constexpr double kPrice = 0.000001;  // the cluster's upscale price per unit (support/cluster.cc)

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key = "",
                                         std::chrono::seconds timeout = std::chrono::seconds(60)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!key.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", key));
  return ctx;
}

class MeteringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(ModelDir() / "esrgan-slim-x2.pt"))
        << "models are not prepared in " << ModelDir() << "; run scripts/prepare-models";
    SetUpKeysAndLedger();
  }

  // Keys alice and ops (an operator), a ledger, one orchestrator serving ESRGAN x2.
  void SetUpKeysAndLedger() {
    ledger_ = tmp_.path() / "state" / "usage.db";
    nlohmann::json keys = {{"keys", nlohmann::json::array()}};
    keys["keys"].push_back(NewApiKeyEntry("alice", &alice_));
    keys["keys"].push_back(NewApiKeyEntry("ops", &ops_));
    WriteFile(tmp_.path() / "keys.json", keys.dump());
    options_.orchestrators = 1;
    options_.models = {"esrgan-slim-x2"};
    options_.api_key = ops_;
    options_.gateway_config = {{"usage_ledger", ledger_.string()},
                               {"api_keys_file", (tmp_.path() / "keys.json").string()},
                               {"usage_admin_key_ids", {"ops"}}};
  }

  void StartCluster() {
    auto st = cluster_.Start(options_);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    stub_ = cluster_.GatewayStub();
  }

  grpc::Status Upscale(const std::string& png, v1::ImageResponse* out) {
    v1::UpscaleRequest req;
    req.set_model_id("esrgan-slim-x2");
    req.set_image(png);
    auto ctx = Ctx(alice_);
    return stub_->Upscale(ctx.get(), req, out);
  }

  v1::GetUsageResponse Usage(const std::string& key, const std::string& whose = "") {
    v1::GetUsageRequest req;
    req.set_api_key_id(whose);
    v1::GetUsageResponse resp;
    auto ctx = Ctx(key);
    grpc::Status st = stub_->GetUsage(ctx.get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  std::string Metrics() {
    return HttpRequest(cluster_.gateway().admin_port(), "GET", "/metrics").body;
  }

  TempDir tmp_;
  fs::path ledger_;
  std::string alice_, ops_;
  ClusterOptions options_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

TEST_F(MeteringTest, HonestOrchestratorIsPaidForTheUnitsBothSidesCount) {
  StartCluster();
  if (HasFatalFailure()) return;
  const std::string png = MakeTestImage(tmp_, 24, 16, "png");
  for (int i = 0; i < 3; ++i) {
    v1::ImageResponse resp;
    auto st = Upscale(png, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
    EXPECT_EQ(resp.job().units(), 24 * 16);  // input pixels
  }
  // A transcode segment: units are the renditions' frames x size.
  SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.seconds = 1.0;
  spec.fps = "10";
  v1::TranscodeRequest treq;
  treq.set_segment(MakeTestSegment(tmp_, spec));
  auto* r = treq.add_renditions();
  r->set_width(32);
  r->set_height(24);
  r->set_bitrate_bps(100000);
  r->set_preset("ultrafast");
  v1::TranscodeResponse tresp;
  {
    auto ctx = Ctx(alice_);
    auto st = stub_->Transcode(ctx.get(), treq, &tresp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  }
  ASSERT_EQ(tresp.renditions_size(), 1);
  EXPECT_EQ(tresp.renditions(0).frames(), 10);
  EXPECT_EQ(tresp.job().units(), 10 * 32 * 24);

  v1::GetUsageResponse usage = Usage(alice_);
  ASSERT_EQ(usage.totals_size(), 2) << usage.DebugString();
  EXPECT_EQ(usage.jobs(), 4);
  for (const auto& t : usage.totals()) {
    EXPECT_EQ(t.api_key_id(), "alice");
    EXPECT_EQ(t.disputed_jobs(), 0) << t.DebugString();
    EXPECT_EQ(t.unit(), "pixel");
    if (t.pipeline() == "upscale") {
      EXPECT_EQ(t.model_id(), "esrgan-slim-x2");
      EXPECT_EQ(t.jobs(), 3);
      EXPECT_EQ(t.units(), 3 * 24 * 16);
      EXPECT_NEAR(t.amount(), 3 * 24 * 16 * kPrice, 1e-12);
    } else {
      EXPECT_EQ(t.pipeline(), "transcode");
      EXPECT_EQ(t.units(), 10 * 32 * 24);
    }
  }
  EXPECT_EQ(PrometheusValue(Metrics(), "switchyard_gateway_billing_mismatches_total{orchestrator="
                                   "\"orch-1\",pipeline=\"upscale\"}"),
            -1);

  // Another key's usage is for operators only; ops sees everyone's.
  {
    v1::GetUsageRequest req;
    req.set_api_key_id("*");
    v1::GetUsageResponse resp;
    auto ctx = Ctx(alice_);
    EXPECT_EQ(stub_->GetUsage(ctx.get(), req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(Usage(ops_).jobs(), 0);  // ops ran no job itself
  v1::GetUsageResponse all = Usage(ops_, "*");
  EXPECT_EQ(all.jobs(), 4);
  {
    // A bad range is refused with a message naming the fields.
    v1::GetUsageRequest req;
    req.set_since_unix(200);
    req.set_until_unix(100);
    v1::GetUsageResponse resp;
    auto ctx = Ctx(alice_);
    grpc::Status st = stub_->GetUsage(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(st.error_message(), "since_unix")) << st.error_message();
  }

  // GET /usage on the HTTP port, with the same key check.
  {
    HttpCall call;
    call.path = "/usage";
    call.headers["Authorization"] = absl::StrCat("Bearer ", alice_);
    HttpResult r = HttpRequest(cluster_.gateway().http_port(), call);
    ASSERT_EQ(r.status, 200) << r.body;
    auto body = nlohmann::json::parse(r.body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << r.body;
    EXPECT_EQ(body["jobs"], "4") << r.body;
    call.path = "/usage?api_key_id=%2A";
    r = HttpRequest(cluster_.gateway().http_port(), call);
    EXPECT_EQ(r.status, 403) << r.body;
    call.path = "/usage?since=yesterday";
    r = HttpRequest(cluster_.gateway().http_port(), call);
    EXPECT_EQ(r.status, 400) << r.body;
    call.headers.clear();
    call.path = "/usage";
    r = HttpRequest(cluster_.gateway().http_port(), call);
    EXPECT_EQ(r.status, 401) << r.body;
  }

  // The CLI: table and --json.
  std::string out;
  const std::string cli = absl::StrCat(BinaryPath("switchyard").string(), " --gateway ",
                                       cluster_.gateway_address(), " --api-key ", alice_);
  ASSERT_EQ(RunCommand(cli + " usage", &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "esrgan-slim-x2")) << out;
  EXPECT_TRUE(absl::StrContains(out, "total: 4 jobs")) << out;
  ASSERT_EQ(RunCommand(cli + " usage --json", &out), 0) << out;
  auto json = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(json.is_object()) << out;
  EXPECT_EQ(json["jobs"], "4");  // int64 fields are strings in proto3 JSON
  ASSERT_NE(RunCommand(cli + " usage --since yesterday", &out), 0);
  EXPECT_TRUE(absl::StrContains(out, "--since")) << out;
}

TEST_F(MeteringTest, OrchestratorThatInflatesUnitsIsNotPaidButTheClientGetsTheResult) {
  options_.orchestrator_config = {{"test_inflate_units", 1000}};
  StartCluster();
  if (HasFatalFailure()) return;
  const std::string png = MakeTestImage(tmp_, 24, 16, "png");
  for (int i = 0; i < 2; ++i) {
    v1::ImageResponse resp;
    auto st = Upscale(png, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
    ASSERT_EQ(resp.images_size(), 1);  // delivered: the work was done
    EXPECT_EQ(resp.images(0).width(), 48);
    EXPECT_EQ(resp.job().units(), 24 * 16 + 1000);  // what the node claimed, relayed as is
  }
  v1::GetUsageResponse usage = Usage(alice_);
  ASSERT_EQ(usage.totals_size(), 1) << usage.DebugString();
  EXPECT_EQ(usage.totals(0).jobs(), 2);
  EXPECT_EQ(usage.totals(0).disputed_jobs(), 2);
  EXPECT_EQ(usage.totals(0).units(), 2 * 24 * 16);  // the gateway's count
  EXPECT_EQ(usage.totals(0).amount(), 0.0);          // nothing paid
  EXPECT_EQ(usage.amount(), 0.0);
  const std::string metrics = Metrics();
  EXPECT_EQ(PrometheusValue(metrics, "switchyard_gateway_billing_mismatches_total{orchestrator="
                                 "\"orch-1\",pipeline=\"upscale\"}"),
            2)
      << metrics;
  EXPECT_TRUE(absl::StrContains(cluster_.gateway().Log(), "billing mismatch"));
}

TEST_F(MeteringTest, KillNineKeepsEveryCompletedJobExactlyOnce) {
  StartCluster();
  if (HasFatalFailure()) return;
  const std::string png = MakeTestImage(tmp_, 16, 16, "png");
  constexpr int kJobs = 6;
  for (int i = 0; i < kJobs; ++i) {
    v1::ImageResponse resp;
    auto st = Upscale(png, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  }
  // No graceful shutdown: whatever the gateway had not made durable is lost now.
  cluster_.gateway().Kill();
  auto st = cluster_.RestartGateway();
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
  st = cluster_.WaitForOrchestrators(1, Scaled(std::chrono::seconds(20)));
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
  stub_ = cluster_.GatewayStub();
  v1::GetUsageResponse usage = Usage(alice_);
  ASSERT_EQ(usage.totals_size(), 1) << usage.DebugString();
  EXPECT_EQ(usage.totals(0).jobs(), kJobs);
  EXPECT_EQ(usage.totals(0).units(), kJobs * 16 * 16);
  EXPECT_EQ(usage.totals(0).disputed_jobs(), 0);

  // Jobs after the restart add to the same ledger.
  v1::ImageResponse resp;
  auto up = Upscale(png, &resp);
  ASSERT_TRUE(up.ok()) << up.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(Usage(alice_).jobs(), kJobs + 1);
}

TEST_F(MeteringTest, WithoutALedgerUsageIsRefusedAndJobsStillRun) {
  options_.gateway_config.erase("usage_ledger");
  StartCluster();
  if (HasFatalFailure()) return;
  v1::ImageResponse resp;
  auto st = Upscale(MakeTestImage(tmp_, 16, 16, "png"), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  v1::GetUsageRequest req;
  v1::GetUsageResponse usage;
  auto ctx = Ctx(alice_);
  st = stub_->GetUsage(ctx.get(), req, &usage);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "usage_ledger")) << st.error_message();
}

// --- KServe ModelInfer and live-video-to-video ---------------------------------------------------

constexpr double kTensorPrice = 0.25;  // per element
constexpr double kLivePrice = 0.001;   // per output pixel
constexpr int64_t kSegmentPixels = 10 * 160 * 120;  // one 1 s segment: 10 frames of 160x120

// `count` MPEG-TS segments of 1 s (10 fps 160x120, a keyframe each), cut by ffmpeg's segment muxer.
std::vector<std::string> MakeLiveSegments(const TempDir& dir, int count) {
  const fs::path pattern = dir.path() / "live%d.ts";
  std::string log;
  if (RunCommand(absl::StrCat("ffmpeg -hide_banner -loglevel error -y -f lavfi -i "
                              "testsrc2=size=160x120:rate=10 -t ",
                              count,
                              " -c:v libx264 -preset ultrafast -g 10 -keyint_min 10 "
                              "-sc_threshold 0 -bf 0 -pix_fmt yuv420p -f segment -segment_time 1 "
                              "-segment_format mpegts ",
                              pattern.string()),
                 &log) != 0) {
    ADD_FAILURE() << log;
    return {};
  }
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(ReadFile(dir.path() / absl::StrCat("live", i, ".ts")));
  }
  return out;
}

class TensorAndLiveMeteringTest : public MeteringTest {
 protected:
  void SetUp() override {
    SetUpKeysAndLedger();
    SaveScriptModule(tmp_.path() / "triple.pt", "def forward(self, x):\n    return x * 3\n");
    SaveScriptModule(tmp_.path() / "invert.pt",
                     "def forward(self, frame, params: str):\n    return 255.0 - frame\n");
    options_.models = {};
    // The test's trickle server is on loopback, which live sessions may reach only when allowed.
    options_.gateway_config["live_video"] = {{"allowed_hosts", {"127.0.0.1/32"}}};
    options_.extra_models = {
        {{"id", "ktriple"},
         {"pipeline", "upscale"},
         {"path", (tmp_.path() / "triple.pt").string()},
         {"warm", true},
         {"device", "cpu"},
         {"warmup_size", 0},
         {"price_per_unit", kTensorPrice}},
        {{"id", "live-invert"},
         {"pipeline", "live-video-to-video"},
         {"path", (tmp_.path() / "invert.pt").string()},
         {"warm", true},
         {"device", "cpu"},
         {"price_per_unit", kLivePrice},
         {"options", {{"max_width", 640}, {"max_height", 480}, {"preset", "ultrafast"}}}}};
  }

  // ModelInfer on ktriple with a [2, 3] FP32 input (6 elements) as alice.
  grpc::Status Infer(inference::ModelInferResponse* out, const std::string& request_id = "") {
    auto stub = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(cluster_.gateway_address(), grpc::InsecureChannelCredentials()));
    inference::ModelInferRequest req;
    req.set_model_name("ktriple");
    auto* in = req.add_inputs();
    in->set_name("INPUT__0");
    in->set_datatype("FP32");
    in->add_shape(2);
    in->add_shape(3);
    const float values[6] = {1, 2, 3, 4, 5, 6};
    req.add_raw_input_contents(std::string(reinterpret_cast<const char*>(values), sizeof(values)));
    auto ctx = Ctx(alice_);
    if (!request_id.empty()) ctx->AddMetadata("x-request-id", request_id);
    return stub->ModelInfer(ctx.get(), req, out);
  }

  // A live session of `segments` as alice; returns the segments the gateway published.
  std::map<int64_t, std::string> RunLiveSession(const std::vector<std::string>& segments) {
    auto trickle = TrickleServer::Start();
    EXPECT_TRUE(trickle.ok()) << trickle.status();
    if (!trickle.ok()) return {};
    for (const auto& seg : segments) (*trickle)->Publish("in", seg);
    (*trickle)->Close("in");
    HttpCall call;
    call.method = "POST";
    call.path = "/live-video-to-video";
    call.content_type = "application/json";
    call.body = nlohmann::json{{"subscribe_url", (*trickle)->Url("in")},
                               {"publish_url", (*trickle)->Url("out")},
                               {"model_id", "live-invert"},
                               {"stream_id", "metered-stream"}}
                    .dump();
    call.headers["Authorization"] = absl::StrCat("Bearer ", alice_);
    HttpResult r = HttpRequest(cluster_.gateway().http_port(), call);
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_TRUE((*trickle)->WaitClosed("out", Scaled(std::chrono::seconds(60)))) << cluster_.Logs();
    return (*trickle)->Segments("out");
  }

  // The totals of `pipeline` in alice's usage (fails the test when absent).
  v1::UsageTotal TotalsOf(const v1::GetUsageResponse& usage, const std::string& pipeline) {
    for (const auto& t : usage.totals()) {
      if (t.pipeline() == pipeline) return t;
    }
    ADD_FAILURE() << "no " << pipeline << " totals in " << usage.DebugString();
    return v1::UsageTotal();
  }
};

TEST_F(TensorAndLiveMeteringTest, EveryModelInferCallAndLiveSegmentIsOneLedgerRow) {
  StartCluster();
  if (HasFatalFailure()) return;
  constexpr int kCalls = 3;
  for (int i = 0; i < kCalls; ++i) {
    inference::ModelInferResponse resp;
    // Two calls reuse one client request id: still one row each.
    auto st = Infer(&resp, i == 0 ? "" : "reused-id");
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
    ASSERT_EQ(resp.raw_output_contents_size(), 1);
    float out[6];
    ASSERT_EQ(resp.raw_output_contents(0).size(), sizeof(out));
    std::memcpy(out, resp.raw_output_contents(0).data(), sizeof(out));
    EXPECT_EQ(out[5], 18.0f);
    // The orchestrator's report, relayed in the response's parameters.
    EXPECT_EQ(resp.parameters().at("switchyard_units").int64_param(), 6);
    EXPECT_EQ(resp.parameters().at("switchyard_price_per_unit").double_param(), kTensorPrice);
  }
  const auto outputs = RunLiveSession(MakeLiveSegments(tmp_, 2));
  ASSERT_EQ(outputs.size(), 2u) << cluster_.Logs();

  v1::GetUsageResponse usage = Usage(alice_);
  ASSERT_EQ(usage.totals_size(), 2) << usage.DebugString();
  EXPECT_EQ(usage.jobs(), kCalls + 2);
  const v1::UsageTotal kserve = TotalsOf(usage, "kserve");
  EXPECT_EQ(kserve.api_key_id(), "alice");
  EXPECT_EQ(kserve.model_id(), "ktriple");
  EXPECT_EQ(kserve.unit(), "element");
  EXPECT_EQ(kserve.jobs(), kCalls);
  EXPECT_EQ(kserve.units(), kCalls * 6);
  EXPECT_EQ(kserve.disputed_jobs(), 0);
  EXPECT_NEAR(kserve.amount(), kCalls * 6 * kTensorPrice, 1e-9);
  const v1::UsageTotal live = TotalsOf(usage, "live-video-to-video");
  EXPECT_EQ(live.api_key_id(), "alice");
  EXPECT_EQ(live.model_id(), "live-invert");
  EXPECT_EQ(live.unit(), "pixel");
  EXPECT_EQ(live.jobs(), 2);
  EXPECT_EQ(live.units(), 2 * kSegmentPixels);
  EXPECT_EQ(live.disputed_jobs(), 0);
  EXPECT_NEAR(live.amount(), 2 * kSegmentPixels * kLivePrice, 1e-6);
  const std::string metrics = Metrics();
  for (const char* pipeline : {"kserve", "live-video-to-video"}) {
    EXPECT_EQ(PrometheusValue(metrics, absl::StrCat("switchyard_gateway_billing_mismatches_total{"
                                                "orchestrator=\"orch-1\",pipeline=\"",
                                                pipeline, "\"}")),
              -1)
        << pipeline;
  }

  // GET /usage and `switchyard usage` show both pipelines.
  HttpCall call;
  call.path = "/usage";
  call.headers["Authorization"] = absl::StrCat("Bearer ", alice_);
  HttpResult r = HttpRequest(cluster_.gateway().http_port(), call);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "\"kserve\"")) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "\"live-video-to-video\"")) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "\"element\"")) << r.body;
  std::string out;
  ASSERT_EQ(RunCommand(absl::StrCat(BinaryPath("switchyard").string(), " --gateway ",
                                    cluster_.gateway_address(), " --api-key ", alice_, " usage"),
                       &out),
            0)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "kserve")) << out;
  EXPECT_TRUE(absl::StrContains(out, "live-video-to-video")) << out;
  EXPECT_TRUE(absl::StrContains(out, "total: 5 jobs")) << out;
}

TEST_F(TensorAndLiveMeteringTest, InflatedKServeAndLiveUnitsAreDisputedButDelivered) {
  options_.orchestrator_config = {{"test_inflate_units", 1000}};
  // Penalised like failures: the third dispute in a row ejects the node (the only one, so the
  // fraction cap is lifted), for long enough to see.
  options_.gateway_config["routing"] = {{"eject_after_failures", 3},
                                        {"eject_base_ms", 60000},
                                        {"eject_max_ms", 60000},
                                        {"max_ejected_fraction", 1.0}};
  StartCluster();
  if (HasFatalFailure()) return;
  inference::ModelInferResponse resp;
  auto st = Infer(&resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  ASSERT_EQ(resp.raw_output_contents_size(), 1);  // delivered: the work was done
  EXPECT_EQ(resp.parameters().at("switchyard_units").int64_param(), 6 + 1000);
  const auto outputs = RunLiveSession(MakeLiveSegments(tmp_, 2));
  EXPECT_EQ(outputs.size(), 2u) << cluster_.Logs();  // published all the same

  v1::GetUsageResponse usage = Usage(alice_);
  const v1::UsageTotal kserve = TotalsOf(usage, "kserve");
  EXPECT_EQ(kserve.jobs(), 1);
  EXPECT_EQ(kserve.disputed_jobs(), 1);
  EXPECT_EQ(kserve.units(), 6);  // the gateway's count
  EXPECT_EQ(kserve.amount(), 0.0);
  const v1::UsageTotal live = TotalsOf(usage, "live-video-to-video");
  EXPECT_EQ(live.jobs(), 2);
  EXPECT_EQ(live.disputed_jobs(), 2);
  EXPECT_EQ(live.units(), 2 * kSegmentPixels);
  EXPECT_EQ(live.amount(), 0.0);
  EXPECT_EQ(usage.amount(), 0.0);
  const std::string metrics = Metrics();
  EXPECT_EQ(PrometheusValue(metrics, "switchyard_gateway_billing_mismatches_total{orchestrator="
                                 "\"orch-1\",pipeline=\"kserve\"}"),
            1)
      << metrics;
  EXPECT_EQ(PrometheusValue(metrics, "switchyard_gateway_billing_mismatches_total{orchestrator="
                                 "\"orch-1\",pipeline=\"live-video-to-video\"}"),
            2)
      << metrics;
  EXPECT_TRUE(absl::StrContains(cluster_.gateway().Log(), "billing mismatch: kserve 'ktriple'"));
  // Three disputes (the call and both segments) ejected the only node from routing.
  inference::ModelInferResponse after;
  st = Infer(&after);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "ejected")) << st.error_message();
}

}  // namespace
}  // namespace switchyard::testing
