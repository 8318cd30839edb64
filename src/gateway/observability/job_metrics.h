// The gateway's per-job Prometheus metrics: jobs by pipeline, model and outcome, their duration,
// time spent waiting at the gateway for an orchestrator with room, retries by reason, and
// ejections. Fed by GatewayService's jobs; thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <grpcpp/support/status.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/metrics.h"

namespace switchyard::gateway {

class JobMetrics {
 public:
  // Registers switchyard_gateway_jobs_total{pipeline,model,code},
  // switchyard_gateway_job_duration_seconds{pipeline}, switchyard_gateway_queue_wait_seconds
  // {pipeline}, switchyard_gateway_retries_total{pipeline,reason} and
  // switchyard_gateway_ejections_total in `metrics`' registry (which must outlive this).
  explicit JobMetrics(Metrics* metrics);

  // A job answered its client: `code` is what the client got, `total` from arrival to answer.
  void RecordJob(const std::string& pipeline, const std::string& model, grpc::StatusCode code,
                 absl::Duration total);
  // A job is tried again elsewhere: `reason` "node_failure" (unavailable or timed out) or
  // "refused" (the node was full).
  void RecordRetry(const std::string& pipeline, absl::string_view reason);
  // A job waited at the gateway for room this long before it was tried again (or gave up).
  void RecordQueueWait(const std::string& pipeline, absl::Duration waited);
  // The router's ejection count since start; the counter follows it (called at every scrape).
  void SyncEjections(int64_t total);

 private:
  prometheus::Family<prometheus::Counter>* jobs_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Family<prometheus::Histogram>* queue_wait_;
  prometheus::Family<prometheus::Counter>* retries_;
  prometheus::Counter* ejections_;
  std::atomic<int64_t> ejections_seen_{0};
};

}  // namespace switchyard::gateway
