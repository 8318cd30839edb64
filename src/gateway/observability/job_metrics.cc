#include "gateway/observability/job_metrics.h"

#include <prometheus/registry.h>

#include "common/status.h"

namespace switchyard::gateway {

JobMetrics::JobMetrics(Metrics* metrics) {
  jobs_ = &metrics->CounterFamily(
      "jobs_total", "Client jobs answered, by pipeline, model and the gRPC code the client got.");
  duration_ = &metrics->HistogramFamily(
      "job_duration_seconds", "Client jobs from arrival to answer, retries and waiting included.");
  queue_wait_ = &metrics->HistogramFamily(
      "queue_wait_seconds", "Time jobs waited at the gateway for an orchestrator with room.");
  retries_ = &metrics->CounterFamily(
      "retries_total", "Attempts tried again on another orchestrator, by pipeline and reason.");
  ejections_ =
      &metrics
           ->CounterFamily("ejections_total",
                           "Orchestrators ejected from routing after consecutive failures.")
           .Add({});
}

void JobMetrics::RecordJob(const std::string& pipeline, const std::string& model,
                           grpc::StatusCode code, absl::Duration total) {
  jobs_->Add({{"pipeline", pipeline}, {"model", model}, {"code", GrpcCodeName(code)}}).Increment();
  duration_->Add({{"pipeline", pipeline}}, Metrics::LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(total));
}

void JobMetrics::RecordRetry(const std::string& pipeline, absl::string_view reason) {
  retries_->Add({{"pipeline", pipeline}, {"reason", std::string(reason)}}).Increment();
}

void JobMetrics::RecordQueueWait(const std::string& pipeline, absl::Duration waited) {
  queue_wait_->Add({{"pipeline", pipeline}}, Metrics::LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(waited));
}

void JobMetrics::SyncEjections(int64_t total) {
  const int64_t seen = ejections_seen_.exchange(total);
  if (total > seen) ejections_->Increment(static_cast<double>(total - seen));
}

}  // namespace switchyard::gateway
