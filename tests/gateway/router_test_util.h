// Shared fixtures of the Router unit tests (router_test.cc, router_health_test.cc): hand-built
// node views and snapshots, injected random sources and a clock that moves only when told to.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/time/time.h"
#include "gateway/membership/membership.h"
#include "gateway/routing/route_index.h"
#include "gateway/routing/router.h"

namespace switchyard::gateway::router_test {
using node::v1::MODEL_STATE_COLD;
using node::v1::MODEL_STATE_FAILED;
using node::v1::MODEL_STATE_LOADING;
using node::v1::MODEL_STATE_READY;

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

inline std::shared_ptr<const NodeView> Node(const std::string& id, const std::vector<CapSpec>& caps,
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

inline CapSpec WithState(node::v1::ModelState state, int capacity = 2, int in_use = 0) {
  CapSpec c;
  c.state = state;
  c.capacity = capacity;
  c.in_use = in_use;
  return c;
}
inline CapSpec Ready(int capacity, int in_use) {
  return WithState(MODEL_STATE_READY, capacity, in_use);
}

// Indexed as Membership publishes it.
inline Snapshot Snap(std::vector<std::shared_ptr<const NodeView>> nodes) {
  Snapshot s;
  s.version = 1;
  s.nodes = std::move(nodes);
  IndexSnapshot(s, nullptr);
  return s;
}

inline RouteRequest Request(std::set<std::string> excluded = {}) {
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
inline std::function<uint64_t()> Constant(uint64_t value) {
  return [value] { return value; };
}

// Returns the scripted values in order, then repeats them.
inline std::function<uint64_t()> Script(std::vector<uint64_t> values) {
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

inline std::string PickId(const Router& router, const Snapshot& snap, const RouteRequest& req) {
  auto choice = router.Pick(snap, req);
  EXPECT_TRUE(choice.ok()) << choice.status();
  if (!choice.ok() || choice->node == nullptr) return "";
  return choice->node->id;
}

}  // namespace switchyard::gateway::router_test
