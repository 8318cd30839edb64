// Spot checks on a loopback cluster (issue 23; docs/security.md "Spot checks"): three nodes
// serve one deterministic upscale model (and, in the last test, transcode), one of them cheats on
// 30% of its jobs (the test-only test_output_fault), and the gateway re-runs 20% of upscale jobs on
// another node. The cheater is ejected within the bound the binomial distribution gives, the honest
// nodes never are, and the cheater's paid ledger rows become disputed ("verification"). Last, two
// gateways sharing a Redis: a cheater ejected through one is ejected on the other.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kModel[] = "ident-x1";
constexpr char kCheater[] = "cheater";
constexpr double kFaultRate = 0.3;
constexpr double kSampleRate = 0.2;
constexpr int kEjectAfter = 3;
// The bound. A job the cheater answered is caught when it is sampled (0.2) and was perturbed
// (0.3, independently: the fault's own seeded sequence): p = 0.06, and the two honest nodes
// always agree, so the tie-break blames the cheater. (It is also caught as the checker of an
// honest node's job, which only helps.) With X ~ Binomial(n, 0.06) detections in n cheater jobs,
// P[X < 3] = sum_{k<3} C(n,k) p^k (1-p)^(n-k), which is 5.8e-7 < 1e-6 at n = 320 (and 1.1e-6 at
// 310): the cheater is ejected within kBoundJobs of its jobs except with probability < 1e-6.
constexpr int kBoundJobs = 320;
// Checks run after the answer, asynchronously: the checks of the last jobs may still run when
// the bound is reached (the client sends one job at a time; at most max_in_flight checks run).
constexpr int kMaxInFlight = 16;
constexpr int kSlack = kMaxInFlight;
// With n jobs, each sampled with probability 0.2, none is checked with probability 0.8^n:
// 9.8e-7 at n = 62.
constexpr int kHonestJobsForAMatch = 62;

double BinomialBelow(int k, int n, double p) {
  double sum = 0;
  for (int i = 0; i < k; ++i) {
    sum += std::exp(std::lgamma(n + 1) - std::lgamma(i + 1) - std::lgamma(n - i + 1) +
                    i * std::log(p) + (n - i) * std::log1p(-p));
  }
  return sum;
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return ctx;
}

class SpotCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A deterministic upscale model (identity: the output is the input).
    SaveScriptModule(tmp_.path() / "ident.pt", "def forward(self, x):\n    return x * 1.0\n");
    options_.orchestrators = 2;
    options_.models = {};
    options_.extra_models = {{{"id", kModel},
                              {"pipeline", "upscale"},
                              {"path", (tmp_.path() / "ident.pt").string()},
                              {"warm", true},
                              {"device", "cpu"},
                              {"warmup_size", 0},
                              {"price_per_unit", 0.001}}};
    options_.gateway_config = {{"usage_ledger", (tmp_.path() / "usage.db").string()},
                               {"verification",
                                {{"sample_rate", 0},
                                 {"eject_after", kEjectAfter},
                                 {"max_in_flight", kMaxInFlight},
                                 {"pipelines", {{"upscale", {{"sample_rate", kSampleRate}}}}}}}};
    auto st = cluster_.Start(options_);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    st = cluster_.AddOrchestrator(
        kCheater, {{"test_output_fault", {{"rate", kFaultRate}, {"seed", 20261206}}}});
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    st = cluster_.WaitForOrchestrators(3, Scaled(std::chrono::seconds(30)));
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    stub_ = cluster_.GatewayStub();
    image_ = MakeTestImage(tmp_, 24, 16, "png");
  }

  // The candidates of ExplainRoute for the model, by node id.
  std::map<std::string, v1::RouteCandidate> Candidates() {
    v1::ExplainRouteRequest req;
    req.set_pipeline("upscale");
    req.set_model_id(kModel);
    v1::ExplainRouteResponse resp;
    auto ctx = Ctx();
    grpc::Status st = stub_->ExplainRoute(ctx.get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    std::map<std::string, v1::RouteCandidate> out;
    for (const auto& c : resp.candidates()) out[c.node_id()] = c;
    return out;
  }

  // Ejected by a spot check: for eject_seconds (a week), not the seconds of a failure streak.
  static bool Banned(const v1::RouteCandidate& c) {
    return c.filter() == "ejected" &&
           c.ejected_until_unix_ms() > absl::ToUnixMillis(absl::Now() + absl::Hours(1));
  }

  std::string Metrics() {
    return HttpRequest(cluster_.gateway().admin_port(), "GET", "/metrics").body;
  }

  TempDir tmp_;
  ClusterOptions options_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  std::string image_;
};

TEST_F(SpotCheckTest, CheaterIsEjectedWithinTheBinomialBoundAndHonestNodesNeverAre) {
  if (HasFatalFailure()) return;
  const double p = kFaultRate * kSampleRate;
  ASSERT_LT(BinomialBelow(kEjectAfter, kBoundJobs, p), 1e-6);
  ASSERT_GT(BinomialBelow(kEjectAfter, kBoundJobs - 10, p), 1e-6);  // the bound is tight
  ASSERT_LT(std::pow(1 - kSampleRate, kHonestJobsForAMatch), 1e-6);

  std::map<std::string, int> jobs;  // by the node that answered
  bool banned = false;
  int total = 0;
  const auto deadline = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(60));
  // Bounded: the cheater's jobs (the bound plus the slack), all jobs, and time.
  while (!banned && jobs[kCheater] <= kBoundJobs + kSlack && total < 3000 &&
         std::chrono::steady_clock::now() < deadline) {
    v1::UpscaleRequest req;
    req.set_model_id(kModel);
    req.set_image(image_);
    v1::ImageResponse resp;
    auto ctx = Ctx();
    grpc::Status st = stub_->Upscale(ctx.get(), req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
    ++total;
    ++jobs[resp.job().orchestrator()];
    auto candidates = Candidates();
    banned = candidates.count(kCheater) != 0 && Banned(candidates[kCheater]);
    for (const auto& [id, c] : candidates) {
      if (id != kCheater) {
        ASSERT_FALSE(Banned(c)) << id << " (honest) was ejected";
      }
    }
  }
  ASSERT_TRUE(banned) << "the cheater was not ejected after " << jobs[kCheater] << " of its jobs ("
                      << total << " in all)\n"
                      << Metrics() << cluster_.Logs();
  EXPECT_LE(jobs[kCheater], kBoundJobs + kSlack);
  std::cerr << "cheater ejected after " << total << " jobs, " << jobs[kCheater] << " of them its\n";

  // The cheater gets no more jobs; the honest nodes were never blamed. At least 20 more jobs,
  // and enough that the honest nodes answered kHonestJobsForAMatch in all: routing decides how
  // they share the jobs (one may get nearly all of them), and each job is sampled with
  // probability 0.2, so a node that answered n jobs has no spot check at all with probability
  // 0.8^n (CI once saw a node with one job and no "match" series).
  int honest_jobs = total - jobs[kCheater];
  const int more_jobs = std::max(20, kHonestJobsForAMatch - honest_jobs);
  for (int i = 0; i < more_jobs; ++i) {
    v1::UpscaleRequest req;
    req.set_model_id(kModel);
    req.set_image(image_);
    v1::ImageResponse resp;
    auto ctx = Ctx();
    ASSERT_TRUE(stub_->Upscale(ctx.get(), req, &resp).ok());
    EXPECT_NE(resp.job().orchestrator(), kCheater);
    ++jobs[resp.job().orchestrator()];
    ++honest_jobs;
  }
  total += more_jobs;
  ASSERT_GE(honest_jobs, kHonestJobsForAMatch);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last checks end
  const std::string metrics = Metrics();
  EXPECT_GE(PrometheusValue(metrics, absl::StrCat("switchyard_gateway_verification_total{node=\"",
                                                  kCheater, "\",result=\"mismatch\"}")),
            kEjectAfter)
      << metrics;
  double honest_matches = 0;
  for (const auto& [id, c] : Candidates()) {
    if (id == kCheater) continue;
    EXPECT_FALSE(Banned(c)) << id;
    EXPECT_EQ(PrometheusValue(metrics, absl::StrCat("switchyard_gateway_verification_total{node=\"",
                                                    id, "\",result=\"mismatch\"}")),
              -1)
        << id << " was blamed\n"
        << metrics;
    const double matches = PrometheusValue(
        metrics,
        absl::StrCat("switchyard_gateway_verification_total{node=\"", id, "\",result=\"match\"}"));
    honest_matches += std::max(0.0, matches);
    // A node that answered that many jobs had some checked (all but surely) and they matched.
    if (jobs[id] >= kHonestJobsForAMatch) {
      EXPECT_GT(matches, 0) << id << " answered " << jobs[id] << " jobs\n" << metrics;
    }
  }
  EXPECT_GT(honest_matches, 0) << "the honest nodes answered " << honest_jobs << " jobs\n"
                               << metrics;

  // The ledger: the cheater's rows are disputed ("verification", nothing paid); at most one
  // (a job it was running when it was ejected, recorded after the dispute) is paid. The honest
  // nodes' rows are paid.
  std::vector<v1::UsageRow> all;
  v1::ListUsageRowsRequest req;
  req.set_page_size(1000);
  for (int page = 0; page < 10; ++page) {
    v1::ListUsageRowsResponse rows;
    auto ctx = Ctx();
    ASSERT_TRUE(stub_->ListUsageRows(ctx.get(), req, &rows).ok());
    all.insert(all.end(), rows.rows().begin(), rows.rows().end());
    if (rows.next_page_token().empty()) break;
    req.set_page_token(rows.next_page_token());
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(total));
  int cheater_rows = 0, cheater_disputed = 0, honest_rows = 0;
  for (const auto& row : all) {
    if (row.orchestrator() == kCheater) {
      ++cheater_rows;
      if (row.disputed() && absl::StrContains(row.dispute(), "verification")) {
        EXPECT_EQ(row.amount(), 0);
        ++cheater_disputed;
      }
    } else {
      ++honest_rows;
      EXPECT_FALSE(absl::StrContains(row.dispute(), "verification")) << row.DebugString();
      EXPECT_FALSE(row.disputed()) << row.DebugString();
    }
  }
  // One row for each job the cheater answered. Routing may have given it none: then it was
  // caught as the checker of honest nodes' jobs (CI once saw "ejected after 72 jobs, 0 of them
  // its"), and there is nothing of its to dispute.
  EXPECT_EQ(cheater_rows, jobs[kCheater]);
  EXPECT_GE(cheater_disputed, cheater_rows - 1) << cheater_rows;
  EXPECT_EQ(honest_rows, total - jobs[kCheater]);
}

// Transcodes (renditions compared as decoded frames): two honest nodes and one that cuts every
// rendition short (test_output_fault at rate 1), every transcode checked. The cheater is blamed
// on each check it takes part in (as the node that answered or as the checker) and ejected after
// eject_after of them; the honest nodes agree with each other and are never blamed. A stream's
// segment (stream_id set) is not checked: its session keeps state on its node.
TEST(TranscodeSpotCheckTest, ACheatingTranscoderIsEjectedAndHonestOnesAgree) {
  constexpr int kTranscodeEjectAfter = 2;
  TempDir tmp;
  ClusterOptions options;
  options.orchestrators = 2;
  options.models = {};
  options.gateway_config = {{"verification",
                             {{"sample_rate", 0},
                              {"eject_after", kTranscodeEjectAfter},
                              {"pipelines", {{"transcode", {{"sample_rate", 1}}}}}}}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.AddOrchestrator(kCheater, {{"test_output_fault", {{"rate", 1}, {"seed", 7}}}});
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.WaitForOrchestrators(3, Scaled(std::chrono::seconds(30)));
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  auto stub = cluster.GatewayStub();

  SegmentSpec spec;
  spec.width = 96;
  spec.height = 64;
  spec.fps = "15";
  spec.seconds = 1.0;
  v1::TranscodeRequest request;
  request.set_segment(MakeTestSegment(tmp, spec));
  for (auto [w, h] : {std::pair{48, 32}, std::pair{64, 48}}) {
    auto* rendition = request.add_renditions();
    rendition->set_width(w);
    rendition->set_height(h);
    rendition->set_bitrate_bps(200000);
    rendition->set_preset("ultrafast");
  }
  auto metrics = [&] {
    return HttpRequest(cluster.gateway().admin_port(), "GET", "/metrics").body;
  };
  auto series = [](const std::string& node, const std::string& result) {
    return absl::StrCat("switchyard_gateway_verification_total{node=\"", node, "\",result=\"",
                        result, "\"}");
  };
  auto cheater_banned = [&] {
    v1::ExplainRouteRequest req;
    req.set_pipeline("transcode");
    req.set_model_id("libx264");
    v1::ExplainRouteResponse resp;
    auto ctx = Ctx();
    EXPECT_TRUE(stub->ExplainRoute(ctx.get(), req, &resp).ok());
    for (const auto& c : resp.candidates()) {
      if (c.node_id() != kCheater) {
        EXPECT_NE(c.filter(), "ejected") << c.node_id() << " (honest) was ejected";
      } else if (c.filter() == "ejected" &&
                 c.ejected_until_unix_ms() > absl::ToUnixMillis(absl::Now() + absl::Hours(1))) {
        return true;
      }
    }
    return false;
  };

  // Every check the cheater takes part in blames it (three nodes: the third breaks the tie), so
  // it is ejected after at most eject_after checks of its own plus those in flight.
  int jobs = 0;
  bool banned = false;
  const auto deadline = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(90));
  while (!banned && jobs < 40 && std::chrono::steady_clock::now() < deadline) {
    v1::TranscodeResponse response;
    auto ctx = Ctx();
    grpc::Status status = stub->Transcode(ctx.get(), request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << cluster.Logs();
    ++jobs;
    // Checks run after the answer: give this one time to end before the next job.
    for (int i = 0; i < 50 && !(banned = cheater_banned()); ++i) {
      const std::string m = metrics();
      double ended = 0;
      for (const char* result : {"match", "mismatch", "unresolved", "error"}) {
        for (const char* node : {"orch-1", "orch-2", kCheater}) {
          ended += std::max(0.0, PrometheusValue(m, series(node, result)));
        }
      }
      if (ended >= jobs) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const std::string m = metrics();
  ASSERT_TRUE(banned) << "the cheater was not ejected after " << jobs << " transcodes\n"
                      << m << cluster.Logs();
  EXPECT_GE(PrometheusValue(m, series(kCheater, "mismatch")), kTranscodeEjectAfter) << m;
  double honest_matches = 0;
  for (const char* node : {"orch-1", "orch-2"}) {
    EXPECT_EQ(PrometheusValue(m, series(node, "mismatch")), -1) << node << " was blamed\n" << m;
    EXPECT_EQ(PrometheusValue(m, series(node, "unresolved")), -1) << node << "\n" << m;
    honest_matches += std::max(0.0, PrometheusValue(m, series(node, "match")));
  }
  // Each check blames the cheater or finds two honest nodes agreeing; a blame counts a "match"
  // for the honest node of the pair too.
  EXPECT_GT(honest_matches, 0) << m;

  // After the ejection only honest nodes answer, and they agree: each job's check is a match.
  auto honest = [&](const std::string& text, const char* result) {
    return std::max(0.0, PrometheusValue(text, series("orch-1", result))) +
           std::max(0.0, PrometheusValue(text, series("orch-2", result)));
  };
  // Every check that ended, over all nodes and results.
  auto ended_checks = [&] {
    double sum = 0;
    for (absl::string_view line : absl::StrSplit(metrics(), '\n')) {
      if (!absl::ConsumePrefix(&line, "switchyard_gateway_verification_total{")) continue;
      double v = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) sum += v;
    }
    return sum;
  };
  // Waits until no check ends for half a second (bounded): the last checks of the cheater's
  // jobs may still run.
  auto settle = [&] {
    double last = ended_checks();
    for (int i = 0; i < 20; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const double now = ended_checks();
      if (now == last) return now;
      last = now;
    }
    return last;
  };
  settle();
  const double before = honest(metrics(), "match");
  for (int i = 0; i < 3; ++i) {
    v1::TranscodeResponse response;
    auto ctx = Ctx();
    ASSERT_TRUE(stub->Transcode(ctx.get(), request, &response).ok());
    EXPECT_NE(response.job().orchestrator(), kCheater);
  }
  const double total = settle();
  const std::string last = metrics();
  EXPECT_EQ(honest(last, "match"), before + 3) << last;
  EXPECT_EQ(honest(last, "mismatch"), 0) << last;
  // A stream's segment is not checked: no check ends after it.
  v1::TranscodeRequest streamed = request;
  streamed.set_stream_id("spot-check-stream");
  {
    v1::TranscodeResponse response;
    auto ctx = Ctx();
    ASSERT_TRUE(stub->Transcode(ctx.get(), streamed, &response).ok());
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));  // a check of it would have ended
  EXPECT_EQ(ended_checks(), total) << metrics();
}

// Two gateways sharing verdicts through a real redis-server (state.redis; docs/security.md
// "Spot checks", "Several gateways"): a cheater (every upscale wrong) caught by spot checks on
// gateway 1 is ejected on gateway 2 as well, which never sent it a job, within a few poll
// intervals (2 s each). Every wait is bounded.
TEST(SharedSpotCheckTest, ACheaterEjectedThroughOneGatewayIsEjectedOnTheOther) {
  TempDir tmp, redis_dir;
  auto redis = RedisServer::Start(redis_dir.path());
  ASSERT_TRUE(redis.ok()) << redis.status();
  SaveScriptModule(tmp.path() / "ident.pt", "def forward(self, x):\n    return x * 1.0\n");
  ClusterOptions options;
  options.orchestrators = 2;
  options.models = {};
  options.extra_gateways = 1;
  options.extra_models = {{{"id", kModel},
                           {"pipeline", "upscale"},
                           {"path", (tmp.path() / "ident.pt").string()},
                           {"warm", true},
                           {"device", "cpu"},
                           {"warmup_size", 0},
                           {"price_per_unit", 0.001}}};
  options.gateway_config = {
      {"state", {{"redis", {{"address", (*redis)->address()}, {"timeout_ms", 500}}}}},
      {"verification",
       {{"sample_rate", 0},
        {"eject_after", 2},
        {"pipelines", {{"upscale", {{"sample_rate", 1}}}}}}}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.AddOrchestrator(kCheater, {{"test_output_fault", {{"rate", 1}, {"seed", 11}}}});
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  st = cluster.WaitForOrchestrators(3, Scaled(std::chrono::seconds(30)));
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  auto first = cluster.GatewayStub();
  auto second = cluster.ExtraGatewayStub(0);
  const std::string image = MakeTestImage(tmp, 24, 16, "png");

  // The cheater as gateway `stub` routes it: banned by a spot check (for eject_seconds, a week)?
  // Empty when the gateway does not list it.
  auto cheater_filter = [&](v1::Gateway::Stub* stub, bool* banned) {
    v1::ExplainRouteRequest req;
    req.set_pipeline("upscale");
    req.set_model_id(kModel);
    v1::ExplainRouteResponse resp;
    auto ctx = Ctx();
    const grpc::Status status = stub->ExplainRoute(ctx.get(), req, &resp);
    EXPECT_TRUE(status.ok()) << status.error_message();
    for (const auto& c : resp.candidates()) {
      if (c.node_id() == kCheater) {
        *banned = c.filter() == "ejected" &&
                  c.ejected_until_unix_ms() > absl::ToUnixMillis(absl::Now() + absl::Hours(1));
        return std::string(c.filter().empty() ? "routable" : c.filter());
      }
    }
    *banned = false;
    return std::string();
  };
  // Gateway 2 knows the cheater (registered there too) before anything happens.
  bool banned = false;
  std::string seen;
  for (int i = 0; i < 100 && seen.empty(); ++i) {
    seen = cheater_filter(second.get(), &banned);
    if (seen.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(seen.empty()) << "gateway 2 never listed the cheater\n" << cluster.Logs();
  ASSERT_FALSE(banned);

  // Jobs through gateway 1 only, every one checked: the cheater is blamed on each check it takes
  // part in and ejected at the second.
  int jobs = 0;
  const auto deadline = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(60));
  while (!banned && jobs < 200 && std::chrono::steady_clock::now() < deadline) {
    v1::UpscaleRequest req;
    req.set_model_id(kModel);
    req.set_image(image);
    v1::ImageResponse resp;
    auto ctx = Ctx();
    const grpc::Status status = first->Upscale(ctx.get(), req, &resp);
    ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << cluster.Logs();
    ++jobs;
    cheater_filter(first.get(), &banned);
  }
  ASSERT_TRUE(banned) << "gateway 1 did not eject the cheater after " << jobs << " jobs\n"
                      << cluster.Logs();

  // Gateway 2 ejects it too, for the same week, with no job of its own (bounded: 15 s, a few
  // of its 2 s polls).
  bool banned_there = false;
  for (int i = 0; i < 150 && !banned_there; ++i) {
    cheater_filter(second.get(), &banned_there);
    if (!banned_there) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(banned_there) << "gateway 2 still routes the cheater\n" << cluster.Logs();
}

}  // namespace
}  // namespace switchyard::testing
