// Unit tests for Router (gateway/routing/router.h) with hand-built snapshots and an injected random
// source and clock. Every loop is bounded.
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
#include "gateway/routing/route_index.h"

namespace switchyard::gateway {
namespace {

using node::v1::MODEL_STATE_COLD;
using node::v1::MODEL_STATE_FAILED;
using node::v1::MODEL_STATE_LOADING;
using node::v1::MODEL_STATE_READY;
using ::testing::HasSubstr;

struct CapSpec {
  std::string pipeline = "upscale";
  std::string model = "esrgan";
  node::v1::ModelState state = MODEL_STATE_READY;
  int capacity = 2;
  int in_use = 0;
  std::string error;
  bool no_room = false;
  double price = 0;
  int64_t free_memory_mb = -1;
};

std::shared_ptr<const NodeView> Node(const std::string& id, const std::vector<CapSpec>& caps,
                                     bool draining = false, int in_flight = 0) {
  auto view = std::make_shared<NodeView>();
  view->id = id;
  view->status.set_node_id(id);
  view->status.set_address("127.0.0.1:1");
  view->status.set_draining(draining);
  for (const auto& c : caps) {
    auto* cap = view->status.add_capabilities();
    cap->set_pipeline(c.pipeline);
    cap->set_model_id(c.model);
    cap->set_state(c.state);
    cap->set_capacity(c.capacity);
    cap->set_in_use(c.in_use);
    cap->set_error(c.error);
    cap->set_no_room(c.no_room);
    cap->set_price_per_unit(c.price);
    cap->set_free_memory_mb(c.free_memory_mb);
  }
  view->stats = std::make_shared<NodeStats>();
  view->connection = std::make_shared<NodeConnection>("127.0.0.1:1", 1 << 20);
  view->connection->in_flight() = in_flight;
  return view;
}

CapSpec WithState(node::v1::ModelState state, int capacity = 2, int in_use = 0) {
  CapSpec c;
  c.state = state;
  c.capacity = capacity;
  c.in_use = in_use;
  return c;
}
CapSpec Ready(int capacity, int in_use) { return WithState(MODEL_STATE_READY, capacity, in_use); }

// Indexed as Membership publishes it.
Snapshot Snap(std::vector<std::shared_ptr<const NodeView>> nodes) {
  Snapshot s;
  s.version = 1;
  s.nodes = std::move(nodes);
  IndexSnapshot(s, nullptr);
  return s;
}

RouteRequest Request(std::set<std::string> excluded = {}) {
  return RouteRequest{
      .pipeline = "upscale", .model_id = "esrgan", .excluded = excluded, .preferred = ""};
}

// A random source that counts its calls and always returns `value`.
struct CountingRandom {
  uint64_t value = 0;
  int calls = 0;
  std::function<uint64_t()> Fn() {
    return [this] {
      ++calls;
      return value;
    };
  }
};

// A random source that always returns `value` (ties go to the last tied node for 0).
std::function<uint64_t()> Constant(uint64_t value) {
  return [value] { return value; };
}

// Returns the scripted values in order, then repeats them.
std::function<uint64_t()> Script(std::vector<uint64_t> values) {
  auto i = std::make_shared<size_t>(0);
  return [values = std::move(values), i] { return values[(*i)++ % values.size()]; };
}

// A clock that moves only when told to.
struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1000000);
  std::function<absl::Time()> Fn() {
    return [this] { return now; };
  }
};

std::string PickId(const Router& router, const Snapshot& snap, const RouteRequest& req) {
  auto choice = router.Pick(snap, req);
  EXPECT_TRUE(choice.ok()) << choice.status();
  if (!choice.ok() || choice->node == nullptr) return "";
  return choice->node->id;
}

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
