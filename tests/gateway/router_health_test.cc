// Unit tests for Router (gateway/routing/router.h): price caps, health and ejection, latency,
// fairness, the retry budget, the route index, concurrency, stream preference and the choice of a
// node for a cold load. Every loop is bounded.
#include "gateway/membership/membership.h"
#include "gateway/routing/router.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "gateway/router_test_util.h"
#include "gateway/routing/route_index.h"

namespace switchyard::gateway {
namespace {

using namespace router_test;  // NOLINT(build/namespaces): the shared fixtures
using node::v1::MODEL_STATE_COLD;
using node::v1::MODEL_STATE_FAILED;
using node::v1::MODEL_STATE_LOADING;
using node::v1::MODEL_STATE_READY;
using ::testing::HasSubstr;

RouterOptions TestOptions() {
  RouterOptions o;
  o.eject_after_failures = 3;
  o.eject_base = absl::Seconds(1);
  o.eject_max = absl::Seconds(30);
  return o;
}

void Succeed(Router& router, const std::shared_ptr<const NodeView>& node, double ms, int times) {
  for (int i = 0; i < times; ++i) {
    router.ReportAttempt(*node, "esrgan", AttemptOutcome::kSuccess, absl::Milliseconds(ms));
  }
}

void Fail(Router& router, const std::shared_ptr<const NodeView>& node, int times) {
  for (int i = 0; i < times; ++i) {
    router.ReportAttempt(*node, "esrgan", AttemptOutcome::kNodeFailure, absl::Seconds(1));
  }
}

TEST(RouterPriceTest, PriceCapFiltersOffers) {
  Router router(Constant(0));
  CapSpec dear = Ready(4, 0);
  dear.price = 3;
  CapSpec cheap = Ready(4, 3);
  cheap.price = 1;
  Snapshot snap = Snap({Node("dear", {dear}), Node("cheap", {cheap})});
  RouteRequest req = Request();
  EXPECT_EQ(PickId(router, snap, req), "dear");  // no cap: the idle one
  req.max_price_per_unit = 2;
  EXPECT_EQ(PickId(router, snap, req), "cheap");
  req.max_price_per_unit = 1;  // at the cap is allowed
  EXPECT_EQ(PickId(router, snap, req), "cheap");
}

TEST(RouterPriceTest, NotFoundNamesTheCapAndTheCheapestOffer) {
  Router router(Constant(0));
  CapSpec a = Ready(4, 0);
  a.price = 3;
  CapSpec b = Ready(4, 0);
  b.price = 1.5;
  RouteRequest req = Request();
  req.max_price_per_unit = 0.5;
  auto r = router.Pick(Snap({Node("a", {a}), Node("b", {b})}), req);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("price cap of 0.5"));
  EXPECT_THAT(r.status().message(), HasSubstr("cheapest: 1.5"));
  // Within the cap but unable to take it now: UNAVAILABLE, as without a cap.
  req.max_price_per_unit = 2;
  r = router.Pick(Snap({Node("a", {a}), Node("b", {b}, /*draining=*/true)}), req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

TEST(RouterHealthTest, EjectsAfterConsecutiveFailuresUntilTheEjectionEnds) {
  FakeClock clock;
  Router router(TestOptions(), Constant(0), clock.Fn());
  auto a = Node("a", {Ready(4, 0)});
  auto b = Node("b", {Ready(4, 3)});
  Snapshot snap = Snap({a, b});
  EXPECT_EQ(PickId(router, snap, Request()), "a");
  Fail(router, a, 2);
  EXPECT_FALSE(router.IsEjected("a"));
  Succeed(router, a, 10, 1);  // a success resets the count
  Fail(router, a, 2);
  EXPECT_FALSE(router.IsEjected("a"));
  router.ReportAttempt(*a, "esrgan", AttemptOutcome::kRefused, absl::Milliseconds(1));
  router.ReportAttempt(*a, "esrgan", AttemptOutcome::kClientError, absl::Milliseconds(1));
  EXPECT_FALSE(router.IsEjected("a"));  // neither counts, neither resets
  Fail(router, a, 1);
  EXPECT_TRUE(router.IsEjected("a"));
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  auto only_a = router.Pick(Snap({a}), Request());
  ASSERT_EQ(only_a.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(only_a.status().message(), HasSubstr("ejected"));
  clock.now += absl::Milliseconds(999);
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  clock.now += absl::Milliseconds(1);
  EXPECT_FALSE(router.IsEjected("a"));
  EXPECT_EQ(PickId(router, snap, Request()), "a");
}

TEST(RouterHealthTest, EjectionTimeGrowsAndIsCapped) {
  FakeClock clock;
  Router router(TestOptions(), Constant(0), clock.Fn());
  auto a = Node("a", {Ready(4, 0)});
  auto b = Node("b", {Ready(4, 0)});
  Snapshot snap = Snap({a, b});
  PickId(router, snap, Request());  // the router learns there are 2 nodes
  Fail(router, a, 3);
  std::vector<int> seconds;
  for (int round = 0; round < 8; ++round) {
    ASSERT_TRUE(router.IsEjected("a")) << round;
    int s = 0;
    while (router.IsEjected("a") && s < 100) {
      clock.now += absl::Seconds(1);
      ++s;
    }
    seconds.push_back(s);
    Fail(router, a, 1);  // on probation: one more failure ejects it again
  }
  EXPECT_EQ(seconds, (std::vector<int>{1, 2, 4, 8, 16, 30, 30, 30}));
  // A success ends the ejection at once and restores a full share.
  Succeed(router, a, 10, 1);
  EXPECT_FALSE(router.IsEjected("a"));
  EXPECT_FALSE(a->stats->on_probation());
  EXPECT_EQ(a->stats->consecutive_failures(), 0);
}

TEST(RouterHealthTest, AtMostTheMaxFractionOfNodesIsEjected) {
  FakeClock clock;
  Router router(TestOptions(), Constant(0), clock.Fn());
  std::vector<std::shared_ptr<const NodeView>> nodes;
  for (int i = 0; i < 5; ++i) nodes.push_back(Node(absl::StrCat("n", i), {Ready(4, 0)}));
  Snapshot snap = Snap(nodes);
  PickId(router, snap, Request());
  for (int i = 0; i < 5; ++i) Fail(router, nodes[static_cast<size_t>(i)], 3);
  // floor(0.5 x 5) = 2.
  EXPECT_TRUE(router.IsEjected("n0"));
  EXPECT_TRUE(router.IsEjected("n1"));
  EXPECT_FALSE(router.IsEjected("n2"));
  EXPECT_FALSE(router.IsEjected("n4"));
  EXPECT_EQ(router.health().EjectedCount(), 2);
  // Once their ejections end, the next failures of others may take their places.
  clock.now += absl::Seconds(1);
  EXPECT_EQ(router.health().EjectedCount(), 0);
  Fail(router, nodes[2], 1);
  Fail(router, nodes[3], 1);
  Fail(router, nodes[4], 1);
  EXPECT_TRUE(router.IsEjected("n2"));
  EXPECT_TRUE(router.IsEjected("n3"));
  EXPECT_FALSE(router.IsEjected("n4"));
  EXPECT_EQ(router.health().EjectedCount(), 2);
  // Traffic goes only to the nodes that are not ejected.
  for (int i = 0; i < 20; ++i) {
    const std::string id = PickId(router, snap, Request());
    EXPECT_TRUE(id != "n2" && id != "n3") << id;
  }
}

TEST(RouterHealthTest, SuccessOfAnEjectedNodeReturnsItAtOnce) {
  FakeClock clock;
  Router router(TestOptions(), Constant(0), clock.Fn());
  auto a = Node("a", {Ready(4, 0)});
  auto b = Node("b", {Ready(4, 3)});
  Snapshot snap = Snap({a, b});
  PickId(router, snap, Request());
  Fail(router, a, 3);
  ASSERT_TRUE(router.IsEjected("a"));
  // An attempt sent before the ejection succeeds.
  Succeed(router, a, 10, 1);
  EXPECT_FALSE(router.IsEjected("a"));
  EXPECT_EQ(PickId(router, snap, Request()), "a");
  // Its count starts again from zero.
  Fail(router, a, 2);
  EXPECT_FALSE(router.IsEjected("a"));
}

TEST(RouterLatencyTest, EwmaSteersTrafficAwayFromASlowNode) {
  std::mt19937_64 rng(11);
  FakeClock clock;
  Router router(
      TestOptions(), [&rng] { return rng(); }, clock.Fn());
  std::vector<std::shared_ptr<const NodeView>> nodes;
  for (int i = 0; i < 4; ++i) nodes.push_back(Node(absl::StrCat("n", i), {Ready(4, 1)}));
  for (int i = 0; i < 4; ++i) Succeed(router, nodes[static_cast<size_t>(i)], 100, 5);
  Snapshot snap = Snap(nodes);
  std::map<std::string, int> counts;
  for (int i = 0; i < 400; ++i) ++counts[PickId(router, snap, Request())];
  EXPECT_GE(counts["n3"], 50);  // equal: about a quarter each
  // n3 slows down 10x: its average moves towards 1000 ms and it stops winning comparisons.
  Succeed(router, nodes[3], 1000, 5);
  counts.clear();
  for (int i = 0; i < 400; ++i) ++counts[PickId(router, snap, Request())];
  EXPECT_EQ(counts["n3"], 0);
  // It still gets work when the others are full.
  Snapshot busy = Snap({Node("x", {Ready(2, 2)}), nodes[3]});
  Succeed(router, busy.nodes[0], 100, 5);
  EXPECT_EQ(PickId(router, busy, Request()), "n3");
}

TEST(RouterLatencyTest, LatencyIsPerModelAndIgnoresColdLoads) {
  FakeClock clock;
  Router router(TestOptions(), Constant(0), clock.Fn());
  auto a = Node("a", {Ready(4, 0)});
  router.ReportAttempt(*a, "esrgan", AttemptOutcome::kSuccess, absl::Seconds(30),
                       /*loaded_model=*/true);
  EXPECT_EQ(a->stats->LatencyOf(ModelKey("esrgan")).samples, 0u);
  Succeed(router, a, 10, 3);
  router.ReportAttempt(*a, "other", AttemptOutcome::kSuccess, absl::Milliseconds(500));
  EXPECT_DOUBLE_EQ(a->stats->LatencyOf(ModelKey("esrgan")).ewma_ms, 10);
  EXPECT_DOUBLE_EQ(a->stats->LatencyOf(ModelKey("other")).ewma_ms, 500);
}

TEST(RouterLatencyTest, NewNodeGetsABoundedShareButDoesGetTraffic) {
  std::mt19937_64 rng(21);
  FakeClock clock;
  RouterOptions options = TestOptions();
  options.new_node_share = 0.1;
  Router router(
      options, [&rng] { return rng(); }, clock.Fn());
  std::vector<std::shared_ptr<const NodeView>> nodes;
  for (int i = 0; i < 4; ++i) nodes.push_back(Node(absl::StrCat("old", i), {Ready(4, 0)}));
  for (const auto& n : nodes) Succeed(router, n, 100, 5);
  nodes.push_back(Node("new", {Ready(4, 0)}));  // idle and unmeasured: would win often
  Snapshot snap = Snap(nodes);
  constexpr int kPicks = 2000;
  int to_new = 0;
  for (int i = 0; i < kPicks; ++i) to_new += PickId(router, snap, Request()) == "new" ? 1 : 0;
  EXPECT_LE(to_new, kPicks * 11 / 100);
  EXPECT_GE(to_new, kPicks * 5 / 100);
  // Once measured (and as fast), it competes on equal terms: about a fifth.
  Succeed(router, nodes[4], 100, 5);
  to_new = 0;
  for (int i = 0; i < kPicks; ++i) to_new += PickId(router, snap, Request()) == "new" ? 1 : 0;
  EXPECT_GE(to_new, kPicks * 15 / 100);
  EXPECT_LE(to_new, kPicks * 25 / 100);
}

TEST(RouterLatencyTest, StaleAverageMakesANodeUnmeasuredAgain) {
  FakeClock clock;
  Router router(TestOptions(), Constant(0), clock.Fn());
  auto slow = Node("slow", {Ready(4, 0)});
  auto fast = Node("fast", {Ready(4, 1)});
  Succeed(router, slow, 1000, 5);
  Succeed(router, fast, 10, 5);
  Snapshot snap = Snap({slow, fast});
  EXPECT_EQ(PickId(router, snap, Request()), "fast");
  clock.now += absl::Seconds(31);
  Succeed(router, fast, 10, 1);
  // slow's average is stale: it is compared at fast's latency, so on load (0 vs 1/4) it wins,
  // but the new-node share refuses it while it would be more than 10% of recent decisions ...
  EXPECT_EQ(PickId(router, snap, Request()), "fast");
  for (int i = 0; i < 20; ++i) PickId(router, Snap({fast}), Request());
  // ... and once the share allows, it gets a probe.
  EXPECT_EQ(PickId(router, snap, Request()), "slow");
}

TEST(RouterFairnessTest, NoNodeGetsMoreThanTwiceItsFairShare) {
  for (int n : {10, 100}) {  // a scanned and a sampled route
    std::mt19937_64 rng(static_cast<uint64_t>(n));
    FakeClock clock;
    Router router(
        TestOptions(), [&rng] { return rng(); }, clock.Fn());
    std::vector<std::shared_ptr<const NodeView>> nodes;
    for (int i = 0; i < n; ++i) nodes.push_back(Node(absl::StrCat("n", i), {Ready(4, 0)}));
    for (const auto& node : nodes) Succeed(router, node, 50, 5);
    Snapshot snap = Snap(nodes);
    const int picks = 100 * n;
    std::map<std::string, int> counts;
    for (int i = 0; i < picks; ++i) {
      auto c = router.Pick(snap, Request());
      ASSERT_TRUE(c.ok());
      ++counts[c->node->id];
      Succeed(router, c->node, 50, 1);  // same latency everywhere
    }
    EXPECT_EQ(static_cast<int>(counts.size()), n);
    for (const auto& [id, count] : counts) {
      EXPECT_LE(count, 2 * picks / n) << id;
      EXPECT_GE(count, picks / n / 2) << id;
    }
  }
}

TEST(RouterRetryTest, BudgetAllowsThenRefusesThenRecovers) {
  FakeClock clock;
  RouterOptions options = TestOptions();
  options.retry_budget_ratio = 0.2;
  options.retry_budget_min_per_second = 1;
  options.retry_budget_window = absl::Seconds(10);
  Router router(options, Constant(0), clock.Fn());
  for (int i = 0; i < 100; ++i) router.RecordJob();
  int allowed = 0;
  for (int i = 0; i < 100 && router.TryRetry(); ++i) ++allowed;
  EXPECT_EQ(allowed, 30);  // 0.2 x 100 + 1/s x 10 s
  EXPECT_FALSE(router.TryRetry());
  clock.now += absl::Seconds(11);  // the window has moved past those jobs and retries
  for (int i = 0; i < 10; ++i) router.RecordJob();
  allowed = 0;
  for (int i = 0; i < 100 && router.TryRetry(); ++i) ++allowed;
  EXPECT_EQ(allowed, 12);  // 0.2 x 10 + 10
}

TEST(RouteIndexTest, PublishAttachesStatsAndReusesTheIndexWhenOnlyLoadsChange) {
  Membership membership;
  node::v1::NodeStatus a;
  a.set_node_id("a");
  a.set_address("127.0.0.1:1");
  auto* cap = a.add_capabilities();
  cap->set_pipeline("upscale");
  cap->set_model_id("esrgan");
  cap->set_state(MODEL_STATE_READY);
  cap->set_capacity(2);
  node::v1::NodeStatus b = a;
  b.set_node_id("b");
  const uint64_t ta = membership.Register(a, NodeSource::kRegistered);
  membership.Register(b, NodeSource::kRegistered);
  SnapshotPtr s1 = membership.snapshot();
  ASSERT_NE(s1->index, nullptr);
  ASSERT_EQ(s1->nodes.size(), 2u);
  ASSERT_NE(s1->nodes[0]->stats, nullptr);
  const auto* found = s1->index->Find("upscale", "esrgan");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->size(), 2u);
  EXPECT_EQ(s1->index->Find("upscale", "other"), nullptr);
  auto stats_a = s1->nodes[0]->stats;

  a.mutable_capabilities(0)->set_in_use(2);  // a heartbeat: loads only
  membership.Update(a, ta);
  SnapshotPtr s2 = membership.snapshot();
  EXPECT_EQ(s2->index, s1->index);
  EXPECT_EQ(s2->nodes[0]->stats, stats_a);

  auto* other = a.add_capabilities();  // a new model: the index is rebuilt
  *other = a.capabilities(0);
  other->set_model_id("other");
  membership.Update(a, ta);
  SnapshotPtr s3 = membership.snapshot();
  EXPECT_NE(s3->index, s1->index);
  ASSERT_NE(s3->index->Find("upscale", "other"), nullptr);
  EXPECT_EQ(s3->nodes[0]->stats, stats_a);

  membership.Register(a, NodeSource::kRegistered);  // re-registration keeps the record
  EXPECT_EQ(membership.snapshot()->nodes[0]->stats, stats_a);

  // The router uses the published index and gives the same answers as for a hand-built one.
  Router router(Constant(0));
  auto c = router.Pick(*membership.snapshot(), Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node->id, "b");  // a is full
}

TEST(RouterConcurrencyTest, PicksAndReportsFromManyThreads) {
  std::vector<std::shared_ptr<const NodeView>> nodes;
  for (int i = 0; i < 40; ++i) nodes.push_back(Node(absl::StrCat("n", i), {Ready(4, i % 4)}));
  Snapshot snap = Snap(nodes);
  std::atomic<uint64_t> seed{1};
  Router router(TestOptions(), [&seed] { return seed.fetch_add(0x9E3779B97F4A7C15ULL) * 31; });
  std::atomic<int> picked{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        auto c = router.Pick(snap, Request());
        if (!c.ok()) continue;
        ++picked;
        const auto outcome =
            (i + t) % 10 == 0 ? AttemptOutcome::kNodeFailure : AttemptOutcome::kSuccess;
        router.ReportAttempt(*c->node, "esrgan", outcome, absl::Milliseconds(10 + t));
        router.RecordJob();
        if (i % 50 == 0) router.TryRetry();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(picked.load(), 8000);
  EXPECT_LE(router.health().EjectedCount(), 20);  // never more than half of 40
}

}  // namespace
}  // namespace switchyard::gateway

namespace switchyard::gateway {
namespace {

TEST(RouterPreferred, AStreamStaysOnItsNodeEvenWhenFullAndMovesWhenItCannot) {
  Router router(Constant(0));
  auto snap = Snap(
      {Node("idle", {Ready(2, 0)}), Node("home", {Ready(2, 2)}), Node("other", {Ready(2, 1)})});
  RouteRequest req = Request();
  // Without a preference the idle node wins; with one, the stream's node is kept although full.
  EXPECT_EQ(PickId(router, snap, req), "idle");
  req.preferred = "home";
  for (int i = 0; i < 5; ++i) EXPECT_EQ(PickId(router, snap, req), "home");
  // Once it failed this job, the stream moves.
  req.excluded = {"home"};
  EXPECT_EQ(PickId(router, snap, req), "idle");
  // A preferred node that is gone, draining or failed is ignored.
  req.excluded.clear();
  req.preferred = "gone";
  EXPECT_EQ(PickId(router, snap, req), "idle");
  auto draining = Snap({Node("home", {Ready(2, 0)}, /*draining=*/true), Node("b", {Ready(2, 1)})});
  req.preferred = "home";
  EXPECT_EQ(PickId(router, draining, req), "b");
  auto failed = Snap({Node("home", {WithState(MODEL_STATE_FAILED)}), Node("b", {Ready(2, 1)})});
  EXPECT_EQ(PickId(router, failed, req), "b");
}

TEST(RouterPreferred, AnEjectedNodeIsNotPreferred) {
  FakeClock clock;
  Router router(RouterOptions{}, Constant(0), clock.Fn());
  auto snap = Snap({Node("home", {Ready(2, 0)}), Node("b", {Ready(2, 1)})});
  RouteRequest req = Request();
  req.preferred = "home";
  EXPECT_EQ(PickId(router, snap, req), "home");
  for (int i = 0; i < 20 && !router.IsEjected("home"); ++i) {
    router.ReportAttempt(*snap.nodes[0], "esrgan", AttemptOutcome::kNodeFailure,
                         absl::Milliseconds(5));
  }
  ASSERT_TRUE(router.IsEjected("home"));
  EXPECT_EQ(PickId(router, snap, req), "b");
}

}  // namespace
}  // namespace switchyard::gateway

namespace switchyard::gateway {
namespace {

CapSpec Cold(int64_t free_mb, int in_use = 0) {
  CapSpec c = WithState(MODEL_STATE_COLD, 2, in_use);
  c.free_memory_mb = free_mb;
  return c;
}

TEST(RouterColdChoice, TheNodeWithTheMostFreeMemoryLoadsAColdModel) {
  Router router(Constant(0));
  // Loads break ties only: the idle node with little memory loses to the busier one with a lot.
  auto snap = Snap({Node("small", {Cold(512, 0)}), Node("big", {Cold(8192, 1)}),
                    Node("middle", {Cold(2048, 0)})});
  EXPECT_EQ(PickId(router, snap, Request()), "big");
  // A node without a memory budget counts as unbounded.
  auto unbounded = Snap({Node("big", {Cold(8192, 0)}), Node("free", {Cold(-1, 1)})});
  EXPECT_EQ(PickId(router, unbounded, Request()), "free");
  // Equal memory: the least loaded.
  auto tie = Snap({Node("busy", {Cold(4096, 1)}), Node("idle", {Cold(4096, 0)})});
  EXPECT_EQ(PickId(router, tie, Request()), "idle");
}

}  // namespace
}  // namespace switchyard::gateway
