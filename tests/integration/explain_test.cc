// Routing that operators can read (issue 23) on a loopback cluster: Gateway.ExplainRoute over
// gRPC, GET /explain and `switchyard explain` (operators' keys only, hostile input refused), and
// the missed-job counters a gateway sends each orchestrator, on the orchestrator's /metrics and
// /status: a cheap and a dear node serve the same model, capped jobs go to the cheap one, and
// the dear one learns it lost them on price and what the winning price was.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;

constexpr double kCheap = 0.000001;  // the cluster's upscale price per unit (support/cluster.cc)
constexpr double kDear = 0.00001;
constexpr const char* kModel = "esrgan-slim-x2";

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!key.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", key));
  return ctx;
}

// The value of the first series in a Prometheus text that starts with `name{` and holds every
// one of `labels` (-1 when none does).
double SeriesValue(const std::string& text, const std::string& name,
                   const std::vector<std::string>& labels) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name + "{")) continue;
    bool all = true;
    for (const auto& l : labels) all = all && absl::StrContains(line, l);
    if (!all) continue;
    return std::stod(std::string(line.substr(line.rfind(' ') + 1)));
  }
  return -1;
}

class ExplainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(ModelDir() / (std::string(kModel) + ".pt")))
        << "models are not prepared in " << ModelDir() << "; run scripts/prepare-models";
    nlohmann::json keys = {{"keys", nlohmann::json::array()}};
    keys["keys"].push_back(NewApiKeyEntry("alice", &alice_));
    keys["keys"].push_back(NewApiKeyEntry("ops", &ops_));
    WriteFile(tmp_.path() / "keys.json", keys.dump());
    ClusterOptions options;
    options.orchestrators = 1;  // "orch-1": the cheap one
    options.models = {kModel};
    options.api_key = ops_;
    options.gateway_config = {{"api_keys_file", (tmp_.path() / "keys.json").string()},
                              {"usage_admin_key_ids", {"ops"}}};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    nlohmann::json dear_models = nlohmann::json::array();
    dear_models.push_back({{"id", kModel},
                           {"pipeline", "upscale"},
                           {"path", (ModelDir() / (std::string(kModel) + ".pt")).string()},
                           {"warm", true},
                           {"device", "cpu"},
                           {"price_per_unit", kDear}});
    st = cluster_.AddOrchestrator("dear", {{"models", dear_models}});
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    st = cluster_.WaitForOrchestrators(2, std::chrono::seconds(30));
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    stub_ = cluster_.GatewayStub();
  }

  grpc::Status Explain(const std::string& key, const v1::ExplainRouteRequest& req,
                       v1::ExplainRouteResponse* resp) {
    auto ctx = Ctx(key);
    return stub_->ExplainRoute(ctx.get(), req, resp);
  }

  static v1::ExplainRouteRequest Req(double max_price = 0) {
    v1::ExplainRouteRequest req;
    req.set_pipeline("upscale");
    req.set_model_id(kModel);
    req.set_max_price_per_unit(max_price);
    return req;
  }

  TempDir tmp_;
  std::string alice_, ops_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

TEST_F(ExplainTest, ExplainRouteJudgesEveryNodeForOperatorsOnly) {
  v1::ExplainRouteResponse resp;
  grpc::Status st = Explain(ops_, Req(kCheap * 5), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.offering(), 2);
  EXPECT_EQ(resp.eligible(), 1);
  ASSERT_EQ(resp.candidates_size(), 2);
  EXPECT_EQ(resp.candidates(0).node_id(), "orch-1");
  EXPECT_TRUE(resp.candidates(0).best());
  EXPECT_EQ(resp.candidates(0).tier(), "warm");
  EXPECT_EQ(resp.candidates(0).address(), cluster_.orchestrator_address(0));
  EXPECT_EQ(resp.candidates(1).node_id(), "dear");
  EXPECT_EQ(resp.candidates(1).tier(), "filtered");
  EXPECT_EQ(resp.candidates(1).filter(), "price_over_cap");
  EXPECT_DOUBLE_EQ(resp.candidates(1).price_per_unit(), kDear);

  // Without a cap both can take it.
  resp.Clear();
  ASSERT_TRUE(Explain(ops_, Req(), &resp).ok());
  EXPECT_EQ(resp.eligible(), 2);

  // Node addresses and prices are the operators': other keys are refused, no key is too.
  resp.Clear();
  st = Explain(alice_, Req(), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "usage_admin_key_ids")) << st.error_message();
  EXPECT_EQ(resp.candidates_size(), 0);
  st = Explain("", Req(), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();

  // Hostile or incomplete requests: INVALID_ARGUMENT, saying what is wrong.
  auto invalid = [&](v1::ExplainRouteRequest req, const std::string& why) {
    v1::ExplainRouteResponse r;
    grpc::Status s = Explain(ops_, req, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << why;
    EXPECT_TRUE(absl::StrContains(s.error_message(), why)) << s.error_message();
  };
  v1::ExplainRouteRequest req = Req();
  req.set_model_id("");
  invalid(req, "needs a pipeline and a model_id");
  req = Req();
  req.set_pipeline(std::string(100000, 'p'));
  invalid(req, "pipeline is 100000 bytes; at most 64");
  req = Req();
  req.set_pipeline("no-such-pipeline");
  invalid(req, "unknown pipeline 'no-such-pipeline'");
  req = Req();
  req.set_model_id(std::string(5000, 'm'));
  invalid(req, "model_id is 5000 bytes; at most 256");
  req = Req();
  req.set_max_price_per_unit(-1);
  invalid(req, "max_price_per_unit must be a finite number >= 0");

  // An unknown model is a valid question: nobody offers it.
  req = Req();
  req.set_model_id("nobody-has-this");
  resp.Clear();
  ASSERT_TRUE(Explain(ops_, req, &resp).ok());
  EXPECT_EQ(resp.offering(), 0);
  ASSERT_EQ(resp.candidates_size(), 2);
  EXPECT_EQ(resp.candidates(0).filter(), "not_offered");
}

TEST_F(ExplainTest, HttpExplainAndTheCli) {
  const int port = cluster_.gateway().http_port();
  HttpCall call;
  call.path = absl::StrCat("/explain?pipeline=upscale&model=", kModel, "&max_price=0.000005");
  call.headers["authorization"] = absl::StrCat("Bearer ", ops_);
  HttpResult r = HttpRequest(port, call);
  ASSERT_EQ(r.status, 200) << r.body;
  auto json = nlohmann::json::parse(r.body);
  ASSERT_EQ(json["candidates"].size(), 2u) << r.body;
  EXPECT_EQ(json["candidates"][1]["filter"], "price_over_cap");

  call.headers["authorization"] = absl::StrCat("Bearer ", alice_);
  EXPECT_EQ(HttpRequest(port, call).status, 403);
  call.headers["authorization"] = absl::StrCat("Bearer ", ops_);
  call.path = "/explain?pipeline=upscale";
  r = HttpRequest(port, call);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "needs a pipeline and a model_id")) << r.body;
  call.path = "/explain?pipeline=upscale&model=x&max_price=cheap";
  EXPECT_EQ(HttpRequest(port, call).status, 400);
  call.path = "/explain?pipeline=upscale&model=x&colour=blue";
  EXPECT_EQ(HttpRequest(port, call).status, 400);

  std::string out;
  const std::string cli = absl::StrCat(
      BinaryPath("switchyard").string(), " --gateway ", cluster_.gateway_address(), " --api-key ",
      ops_, " explain --pipeline upscale --model ", kModel, " --max-price 0.000005 2>&1");
  ASSERT_EQ(RunCommand(cli, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "WHY NOT")) << out;
  EXPECT_TRUE(absl::StrContains(out, "asks more than the price cap")) << out;
  EXPECT_TRUE(absl::StrContains(out, "2 of 2 node(s) offer upscale")) << out;
  EXPECT_TRUE(absl::StrContains(out, "1 can take a job now")) << out;
}

TEST_F(ExplainTest, TheDearNodeLearnsItLostJobsOnPrice) {
  TempDir tmp;
  const std::string png = MakeTestImage(tmp, 16, 16, "png");
  constexpr int kJobs = 4;
  for (int i = 0; i < kJobs; ++i) {
    v1::UpscaleRequest req;
    req.set_model_id(kModel);
    req.set_image(png);
    v1::ImageResponse resp;
    auto ctx = Ctx(alice_);
    ctx->AddMetadata("x-max-price-per-unit", "0.000005");
    grpc::Status st = stub_->Upscale(ctx.get(), req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.job().orchestrator(), "orch-1");
  }
  // The gateway reports at most every 5 s, on a heartbeat (200 ms here): bounded by 20 s.
  const int dear_http = cluster_.orchestrator(1).http_port();
  const std::vector<std::string> labels = {
      absl::StrCat("gateway=\"", cluster_.gateway_address(), "\""), "pipeline=\"upscale\"",
      absl::StrCat("model=\"", kModel, "\""), "reason=\"price\""};
  const auto deadline = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(20));
  double missed = -1;
  std::string metrics;
  while (std::chrono::steady_clock::now() < deadline) {
    metrics = HttpRequest(dear_http, "GET", "/metrics").body;
    missed = SeriesValue(metrics, "switchyard_orchestrator_missed_jobs_total", labels);
    if (missed >= kJobs) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(missed, kJobs) << metrics << "\n" << cluster_.Logs();
  EXPECT_EQ(SeriesValue(metrics, "switchyard_orchestrator_missed_jobs_last_hour", labels), kJobs);
  EXPECT_DOUBLE_EQ(SeriesValue(metrics, "switchyard_orchestrator_median_winning_price",
                               {"pipeline=\"upscale\""}),
                   kCheap);
  const std::string status = HttpRequest(dear_http, "GET", "/status").body;
  EXPECT_TRUE(absl::StrContains(
      status, absl::StrCat("lost ", kJobs, " in the last hour (", kJobs, " in all) on price")))
      << status;
  EXPECT_TRUE(absl::StrContains(status, "the median winning price was 1e-06 per unit")) << status;

  // The cheap node won them all and missed none on price.
  const std::string cheap_metrics =
      HttpRequest(cluster_.orchestrator(0).http_port(), "GET", "/metrics").body;
  EXPECT_EQ(SeriesValue(cheap_metrics, "switchyard_orchestrator_missed_jobs_total", labels), -1);
}

}  // namespace
}  // namespace switchyard::testing
