// Unit tests for Router (gateway/router.h) with hand-built snapshots and an injected random
// source.
#include "gateway/router.h"

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

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
  }
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

Snapshot Snap(std::vector<std::shared_ptr<const NodeView>> nodes) {
  Snapshot s;
  s.version = 1;
  s.nodes = std::move(nodes);
  return s;
}

RouteRequest Request(std::set<std::string> excluded = {}) {
  return RouteRequest{.pipeline = "upscale", .model_id = "esrgan", .excluded = excluded};
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

std::string PickId(const Router& router, const Snapshot& snap, const RouteRequest& req) {
  auto choice = router.Pick(snap, req);
  EXPECT_TRUE(choice.ok()) << choice.status();
  if (!choice.ok() || choice->node == nullptr) return "";
  return choice->node->id;
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

TEST(RouterTest, PrefersReadyWithFreeSlotOverFullOverCold) {
  CountingRandom rnd;
  Router router(rnd.Fn());
  // Order in the snapshot is the reverse of the preference, with loads that would mislead a
  // router that ignored tiers (the cold node is idle, the free READY node is the busiest).
  auto cold = Node("cold", {WithState(MODEL_STATE_COLD, 8, 0)});
  auto full = Node("full", {Ready(1, 1)});
  auto free = Node("free", {Ready(4, 3)});

  auto c = router.Pick(Snap({cold, full, free}), Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node, free);
  EXPECT_TRUE(c->warm);

  c = router.Pick(Snap({cold, full}), Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node, full);
  EXPECT_TRUE(c->warm);

  c = router.Pick(Snap({cold}), Request());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node, cold);
  EXPECT_FALSE(c->warm);
  EXPECT_EQ(rnd.calls, 0);  // no ties, no randomness
}

TEST(RouterTest, LoadingCountsAsCold) {
  Router router(Constant(0));
  auto loading = Node("loading", {WithState(MODEL_STATE_LOADING, 8, 0)});
  auto full = Node("full", {Ready(1, 3)});
  auto c = router.Pick(Snap({loading, full}), Request());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node, full);
  c = router.Pick(Snap({loading}), Request());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node, loading);
  EXPECT_FALSE(c->warm);
}

TEST(RouterTest, AmongEqualTiersPrefersLowerLoadRatio) {
  CountingRandom rnd;
  Router router(rnd.Fn());
  // 3/4 = 0.75 vs 1/2 = 0.5 vs 2/3 = 0.67: b has the lowest ratio.
  Snapshot snap =
      Snap({Node("a", {Ready(4, 3)}), Node("b", {Ready(2, 1)}), Node("c", {Ready(3, 2)})});
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  // In the "full" tier too: 3/1 vs 2/2 -> the second.
  snap = Snap({Node("x", {Ready(1, 3)}), Node("y", {Ready(2, 2)})});
  EXPECT_EQ(PickId(router, snap, Request()), "y");
  // And among cold nodes.
  snap = Snap({Node("p", {WithState(MODEL_STATE_COLD, 2, 1)}),
               Node("q", {WithState(MODEL_STATE_COLD, 2, 0)})});
  EXPECT_EQ(PickId(router, snap, Request()), "q");
  EXPECT_EQ(rnd.calls, 0);
}

TEST(RouterTest, GatewayInFlightCountsAsLoad) {
  Router router(Constant(0));
  // a reports idle but this gateway has 1 job in flight there: 1/2 > b's 0/2.
  Snapshot snap =
      Snap({Node("a", {Ready(2, 0)}, false, /*in_flight=*/1), Node("b", {Ready(2, 0)})});
  EXPECT_EQ(PickId(router, snap, Request()), "b");
  // With 2 in flight, a is full (tier 1) even though its report says idle; a cold idle node
  // still loses to it, a READY node with room wins.
  auto a_full = Node("a", {Ready(2, 0)}, false, /*in_flight=*/2);
  auto cold = Node("cold", {WithState(MODEL_STATE_COLD, 2, 0)});
  auto roomy = Node("roomy", {Ready(4, 3)});
  EXPECT_EQ(PickId(router, Snap({a_full, roomy}), Request()), "roomy");
  auto c = router.Pick(Snap({a_full, cold}), Request());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node, a_full);
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

TEST(RouterTest, TiesAreBrokenByTheRandomSource) {
  Snapshot snap =
      Snap({Node("a", {Ready(2, 1)}), Node("b", {Ready(4, 2)}), Node("c", {Ready(2, 1)})});
  CountingRandom zero;  // 0 % n == 0: every later tied node replaces the choice
  zero.value = 0;
  Router last(zero.Fn());
  EXPECT_EQ(PickId(last, snap, Request()), "c");
  EXPECT_EQ(zero.calls, 2);

  CountingRandom one;  // 1 % n != 0 for n >= 2: the first tied node is kept
  one.value = 1;
  Router first(one.Fn());
  EXPECT_EQ(PickId(first, snap, Request()), "a");

  // A better node after the ties wins regardless of the random source.
  Snapshot better =
      Snap({Node("a", {Ready(2, 1)}), Node("b", {Ready(2, 1)}), Node("best", {Ready(2, 0)})});
  EXPECT_EQ(PickId(last, better, Request()), "best");
  EXPECT_EQ(PickId(first, better, Request()), "best");
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
