// Demand for warm capacity, per route: the gateway counts the jobs that found no warm node with
// a free slot, and tells each orchestrator that offers such a route cold (node.proto WarmDemand,
// over its registration stream), so that a node with prewarm on and free memory can load the
// model before jobs have to wait for it (demand-driven warm-up, docs/architecture.md).
//
// Counted on the dispatcher's slow paths only (a pick that was not a warm node with room, a
// refusal, a wait), never on a plain warm pick: the hot path takes no lock here.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "gateway/routing/node_health.h"
#include "gateway/routing/snapshot.h"
#include "switchyard/node/v1/node.pb.h"

namespace switchyard::gateway {

// Routes per WarmDemand message (kept in step with what orchestrators accept).
inline constexpr int kMaxWarmDemandRoutes = 64;
// How often a registration stream sends demand at most (piggybacked on the node's updates).
inline constexpr absl::Duration kWarmDemandInterval = absl::Seconds(1);

class WarmDemandTracker {
 public:
  // Why a job counts as demand for warm capacity (node.proto WarmDemand.Route's counts).
  enum class Kind : uint8_t {
    kQueued,     // sent to a warm node whose every slot was busy
    kColdStart,  // sent to a node that had to load the model first
    kRefused,    // refused for capacity by a node, or the gateway's queue was full
    kWaited,     // parked at the gateway to wait for a node with room
  };
  static constexpr int kKinds = 4;
  // Routes remembered at most; beyond, the one with the oldest demand is forgotten.
  static constexpr size_t kMaxRoutes = 1024;

  explicit WarmDemandTracker(
      absl::Duration window = absl::Seconds(10),
      std::function<absl::Time()> now = [] { return absl::Now(); });

  void Record(absl::string_view pipeline, absl::string_view model_id, Kind kind)
      ABSL_LOCKS_EXCLUDED(mu_);

  struct Demand {
    std::string pipeline;
    std::string model_id;
    std::array<int64_t, kKinds> counts{};
    int64_t total() const { return counts[0] + counts[1] + counts[2] + counts[3]; }
  };
  // The demand of one route over the window (all zero when none).
  Demand Of(absl::string_view pipeline, absl::string_view model_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // Fills `out` with the demand for every route `node` offers cold (COLD or UNLOADED, not marked
  // no_room) that had demand in the window, up to kMaxWarmDemandRoutes. False when there is none.
  bool BuildFor(const NodeView& node, const std::string& gateway_id,
                node::v1::WarmDemand* out) const ABSL_LOCKS_EXCLUDED(mu_);

  absl::Duration window() const { return window_; }

 private:
  struct Entry {
    Entry(std::string p, std::string m, absl::Duration window);
    std::string pipeline;
    std::string model_id;
    std::array<SlidingCounter, kKinds> counts;
    absl::Time last = absl::InfinitePast();
  };
  static std::string KeyOf(absl::string_view pipeline, absl::string_view model_id);
  Demand DemandLocked(const Entry& e, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration window_;
  const std::function<absl::Time()> now_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Entry>> routes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::gateway
