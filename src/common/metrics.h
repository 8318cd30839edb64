// Prometheus metrics for a daemon: a prometheus-cpp registry, process metrics, per-RPC metrics
// recorded by a gRPC server interceptor, and the text exposition served at /metrics.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/http_server.h"
#include "common/mutex.h"

namespace switchyard {

class Metrics {
 public:
  // `daemon` ("gateway", "orchestrator") prefixes the daemon's own metric names:
  // switchyard_<daemon>_...
  explicit Metrics(std::string daemon);

  prometheus::Registry& registry() { return *registry_; }
  const std::string& prefix() const { return prefix_; }

  // A family of this daemon's metrics, named <prefix()><name> (e.g. "jobs_total" is
  // switchyard_gateway_jobs_total), registered here.
  prometheus::Family<prometheus::Counter>& CounterFamily(const std::string& name,
                                                         const std::string& help);
  prometheus::Family<prometheus::Gauge>& GaugeFamily(const std::string& name,
                                                     const std::string& help);
  prometheus::Family<prometheus::Histogram>& HistogramFamily(const std::string& name,
                                                             const std::string& help);

  // Called at every scrape before serializing, to refresh gauges computed from state (models by
  // state, orchestrators available, ...).
  void OnScrape(std::function<void()> refresh) ABSL_LOCKS_EXCLUDED(mu_);

  // The Prometheus text exposition (version 0.0.4) of everything, with process metrics.
  std::string Render() ABSL_LOCKS_EXCLUDED(mu_);

  // Records every RPC: switchyard_grpc_requests_total{service,method,code} and
  // switchyard_grpc_request_duration_seconds{service,method}. Add to a ServerBuilder with
  // experimental().SetInterceptorCreators.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  void RecordRpc(const std::string& full_method, grpc::StatusCode code, double seconds);

  // Standard latency buckets, in seconds (1 ms .. 120 s).
  static prometheus::Histogram::BucketBoundaries LatencyBuckets();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::string prefix_;
  Mutex mu_;
  std::vector<std::function<void()>> refreshers_ ABSL_GUARDED_BY(mu_);
  prometheus::Family<prometheus::Counter>* rpc_requests_;
  prometheus::Family<prometheus::Histogram>* rpc_duration_;
};

// Adds the operator endpoints every daemon serves: /healthz (200 while the process runs),
// /readyz (`ready` decides) and /metrics (`metrics`' exposition).
void AddOperatorRoutes(Metrics* metrics, std::function<http::Response()> ready,
                       std::map<std::string, http::Handler>* routes);

}  // namespace switchyard
