// A local Switchyard cluster for integration tests: the real daemon binaries on 127.0.0.1 with
// ephemeral ports, configs written to a temp dir, every wait bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "common/tls.h"
#include "support/media_fixtures.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::testing {

// One daemon process; stdout and stderr go to a log file.
class Daemon {
 public:
  Daemon(std::string name, std::filesystem::path log) : name_(std::move(name)), log_(log) {}
  ~Daemon() { Stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  absl::Status Start(const std::string& binary, const std::vector<std::string>& args);
  // Waits (bounded) for the port file the daemon writes once it serves.
  absl::Status WaitForPort(const std::filesystem::path& port_file,
                           std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the exit status if any.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  void Kill();           // SIGKILL and reap
  void Signal(int sig);  // e.g. SIGSTOP / SIGCONT
  bool Alive();

  int port() const { return port_; }
  // Waits for the daemon's --http-port-file; http_port() is 0 until then.
  absl::Status WaitForHttpPort(const std::filesystem::path& port_file,
                               std::chrono::milliseconds timeout);
  int http_port() const { return http_port_; }
  // Waits for a gateway's --admin-port-file (the operators' port: /status, /metrics);
  // admin_port() is 0 until then.
  absl::Status WaitForAdminPort(const std::filesystem::path& port_file,
                                std::chrono::milliseconds timeout);
  int admin_port() const { return admin_port_; }
  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  std::string Log() const;

 private:
  std::string name_;
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int http_port_ = 0;
  int admin_port_ = 0;
  absl::Status ReadPortFile(const std::filesystem::path& port_file,
                            std::chrono::milliseconds timeout, int* out);
  int port_ = 0;
};

struct ClusterOptions {
  int orchestrators = 2;
  // Upscale models each orchestrator serves, from the prepared model dir; the first is warm.
  std::vector<std::string> models = {"esrgan-slim-x4", "esrgan-slim-x2"};
  // Extra entries appended to every orchestrator's "models" (e.g. a deliberately broken model).
  std::vector<nlohmann::json> extra_models;
  int transcode_capacity = 2;
  int model_queue_size = 4;
  int max_attempts = 3;
  // Extra gateway config fields (e.g. attempt_timeout_ms, max_queued_jobs), merged over the
  // defaults.
  nlohmann::json gateway_config = nlohmann::json::object();
  // More gateways sharing the orchestrators (each orchestrator registers with every gateway).
  int extra_gateways = 0;
  // Per gateway (0: the first, i: extra gateway i - 1), merged over gateway_config: what differs
  // between them (e.g. state.gateway_id).
  std::vector<nlohmann::json> per_gateway_config;
  // Extra orchestrator config fields (e.g. registration_secret), merged over the defaults.
  nlohmann::json orchestrator_config = nlohmann::json::object();
  // API key the cluster's own calls (WaitForOrchestrators) send, for gateways with api_keys_file.
  std::string api_key;
  // How GatewayStub (and so WaitForOrchestrators) connects: TLS for a gateway with `tls`.
  GrpcClientSecurity gateway_security;
};

class LocalCluster {
 public:
  LocalCluster();
  ~LocalCluster();

  // Starts a gateway and `options.orchestrators` orchestrators registered with it, and waits
  // (bounded) until the gateway lists all of them.
  absl::Status Start(const ClusterOptions& options);
  // Starts one more orchestrator registered with the gateway (does not wait for it to join).
  absl::Status AddOrchestrator(const std::string& node_id);
  // The same with `extra_config` merged over ClusterOptions::orchestrator_config.
  absl::Status AddOrchestrator(const std::string& node_id, const nlohmann::json& extra_config);

  // Stops the gateway (SIGTERM, its drain) and starts it again on the same gRPC port, so that the
  // orchestrators re-register by themselves; its HTTP ports may change (http_port() and
  // admin_port() are updated).
  absl::Status RestartGateway();
  // Stops the i-th orchestrator (SIGTERM; a no-op when it was killed) and starts it again with the
  // same node id and config, in the same slot (it gets a new port and re-registers).
  absl::Status RestartOrchestrator(size_t i);

  // Waits until the gateway lists exactly `n` orchestrators.
  absl::Status WaitForOrchestrators(int n, std::chrono::milliseconds timeout);

  std::string gateway_address() const;
  // 127.0.0.1:PORT of the i-th orchestrator's gRPC service.
  std::string orchestrator_address(size_t i) const;
  std::unique_ptr<v1::Gateway::Stub> GatewayStub() const;
  // The i-th extra gateway (ClusterOptions::extra_gateways).
  std::unique_ptr<v1::Gateway::Stub> ExtraGatewayStub(size_t i) const;
  Daemon& gateway() { return *gateway_; }
  Daemon& extra_gateway(size_t i) { return *extra_gateways_.at(i); }
  Daemon& orchestrator(size_t i) { return *orchestrators_.at(i); }
  size_t orchestrator_count() const { return orchestrators_.size(); }
  const TempDir& dir() const { return dir_; }
  // All daemon logs, for failure messages.
  std::string Logs() const;

 private:
  absl::Status StartOrchestrator(const std::string& node_id, bool register_with_gateway,
                                 const nlohmann::json& extra_config = nlohmann::json::object());

  TempDir dir_;
  ClusterOptions options_;
  absl::Status StartGateway(const std::string& name, std::unique_ptr<Daemon>* out,
                            const std::string& listen = "127.0.0.1:0", size_t index = 0);

  std::unique_ptr<Daemon> gateway_;
  std::vector<std::unique_ptr<Daemon>> extra_gateways_;
  std::vector<std::unique_ptr<Daemon>> orchestrators_;
  // Per orchestrator node id, the models its config loads at start ("warm": true).
  std::map<std::string, std::set<std::string>> warm_models_;
};

std::filesystem::path BinaryPath(const std::string& name);
std::filesystem::path ModelDir();

// A new API key and its keys.json entry, made by the operators' tool (`switchyard-gateway
// --new-api-key ID`, as docs/security.md says); a test failure when it gives neither.
nlohmann::json NewApiKeyEntry(const std::string& id, std::string* key);

// The value of the line "<series> <value>" of a Prometheus text exposition; -1 when absent.
// `series` is the name with its labels as rendered, e.g. name{a="1",b="2"}.
double PrometheusValue(const std::string& text, const std::string& series);

// Expects that no line of a daemon's `log` was forged or flooded by a client string: none starts
// with `forged_start` (what a hostile id put after its newline), none holds an ESC byte, and
// none is 4 KiB or longer (LogSafe, src/common/logging.h).
void ExpectNoForgedLogLines(const std::string& log, const std::string& forged_start);

// SWITCHYARD_TEST_TIME_SCALE (a number >= 1; 1 when unset): sanitizer runs (`scripts/test
// --sanitize=...`) are several times slower, so time bounds in tests multiply by it. The waits in
// this file (port files, WaitForOrchestrators, Daemon::Stop's grace) apply it themselves, and so
// does the gateway's node_timeout_ms in LocalCluster (800 ms unscaled, the default). A value
// that is not a number >= 1 aborts the test binary with a message naming the variable.
double TimeScale();
std::chrono::milliseconds Scaled(std::chrono::milliseconds bound);

}  // namespace switchyard::testing
