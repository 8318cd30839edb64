// Three real gateways share stream affinity through a real redis-server (config state.redis;
// docs/operations.md "Several gateways"): the segments of one transcode stream, sent round-robin
// to the three gateways, run on one orchestrator; when that orchestrator dies the stream moves
// once, for all gateways, and stays; with Redis stopped mid-stream the segments still run (each
// gateway follows its own copy of the table). Every wait is bounded.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/media/segmenter.h"
#include "common/status.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"

namespace switchyard::testing {
namespace {

constexpr int kGateways = 3;
constexpr int kRounds = 9;  // per phase; each round sends one segment of each stream
constexpr int kPhases = 3;

class SharedAffinityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start(redis_dir_.path());
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *std::move(redis);
    ClusterOptions options;
    options.orchestrators = 3;
    options.models = {};  // transcoding only
    options.extra_gateways = kGateways - 1;
    options.gateway_config = {
        {"state", {{"redis", {{"address", redis_->address()}, {"timeout_ms", 200}}}}}};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << cluster_.Logs();
    stubs_.push_back(cluster_.GatewayStub());
    for (int g = 0; g + 1 < kGateways; ++g) stubs_.push_back(cluster_.ExtraGatewayStub(g));
    // Consecutive segments of one generated stream (continuing timestamps: a session drops
    // frames whose timestamps go back), cut at its keyframes.
    SegmentSpec spec;
    spec.width = 160;
    spec.height = 90;
    spec.seconds = 0.5 * kPhases * kRounds;
    spec.gop_seconds = 0.5;
    const auto path = media_dir_.path() / "stream.ts";
    WriteFile(path, MakeTestSegment(media_dir_, spec));
    auto split = media::SplitIntoSegments(path.string(), 0.5,
                                          [&](std::string segment, const media::SegmentInfo&) {
                                            segments_.push_back(std::move(segment));
                                            return absl::OkStatus();
                                          });
    ASSERT_TRUE(split.ok()) << split;
    ASSERT_GE(segments_.size(), static_cast<size_t>(kPhases * kRounds));
  }

  // One segment of `stream` through gateway `g`: the orchestrator that ran it, or "error: ...".
  std::string Send(int g, const std::string& stream, int64_t sequence) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::TranscodeRequest req;
    req.set_segment(segments_.at(static_cast<size_t>(sequence)));
    req.set_stream_id(stream);
    req.set_sequence(sequence);
    auto* r = req.add_renditions();
    r->set_height(60);
    r->set_bitrate_bps(200000);
    r->set_preset("ultrafast");
    v1::TranscodeResponse resp;
    const grpc::Status st = stubs_.at(g)->Transcode(&ctx, req, &resp);
    if (!st.ok()) {
      return absl::StrCat("error: ", GrpcCodeName(st.error_code()), " ", st.error_message());
    }
    // The segment was transcoded, not only routed (a session that dropped its frames would say
    // so here).
    if (resp.renditions_size() != 1 || resp.renditions(0).frames() <= 0) {
      return absl::StrCat("error: no frames from ", resp.job().orchestrator());
    }
    return resp.job().orchestrator();
  }

  // kRounds rounds: stream "cam-a" to gateway round % 3 and "cam-b" to the next one. Returns
  // the nodes each stream's segments ran on, in order.
  std::map<std::string, std::vector<std::string>> Phase(int64_t* sequence) {
    std::map<std::string, std::vector<std::string>> ran;
    for (int round = 0; round < kRounds; ++round) {
      const int64_t seq = (*sequence)++;
      ran["cam-a"].push_back(Send(round % kGateways, "cam-a", seq));
      ran["cam-b"].push_back(Send((round + 1) % kGateways, "cam-b", seq));
    }
    return ran;
  }

  static std::string Describe(const std::vector<std::string>& nodes) {
    std::map<std::string, int> count;
    for (const auto& n : nodes) count[n]++;
    std::string out;
    for (const auto& [node, n] : count)
      absl::StrAppend(&out, out.empty() ? "" : ", ", node, ": ", n);
    return out;
  }

  // Every entry equal and a node (not an error).
  static bool OneNode(const std::vector<std::string>& nodes) {
    if (nodes.empty() || absl::StartsWith(nodes[0], "error")) return false;
    for (const auto& n : nodes) {
      if (n != nodes[0]) return false;
    }
    return true;
  }

  TempDir redis_dir_;
  TempDir media_dir_;
  std::unique_ptr<RedisServer> redis_;
  LocalCluster cluster_;
  std::vector<std::unique_ptr<v1::Gateway::Stub>> stubs_;
  std::vector<std::string> segments_;
};

TEST_F(SharedAffinityTest, AStreamRunsOnOneOrchestratorWhicheverGatewayReceivesIt) {
  int64_t sequence = 0;
  // Phase 1: both streams, round-robin over the three gateways. Without a shared table each
  // gateway would place each stream on its own pick (three orchestrators to choose from).
  auto before = Phase(&sequence);
  for (const auto& [stream, nodes] : before) {
    std::printf("SHARED-AFFINITY: %s, %d segments round-robin on %d gateways: %s\n", stream.c_str(),
                kRounds, kGateways, Describe(nodes).c_str());
    EXPECT_TRUE(OneNode(nodes)) << stream << ": " << Describe(nodes) << "\n" << cluster_.Logs();
  }
  ASSERT_TRUE(OneNode(before["cam-a"]));
  const std::string home = before["cam-a"][0];

  // Phase 2: cam-a's orchestrator dies (kill -9). The next segment fails over on whichever
  // gateway gets it, the stream moves, and every gateway follows it to the same new node.
  int killed = -1;
  ASSERT_TRUE(absl::SimpleAtoi(home.substr(home.rfind('-') + 1), &killed)) << home;
  cluster_.orchestrator(static_cast<size_t>(killed - 1)).Kill();
  auto after = Phase(&sequence);
  for (const auto& [stream, nodes] : after) {
    std::printf("SHARED-AFFINITY: after %s was killed, %s: %s\n", home.c_str(), stream.c_str(),
                Describe(nodes).c_str());
  }
  EXPECT_TRUE(OneNode(after["cam-a"])) << Describe(after["cam-a"]) << "\n" << cluster_.Logs();
  EXPECT_NE(after["cam-a"][0], home);
  EXPECT_TRUE(OneNode(after["cam-b"])) << Describe(after["cam-b"]) << "\n" << cluster_.Logs();
  const std::string moved_to = after["cam-a"][0];

  // Phase 3: Redis stops mid-stream. Affinity is a preference: every segment still runs, and
  // each gateway follows its own copy of the stream's entry, so the stream stays put.
  redis_->Stop();
  auto without = Phase(&sequence);
  for (const auto& [stream, nodes] : without) {
    std::printf("SHARED-AFFINITY: Redis stopped, %s: %s\n", stream.c_str(),
                Describe(nodes).c_str());
    for (const auto& n : nodes) EXPECT_FALSE(absl::StartsWith(n, "error")) << stream << ": " << n;
  }
  EXPECT_TRUE(OneNode(without["cam-a"])) << Describe(without["cam-a"]);
  EXPECT_EQ(without["cam-a"][0], moved_to);
  // The fallback is counted (the first gateway's /metrics on its admin port).
  const HttpResult metrics = HttpRequest(cluster_.gateway().admin_port(), "GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  const std::string name = "switchyard_gateway_affinity_store_fallbacks_total ";
  const size_t at = metrics.body.find("\n" + name);
  ASSERT_NE(at, std::string::npos) << metrics.body.substr(0, 2000);
  double fallbacks = 0;
  const size_t from = at + 1 + name.size();
  ASSERT_TRUE(absl::SimpleAtod(metrics.body.substr(from, metrics.body.find('\n', from) - from),
                               &fallbacks));
  EXPECT_GE(fallbacks, 2 * kRounds / kGateways);  // two calls per segment it received
  EXPECT_TRUE(absl::StrContains(cluster_.gateway().Log(), "the shared affinity store cannot"));
}

}  // namespace
}  // namespace switchyard::testing
