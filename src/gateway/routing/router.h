// Chooses the orchestrator for one job from a membership snapshot, and keeps the per-node health
// (outlier ejection), latency averages and retry budget that inform those choices.
//
// Decision cost is flat in the number of nodes: the snapshot's route index gives the candidates
// for (pipeline, model), and power of two choices samples from them (up to 16 draws, skipping
// ineligible or busy ones). When sampling finds no warm node with room, Pick walks that one
// route from a random point until it finds two; only when none has room (every warm slot busy)
// does it judge the whole route, to find the best cold or queueing node. Routes of up to 16
// candidates are always judged whole.
//
// Threading: every method is safe to call concurrently. Pick reads the snapshot and per-node
// atomics (NodeStats) without locks; its only writes are two lock-free window counters (the
// new-node share). ReportAttempt updates atomics, and takes NodeHealth's mutex only to eject a
// node or end an ejection. The injected random source and clock must be thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/routing/node_health.h"
#include "gateway/routing/route_index.h"
#include "gateway/routing/snapshot.h"

namespace switchyard::gateway {

struct RouterOptions {
  // Outlier ejection (NodeHealth): consecutive retryable failures that eject a node; the first
  // ejection lasts eject_base, each later one twice as long up to eject_max; never more than
  // max_ejected_fraction of the known nodes out at once.
  int eject_after_failures = 3;
  absl::Duration eject_base = absl::Seconds(1);
  absl::Duration eject_max = absl::Seconds(30);
  double max_ejected_fraction = 0.5;
  // Retry budget (RetryBudget): retries in the last retry_budget_window stay under
  // retry_budget_ratio x jobs in it + retry_budget_min_per_second x its length.
  double retry_budget_ratio = 0.2;
  double retry_budget_min_per_second = 3;
  absl::Duration retry_budget_window = absl::Seconds(10);
  // Latency EWMA per node and model, over successful warm attempts: weight of a new sample.
  double ewma_alpha = 0.3;
  // A (node, model) with fewer samples than this, or none for latency_stale_after, is
  // unmeasured: it competes with the latency of the node it is compared with (neutral), and
  // at most new_node_share of the decisions in new_node_window go to unmeasured or probation
  // nodes when a measured one was the alternative.
  int min_latency_samples = 3;
  absl::Duration latency_stale_after = absl::Seconds(30);
  double new_node_share = 0.1;
  absl::Duration new_node_window = absl::Seconds(10);
};

struct RouteRequest {
  std::string pipeline;
  std::string model_id;
  std::set<std::string> excluded;  // nodes already tried for this job
  double max_price_per_unit = 0;   // 0: no cap
  // A node this job should stay on (a stream's segments go where its session is): chosen whenever
  // it offers the route warm, within the price cap, and is not excluded, ejected, draining or
  // failed, even when full (its session already holds a slot there). Otherwise ignored. Finding
  // it walks the route, so it costs O(route size).
  std::string preferred;
  // The client's x-max-total-price for the whole job (0: none). The router ignores it (the
  // gateway turns it into max_price_per_unit from the job's quoted units before routing); it
  // travels with the route to settlement, where the billed amount is kept within it
  // (JobBilling::Job::max_total_price; docs/metering.md, "Quotes").
  double max_total_price = 0;
};

struct RouteChoice {
  std::shared_ptr<const NodeView> node;
  bool warm = false;
  // Warm, but every slot was busy when picked: the job queues there (no warm node had room).
  bool full = false;
};

// The price per unit `node` advertised for `pipeline` and `model_id` in the view it was picked
// from (views are immutable: a later update makes a new one), which is what the job is billed at.
// An empty `pipeline` takes the model's first offer under any pipeline but transcode, as
// PickInferenceNode (KServe) does. nullopt when the view offers no such capability.
std::optional<double> AdvertisedPrice(const NodeView& node, std::string_view pipeline,
                                      std::string_view model_id);

// Why a candidate cannot take a job now (Router::Explain). kNone: it can.
enum class RouteFilter : uint8_t {
  kNone,
  kInvalidPrice,  // advertises a price that is not a finite number >= 0
  kOverPrice,     // over the request's price cap
  kDraining,      // the node is draining
  kExcluded,      // already tried for this job (RouteRequest::excluded)
  kModelFailed,   // the model failed to load there
  kNoRoomToLoad,  // cold and no memory to load it now
  kEjected,       // ejected after repeated failures (until RouteExplanation's ejected_until)
  kNotOffered,    // the node does not offer the pipeline + model
};
// Stable snake_case names ("price_over_cap", "no_room", "ejected", ...) for APIs and logs.
absl::string_view RouteFilterName(RouteFilter filter);
// A short human sentence ("is draining").
absl::string_view RouteFilterText(RouteFilter filter);

// How the router ranks an eligible candidate: a tier is preferred to every later one.
enum class RouteTier : uint8_t { kWarmRoom, kCold, kWarmFull, kFiltered };
absl::string_view RouteTierName(RouteTier tier);  // "warm", "cold", "warm_full", "filtered"

// One node as Router::Explain judged it for one request.
struct CandidateExplanation {
  std::string node_id;
  std::string address;
  RouteTier tier = RouteTier::kFiltered;
  RouteFilter filter = RouteFilter::kNone;
  std::string reason;                       // human text for a filtered one ("" otherwise)
  std::optional<absl::Time> ejected_until;  // kEjected: when the ejection ends
  double price_per_unit = 0;
  std::string model_state;  // "ready", "cold", ... ("" when not offered)
  // The parts of the score: load = max(reported in use, this gateway's in flight) / capacity;
  // latency_ms is the node's latency average for the model (measured: enough recent samples);
  // score = latency x (1 + load), lower is better, an unmeasured node taking the mean latency of
  // the measured ones (1 ms when none is). Zero for filtered ones.
  double load = 0;
  double latency_ms = 0;
  bool measured = false;
  double score = 0;
  int64_t free_memory_mb = -1;  // on the model's device; -1: no budget (cold tier ranks by it)
  // The one the router favours: lowest score (most free memory for the cold tier) in the best
  // non-empty tier. Pick draws two of the warm tier and takes the better (power of two
  // choices), so the favourite wins most decisions, not all.
  bool best = false;
};

struct RouteExplanation {
  // Every node of the snapshot: those offering the route first (eligible by tier and score, then
  // filtered), then those that do not offer it (kNotOffered).
  std::vector<CandidateExplanation> candidates;
  int offering = 0;  // nodes offering the pipeline + model
  int eligible = 0;  // of those, not filtered
};

enum class AttemptOutcome {
  kSuccess,
  kNodeFailure,  // UNAVAILABLE, attempt timeout, node lost: counts towards ejection
  kRefused,      // RESOURCE_EXHAUSTED (capacity): no health change
  kClientError,  // not the node's fault: no health change
};

class Router {
 public:
  // Default options and the real clock.
  explicit Router(std::function<uint64_t()> random);
  // `random` returns uniformly distributed 64-bit values; `now` is the clock for ejections and
  // the sliding windows.
  Router(
      RouterOptions options, std::function<uint64_t()> random,
      std::function<absl::Time()> now = [] { return absl::Now(); });

  // NOT_FOUND when no known orchestrator offers pipeline + model at all, or none at or under the
  // price cap (the message names the cap and the cheapest offer). UNAVAILABLE when some do but
  // none can take the job now (draining, failed model, no memory to load it, ejected, already
  // tried, or advertising a price that is not a finite number >= 0), with the reason.
  //
  // Preference: a warm model (READY) with a free slot, chosen by power of two choices on
  // score = latency EWMA x (1 + load), load = max(reported in use, this gateway's in flight) /
  // capacity; else a cold one that can load it (COLD, UNLOADED or LOADING; the most free memory
  // on the model's device, then the lowest load); else a warm one that is full (the job queues
  // there; lowest score). Ties go to the first sampled (P2C) or are broken at random (scans).
  //
  // Each successful Pick also counts, on the NodeStats of every other candidate the decision
  // judged (the whole route when it has up to 16 candidates, otherwise the up to 16 sampled),
  // why that node lost (MissReason), and a win on the chosen node: NodeStats::CountsOf.
  absl::StatusOr<RouteChoice> Pick(const Snapshot& snapshot, const RouteRequest& request) const;

  // Every node of `snapshot` judged for `request` with the same evaluation as Pick: its tier and
  // score, or why it is filtered. Reads only: counts nothing, chooses nothing. O(nodes).
  RouteExplanation Explain(const Snapshot& snapshot, const RouteRequest& request) const;

  // Feeds health and latency after each attempt on `node`. `latency` is the attempt's duration;
  // `loaded_model` says the attempt went to a cold model (its load time is not a speed sample).
  void ReportAttempt(const NodeView& node, const std::string& model_id, AttemptOutcome outcome,
                     absl::Duration latency, bool loaded_model = false);
  void RecordJob();  // a new client job arrived (feeds the retry budget)
  bool TryRetry();   // true and consumes budget if a retry is allowed now
  bool IsEjected(const std::string& node_id) const;
  // Ejects `node` for `duration` (NodeHealth::Ban): a spot check proved its results wrong.
  void Ban(const NodeView& node, absl::Duration duration);
  int64_t ejections_total() const { return health_.ejections_total(); }

  const RouterOptions& options() const { return options_; }
  const NodeHealth& health() const { return health_; }

 private:
  struct Eval;
  struct Context;
  Eval Evaluate(const Snapshot& snapshot, uint32_t node, uint32_t cap, const Context& ctx) const;
  // Judges the route's candidates from `offset` (wrapping round), all of them or until two warm
  // ones with room are found, and chooses by the tier order above.
  absl::StatusOr<RouteChoice> Scan(const Snapshot& snapshot,
                                   const RouteIndex::Candidates& candidates, const Context& ctx,
                                   size_t offset, bool stop_at_two) const;
  const Eval& TwoChoices(const Eval& a, const Eval& b, const Context& ctx) const;
  // For loading a cold model: more free memory on its device, then lower load.
  static bool ColdBetter(const Eval& a, const Eval& b);
  RouteChoice Decide(const Snapshot& snapshot, const Eval& e, const Context& ctx,
                     bool from_p2c) const;
  // Counts the decision for `chosen` against every other candidate judged for it.
  void CountDecision(const Snapshot& snapshot, const Eval& chosen, const Context& ctx) const;

  const RouterOptions options_;
  const std::function<uint64_t()> random_;
  const std::function<absl::Time()> now_;
  NodeHealth health_;
  RetryBudget budget_;
  // Decisions, and those that went to unmeasured or probation nodes, for new_node_share.
  mutable SlidingCounter decisions_;
  mutable SlidingCounter limited_decisions_;
  mutable std::atomic<size_t> known_nodes_{0};
};

}  // namespace switchyard::gateway
