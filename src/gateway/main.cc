// switchyard-gateway: accepts jobs from app developers and routes them to orchestrators.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/daemon.h"
#include "common/logging.h"
#include "gateway/api_keys.h"
#include "gateway/gateway_server.h"

int main(int argc, char** argv) {
  using namespace switchyard;
  CLI::App app{
      "switchyard-gateway: accepts AI and video jobs over gRPC and routes each to an "
      "orchestrator by capability, warm state and load"};
  std::string config_path, listen, port_file, log_level, log_format, http_listen, http_port_file;
  std::string admin_listen, admin_port_file;
  std::vector<std::string> static_orchestrators;
  int grace_ms = 10000;
  std::string new_api_key_id;
  app.add_option("-c,--config", config_path, "JSON config file (see docs/configuration.md)");
  app.add_option("--new-api-key", new_api_key_id,
                 "Print a new random API key and its entry for the api_keys_file (with this id), "
                 "then exit (docs/security.md)");
  app.add_option("--listen", listen, "Override `listen` (HOST:PORT; port 0 picks a free one)");
  app.add_option("--static-orchestrator", static_orchestrators,
                 "Poll this orchestrator (HOST:PORT) in addition to the config's list; repeatable");
  app.add_option("--port-file", port_file, "Write the bound port to this file once serving");
  auto* http_opt = app.add_option("--http-listen", http_listen,
                                  "Override `http_listen` (HOST:PORT for the Livepeer AI API, "
                                  "/healthz, /readyz; empty disables)");
  app.add_option("--http-port-file", http_port_file,
                 "Write the bound HTTP port to this file once serving");
  auto* admin_opt = app.add_option("--admin-listen", admin_listen,
                                   "Override `admin_listen` (HOST:PORT for /status, /metrics, "
                                   "/healthz, /readyz; empty disables)");
  app.add_option("--admin-port-file", admin_port_file,
                 "Write the bound operators' HTTP port to this file once serving");
  app.add_option("--log-level", log_level, "Override `log.level` (trace..error)");
  app.add_option("--log-format", log_format, "Override `log.format` (text or json)");
  app.add_option("--shutdown-grace-ms", grace_ms, "Time in-flight jobs get to finish on SIGTERM")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  if (!new_api_key_id.empty()) {
    auto key = gateway::NewApiKey();
    if (!key.ok()) {
      std::cerr << "switchyard-gateway: " << key.status().message() << "\n";
      return 1;
    }
    // The key goes to the app developer once; only its hash is kept in the keys file.
    nlohmann::json entry = {{"id", new_api_key_id},
                            {"sha256", gateway::Sha256Hex(*key)},
                            {"rate_per_second", 10},
                            {"burst", 20},
                            {"max_concurrent", 4}};
    std::cout << "key: " << *key << "\nentry: " << entry.dump() << "\n";
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << "switchyard-gateway: --config is required\n";
    return 2;
  }

  const bool openssl_at_exit_skipped = SkipOpenSslCleanupAtExit();
  sigset_t signals = BlockTerminationSignals();
  // Before any gRPC object, after the signals are blocked (gRPC's threads start here and inherit
  // the mask); its destructor, after the server's, waits for gRPC's teardown.
  GrpcRuntime grpc_runtime;
  auto config = gateway::LoadGatewayConfig(config_path);
  if (!config.ok()) {
    std::cerr << "switchyard-gateway: " << config.status().message() << "\n";
    return 2;
  }
  if (!listen.empty()) config->listen = listen;
  if (http_opt->count() > 0) config->http_listen = http_listen;
  if (admin_opt->count() > 0) config->admin_listen = admin_listen;
  for (auto& s : static_orchestrators) config->static_orchestrators.push_back(s);
  if (!log_level.empty()) config->log_level = log_level;
  if (!log_format.empty()) config->log_format = log_format;
  if (auto st = InitLogging(config->log_level, config->log_format, config->gateway_id); !st.ok()) {
    std::cerr << "switchyard-gateway: " << st.message() << "\n";
    return 2;
  }
  if (!openssl_at_exit_skipped) spdlog::warn("OpenSSL refused OPENSSL_INIT_NO_ATEXIT");
  auto server = gateway::GatewayServer::Create(std::move(*config));
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
  if (!admin_port_file.empty()) {
    if (auto st = WritePortFile(admin_port_file, (*server)->admin_port()); !st.ok()) {
      spdlog::critical("{}", st.ToString());
      return 1;
    }
  }
  // Ports bound (gRPC and HTTP) and port files written: tell systemd (Type=notify) we serve.
  if (auto st = NotifyReady(absl::StrCat("serving on port ", (*server)->port())); !st.ok()) {
    spdlog::warn("{}", std::string(st.message()));
  }
  auto watchdog = Watchdog::StartIfEnabled(
      [s = server->get()](std::chrono::milliseconds budget) { return s->CheckHealth(budget); });
  // SIGHUP re-reads the static orchestrator list (the file's, plus --static-orchestrator).
  int sig = ServeSignals(signals, [&]() -> absl::Status {
    auto fresh = gateway::LoadGatewayConfig(config_path);
    if (!fresh.ok()) return fresh.status();
    std::vector<std::string> list = fresh->static_orchestrators;
    for (auto& s : static_orchestrators) list.push_back(s);
    spdlog::info(
        "reload: {} static orchestrator(s): [{}] (other fields take effect at the next "
        "restart)",
        list.size(), absl::StrJoin(list, ", "));
    (*server)->SetStaticOrchestrators(list);
    // The API keys file is re-read too; a bad file keeps the old keys (and is reported).
    if (auto st = (*server)->ReloadApiKeys(); !st.ok()) {
      return absl::Status(st.code(),
                          absl::StrCat("API keys not reloaded, old keys kept: ", st.message()));
    }
    return absl::OkStatus();
  });
  spdlog::info("signal {}: draining", sig);
  watchdog.reset();  // systemd stops watching at STOPPING=1; the drain has TimeoutStopSec
  (*server)->Shutdown(std::chrono::milliseconds(grace_ms));
  spdlog::info("stopped");
  return 0;
}
