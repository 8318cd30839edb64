// Demand-driven warm-up: gateways tell this node which models it offers cold have jobs that found
// no warm capacity (node.proto WarmDemand); with `prewarm` on, the node loads them in the
// background when they fit its memory budget without evicting anything, so the next jobs find
// them warm instead of waiting for a load (docs/architecture.md, "Demand-driven warm-up").
//
// The demand is untrusted (any registered-with gateway may send anything): it is validated,
// bounded, only names models this node serves under their pipeline, and at worst makes the node
// load a model it offers into memory it has free, one at a time, each at most once per cooldown.
#pragma once

#include <deque>
#include <functional>
#include <string>
#include <thread>

#include <prometheus/counter.h>
#include <prometheus/family.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "orchestrator/models/model_manager.h"
#include "switchyard/node/v1/node.pb.h"

namespace switchyard::orchestrator {

class Prewarmer {
 public:
  static constexpr int kMaxRoutes = 64;
  static constexpr size_t kMaxNameBytes = 256;

  struct Options {
    // Jobs in a gateway's window (queued + cold starts + refused + waited) before a route's
    // model is loaded (config prewarm_min_jobs).
    int min_jobs = 2;
    // A model is prewarmed at most once per cooldown (a prewarmed model that later goes idle is
    // evicted by on-demand loads as any other: this bounds the churn).
    absl::Duration cooldown = absl::Seconds(60);
  };

  // `models` and `metrics` (may be null) outlive this. Starts the loader thread.
  Prewarmer(
      ModelManager* models, Options options, Metrics* metrics,
      std::function<absl::Time()> now = [] { return absl::Now(); });
  ~Prewarmer();  // stops the loader thread and joins it (after a load in progress)
  Prewarmer(const Prewarmer&) = delete;
  Prewarmer& operator=(const Prewarmer&) = delete;

  // Checks `demand` from `gateway` (INVALID_ARGUMENT, logged, nothing queued when malformed) and
  // queues the models worth loading. Returns at once: the registration stream's reader calls it.
  absl::Status Accept(const std::string& gateway, const node::v1::WarmDemand& demand)
      ABSL_LOCKS_EXCLUDED(mu_);

  static absl::Status Validate(const node::v1::WarmDemand& demand);

  // Blocks until the queue is empty and no load is running, or `timeout` (tests); true if idle.
  bool WaitIdle(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  void Count(const std::string& model_id, const char* result);

  ModelManager* const models_;
  const Options options_;
  const std::function<absl::Time()> now_;
  prometheus::Family<prometheus::Counter>* prewarm_total_ = nullptr;
  Mutex mu_;
  CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool loading_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> queued_ ABSL_GUARDED_BY(mu_);
  // When each model was last queued: at most once per cooldown. Bounded by the models served.
  absl::flat_hash_map<std::string, absl::Time> last_queued_ ABSL_GUARDED_BY(mu_);
  std::thread loader_;  // last: starts once the members above exist
};

}  // namespace switchyard::orchestrator
