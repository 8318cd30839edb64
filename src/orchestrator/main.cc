// switchyard-orchestrator: runs AI models and video transcodes for gateways.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/daemon.h"
#include "common/logging.h"
#include "orchestrator/orchestrator_server.h"

int main(int argc, char** argv) {
  using namespace switchyard;
  CLI::App app{
      "switchyard-orchestrator: runs AI models (libtorch) and video transcodes (libav*) "
      "for switchyard gateways"};
  std::string config_path;
  std::string listen, node_id, port_file, log_level, log_format, http_listen, http_port_file;
  std::vector<std::string> gateways;
  bool no_gateways = false;
  int grace_ms = 10000;
  app.add_option("-c,--config", config_path, "JSON config file (see docs/configuration.md)")
      ->required();
  app.add_option("--listen", listen, "Override `listen` (HOST:PORT; port 0 picks a free one)");
  app.add_option("--node-id", node_id, "Override `node_id`");
  app.add_option("--gateway", gateways,
                 "Register with this gateway (HOST:PORT) instead of the "
                 "config's `gateways`; repeatable");
  app.add_flag("--no-gateways", no_gateways, "Register with no gateway (for static polling)");
  app.add_option("--port-file", port_file, "Write the bound port to this file once serving");
  auto* http_opt = app.add_option("--http-listen", http_listen,
                                  "Override `http_listen` (HOST:PORT for /healthz, /readyz, "
                                  "/metrics; empty disables)");
  app.add_option("--http-port-file", http_port_file,
                 "Write the bound HTTP port to this file once serving");
  app.add_option("--log-level", log_level, "Override `log.level` (trace..error)");
  app.add_option("--log-format", log_format, "Override `log.format` (text or json)");
  app.add_option("--shutdown-grace-ms", grace_ms, "Time in-flight jobs get to finish on SIGTERM")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  const bool openssl_at_exit_skipped = SkipOpenSslCleanupAtExit();
  KeepFreedMemoryForReuse();

  sigset_t signals = BlockTerminationSignals();
  // Before any gRPC object, after the signals are blocked (gRPC's threads start here and inherit
  // the mask); its destructor, after the server's, waits for gRPC's teardown.
  GrpcRuntime grpc_runtime;
  auto config = orchestrator::LoadOrchestratorConfig(config_path);
  if (!config.ok()) {
    std::cerr << "switchyard-orchestrator: " << config.status().message() << "\n";
    return 2;
  }
  if (!listen.empty()) config->listen = listen;
  if (!node_id.empty()) config->node_id = node_id;
  // After --listen: the default id is "<hostname>-<port>" (DefaultNodeId).
  if (config->node_id.empty()) config->node_id = orchestrator::DefaultNodeId(*config);
  if (!gateways.empty()) config->gateways = gateways;
  if (no_gateways) config->gateways.clear();
  if (!log_level.empty()) config->log_level = log_level;
  if (!log_format.empty()) config->log_format = log_format;
  if (auto st = InitLogging(config->log_level, config->log_format, config->node_id); !st.ok()) {
    std::cerr << "switchyard-orchestrator: " << st.message() << "\n";
    return 2;
  }
  if (!openssl_at_exit_skipped) spdlog::warn("OpenSSL refused OPENSSL_INIT_NO_ATEXIT");
  if (http_opt->count() > 0) config->http_listen = http_listen;
  auto server = orchestrator::OrchestratorServer::Create(std::move(*config));
  if (!server.ok()) {
    spdlog::critical("{}", server.status().ToString());
    return 1;
  }
  if (!port_file.empty()) {
    if (auto st = WritePortFile(port_file, (*server)->port()); !st.ok()) {
      spdlog::critical("{}", st.ToString());
      return 1;
    }
  }
  if (!http_port_file.empty()) {
    if (auto st = WritePortFile(http_port_file, (*server)->http_port()); !st.ok()) {
      spdlog::critical("{}", st.ToString());
      return 1;
    }
  }
  (*server)->Start();
  // Ports bound and the warm models loaded (or FAILED): tell systemd (Type=notify) we serve.
  if (auto st = NotifyReady(absl::StrCat("serving on port ", (*server)->port())); !st.ok()) {
    spdlog::warn("{}", std::string(st.message()));
  }
  auto watchdog = Watchdog::StartIfEnabled(
      [s = server->get()](std::chrono::milliseconds budget) { return s->CheckHealth(budget); });
  int sig = ServeSignals(signals, [&] { return (*server)->ReloadModels(); });
  spdlog::info("signal {}: leaving gateways and draining", sig);
  watchdog.reset();  // systemd stops watching at STOPPING=1; the drain has TimeoutStopSec
  (*server)->Shutdown(std::chrono::milliseconds(grace_ms));
  spdlog::info("stopped");
  return 0;
}
