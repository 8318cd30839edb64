// Unit tests for Router (gateway/routing/router.h) with hand-built snapshots and an injected random
// source and clock: eligibility, tiers, load, sampling and ties. Every loop is bounded.
#include "gateway/routing/router.h"
#include "gateway/membership/membership.h"

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

TEST(RouterTest, SnapshotWithoutIndexIsIndexedPerCall) {
  Router router(Constant(0));
  Snapshot snap;
  snap.nodes = {Node("a", {Ready(2, 1)}), Node("b", {Ready(2, 0)})};
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  RouteRequest other = Request();
  other.model_id = "other";
  EXPECT_EQ(router.Pick(snap, other).status().code(), absl::StatusCode::kNotFound);
}

TEST(RouterTest, NotFoundWhenNobodyOffersPipelineAndModel) {
  CountingRandom rnd;
  Router router(rnd.Fn());
  auto empty = router.Pick(Snap({}), Request());
  ASSERT_EQ(empty.status().code(), absl::StatusCode::kNotFound) << empty.status();
  EXPECT_THAT(empty.status().message(), HasSubstr("esrgan"));

  CapSpec other_model = Ready(2, 0);
  other_model.model = "other";
  CapSpec other_pipeline = Ready(2, 0);
  other_pipeline.pipeline = "transcode";
  Snapshot snap = Snap({Node("a", {other_model}), Node("b", {other_pipeline})});
  EXPECT_EQ(router.Pick(snap, Request()).status().code(), absl::StatusCode::kNotFound);
}

TEST(RouterTest, UnavailableWhenOnlyFailedOffers) {
  Router router(Constant(0));
  CapSpec failed = WithState(MODEL_STATE_FAILED);
  failed.error = "bad weights";
  auto r = router.Pick(Snap({Node("a", {failed})}), Request());
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("bad weights"));
}

TEST(RouterTest, ColdOffersWithoutRoomAreSkipped) {
  Router router(Constant(0));
  CapSpec full = WithState(MODEL_STATE_COLD);
  full.no_room = true;
  auto r = router.Pick(Snap({Node("a", {full})}), Request());
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("memory"));
  // A cold node with room wins over one without.
  EXPECT_EQ(PickId(router, Snap({Node("a", {full}), Node("b", {WithState(MODEL_STATE_COLD)})}),
                   Request()),
            "b");
}

TEST(RouterTest, UnavailableWhenOnlyDrainingOffers) {
  Router router(Constant(0));
  auto r = router.Pick(Snap({Node("a", {Ready(2, 0)}, /*draining=*/true)}), Request());
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("draining"));
}

TEST(RouterTest, UnavailableWhenOnlyExcludedOffers) {
  Router router(Constant(0));
  Snapshot snap = Snap({Node("a", {Ready(2, 0)}), Node("b", {Ready(2, 0)})});
  auto r = router.Pick(snap, Request({"a", "b"}));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

TEST(RouterTest, UnavailableWithAMixOfReasons) {
  Router router(Constant(0));
  Snapshot snap = Snap({Node("a", {WithState(MODEL_STATE_FAILED)}),
                        Node("b", {Ready(2, 0)}, /*draining=*/true), Node("c", {Ready(2, 0)})});
  EXPECT_EQ(router.Pick(snap, Request({"c"})).status().code(), absl::StatusCode::kUnavailable);
  // Without the exclusion, c is the only choice.
  EXPECT_EQ(PickId(router, snap, Request()), "c");
}

TEST(RouterTest, SkipsExcludedDrainingAndFailedEvenIfBetter) {
  Router router(Constant(0));
  Snapshot snap =
      Snap({Node("excluded", {Ready(4, 0)}), Node("draining", {Ready(4, 0)}, /*draining=*/true),
            Node("failed", {WithState(MODEL_STATE_FAILED, 4, 0)}), Node("busy", {Ready(2, 5)})});
  EXPECT_EQ(PickId(router, snap, Request({"excluded"})), "busy");
}

// A node whose hardware claim failed its check (NodeStats::capacity_cap) is routed with the capped
// capacity: one job in flight fills a node that advertises 8 slots, and the node without a cap
// wins although it is busier in advertised terms.
TEST(RouterTest, AHardwareCapacityCapFillsTheNodeSooner) {
  CountingRandom rnd;
  Router router(rnd.Fn());
  auto capped = Node("capped", {Ready(8, 1)});
  auto honest = Node("honest", {Ready(4, 3)});
  capped->stats->set_capacity_cap(1);
  for (int i = 0; i < 20; ++i) {
    auto c = router.Pick(Snap({capped, honest}), Request());
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->node, honest);
  }
  const RouteExplanation why = router.Explain(Snap({capped, honest}), Request());
  for (const auto& candidate : why.candidates) {
    if (candidate.node_id == "capped") {
      EXPECT_EQ(candidate.tier, RouteTier::kWarmFull);
      EXPECT_DOUBLE_EQ(candidate.load, 1.0);
    }
  }
  // Without the cap it has the most room.
  capped->stats->set_capacity_cap(0);
  auto c = router.Pick(Snap({capped, honest}), Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node, capped);
}

TEST(RouterTest, PrefersWarmWithRoomOverColdOverWarmFull) {
  CountingRandom rnd;
  Router router(rnd.Fn());
  // Order in the snapshot is the reverse of the preference, with loads that would mislead a
  // router that ignored tiers (the cold node is idle, the free READY node is the busiest).
  auto full = Node("full", {Ready(1, 1)});
  auto cold = Node("cold", {WithState(MODEL_STATE_COLD, 8, 0)});
  auto free = Node("free", {Ready(4, 3)});

  auto c = router.Pick(Snap({full, cold, free}), Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node, free);
  EXPECT_TRUE(c->warm);

  // No warm node has room: a cold one that can load it beats queueing on a warm one.
  c = router.Pick(Snap({full, cold}), Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node, cold);
  EXPECT_FALSE(c->warm);

  c = router.Pick(Snap({full}), Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node, full);
  EXPECT_TRUE(c->warm);
  EXPECT_EQ(rnd.calls, 0);  // one candidate per tier: no randomness
}

TEST(RouterTest, LoadingCountsAsCold) {
  Router router(Constant(0));
  auto loading = Node("loading", {WithState(MODEL_STATE_LOADING, 8, 0)});
  auto full = Node("full", {Ready(1, 3)});
  auto roomy = Node("roomy", {Ready(2, 1)});
  auto c = router.Pick(Snap({loading, full, roomy}), Request());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node, roomy);
  c = router.Pick(Snap({loading, full}), Request());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node, loading);
  EXPECT_FALSE(c->warm);
}

TEST(RouterTest, AmongEqualTiersPrefersLowerLoadRatio) {
  CountingRandom rnd;
  Router router(rnd.Fn());
  // Two warm nodes with room are both sampled: 3/4 = 0.75 vs 1/2 = 0.5, b wins either way round.
  Snapshot snap = Snap({Node("a", {Ready(4, 3)}), Node("b", {Ready(2, 1)})});
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  rnd.value = 1;
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  const int p2c_calls = rnd.calls;
  // In the "full" tier the lowest of all: 3/1 vs 2/2 vs 4/2 -> the second.
  snap = Snap({Node("x", {Ready(1, 3)}), Node("y", {Ready(2, 2)}), Node("z", {Ready(2, 4)})});
  EXPECT_EQ(PickId(router, snap, Request()), "y");
  // And among cold nodes.
  snap = Snap({Node("p", {WithState(MODEL_STATE_COLD, 2, 1)}),
               Node("q", {WithState(MODEL_STATE_COLD, 2, 0)})});
  EXPECT_EQ(PickId(router, snap, Request()), "q");
  EXPECT_EQ(rnd.calls, p2c_calls);  // no ties outside P2C, no randomness
}

TEST(RouterTest, PowerOfTwoChoicesPicksTheLessLoadedOfTheTwoSampled) {
  // Scanned route (few candidates): the two sampled are room[r1 % 4] and
  // room[(i + 1 + r2 % 3) % 4]. d is the least loaded of all, but only a and c are sampled.
  Snapshot snap = Snap({Node("a", {Ready(8, 6)}), Node("b", {Ready(8, 1)}),
                        Node("c", {Ready(8, 3)}), Node("d", {Ready(8, 0)})});
  Router ac(Script({0, 1}));  // i = 0 (a), j = (0 + 1 + 1) % 4 = 2 (c)
  EXPECT_EQ(PickId(ac, snap, Request()), "c");
  Router ca(Script({2, 1}));  // i = 2 (c), j = (2 + 1 + 1) % 4 = 0 (a): order does not matter
  EXPECT_EQ(PickId(ca, snap, Request()), "c");
  Router ad(Script({0, 2}));  // a and d
  EXPECT_EQ(PickId(ad, snap, Request()), "d");

  // Sampled route (more candidates than are scanned): the first two draws are compared.
  std::vector<std::shared_ptr<const NodeView>> nodes;
  for (int i = 0; i < 100; ++i) nodes.push_back(Node(absl::StrCat("n", i), {Ready(10, i % 10)}));
  Snapshot big = Snap(nodes);
  Router r1(Script({15, 42, 99}));  // n15 (5/10) vs n42 (2/10)
  EXPECT_EQ(PickId(r1, big, Request()), "n42");
  Router r2(Script({42, 15, 99}));
  EXPECT_EQ(PickId(r2, big, Request()), "n42");
  Router r3(Script({15, 15, 30}));  // a repeated draw is skipped: n15 vs n30 (0/10)
  EXPECT_EQ(PickId(r3, big, Request()), "n30");
}

TEST(RouterTest, SampledRoutesSkipIneligibleCandidates) {
  // 100 candidates; only n7 and n93 can take the job: sampling steps over the others with extra
  // draws, or falls back to scanning the route.
  std::vector<std::shared_ptr<const NodeView>> nodes;
  for (int i = 0; i < 100; ++i) {
    const std::string id = absl::StrCat("n", i);
    CapSpec cap = Ready(4, 0);
    if (i == 7 || i == 93) {
      nodes.push_back(Node(id, {Ready(4, i == 7 ? 2 : 1)}));
    } else if (i % 4 == 0) {
      nodes.push_back(Node(id, {cap}, /*draining=*/true));
    } else if (i % 4 == 1) {
      nodes.push_back(Node(id, {WithState(MODEL_STATE_FAILED)}));
    } else if (i % 4 == 2) {
      cap.state = MODEL_STATE_COLD;
      cap.no_room = true;
      nodes.push_back(Node(id, {cap}));
    } else {
      nodes.push_back(Node(id, {cap}));  // excluded below
    }
  }
  Snapshot snap = Snap(nodes);
  std::set<std::string> excluded;
  for (int i = 3; i < 100; i += 4) {
    if (i != 7) excluded.insert(absl::StrCat("n", i));
  }
  // Draws hit ineligible ones first, then both good ones: n93 (1/4) beats n7 (2/4).
  Router drawn(Script({0, 1, 2, 3, 7, 93}));
  EXPECT_EQ(PickId(drawn, snap, Request(excluded)), "n93");
  // Draws that never hit a good one (all the same draining node): the route is scanned.
  Router scanned(Constant(0));
  const std::string id = PickId(scanned, snap, Request(excluded));
  EXPECT_TRUE(id == "n7" || id == "n93") << id;
  std::mt19937_64 rng(3);
  Router random([&rng] { return rng(); });
  std::map<std::string, int> counts;
  for (int i = 0; i < 200; ++i) ++counts[PickId(random, snap, Request(excluded))];
  EXPECT_EQ(counts["n7"] + counts["n93"], 200);
  EXPECT_GT(counts["n93"], counts["n7"]);  // when both are compared, the less loaded wins
  // With both excluded too, nothing can take it.
  excluded.insert("n7");
  excluded.insert("n93");
  EXPECT_EQ(random.Pick(snap, Request(excluded)).status().code(), absl::StatusCode::kUnavailable);
}

TEST(RouterTest, SampledRoutesFallBackToColdThenToWarmFull) {
  std::vector<std::shared_ptr<const NodeView>> nodes;
  for (int i = 0; i < 60; ++i) nodes.push_back(Node(absl::StrCat("full", i), {Ready(2, 2 + i)}));
  std::mt19937_64 rng(5);
  Router router([&rng] { return rng(); });
  // Only warm-full nodes: the one with the lowest load (full0, 2/2).
  EXPECT_EQ(PickId(router, Snap(nodes), Request()), "full0");
  nodes.push_back(Node("cold", {WithState(MODEL_STATE_COLD, 2, 0)}));
  EXPECT_EQ(PickId(router, Snap(nodes), Request()), "cold");
  nodes.push_back(Node("roomy", {Ready(2, 1)}));
  auto c = router.Pick(Snap(nodes), Request());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node->id, "roomy");
  EXPECT_TRUE(c->warm);
}

TEST(RouterTest, GatewayInFlightCountsAsLoad) {
  Router router(Constant(0));
  // a reports idle but this gateway has 1 job in flight there: 1/2 > b's 0/2.
  Snapshot snap =
      Snap({Node("a", {Ready(2, 0)}, false, /*in_flight=*/1), Node("b", {Ready(2, 0)})});
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  // With 2 in flight, a is full even though its report says idle: a READY node with room wins,
  // and so does a cold node that can load the model.
  auto a_full = Node("a", {Ready(2, 0)}, false, /*in_flight=*/2);
  auto cold = Node("cold", {WithState(MODEL_STATE_COLD, 2, 0)});
  auto roomy = Node("roomy", {Ready(4, 3)});
  EXPECT_EQ(PickId(router, Snap({a_full, roomy}), Request()), "roomy");
  auto c = router.Pick(Snap({a_full, cold}), Request());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node, cold);
  // The larger of the reported and the in-flight count is used, not the sum.
  snap = Snap({Node("m", {Ready(4, 2)}, false, /*in_flight=*/1), Node("n", {Ready(4, 3)})});
  EXPECT_EQ(PickId(router, snap, Request()), "m");
}

TEST(RouterTest, InFlightChangesAreSeenWithoutANewSnapshot) {
  Router router(Constant(0));
  auto a = Node("a", {Ready(2, 0)});
  auto b = Node("b", {Ready(2, 0)}, false, /*in_flight=*/1);
  Snapshot snap = Snap({a, b});
  EXPECT_EQ(PickId(router, snap, Request()), "a");
  a->connection->in_flight() += 2;  // a job dispatched to a by this gateway
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  a->connection->in_flight() -= 2;
  EXPECT_EQ(PickId(router, snap, Request()), "a");
}

TEST(RouterTest, ZeroCapacityIsTreatedAsOne) {
  Router router(Constant(0));
  Snapshot snap = Snap({Node("zero", {Ready(0, 0)}), Node("busy", {Ready(4, 4)})});
  auto c = router.Pick(snap, Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node->id, "zero");  // 0/1: free slot
}

TEST(RouterTest, PicksTheMatchingCapabilityOfAMultiModelNode) {
  Router router(Constant(0));
  CapSpec busy_esrgan = Ready(1, 1);
  CapSpec idle_other = Ready(8, 0);
  idle_other.model = "other";
  Snapshot snap = Snap({Node("a", {idle_other, busy_esrgan}), Node("b", {Ready(2, 1)})});
  EXPECT_EQ(PickId(router, snap, Request()), "b");  // a's idle capacity is for another model
  RouteRequest other = Request();
  other.model_id = "other";
  EXPECT_EQ(PickId(router, snap, other), "a");
}

TEST(RouterTest, TiesGoToTheFirstSampled) {
  Snapshot snap =
      Snap({Node("a", {Ready(2, 1)}), Node("b", {Ready(4, 2)}), Node("c", {Ready(2, 1)})});
  CountingRandom zero;  // samples a (0 % 3) and b ((0 + 1 + 0) % 3)
  Router first(zero.Fn());
  EXPECT_EQ(PickId(first, snap, Request()), "a");
  EXPECT_EQ(zero.calls, 2);
  CountingRandom one;  // samples b (1 % 3) and a ((1 + 1 + 1 % 2) % 3)
  one.value = 1;
  Router second(one.Fn());
  EXPECT_EQ(PickId(second, snap, Request()), "b");
  // Ties among cold nodes are broken by the random source (reservoir sampling).
  Snapshot cold =
      Snap({Node("p", {WithState(MODEL_STATE_COLD)}), Node("q", {WithState(MODEL_STATE_COLD)})});
  EXPECT_EQ(PickId(first, cold, Request()), "q");   // 0 % 2 == 0: the later one replaces
  EXPECT_EQ(PickId(second, cold, Request()), "p");  // 1 % 2 != 0: the first is kept
}

TEST(RouterTest, TiesAreSpreadEvenly) {
  std::mt19937_64 rng(12345);
  Router router([&rng] { return rng(); });
  Snapshot snap =
      Snap({Node("a", {Ready(2, 1)}), Node("b", {Ready(2, 1)}), Node("c", {Ready(2, 1)}),
            Node("worse", {Ready(2, 2)}), Node("cold", {WithState(MODEL_STATE_COLD, 2, 0)})});
  std::map<std::string, int> counts;
  constexpr int kPicks = 1000;
  for (int i = 0; i < kPicks; ++i) ++counts[PickId(router, snap, Request())];
  EXPECT_EQ(counts.size(), 3u) << "picked outside the tied nodes";
  for (const char* id : {"a", "b", "c"}) {
    EXPECT_GE(counts[id], kPicks * 20 / 100) << id;
    EXPECT_LE(counts[id], kPicks * 47 / 100) << id;
  }
}

TEST(RouterTest, TiesSpreadWithManyNodes) {
  std::mt19937_64 rng(7);
  Router router([&rng] { return rng(); });
  std::vector<std::shared_ptr<const NodeView>> nodes;
  for (int i = 0; i < 8; ++i) nodes.push_back(Node(absl::StrCat("n", i), {Ready(4, 1)}));
  Snapshot snap = Snap(nodes);
  std::map<std::string, int> counts;
  constexpr int kPicks = 4000;
  for (int i = 0; i < kPicks; ++i) ++counts[PickId(router, snap, Request())];
  ASSERT_EQ(counts.size(), 8u);
  for (const auto& [id, n] : counts) {
    EXPECT_GE(n, kPicks / 8 / 2) << id;  // expected 500 each
    EXPECT_LE(n, kPicks / 8 * 2) << id;
  }
}

}  // namespace
}  // namespace switchyard::gateway
