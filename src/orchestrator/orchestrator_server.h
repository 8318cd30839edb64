// Wires an orchestrator together: models, the gRPC service, registrations with gateways.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "common/node_identity.h"
#include "orchestrator/serving/inference_service.h"
#include "orchestrator/missed_jobs_board.h"
#include "orchestrator/models/model_manager.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/prewarmer.h"
#include "orchestrator/serving/orchestrator_service.h"
#include "orchestrator/serving/registration_client.h"
#include "orchestrator/models/status_board.h"

namespace switchyard::orchestrator {

class OrchestratorServer {
 public:
  // Validates, binds the listen port and starts serving; warm models load in LoadWarmModels.
  static absl::StatusOr<std::unique_ptr<OrchestratorServer>> Create(OrchestratorConfig config);
  ~OrchestratorServer();

  // Starts registering with the configured gateways, then loads the warm models (blocking).
  void Start();
  // Leaves the gateways first (so no new work arrives), then lets in-flight jobs finish for up
  // to `grace` before cancelling them.
  void Shutdown(std::chrono::milliseconds grace);

  // SIGHUP: re-reads the config file's models (inline or `models_file`) and applies them without
  // dropping work (ModelManager::Reconcile), then loads the warm ones. A file that does not parse
  // or validate is rejected with the reason and the old models kept. Other fields (listen,
  // gateways, budgets, transcode) need a restart; a change to them is logged as ignored.
  absl::Status ReloadModels();
  // For the systemd watchdog: the gRPC server answers a health check within `budget`.
  absl::Status CheckHealth(std::chrono::milliseconds budget);

  int port() const { return port_; }
  // The HTTP port (/healthz, /readyz, /metrics), or 0 when `http_listen` is empty.
  int http_port() const { return http_ ? http_->port() : 0; }
  const std::string& advertise_address() const { return advertise_address_; }

 private:
  absl::Status StartHttp();
  explicit OrchestratorServer(OrchestratorConfig config);

  OrchestratorConfig config_;
  StatusBoard board_;
  // Before models_: executor threads report job timings into it until models_ is destroyed.
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ModelManager> models_;
  std::unique_ptr<OrchestratorService> service_;
  std::unique_ptr<InferenceService> inference_;  // KServe Open Inference Protocol (kserve.md)
  std::unique_ptr<grpc::Server> server_;
  GrpcClientSecurity gateway_security_;  // registration channels (gateway_tls)
  NodeKeyPtr identity_;                  // proves this node's id to gateways
  // What the gateways report of the jobs this node missed (/metrics, /status).
  std::unique_ptr<MissedJobsBoard> missed_jobs_;
  // Demand-driven warm-up (null with prewarm off). After models_, before registrations_: their
  // readers feed it until they stop, and its loader uses models_ until it is joined.
  std::unique_ptr<Prewarmer> prewarmer_;
  std::vector<std::unique_ptr<RegistrationClient>> registrations_;
  int port_ = 0;
  std::mutex scrape_mu_;
  std::map<std::pair<std::string, std::string>, prometheus::Gauge*> model_gauges_;
  std::string advertise_address_;
  bool shut_down_ = false;
  // Last, so destroyed first: its threads run the /metrics and /readyz handlers, which use the
  // members above until they are joined.
  http::ServerPtr http_;
};

}  // namespace switchyard::orchestrator
