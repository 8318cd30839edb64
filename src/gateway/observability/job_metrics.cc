#include "gateway/observability/job_metrics.h"

#include <prometheus/registry.h>

#include "common/status.h"

namespace switchyard::gateway {

JobMetrics::JobMetrics(Metrics* metrics) {
  auto& registry = metrics->registry();
  const std::string& p = metrics->prefix();
  jobs_ = &prometheus::BuildCounter()
               .Name(p + "jobs_total")
               .Help("Client jobs answered, by pipeline, model and the gRPC code the client got.")
               .Register(registry);
  duration_ = &prometheus::BuildHistogram()
                   .Name(p + "job_duration_seconds")
                   .Help("Client jobs from arrival to answer, retries and waiting included.")
                   .Register(registry);
  queue_wait_ = &prometheus::BuildHistogram()
                     .Name(p + "queue_wait_seconds")
                     .Help("Time jobs waited at the gateway for an orchestrator with room.")
                     .Register(registry);
  retries_ = &prometheus::BuildCounter()
                  .Name(p + "retries_total")
                  .Help("Attempts tried again on another orchestrator, by pipeline and reason.")
                  .Register(registry);
  ejections_ = &prometheus::BuildCounter()
                    .Name(p + "ejections_total")
                    .Help("Orchestrators ejected from routing after consecutive failures.")
                    .Register(registry)
                    .Add({});
}

void JobMetrics::RecordJob(const std::string& pipeline, const std::string& model,
                           grpc::StatusCode code, absl::Duration total) {
  jobs_->Add({{"pipeline", pipeline}, {"model", model}, {"code", GrpcCodeName(code)}})
      .Increment();
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
