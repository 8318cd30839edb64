// Unit tests for the gateway's demand for warm capacity (routing/warm_demand.h): the sliding
// counts per route and the WarmDemand each node is sent.
#include "gateway/routing/warm_demand.h"

#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "gateway/router_test_util.h"

namespace switchyard::gateway {
namespace {

using router_test::CapSpec;
using router_test::Node;
using Kind = WarmDemandTracker::Kind;

class WarmDemandTest : public ::testing::Test {
 protected:
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  WarmDemandTracker demand_{absl::Seconds(10), [this] { return now_; }};
};

CapSpec Cap(const std::string& model, node::v1::ModelState state, bool no_room = false) {
  CapSpec c;
  c.model = model;
  c.state = state;
  c.no_room = no_room;
  return c;
}

TEST_F(WarmDemandTest, CountsEachKindPerRouteOverTheWindow) {
  demand_.Record("upscale", "a", Kind::kQueued);
  demand_.Record("upscale", "a", Kind::kQueued);
  demand_.Record("upscale", "a", Kind::kWaited);
  demand_.Record("upscale", "b", Kind::kColdStart);
  demand_.Record("image-to-image", "a", Kind::kRefused);
  auto a = demand_.Of("upscale", "a");
  EXPECT_EQ(a.counts[static_cast<int>(Kind::kQueued)], 2);
  EXPECT_EQ(a.counts[static_cast<int>(Kind::kWaited)], 1);
  EXPECT_EQ(a.total(), 3);
  EXPECT_EQ(demand_.Of("upscale", "b").total(), 1);
  EXPECT_EQ(demand_.Of("image-to-image", "a").total(), 1);
  EXPECT_EQ(demand_.Of("upscale", "nobody").total(), 0);
  // Pipeline and model are kept apart ("up" + "scale/a" is not "upscale" + "a").
  EXPECT_EQ(demand_.Of("up", "scalea").total(), 0);
  now_ += absl::Seconds(5);
  demand_.Record("upscale", "a", Kind::kRefused);
  EXPECT_EQ(demand_.Of("upscale", "a").total(), 4);
  now_ += absl::Seconds(7);  // the first three left the window
  EXPECT_EQ(demand_.Of("upscale", "a").total(), 1);
  now_ += absl::Seconds(10);
  EXPECT_EQ(demand_.Of("upscale", "a").total(), 0);
}

TEST_F(WarmDemandTest, ANodeIsToldOnlyOfRoutesItOffersColdWithRoom) {
  demand_.Record("upscale", "cold", Kind::kQueued);
  demand_.Record("upscale", "unloaded", Kind::kWaited);
  demand_.Record("upscale", "full", Kind::kQueued);
  demand_.Record("upscale", "warm", Kind::kQueued);
  demand_.Record("upscale", "loading", Kind::kQueued);
  auto node = Node(
      "n",
      {Cap("cold", node::v1::MODEL_STATE_COLD), Cap("unloaded", node::v1::MODEL_STATE_UNLOADED),
       Cap("full", node::v1::MODEL_STATE_COLD, /*no_room=*/true),
       Cap("warm", node::v1::MODEL_STATE_READY), Cap("loading", node::v1::MODEL_STATE_LOADING),
       Cap("quiet", node::v1::MODEL_STATE_COLD)});
  node::v1::WarmDemand out;
  ASSERT_TRUE(demand_.BuildFor(*node, "gw-1", &out));
  EXPECT_EQ(out.gateway_id(), "gw-1");
  EXPECT_EQ(out.window_ms(), 10000);
  ASSERT_EQ(out.routes_size(), 2);
  EXPECT_EQ(out.routes(0).model_id(), "cold");
  EXPECT_EQ(out.routes(0).pipeline(), "upscale");
  EXPECT_EQ(out.routes(0).queued(), 1);
  EXPECT_EQ(out.routes(1).model_id(), "unloaded");
  EXPECT_EQ(out.routes(1).waited(), 1);

  // Nothing to say to a node that offers them all warm, or once the window has passed.
  auto warm = Node("w", {Cap("cold", node::v1::MODEL_STATE_READY)});
  EXPECT_FALSE(demand_.BuildFor(*warm, "gw-1", &out));
  now_ += absl::Seconds(11);
  EXPECT_FALSE(demand_.BuildFor(*node, "gw-1", &out));
  EXPECT_EQ(out.routes_size(), 0);
}

TEST_F(WarmDemandTest, BoundedRoutesPerMessageAndRemembered) {
  std::vector<CapSpec> caps;
  for (int i = 0; i < kMaxWarmDemandRoutes + 10; ++i) {
    const std::string model = absl::StrCat("m", i);
    demand_.Record("upscale", model, Kind::kColdStart);
    caps.push_back(Cap(model, node::v1::MODEL_STATE_COLD));
  }
  node::v1::WarmDemand out;
  ASSERT_TRUE(demand_.BuildFor(*Node("n", caps), "gw", &out));
  EXPECT_EQ(out.routes_size(), kMaxWarmDemandRoutes);

  // Beyond kMaxRoutes routes, the one with the oldest demand is forgotten.
  for (size_t i = 0; i < WarmDemandTracker::kMaxRoutes; ++i) {
    now_ += absl::Microseconds(1);
    demand_.Record("x", absl::StrCat("r", i), Kind::kQueued);
  }
  EXPECT_EQ(demand_.Of("upscale", "m0").total(), 0);  // among the oldest: forgotten
  EXPECT_EQ(demand_.Of("x", "r0").total(), 1);
  EXPECT_EQ(demand_.Of("x", absl::StrCat("r", WarmDemandTracker::kMaxRoutes - 1)).total(), 1);
}

}  // namespace
}  // namespace switchyard::gateway
