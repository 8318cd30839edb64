// Wires a gateway together: membership, registry, static poller, the public API (gRPC and HTTP)
// and the operators' HTTP port.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "gateway/api/gateway_service.h"
#include "gateway/api/inference_proxy.h"
#include "gateway/api/live_video.h"
#include "gateway/api/peer_gateways.h"
#include "gateway/api/shared_verdicts.h"
#include "gateway/billing/auth_interceptor.h"
#include "gateway/billing/usage_ledger.h"
#include "gateway/gateway_config.h"
#include "gateway/membership/membership.h"
#include "gateway/membership/registry_service.h"
#include "gateway/membership/static_poller.h"
#include "gateway/observability/call_tracker.h"

namespace switchyard::gateway {

class GatewayServer {
 public:
  static absl::StatusOr<std::unique_ptr<GatewayServer>> Create(GatewayConfig config);
  ~GatewayServer();

  // Stops accepting, gives in-flight jobs up to `grace` to finish, then cancels them. Returns as
  // soon as they are done: orchestrators' registration streams are then closed with UNAVAILABLE.
  void Shutdown(std::chrono::milliseconds grace);
  // SIGHUP: replaces the static orchestrator list (StaticPoller::SetAddresses); work already
  // sent to a node that is no longer listed finishes.
  void SetStaticOrchestrators(const std::vector<std::string>& addresses);
  // SIGHUP: re-reads the API keys file; on error the old keys stay and the error is returned.
  // OK (nothing to do) when no api_keys_file is configured.
  absl::Status ReloadApiKeys();
  // SIGHUP: re-reads node_identity.policy_file; on error the old lists stay and it is returned.
  absl::Status ReloadNodeKeys();
  // For the systemd watchdog: the gRPC server answers a health check within `budget`.
  absl::Status CheckHealth(std::chrono::milliseconds budget);

  int port() const { return port_; }
  // The public HTTP port (Livepeer AI API, /healthz, /readyz), or 0 when `http_listen` is empty.
  int http_port() const { return http_ ? http_->port() : 0; }
  // The operators' HTTP port (/status, /metrics, ...), or 0 when `admin_listen` is empty.
  int admin_port() const { return admin_http_ ? admin_http_->port() : 0; }

 private:
  absl::Status StartHttp();
  explicit GatewayServer(GatewayConfig config) : config_(std::move(config)) {}

  GatewayConfig config_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ApiKeyAuth> auth_;         // null: no keys file, auth off; outlives server_
  std::unique_ptr<JobMetrics> job_metrics_;  // outlives service_, whose jobs feed it
  UsageLedgerPtr ledger_;                    // null: no usage_ledger configured
  std::unique_ptr<JobBilling> billing_;      // outlives service_, whose jobs it settles
  // null without state.redis; outlives service_, whose spot checker shares verdicts through it
  SharedVerdictsPtr shared_verdicts_;
  std::unique_ptr<Membership> membership_;
  NodeKeysPtr node_keys_;  // outlives registry_, which checks registrations against it
  std::unique_ptr<RegistryService> registry_;
  // Client calls in progress (not registration streams or health watches): what Shutdown waits for.
  std::unique_ptr<ActiveCallTracker> calls_;
  std::unique_ptr<GatewayService> service_;
  std::unique_ptr<InferenceProxy> inference_;  // KServe Open Inference Protocol (kserve.md)
  std::unique_ptr<StaticPoller> poller_;
  // null without state.redis; outlives hardware_checker_, which shares findings through it
  SharedHardwareFindingsPtr shared_hardware_;
  HardwareCheckerPtr hardware_checker_;  // null with verification.hardware.enabled false
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  // /live-video-to-video sessions, stopped at Shutdown (before the gRPC server they call).
  std::shared_ptr<LiveVideoSessions> live_;
  std::shared_ptr<PeerGateways> peers_;  // state.peers; null without
  std::mutex scrape_mu_;
  // (pipeline, model, state) -> gauge of switchyard_gateway_model_offers.
  std::map<std::tuple<std::string, std::string, std::string>, prometheus::Gauge*> offer_gauges_;
  bool shut_down_ = false;
  // After server_ and the scrape state its /metrics handler uses: destroyed (its threads joined)
  // before them.
  http::ServerPtr http_;
  http::ServerPtr admin_http_;
  // Drops registered orchestrators that stopped sending heartbeats (node_timeout_ms).
  std::mutex sweep_mu_;
  std::condition_variable sweep_cv_;
  bool stop_sweeping_ = false;  // guarded by sweep_mu_
  std::thread sweeper_;
};

}  // namespace switchyard::gateway
