// Chooses the orchestrator for one job from a membership snapshot. Pure function of the snapshot,
// the request and the injected random source, so it is cheap and deterministic under test.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "gateway/membership.h"

namespace switchyard::gateway {

struct RouteRequest {
  std::string pipeline;
  std::string model_id;
  std::set<std::string> excluded;  // nodes already tried for this job
};

struct RouteChoice {
  std::shared_ptr<const NodeView> node;
  bool warm = false;
};

class Router {
 public:
  // `random` returns uniformly distributed 64-bit values; used only to break ties.
  explicit Router(std::function<uint64_t()> random);

  // NOT_FOUND when no known orchestrator offers pipeline + model at all; UNAVAILABLE when some do
  // but none can take the job now (failed model, draining, or already tried).
  // Preference: warm with a free slot, then warm (the job queues there), then cold (it loads);
  // within a tier the lowest load (in use / capacity), ties broken at random.
  absl::StatusOr<RouteChoice> Pick(const Snapshot& snapshot, const RouteRequest& request) const;

 private:
  std::function<uint64_t()> random_;
};

}  // namespace switchyard::gateway
