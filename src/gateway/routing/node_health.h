// The gateway's view of each orchestrator's health and speed, and its retry budget: control-plane
// state that the router reads on every decision and updates after every attempt.
//
// Threading: NodeStats is atomics only; the router reads it on the hot path without a lock and
// updates it from any thread. NodeHealth takes its mutex only when a node is ejected or returns
// from an ejection (rare), never on a plain success or a decision. RetryBudget counts jobs
// lock-free and takes its mutex only to make a retry's check-and-consume atomic.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/mutex.h"

namespace switchyard::gateway {

// Counts events over a sliding window split into kBuckets buckets, lock-free: each bucket is one
// atomic word holding (bucket epoch, count), so a stale bucket is reset by the first add that
// reaches it. The sum covers the current bucket and the kBuckets - 1 before it.
class SlidingCounter {
 public:
  static constexpr int kBuckets = 10;
  explicit SlidingCounter(absl::Duration window);
  // One hour: NodeStats' per-route decision windows.
  SlidingCounter() : SlidingCounter(absl::Hours(1)) {}
  void Add(absl::Time now, uint32_t n = 1) { AddAt(EpochOf(now), n); }
  int64_t Sum(absl::Time now) const;
  // The bucket epoch of `now`, and Add with it: for callers that add to several counters of the
  // same window at once (one clock conversion and division for all).
  uint64_t EpochOf(absl::Time now) const;
  void AddAt(uint64_t epoch, uint32_t n = 1);
  absl::Duration window() const { return window_; }

 private:
  absl::Duration window_;
  int64_t bucket_ns_;
  std::atomic<uint64_t> buckets_[kBuckets];
};

// A nonzero key for a model id, for NodeStats' per-model latency slots.
uint64_t ModelKey(absl::string_view model_id);
// A nonzero key for a (pipeline, model) route, for NodeStats' decision counters. Stable within a
// process only; the names are recovered from the node's capabilities when reported.
uint64_t RouteKey(absl::string_view pipeline, absl::string_view model_id);

// Why a node that offered a route lost a routing decision to another node (the missed-job
// counters the gateway sends to each orchestrator, node.proto MissedJobs). Kept in step with
// node.proto's MissedJobs.Reason (value = enum value there - 1).
enum class MissReason : uint8_t {
  kPrice,        // over the request's price cap (or a price that is not a finite number >= 0)
  kBusy,         // warm, but every slot busy
  kCold,         // not loaded (or no memory to load it) while another node was chosen
  kEjected,      // ejected after repeated failures
  kDraining,     // draining
  kModelFailed,  // the model failed to load there
  kSlower,       // eligible, but the chosen node scored better (latency x (1 + load))
};
inline constexpr int kMissReasons = 7;

// One node's health and latency record, shared by every view of the node (NodeView::stats).
class NodeStats {
 public:
  // Per-model slots; further models of the same node share one overflow slot.
  static constexpr int kModelSlots = 8;
  struct Latency {
    double ewma_ms = 0;
    uint32_t samples = 0;
    int64_t last_ns = 0;  // when the latest sample came (unix ns)
  };

  Latency LatencyOf(uint64_t model_key) const;

  // Routing decisions on one route (RouteKey) that this node took part in: won, and lost by
  // reason, since the node was first seen (cumulative) and in the last hour (sliding window).
  // Lock-free: a decision adds to atomics in a slot claimed once per route. Per-route slots;
  // decisions on further routes of the same node (more than kRouteSlots) are not counted.
  static constexpr int kRouteSlots = 8;
  struct RouteCounts {
    int64_t won_total = 0;
    int64_t won_last_hour = 0;
    int64_t missed_total[kMissReasons] = {};
    int64_t missed_last_hour[kMissReasons] = {};
  };
  // `hour_epoch`: HourEpoch(now), computed once per decision for all the nodes it counts on.
  static uint64_t HourEpoch(absl::Time now);
  void CountWin(uint64_t route_key, uint64_t hour_epoch);
  void CountMiss(uint64_t route_key, MissReason reason, uint64_t hour_epoch);
  // Zeros for a route without a slot.
  RouteCounts CountsOf(uint64_t route_key, absl::Time now) const;
  // The ejection's end, when the node is ejected at `now`.
  std::optional<absl::Time> EjectedUntil(absl::Time now) const {
    const int64_t until = std::max(ejected_until_ns_.load(std::memory_order_relaxed),
                                   banned_until_ns_.load(std::memory_order_relaxed));
    if (until == 0 || until <= absl::ToUnixNanos(now)) return std::nullopt;
    return absl::FromUnixNanos(until);
  }
  // First sample sets the average; later ones blend in with weight `alpha`.
  void RecordLatency(uint64_t model_key, double ms, double alpha, absl::Time now);

  bool EjectedAt(absl::Time now) const {
    const int64_t until = ejected_until_ns_.load(std::memory_order_relaxed);
    return (until != 0 && until > absl::ToUnixNanos(now)) || BannedAt(now);
  }
  // Ejected by NodeHealth::Ban (a spot check proved its results wrong): a success does not end
  // it, only its time.
  bool BannedAt(absl::Time now) const {
    const int64_t until = banned_until_ns_.load(std::memory_order_relaxed);
    return until != 0 && until > absl::ToUnixNanos(now);
  }
  // Jobs at once per model that routing allows this node whatever capacity it advertises: set
  // when its hardware claim failed a known-answer check (gateway/membership/hardware_checker.h);
  // 0: as advertised.
  int capacity_cap() const { return capacity_cap_.load(std::memory_order_relaxed); }
  void set_capacity_cap(int cap) { capacity_cap_.store(cap, std::memory_order_relaxed); }

  // Ejected before and not yet succeeded since: routed like an unmeasured node (bounded share).
  bool on_probation() const { return probation_.load(std::memory_order_relaxed); }
  int consecutive_failures() const { return consecutive_failures_.load(std::memory_order_relaxed); }
  // Ejection level: the next ejection lasts base * 2^level (capped).
  int ejection_level() const { return level_.load(std::memory_order_relaxed); }

 private:
  friend class NodeHealth;
  std::atomic<int> capacity_cap_{0};
  struct ModelSlot {
    std::atomic<uint64_t> key{0};
    std::atomic<uint64_t> ewma_bits{0};
    std::atomic<uint32_t> samples{0};
    std::atomic<int64_t> last_ns{0};
  };
  const ModelSlot* FindSlot(uint64_t model_key) const;
  ModelSlot* SlotFor(uint64_t model_key);

  struct RouteSlot {
    std::atomic<uint64_t> key{0};
    std::atomic<int64_t> won{0};
    std::atomic<int64_t> missed[kMissReasons] = {};
    SlidingCounter won_hour;
    SlidingCounter missed_hour[kMissReasons];
  };
  RouteSlot* RouteSlotFor(uint64_t route_key);

  ModelSlot models_[kModelSlots];
  ModelSlot overflow_;
  RouteSlot routes_[kRouteSlots];
  std::atomic<int> consecutive_failures_{0};
  std::atomic<int64_t> ejected_until_ns_{0};  // 0: never ejected or returned by a success
  std::atomic<int64_t> last_until_ns_{0};     // end of the latest ejection
  std::atomic<int64_t> banned_until_ns_{0};   // end of a Ban; 0: never banned
  std::atomic<bool> probation_{false};
  std::atomic<int> level_{0};
};

struct HealthOptions {
  int eject_after_failures = 3;                  // consecutive retryable failures that eject a node
  absl::Duration eject_base = absl::Seconds(1);  // first ejection; doubles with each one
  absl::Duration eject_max = absl::Seconds(30);  // cap on one ejection
  double max_ejected_fraction = 0.5;             // of all known nodes, ejected at once
};

// Outlier ejection. A node is ejected after `eject_after_failures` consecutive retryable
// failures for base * 2^level (capped at eject_max); the level grows by one per ejection and
// decays by one per eject_max that passes between the end of one ejection and the next failure
// streak, so a node that fails once in a while goes back to short ejections while a flapping one
// is kept out longer. After an ejection ends the node is on probation (bounded share, see
// RouterOptions::new_node_share) and one more failure ejects it again; a success ends ejection and
// probation and resets the failure count. Ejections never exceed floor(max_ejected_fraction x
// known nodes) at once.
class NodeHealth {
 public:
  NodeHealth(HealthOptions options, std::function<absl::Time()> now);

  void RecordSuccess(const std::string& node_id, NodeStats& stats) ABSL_LOCKS_EXCLUDED(mu_);
  // Counts a retryable failure; returns whether it ejected the node. `known_nodes` is the number
  // of nodes in the latest snapshot, for max_ejected_fraction.
  bool RecordFailure(const std::string& node_id, const std::shared_ptr<NodeStats>& stats,
                     size_t known_nodes) ABSL_LOCKS_EXCLUDED(mu_);

  // Ejects the node until `until` whatever its streak and max_ejected_fraction, and a success
  // does not end it (a spot check proved its results wrong: gateway/api/spot_check.h).
  void Ban(const std::string& node_id, const std::shared_ptr<NodeStats>& stats, absl::Time until)
      ABSL_LOCKS_EXCLUDED(mu_);

  bool IsEjected(const std::string& node_id) const ABSL_LOCKS_EXCLUDED(mu_);
  int EjectedCount() const ABSL_LOCKS_EXCLUDED(mu_);
  // Ejections since start (for metrics).
  int64_t ejections_total() const { return ejections_total_.load(std::memory_order_relaxed); }
  // How long the ejection at `level` lasts.
  absl::Duration EjectionTime(int level) const;
  const HealthOptions& options() const { return options_; }

 private:
  struct Ejection {
    std::shared_ptr<NodeStats> stats;
    absl::Time until;
  };
  void PurgeLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const HealthOptions options_;
  const std::function<absl::Time()> now_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, Ejection> ejected_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> ejections_total_{0};
};

struct RetryBudgetOptions {
  double ratio = 0.2;         // retries allowed per job over the window
  double min_per_second = 3;  // plus this many per second of window, for low traffic
  absl::Duration window = absl::Seconds(10);
};

// Envoy/Finagle-style retry budget: a retry is allowed while the retries in the window stay under
// ratio x jobs in the window + min_per_second x window length. Stops retry storms from
// multiplying load when many nodes fail at once.
class RetryBudget {
 public:
  RetryBudget(RetryBudgetOptions options, std::function<absl::Time()> now);
  void RecordJob();
  // True, and counts the retry, if one is allowed now.
  bool TryRetry() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const RetryBudgetOptions options_;
  const std::function<absl::Time()> now_;
  SlidingCounter jobs_;
  SlidingCounter retries_;
  Mutex mu_;  // serialises TryRetry's check and consume
};

}  // namespace switchyard::gateway
