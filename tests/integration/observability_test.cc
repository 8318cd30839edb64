// /healthz, /readyz and /metrics on both daemons; the exposition passes `promtool check metrics`.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <thread>

#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::testing {
namespace {

HttpResult Get(int port, const std::string& path) { return HttpRequest(port, "GET", path); }

bool Contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

void CheckWithPromtool(const TempDir& dir, const std::string& exposition, const char* who) {
  if (!std::filesystem::exists("/usr/bin/promtool")) {
    ADD_FAILURE() << "promtool missing: scripts/install-deps installs Debian's prometheus";
    return;
  }
  const auto file = dir.path() / (std::string(who) + ".prom");
  WriteFile(file, exposition);
  std::string log;
  const int rc = RunCommand("promtool check metrics < " + file.string(), &log);
  EXPECT_EQ(rc, 0) << who << ": " << log;
}

TEST(ObservabilityTest, HealthReadinessAndMetricsOnBothDaemons) {
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  const int gw = cluster.gateway().http_port();
  const int orch = cluster.orchestrator(0).http_port();
  ASSERT_GT(gw, 0);
  ASSERT_GT(orch, 0);

  EXPECT_EQ(Get(gw, "/healthz").status, 200);
  HttpResult ready = Get(gw, "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_EQ(Get(orch, "/healthz").status, 200);
  EXPECT_EQ(Get(orch, "/readyz").status, 200);
  EXPECT_EQ(Get(gw, "/no-such-page").status, 404);

  // One real job, so per-RPC and transcode metrics have samples.
  TempDir tmp;
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 0.5;
  v1::TranscodeRequest req;
  req.set_segment(MakeTestSegment(tmp, spec));
  auto* r = req.add_renditions();
  r->set_height(60);
  r->set_bitrate_bps(200000);
  r->set_preset("ultrafast");
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  // The client's request id is carried through the gateway to the orchestrator and into the log
  // lines both write about the job, and comes back in the response.
  ctx.AddMetadata("x-request-id", "rid-observability-42");
  v1::TranscodeResponse resp;
  ASSERT_TRUE(cluster.GatewayStub()->Transcode(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.job().request_id(), "rid-observability-42");

  // And one the orchestrator rejects: counted under its code.
  {
    v1::TranscodeRequest bad = req;
    bad.set_segment("not a video");
    grpc::ClientContext bad_ctx;
    bad_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::TranscodeResponse bad_resp;
    EXPECT_EQ(cluster.GatewayStub()->Transcode(&bad_ctx, bad, &bad_resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }

  EXPECT_TRUE(Contains(cluster.gateway().Log(), "[rid-observability-42]"))
      << cluster.gateway().Log();
  EXPECT_TRUE(Contains(cluster.orchestrator(0).Log(), "[rid-observability-42]"))
      << cluster.orchestrator(0).Log();

  HttpResult gm = Get(cluster.gateway().admin_port(), "/metrics");  // operators' port
  ASSERT_EQ(gm.status, 200);
  EXPECT_TRUE(Contains(gm.body,
                       "switchyard_gateway_jobs_total{code=\"OK\",model=\"libx264\","
                       "pipeline=\"transcode\"} 1"))
      << gm.body;
  EXPECT_TRUE(Contains(gm.body,
                       "switchyard_gateway_jobs_total{code=\"INVALID_ARGUMENT\",model=\"libx264\","
                       "pipeline=\"transcode\"} 1"))
      << gm.body;
  EXPECT_TRUE(
      Contains(gm.body, "switchyard_gateway_job_duration_seconds_count{pipeline=\"transcode\"} 2"))
      << gm.body;
  EXPECT_TRUE(Contains(gm.body, "switchyard_gateway_ejections_total 0")) << gm.body;
  EXPECT_TRUE(Contains(gm.body, "switchyard_gateway_orchestrators{state=\"ready\"} 1")) << gm.body;
  EXPECT_TRUE(Contains(gm.body,
                       "switchyard_grpc_requests_total{code=\"OK\",method=\"Transcode\","
                       "service=\"switchyard.v1.Gateway\"} 1"))
      << gm.body;
  EXPECT_TRUE(Contains(gm.body,
                       "switchyard_gateway_model_offers{model=\"libx264\","
                       "pipeline=\"transcode\",state=\"ready\"} 1"))
      << gm.body;
  EXPECT_TRUE(Contains(gm.body, "process_resident_memory_bytes ")) << gm.body;
  CheckWithPromtool(tmp, gm.body, "gateway");

  HttpResult om = Get(orch, "/metrics");
  ASSERT_EQ(om.status, 200);
  EXPECT_TRUE(Contains(om.body, "switchyard_orchestrator_transcode_realtime_ratio_count 1"))
      << om.body;
  EXPECT_TRUE(Contains(om.body,
                       "switchyard_grpc_requests_total{code=\"OK\",method=\"Transcode\","
                       "service=\"switchyard.node.v1.Orchestrator\"} 1"))
      << om.body;
  EXPECT_TRUE(Contains(om.body, "switchyard_orchestrator_models{state=\"ready\"} 1")) << om.body;
  CheckWithPromtool(tmp, om.body, "orchestrator");

  // A draining orchestrator is not ready (it has told its gateways it is leaving).
  cluster.orchestrator(0).Signal(SIGTERM);
  bool not_ready = false;
  for (int i = 0; i < 100 && !not_ready; ++i) {
    HttpResult gr = Get(gw, "/readyz");
    not_ready = gr.status == 503;
    if (!not_ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(not_ready) << "the gateway stayed ready with no orchestrator";
}

}  // namespace
}  // namespace switchyard::testing
