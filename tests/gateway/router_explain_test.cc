// Router::Explain (one test per filter reason), the missed-job counters Pick keeps in NodeStats,
// and the MissedJobs report built from them (gateway/routing/missed_jobs.h).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "gateway/router_test_util.h"
#include "gateway/routing/missed_jobs.h"
#include "gateway/routing/node_health.h"
#include "gateway/routing/router.h"

namespace switchyard::gateway {
namespace {

using namespace router_test;  // NOLINT(build/namespaces): the shared fixtures
using ::testing::HasSubstr;

// The explanation of `id` (fails the test when absent).
CandidateExplanation Of(const RouteExplanation& x, const std::string& id) {
  for (const auto& c : x.candidates) {
    if (c.node_id == id) return c;
  }
  ADD_FAILURE() << "no candidate " << id;
  return {};
}

CapSpec Priced(double price, int capacity = 2, int in_use = 0) {
  CapSpec c = Ready(capacity, in_use);
  c.price = price;
  return c;
}

TEST(RouterExplainTest, EligibleNodesHaveScorePartsAndOneFavourite) {
  FakeClock clock;
  Router router(RouterOptions{}, Constant(0), clock.Fn());
  Snapshot snap = Snap({Node("idle", {Ready(4, 0)}), Node("half", {Ready(4, 2)})});
  const RouteExplanation x = router.Explain(snap, Request());
  ASSERT_EQ(x.candidates.size(), 2u);
  EXPECT_EQ(x.offering, 2);
  EXPECT_EQ(x.eligible, 2);
  EXPECT_EQ(x.candidates[0].node_id, "idle");  // the favourite first
  EXPECT_TRUE(x.candidates[0].best);
  EXPECT_FALSE(x.candidates[1].best);
  const CandidateExplanation half = Of(x, "half");
  EXPECT_EQ(half.tier, RouteTier::kWarmRoom);
  EXPECT_EQ(half.filter, RouteFilter::kNone);
  EXPECT_DOUBLE_EQ(half.load, 0.5);
  EXPECT_DOUBLE_EQ(half.score, half.latency_ms * 1.5);
  EXPECT_EQ(half.model_state, "ready");
  EXPECT_EQ(half.address, "127.0.0.1:1");
  EXPECT_TRUE(half.reason.empty());
}

TEST(RouterExplainTest, PriceOverCap) {
  Router router(Constant(0));
  Snapshot snap = Snap({Node("cheap", {Priced(1)}), Node("dear", {Priced(3)})});
  RouteRequest req = Request();
  req.max_price_per_unit = 2;
  const CandidateExplanation dear = Of(router.Explain(snap, req), "dear");
  EXPECT_EQ(dear.tier, RouteTier::kFiltered);
  EXPECT_EQ(dear.filter, RouteFilter::kOverPrice);
  EXPECT_EQ(RouteFilterName(dear.filter), "price_over_cap");
  EXPECT_THAT(dear.reason, HasSubstr("asks more than the price cap (3 > 2 per unit)"));
  EXPECT_DOUBLE_EQ(dear.price_per_unit, 3);
  EXPECT_TRUE(Of(router.Explain(snap, req), "cheap").best);
}

TEST(RouterExplainTest, InvalidPrice) {
  Router router(Constant(0));
  Snapshot snap = Snap({Node("nan", {Priced(std::nan(""))})});
  const CandidateExplanation c = Of(router.Explain(snap, Request()), "nan");
  EXPECT_EQ(c.filter, RouteFilter::kInvalidPrice);
  EXPECT_THAT(c.reason, HasSubstr("not a finite number"));
}

TEST(RouterExplainTest, NoRoomToLoad) {
  Router router(Constant(0));
  CapSpec cold = WithState(MODEL_STATE_COLD);
  cold.no_room = true;
  Snapshot snap = Snap({Node("full-memory", {cold})});
  const RouteExplanation x = router.Explain(snap, Request());
  const CandidateExplanation c = Of(x, "full-memory");
  EXPECT_EQ(c.filter, RouteFilter::kNoRoomToLoad);
  EXPECT_EQ(RouteFilterName(c.filter), "no_room");
  EXPECT_EQ(c.reason, "has no memory to load it now");
  EXPECT_EQ(c.model_state, "cold");
  EXPECT_EQ(x.eligible, 0);
}

TEST(RouterExplainTest, EjectedUntilWhen) {
  FakeClock clock;
  RouterOptions options;
  options.eject_after_failures = 1;
  options.eject_base = absl::Seconds(5);
  Router router(options, Constant(0), clock.Fn());
  auto bad = Node("bad", {Ready(2, 0)});
  Snapshot snap = Snap({bad, Node("good", {Ready(2, 0)})});
  PickId(router, snap, Request());  // the router learns how many nodes there are (ejection cap)
  router.ReportAttempt(*bad, "esrgan", AttemptOutcome::kNodeFailure, absl::Seconds(1));
  const CandidateExplanation c = Of(router.Explain(snap, Request()), "bad");
  EXPECT_EQ(c.filter, RouteFilter::kEjected);
  ASSERT_TRUE(c.ejected_until.has_value());
  EXPECT_EQ(*c.ejected_until, clock.now + absl::Seconds(5));
  EXPECT_THAT(c.reason, HasSubstr("is ejected after repeated failures until 1970-01-12T13:46:45"));
  clock.now += absl::Seconds(6);  // the ejection is over
  EXPECT_EQ(Of(router.Explain(snap, Request()), "bad").filter, RouteFilter::kNone);
}

TEST(RouterExplainTest, Draining) {
  Router router(Constant(0));
  Snapshot snap = Snap({Node("leaving", {Ready(2, 0)}, /*draining=*/true)});
  const CandidateExplanation c = Of(router.Explain(snap, Request()), "leaving");
  EXPECT_EQ(c.filter, RouteFilter::kDraining);
  EXPECT_EQ(c.reason, "is draining");
}

TEST(RouterExplainTest, ModelFailedWithItsError) {
  Router router(Constant(0));
  CapSpec failed = WithState(MODEL_STATE_FAILED);
  failed.error = "weights file missing";
  Snapshot snap = Snap({Node("broken", {failed})});
  const CandidateExplanation c = Of(router.Explain(snap, Request()), "broken");
  EXPECT_EQ(c.filter, RouteFilter::kModelFailed);
  EXPECT_EQ(c.reason, "failed to load it: weights file missing");
  EXPECT_EQ(c.model_state, "failed");
}

TEST(RouterExplainTest, NotOfferingIt) {
  Router router(Constant(0));
  CapSpec other = Ready(2, 0);
  other.model = "waifu2x";
  Snapshot snap = Snap({Node("serves", {Ready(2, 0)}), Node("elsewhere", {other})});
  const RouteExplanation x = router.Explain(snap, Request());
  EXPECT_EQ(x.offering, 1);
  ASSERT_EQ(x.candidates.size(), 2u);
  EXPECT_EQ(x.candidates.back().node_id, "elsewhere");  // last
  EXPECT_EQ(x.candidates.back().filter, RouteFilter::kNotOffered);
  EXPECT_EQ(x.candidates.back().reason, "does not offer it (upscale 'esrgan')");
}

TEST(RouterExplainTest, ColdLoadableAndFullTiers) {
  Router router(Constant(0));
  CapSpec cold = WithState(MODEL_STATE_COLD);
  cold.free_memory_mb = 4096;
  Snapshot snap = Snap({Node("full", {Ready(1, 1)}), Node("cold", {cold})});
  const RouteExplanation x = router.Explain(snap, Request());
  EXPECT_EQ(Of(x, "cold").tier, RouteTier::kCold);
  EXPECT_TRUE(Of(x, "cold").best);  // a cold node that can load it comes before a queue
  EXPECT_EQ(Of(x, "cold").free_memory_mb, 4096);
  EXPECT_EQ(Of(x, "full").tier, RouteTier::kWarmFull);
  EXPECT_EQ(x.candidates[0].node_id, "cold");
  EXPECT_EQ(router.Explain(snap, Request()).eligible, 2);
}

TEST(RouterExplainTest, ExplainCountsNothing) {
  FakeClock clock;
  Router router(RouterOptions{}, Constant(0), clock.Fn());
  auto a = Node("a", {Priced(1)});
  Snapshot snap = Snap({a, Node("b", {Priced(3)})});
  RouteRequest req = Request();
  req.max_price_per_unit = 2;
  router.Explain(snap, req);
  const auto counts = a->stats->CountsOf(RouteKey("upscale", "esrgan"), clock.now);
  EXPECT_EQ(counts.won_total, 0);
}

// --- Missed-job counters (Pick) ---

TEST(MissedJobsTest, PickCountsWhyEachOtherNodeLost) {
  FakeClock clock;
  RouterOptions options;
  options.eject_after_failures = 1;
  Router router(options, Constant(0), clock.Fn());
  auto winner = Node("winner", {Priced(1, 4, 0)});
  auto dear = Node("dear", {Priced(5)});
  auto busy = Node("busy", {Priced(1, 1, 1)});
  CapSpec cold_spec = WithState(MODEL_STATE_COLD);
  auto cold = Node("cold", {cold_spec});
  auto draining = Node("draining", {Priced(1)}, /*draining=*/true);
  auto ejected = Node("ejected", {Priced(1)});
  CapSpec failed_spec = WithState(MODEL_STATE_FAILED);
  auto failed = Node("failed", {failed_spec});
  Snapshot snap = Snap({winner, dear, busy, cold, draining, ejected, failed});
  RouteRequest req = Request();
  req.max_price_per_unit = 2;
  // Before the ejection: "ejected" has room too and loses the two choices (equal scores).
  EXPECT_EQ(PickId(router, snap, req), "winner");
  router.ReportAttempt(*ejected, "esrgan", AttemptOutcome::kNodeFailure, absl::Seconds(1));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PickId(router, snap, req), "winner");

  const uint64_t route = RouteKey("upscale", "esrgan");
  auto missed = [&](const std::shared_ptr<const NodeView>& n, MissReason r) {
    return n->stats->CountsOf(route, clock.now).missed_total[static_cast<int>(r)];
  };
  EXPECT_EQ(winner->stats->CountsOf(route, clock.now).won_total, 4);
  EXPECT_EQ(winner->stats->CountsOf(route, clock.now).won_last_hour, 4);
  EXPECT_EQ(missed(winner, MissReason::kSlower), 0);
  EXPECT_EQ(missed(dear, MissReason::kPrice), 4);
  EXPECT_EQ(missed(busy, MissReason::kBusy), 4);
  EXPECT_EQ(missed(cold, MissReason::kCold), 4);
  EXPECT_EQ(missed(draining, MissReason::kDraining), 4);
  EXPECT_EQ(missed(ejected, MissReason::kSlower), 1);
  EXPECT_EQ(missed(ejected, MissReason::kEjected), 3);
  EXPECT_EQ(missed(failed, MissReason::kModelFailed), 4);
  EXPECT_EQ(dear->stats->CountsOf(route, clock.now).missed_last_hour[0], 4);
  clock.now += absl::Hours(2);  // out of the window, still in the totals
  EXPECT_EQ(dear->stats->CountsOf(route, clock.now).missed_last_hour[0], 0);
  EXPECT_EQ(missed(dear, MissReason::kPrice), 4);
}

TEST(MissedJobsTest, TheLoserOfTwoChoicesWasSlower) {
  FakeClock clock;
  Router router(RouterOptions{}, Script({0, 0}), clock.Fn());
  auto a = Node("a", {Ready(4, 0)});
  auto b = Node("b", {Ready(4, 3)});
  Snapshot snap = Snap({a, b});
  EXPECT_EQ(PickId(router, snap, Request()), "a");
  const uint64_t route = RouteKey("upscale", "esrgan");
  EXPECT_EQ(
      b->stats->CountsOf(route, clock.now).missed_total[static_cast<int>(MissReason::kSlower)], 1);
}

TEST(MissedJobsTest, ReportHasCountsAndTheMedianWinningPrice) {
  FakeClock clock;
  Router router(RouterOptions{}, Constant(0), clock.Fn());
  auto cheap = Node("cheap", {Priced(1)});
  auto dear = Node("dear", {Priced(5)});
  Snapshot snap = Snap({cheap, dear});
  RouteRequest req = Request();
  req.max_price_per_unit = 2;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(PickId(router, snap, req), "cheap");

  node::v1::MissedJobs report;
  ASSERT_TRUE(BuildMissedJobs(snap, "dear", "gw-1", clock.now, &report));
  EXPECT_EQ(report.gateway_id(), "gw-1");
  ASSERT_EQ(report.routes_size(), 1);
  const auto& r = report.routes(0);
  EXPECT_EQ(r.pipeline(), "upscale");
  EXPECT_EQ(r.model_id(), "esrgan");
  EXPECT_EQ(r.won_total(), 0);
  ASSERT_EQ(r.missed_size(), 1);
  EXPECT_EQ(r.missed(0).reason(), node::v1::MissedJobs::REASON_PRICE);
  EXPECT_EQ(r.missed(0).total(), 4);
  EXPECT_EQ(r.missed(0).last_hour(), 4);
  ASSERT_TRUE(r.has_median_winning_price());
  EXPECT_DOUBLE_EQ(r.median_winning_price(), 1);

  // Nothing to say about an unknown node, or one that took part in no decision.
  EXPECT_FALSE(BuildMissedJobs(snap, "nobody", "gw-1", clock.now, &report));
  Snapshot other = Snap({Node("idle", {Ready(2, 0)})});
  EXPECT_FALSE(BuildMissedJobs(other, "idle", "gw-1", clock.now, &report));
}

TEST(MissedJobsTest, WeightedMedianOfWinners) {
  FakeClock clock;
  auto a = Node("a", {Priced(1)});
  auto b = Node("b", {Priced(2)});
  auto c = Node("c", {Priced(9)});
  Snapshot snap = Snap({a, b, c});
  const uint64_t route = RouteKey("upscale", "esrgan");
  const uint64_t epoch = NodeStats::HourEpoch(clock.now);
  for (int i = 0; i < 2; ++i) a->stats->CountWin(route, epoch);
  for (int i = 0; i < 3; ++i) b->stats->CountWin(route, epoch);
  c->stats->CountWin(route, epoch);
  c->stats->CountMiss(route, MissReason::kSlower, epoch);
  node::v1::MissedJobs report;
  ASSERT_TRUE(BuildMissedJobs(snap, "c", "gw", clock.now, &report));
  EXPECT_DOUBLE_EQ(report.routes(0).median_winning_price(), 2);  // 1,1,2,2,2,9
}

}  // namespace
}  // namespace switchyard::gateway
