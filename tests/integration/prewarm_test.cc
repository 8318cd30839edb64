// Demand-driven warm-up (issue 23) on a loopback cluster: a burst of jobs on a model that one
// node serves warm makes another node that offers it cold, with prewarm on, load it within
// seconds, before any job reaches it; a node with prewarm off leaves it cold.
//
// The two cold nodes advertise a price over the burst's cap, so no job can reach them: whatever
// warms them is the gateway's demand report, not an on-demand load.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kModel = "esrgan-slim-x2";
constexpr double kDear = 0.00001;  // over the burst's cap (the cluster's nodes ask 0.000001)

node::v1::ModelState StateOn(const std::string& address) {
  auto stub = node::v1::Orchestrator::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  node::v1::GetStatusRequest req;
  node::v1::NodeStatus status;
  if (!stub->GetStatus(&ctx, req, &status).ok()) return node::v1::MODEL_STATE_UNSPECIFIED;
  for (const auto& cap : status.capabilities()) {
    if (cap.model_id() == kModel) return cap.state();
  }
  return node::v1::MODEL_STATE_UNSPECIFIED;
}

TEST(PrewarmTest, ABurstMakesAColdNodeWarmTheModelBeforeAnyJobReachesIt) {
  ASSERT_TRUE(fs::exists(ModelDir() / (std::string(kModel) + ".pt")))
      << "models are not prepared in " << ModelDir() << "; run scripts/prepare-models";
  LocalCluster cluster;
  ClusterOptions options;
  options.orchestrators = 1;  // "orch-1": kModel warm, one slot
  options.models = {kModel};
  options.model_queue_size = 2;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  auto dear_node = [](const std::string& prewarm) {
    nlohmann::json models = nlohmann::json::array();
    models.push_back({{"id", kModel},
                      {"pipeline", "upscale"},
                      {"path", (ModelDir() / (std::string(kModel) + ".pt")).string()},
                      {"warm", false},
                      {"device", "cpu"},
                      {"price_per_unit", kDear}});
    return nlohmann::json{{"models", models}, {"prewarm", prewarm}};
  };
  ASSERT_TRUE(cluster.AddOrchestrator("eager", dear_node("on")).ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.AddOrchestrator("lazy", dear_node("off")).ok()) << cluster.Logs();
  st = cluster.WaitForOrchestrators(3, std::chrono::seconds(30));
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  const std::string eager = cluster.orchestrator_address(1);
  const std::string lazy = cluster.orchestrator_address(2);
  ASSERT_EQ(StateOn(eager), node::v1::MODEL_STATE_COLD);
  ASSERT_EQ(StateOn(lazy), node::v1::MODEL_STATE_COLD);

  // The burst: more jobs at once than orch-1 has slots, all capped under the dear price. They
  // queue on orch-1, are refused by it and wait at the gateway: demand for warm capacity.
  TempDir tmp;
  const std::string png = MakeTestImage(tmp, 96, 96, "png");
  constexpr int kJobs = 8;
  std::vector<std::thread> threads;
  std::vector<grpc::Status> results(kJobs);
  std::vector<std::string> ran_on(kJobs);
  for (int i = 0; i < kJobs; ++i) {
    threads.emplace_back([&, i] {
      auto stub = cluster.GatewayStub();
      v1::UpscaleRequest req;
      req.set_model_id(kModel);
      req.set_image(png);
      v1::ImageResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(60)));
      ctx.AddMetadata("x-max-price-per-unit", "0.000005");
      results[i] = stub->Upscale(&ctx, req, &resp);
      ran_on[i] = resp.job().orchestrator();
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].error_message() << "\n" << cluster.Logs();
    EXPECT_EQ(ran_on[i], "orch-1");  // the cap kept every job off the cold nodes
  }

  // The gateway reports demand about every second on a heartbeat (200 ms here); the load of
  // this small model takes well under a second.
  const auto deadline = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(20));
  while (StateOn(eager) != node::v1::MODEL_STATE_READY &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(StateOn(eager), node::v1::MODEL_STATE_READY) << cluster.Logs();
  const std::string metrics =
      HttpRequest(cluster.orchestrator(1).http_port(), "GET", "/metrics").body;
  EXPECT_TRUE(
      absl::StrContains(metrics, absl::StrCat("switchyard_orchestrator_prewarm_total{model=\"",
                                              kModel, "\",result=\"loaded\"} 1")))
      << metrics;
  EXPECT_TRUE(absl::StrContains(cluster.Logs(), "prewarm: loading upscale 'esrgan-slim-x2'"));

  // The node with prewarm off heard the same demand and left the model cold.
  std::this_thread::sleep_for(Scaled(std::chrono::milliseconds(1500)));
  EXPECT_EQ(StateOn(lazy), node::v1::MODEL_STATE_COLD);
  const std::string lazy_metrics =
      HttpRequest(cluster.orchestrator(2).http_port(), "GET", "/metrics").body;
  EXPECT_FALSE(absl::StrContains(lazy_metrics, "switchyard_orchestrator_prewarm_total{"))
      << lazy_metrics;
}

}  // namespace
}  // namespace switchyard::testing
