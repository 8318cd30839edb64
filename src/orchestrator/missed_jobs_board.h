// What this orchestrator's gateways say about the jobs it missed (node.proto MissedJobs, sent
// over each registration stream): kept per gateway, exported in /metrics and shown on /status so
// an operator sees why the node gets no work ("lost 120 jobs in the last hour on price; the
// median winning price was 0.5").
//
// A gateway's report is untrusted input: Accept validates and bounds it (routes, name sizes,
// reasons, counts) and keeps only routes this node offers, so a gateway cannot grow the metric
// series or memory without bound. Threading: every method is safe to call concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "switchyard/node/v1/node.pb.h"

namespace switchyard::orchestrator {

class MissedJobsBoard {
 public:
  static constexpr int kMaxRoutes = 64;          // per report
  static constexpr size_t kMaxNameBytes = 256;   // pipeline, model id, gateway id
  static constexpr int kMaxCountsPerRoute = 16;  // one per reason is all a gateway needs
  static constexpr size_t kMaxGateways = 64;     // distinct gateway labels kept

  // The (pipeline, model) routes this node offers; reports on other routes are dropped.
  using Routes = std::set<std::pair<std::string, std::string>>;
  // `offered` is called once per report (null: keep every route). `metrics` (may be null;
  // outlives this): where the counters are exported.
  MissedJobsBoard(std::function<Routes()> offered, Metrics* metrics);

  // Replaces what `gateway` (the configured address the report came from) said before.
  // INVALID_ARGUMENT, keeping nothing of it, for a report that breaks the bounds.
  absl::Status Accept(const std::string& gateway, const node::v1::MissedJobs& report)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Readable lines for /status, one per gateway and route.
  std::string Describe() const ABSL_LOCKS_EXCLUDED(mu_);

  // The reason's label ("price", "busy", "cold", "ejected", "draining", "model_failed",
  // "slower"), or "" for one out of range.
  static std::string ReasonName(int reason);

 private:
  struct Route {
    int64_t won_total = 0;
    int64_t won_last_hour = 0;
    std::map<int, std::pair<int64_t, int64_t>> missed;  // reason -> (total, last hour)
    bool has_median = false;
    double median_winning_price = 0;
  };
  struct Gateway {
    std::string gateway_id;  // as the gateway named itself (shown, not a label)
    absl::Time at;
    std::map<std::pair<std::string, std::string>, Route> routes;
  };
  static absl::Status Validate(const node::v1::MissedJobs& report);

  const std::function<Routes()> offered_;
  prometheus::Family<prometheus::Counter>* missed_total_ = nullptr;
  prometheus::Family<prometheus::Gauge>* missed_last_hour_ = nullptr;
  prometheus::Family<prometheus::Counter>* won_total_ = nullptr;
  prometheus::Family<prometheus::Gauge>* median_price_ = nullptr;
  mutable Mutex mu_;
  std::map<std::string, Gateway> gateways_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::orchestrator
