// Known-answer hardware checks (docs/security.md, "Hardware claims") on a loopback cluster of
// the real daemons: an honest node, one that advertises a GPU it does not have (the test-only
// test_hardware_claim) and one that answers challenges wrongly (test_challenge_fault). The
// gateway challenges each at registration; the honest one is "ok", the claimed GPU is too slow
// twice in a row (it computes the GPU workload on this machine's CPU) and the wrong one "wrong":
// both are routed at one job at a time per model, say so in ListCapabilities and in the metrics.
// Two gateways sharing a redis-server: a finding of one caps the node on the other
// (SharedHardwareCheckTest).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/hardware_challenge.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/redis_server.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

// Polls ListCapabilities (every 200 ms, bounded by `timeout`) until each node of `want` shows its
// hardware verdict; returns the last answer's nodes by id for the caller's checks.
std::map<std::string, v1::OrchestratorInfo> WaitForVerdicts(
    v1::Gateway::Stub& stub, const std::map<std::string, std::string>& want,
    std::chrono::milliseconds timeout) {
  std::map<std::string, v1::OrchestratorInfo> infos;
  const auto until = std::chrono::steady_clock::now() + timeout;
  bool done = false;
  while (!done && std::chrono::steady_clock::now() < until) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListCapabilitiesRequest req;
    v1::ListCapabilitiesResponse resp;
    grpc::Status st = stub.ListCapabilities(&ctx, req, &resp);
    if (!st.ok()) {
      ADD_FAILURE() << "ListCapabilities: " << st.error_message();
      break;
    }
    infos.clear();
    for (const auto& o : resp.orchestrators()) infos[o.id()] = o;
    done = true;
    for (const auto& [id, verdict] : want) {
      done = done && infos.count(id) != 0 && infos[id].hardware_check() == verdict;
    }
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return infos;
}

TEST(HardwareCheckTest, ClaimsAreCheckedAtRegistrationAndFailedOnesCapped) {
  ClusterOptions options;
  options.orchestrators = 1;  // orch-1, honest
  options.models = {};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.AddOrchestrator("liar", {{"test_hardware_claim", {"cuda"}}});
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.AddOrchestrator("wrong", {{"test_challenge_fault", true}});
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.WaitForOrchestrators(3, Scaled(std::chrono::seconds(30)));
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();

  auto stub = cluster.GatewayStub();
  const std::map<std::string, std::string> want = {
      {"orch-1", "ok"}, {"liar", "too_slow"}, {"wrong", "wrong"}};
  std::map<std::string, v1::OrchestratorInfo> infos =
      WaitForVerdicts(*stub, want, Scaled(std::chrono::seconds(240)));
  for (const auto& [id, verdict] : want) {
    ASSERT_EQ(infos.count(id), 1u) << id;
    EXPECT_EQ(infos[id].hardware_check(), verdict)
        << id << ": " << infos[id].hardware_check_detail() << "\n"
        << cluster.Logs();
  }
  EXPECT_TRUE(absl::StrContains(infos["orch-1"].hardware_check_detail(), "routed as advertised"))
      << infos["orch-1"].hardware_check_detail();
  for (const char* id : {"liar", "wrong"}) {
    EXPECT_TRUE(absl::StrContains(infos[id].hardware_check_detail(),
                                  "routed as a CPU node: at most 1 job(s) at once per model"))
        << id << ": " << infos[id].hardware_check_detail();
  }
  EXPECT_TRUE(absl::StrContains(infos["liar"].hardware_check_detail(), "claims cuda"))
      << infos["liar"].hardware_check_detail();
  std::printf("HARDWARE-CHECK: liar: %s\n", infos["liar"].hardware_check_detail().c_str());

  const std::string metrics = HttpRequest(cluster.gateway().admin_port(), "GET", "/metrics").body;
  for (const auto& [id, claimed, result] :
       {std::tuple{"orch-1", "cpu", "ok"}, std::tuple{"liar", "gpu", "retry"},
        std::tuple{"liar", "gpu", "too_slow"}, std::tuple{"wrong", "cpu", "wrong"}}) {
    EXPECT_TRUE(absl::StrContains(
        metrics, absl::StrCat("switchyard_gateway_hardware_checks_total{claimed=\"", claimed,
                              "\",orchestrator=\"", id, "\",result=\"", result, "\"}")))
        << id << " " << result;
  }
  // The status page shows the finding too.
  const std::string status =
      HttpRequest(cluster.gateway().admin_port(), "GET", "/status.json").body;
  EXPECT_TRUE(absl::StrContains(status, "\"hardware_check\":\"too_slow\"")) << status;
}

// The video claims (NVDEC/NVENC) of a real orchestrator daemon: "video" advertises all three
// (test_hardware_claim) and answers with the software codecs (test_video_challenge_software:
// this machine has no GPU, and the NVDEC/NVENC path has not run on one in these tests), so the
// gateway finds every claim ok; "video-wrong" does the same but answers wrongly
// (test_challenge_fault) and is capped.
TEST(HardwareCheckTest, VideoClaimsAreCheckedWithTheVideoChallenge) {
  ClusterOptions options;
  options.orchestrators = 0;
  options.models = {};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  const std::vector<std::string> claims = {"nvdec-h264", "nvdec-hevc", "nvenc-h264"};
  st = cluster.AddOrchestrator(
      "video", {{"test_hardware_claim", claims}, {"test_video_challenge_software", true}});
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.AddOrchestrator("video-wrong", {{"test_hardware_claim", {"nvenc-h264"}},
                                               {"test_video_challenge_software", true},
                                               {"test_challenge_fault", true}});
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.WaitForOrchestrators(2, Scaled(std::chrono::seconds(30)));
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  auto stub = cluster.GatewayStub();
  const std::map<std::string, std::string> want = {{"video", "ok"}, {"video-wrong", "wrong"}};
  std::map<std::string, v1::OrchestratorInfo> infos =
      WaitForVerdicts(*stub, want, Scaled(std::chrono::seconds(120)));
  for (const auto& [id, verdict] : want) {
    ASSERT_EQ(infos.count(id), 1u) << id;
    EXPECT_EQ(infos[id].hardware_check(), verdict)
        << id << ": " << infos[id].hardware_check_detail() << "\n"
        << cluster.Logs();
  }
  const std::string& detail = infos["video"].hardware_check_detail();
  for (const char* part : {"nvdec-h264: decoded a 24-frame 320x192 h264 clip right",
                           "nvdec-hevc: decoded a 24-frame 320x192 hevc clip right",
                           "nvenc-h264: encoded 24 frames of 320x192 at", "routed as advertised"}) {
    EXPECT_TRUE(absl::StrContains(detail, part)) << part << "\n" << detail;
  }
  std::printf("HARDWARE-CHECK: video: %s\n", detail.c_str());
  EXPECT_TRUE(absl::StrContains(infos["video-wrong"].hardware_check_detail(),
                                "routed as a CPU node: at most 1 job(s) at once per model"))
      << infos["video-wrong"].hardware_check_detail();
  const std::string metrics = HttpRequest(cluster.gateway().admin_port(), "GET", "/metrics").body;
  for (const auto& [id, claimed, result] :
       {std::tuple{"video", "nvdec-h264", "ok"}, std::tuple{"video", "nvdec-hevc", "ok"},
        std::tuple{"video", "nvenc-h264", "ok"},
        std::tuple{"video-wrong", "nvenc-h264", "wrong"}}) {
    EXPECT_TRUE(absl::StrContains(
        metrics, absl::StrCat("switchyard_gateway_hardware_checks_total{claimed=\"", claimed,
                              "\",orchestrator=\"", id, "\",result=\"", result, "\"}")))
        << id << " " << claimed << " " << result;
  }
}

// Anyone who reaches an orchestrator's port can send it challenges: out-of-limit ones are refused
// naming the field, only one runs at a time, and the node keeps serving.
TEST(HardwareCheckTest, HostileChallengesAreRefusedAndOnlyOneRunsAtATime) {
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {};
  options.gateway_config = {{"verification", {{"hardware", {{"enabled", false}}}}}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  grpc::ClientContext lc;
  lc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ListCapabilitiesRequest lreq;
  v1::ListCapabilitiesResponse lresp;
  ASSERT_TRUE(cluster.GatewayStub()->ListCapabilities(&lc, lreq, &lresp).ok());
  ASSERT_EQ(lresp.orchestrators_size(), 1);
  EXPECT_EQ(lresp.orchestrators(0).hardware_check(), "unchecked");  // checks off
  auto node = node::v1::Orchestrator::NewStub(
      grpc::CreateChannel(lresp.orchestrators(0).address(), grpc::InsecureChannelCredentials()));
  auto challenge = [&](const std::string& seed, int matrices, int size,
                       node::v1::HardwareChallengeResponse* response = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    node::v1::HardwareChallengeRequest req;
    req.set_seed(seed);
    req.set_matrices(matrices);
    req.set_size(size);
    node::v1::HardwareChallengeResponse ignored;
    return node->HardwareChallenge(&ctx, req, response != nullptr ? response : &ignored);
  };
  const std::string seed(32, 's');
  struct Case {
    std::string seed;
    int matrices, size;
    const char* field;
  };
  for (const Case& c :
       {Case{"", 1, 8, "seed"}, Case{std::string(1 << 20, 'x'), 1, 8, "seed"},
        Case{seed, -1, 8, "matrices"}, Case{seed, 1 << 30, 8, "matrices"}, Case{seed, 1, 0, "size"},
        Case{seed, 1, 1 << 30, "size"}, Case{seed, 64, 1024, "matrices x size x size"}}) {
    const grpc::Status bad = challenge(c.seed, c.matrices, c.size);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_TRUE(absl::StrContains(bad.error_message(), c.field)) << bad.error_message();
  }
  // Four GPU-sized ones at once: one runs, the others are refused at once while it does (or run
  // after it, if they came later); every answer is complete.
  std::vector<grpc::Status> results(4);
  std::vector<int> digests(4, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      node::v1::HardwareChallengeResponse r;
      results[i] = challenge(seed, 8, 1024, &r);
      digests[i] = r.digests_size();
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, busy = 0;
  for (int i = 0; i < 4; ++i) {
    if (results[i].ok()) {
      ++ok;
      EXPECT_EQ(digests[i], 8);
    } else {
      ++busy;
      EXPECT_EQ(results[i].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << results[i].error_message();
      // Exactly the message by which gateways tell this refusal from gRPC's own refusal of an
      // answer over their channel's limit (hardware_checker.h, ClassifyChallengeStatus).
      EXPECT_EQ(results[i].error_message(), kChallengeBusyMessage);
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(busy, 1);
  // The node still answers.
  grpc::ClientContext sc;
  sc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  node::v1::GetStatusRequest sreq;
  node::v1::NodeStatus status;
  EXPECT_TRUE(node->GetStatus(&sc, sreq, &status).ok());
  EXPECT_TRUE(cluster.orchestrator(0).Alive());
}

// Two gateways sharing a redis-server (state.redis) and one orchestrator that advertises a GPU it
// does not have. Gateway 1 wants a GPU's answer (500 ms) and finds it too slow; gateway 2 allows
// 60 s, so its own checks find the node ok, yet it caps the node with gateway 1's finding, which
// stands until gateway 1 finds the node ok (docs/security.md "Hardware claims").
TEST(SharedHardwareCheckTest, AFindingOfOneGatewayCapsTheNodeOnTheOther) {
  TempDir redis_dir;
  auto redis = RedisServer::Start(redis_dir.path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  ClusterOptions options;
  options.orchestrators = 0;
  options.models = {};
  options.extra_gateways = 1;
  options.gateway_config = {
      {"state", {{"redis", {{"address", (*redis)->address()}, {"timeout_ms", 500}}}}}};
  options.per_gateway_config = {
      nlohmann::json::object(),
      {{"verification", {{"sample_rate", 0}, {"hardware", {{"gpu_max_ms", 60000}}}}}}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.AddOrchestrator("liar", {{"test_hardware_claim", {"cuda"}}});
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();

  // The liar as gateway `stub` lists it (empty: not listed yet).
  auto info = [](v1::Gateway::Stub* stub) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListCapabilitiesRequest req;
    v1::ListCapabilitiesResponse resp;
    EXPECT_TRUE(stub->ListCapabilities(&ctx, req, &resp).ok());
    for (const auto& o : resp.orchestrators()) {
      if (o.id() == "liar") return o;
    }
    return v1::OrchestratorInfo();
  };
  auto first = cluster.GatewayStub();
  auto second = cluster.ExtraGatewayStub(0);
  v1::OrchestratorInfo one, two;
  const auto start = std::chrono::steady_clock::now();
  const auto until = start + Scaled(std::chrono::seconds(240));
  double first_found_s = -1;  // when gateway 1 showed its finding
  bool done = false;
  for (int i = 0; i < 2000 && !done && std::chrono::steady_clock::now() < until; ++i) {
    one = info(first.get());
    two = info(second.get());
    const double now_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (first_found_s < 0 && one.hardware_check() == "too_slow") first_found_s = now_s;
    done = one.hardware_check() == "too_slow" && two.hardware_check() == "too_slow";
    if (done) {
      std::printf(
          "SHARED-HARDWARE-CHECK: gateway 1 found it too_slow %.1f s after the start, "
          "gateway 2 showed it %.1f s later\n",
          first_found_s, now_s - first_found_s);
    }
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(done) << "gateway 1: " << one.hardware_check() << " (" << one.hardware_check_detail()
                    << "); gateway 2: " << two.hardware_check() << " ("
                    << two.hardware_check_detail() << ")\n"
                    << cluster.Logs();
  EXPECT_TRUE(absl::StrContains(one.hardware_check_detail(), "claims cuda"))
      << one.hardware_check_detail();
  EXPECT_TRUE(absl::StrContains(two.hardware_check_detail(),
                                "another gateway (gateway) found it too_slow: claims cuda"))
      << two.hardware_check_detail();
  EXPECT_TRUE(absl::StrContains(two.hardware_check_detail(),
                                "routed as a CPU node: at most 1 job(s) at once per model"))
      << two.hardware_check_detail();
  std::printf("SHARED-HARDWARE-CHECK: gateway 2: %s\n", two.hardware_check_detail().c_str());

  // Gateway 2 never found the node too slow itself: its own checks say ok (or, when the node was
  // busy with gateway 1's challenge, unanswered), so the cap is gateway 1's finding.
  const std::string metrics =
      HttpRequest(cluster.extra_gateway(0).admin_port(), "GET", "/metrics").body;
  EXPECT_FALSE(absl::StrContains(metrics,
                                 "switchyard_gateway_hardware_checks_total{claimed=\"gpu\","
                                 "orchestrator=\"liar\",result=\"too_slow\"}"))
      << metrics;
  // It counts gateway 1's finding as applied, once; gateway 1, whose own finding it is, does not
  // (gateway 2 never finds the node too_slow, so gateway 1 has nothing of another's to apply).
  EXPECT_TRUE(absl::StrContains(metrics,
                                "switchyard_gateway_shared_hardware_findings_applied_total{"
                                "orchestrator=\"liar\",verdict=\"too_slow\"} 1\n"))
      << metrics;
  const std::string first_metrics =
      HttpRequest(cluster.gateway().admin_port(), "GET", "/metrics").body;
  EXPECT_FALSE(absl::StrContains(first_metrics,
                                 "switchyard_gateway_shared_hardware_findings_applied_total{"
                                 "orchestrator=\"liar\",verdict=\"too_slow\"}"))
      << first_metrics;
  const std::string status =
      HttpRequest(cluster.extra_gateway(0).admin_port(), "GET", "/status.json").body;
  EXPECT_TRUE(absl::StrContains(status, "\"hardware_check\":\"too_slow\"")) << status;
  EXPECT_TRUE(absl::StrContains(status, "another gateway (gateway)")) << status;
}

}  // namespace
}  // namespace switchyard::testing
