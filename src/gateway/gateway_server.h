// Wires a gateway together: membership, registry, static poller and the public API on one port.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_service.h"
#include "gateway/inference_proxy.h"
#include "gateway/membership.h"
#include "gateway/registry_service.h"
#include "gateway/static_poller.h"

namespace switchyard::gateway {

class GatewayServer {
 public:
  static absl::StatusOr<std::unique_ptr<GatewayServer>> Create(GatewayConfig config);
  ~GatewayServer();

  // Stops accepting, gives in-flight jobs up to `grace` to finish, then cancels them.
  void Shutdown(std::chrono::milliseconds grace);
  int port() const { return port_; }

 private:
  explicit GatewayServer(GatewayConfig config) : config_(std::move(config)) {}

  GatewayConfig config_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<RegistryService> registry_;
  std::unique_ptr<GatewayService> service_;
  std::unique_ptr<InferenceProxy> inference_;  // KServe Open Inference Protocol (kserve.md)
  std::unique_ptr<StaticPoller> poller_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
  // Drops registered orchestrators that stopped sending heartbeats (node_timeout_ms).
  std::mutex sweep_mu_;
  std::condition_variable sweep_cv_;
  bool stop_sweeping_ = false;  // guarded by sweep_mu_
  std::thread sweeper_;
};

}  // namespace switchyard::gateway
