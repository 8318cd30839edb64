// Spot checks on a loopback cluster (issue 23; docs/security.md "Spot checks"): three nodes
// serve one deterministic upscale model, one of them cheats on
// 30% of its jobs (the test-only test_output_fault), and the gateway re-runs 20% of upscale jobs on
// another node. The cheater is ejected within the bound the binomial distribution gives, the honest
// nodes never are, and the cheater's paid ledger rows become disputed ("verification").
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
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
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
  EXPECT_GT(cheater_rows, 0);
  EXPECT_GE(cheater_disputed, cheater_rows - 1) << cheater_rows;
  EXPECT_GT(honest_rows, 0);
}

}  // namespace
}  // namespace switchyard::testing
