// switchyard-gateway: accepts jobs from app developers and routes them to orchestrators.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/daemon.h"
#include "gateway/billing/api_keys.h"
#include "gateway/gateway_server.h"

namespace {

// --new-api-key: a new random key and its entry for the api_keys_file (docs/security.md).
int PrintNewApiKey(const std::string& id) {
  using namespace switchyard;
  auto key = gateway::NewApiKey();
  if (!key.ok()) {
    std::cerr << "switchyard-gateway: " << key.status().message() << "\n";
    return 1;
  }
  // The key goes to the app developer once; only its hash is kept in the keys file.
  nlohmann::json entry = {{"id", id},
                          {"sha256", gateway::Sha256Hex(*key)},
                          {"rate_per_second", 10},
                          {"burst", 20},
                          {"max_concurrent", 4}};
  std::cout << "key: " << *key << "\nentry: " << entry.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace switchyard;
  CLI::App app{
      "switchyard-gateway: accepts AI and video jobs over gRPC and routes each to an "
      "orchestrator by capability, warm state and load"};
  DaemonFlags flags;
  flags.AddTo(app,
              "Override `http_listen` (HOST:PORT for the Livepeer AI API, /healthz, /readyz; "
              "empty disables)",
              /*config_required=*/false);
  std::string admin_listen, admin_port_file, new_api_key_id;
  std::vector<std::string> static_orchestrators;
  app.add_option("--new-api-key", new_api_key_id,
                 "Print a new random API key and its entry for the api_keys_file (with this id), "
                 "then exit (docs/security.md)");
  app.add_option("--static-orchestrator", static_orchestrators,
                 "Poll this orchestrator (HOST:PORT) in addition to the config's list; repeatable");
  auto* admin_opt = app.add_option("--admin-listen", admin_listen,
                                   "Override `admin_listen` (HOST:PORT for /status, /metrics, "
                                   "/healthz, /readyz; empty disables)");
  app.add_option("--admin-port-file", admin_port_file,
                 "Write the bound operators' HTTP port to this file once serving");
  CLI11_PARSE(app, argc, argv);
  if (!new_api_key_id.empty()) return PrintNewApiKey(new_api_key_id);
  if (flags.config_path.empty()) {
    std::cerr << "switchyard-gateway: --config is required\n";
    return 2;
  }

  DaemonProcess process("switchyard-gateway");
  auto config = gateway::LoadGatewayConfig(flags.config_path);
  if (!config.ok()) return process.ConfigError(config.status());
  flags.ApplyTo(&*config);
  if (admin_opt->count() > 0) config->admin_listen = admin_listen;
  for (auto& s : static_orchestrators) config->static_orchestrators.push_back(s);
  if (auto st = process.InitLogging(config->log_level, config->log_format, config->gateway_id);
      !st.ok()) {
    return process.ConfigError(st);
  }
  auto server = gateway::GatewayServer::Create(std::move(*config));
  if (!server.ok()) return process.Fatal(server.status());
  if (auto st = WritePortFiles({{flags.port_file, (*server)->port()},
                                {flags.http_port_file, (*server)->http_port()},
                                {admin_port_file, (*server)->admin_port()}});
      !st.ok()) {
    return process.Fatal(st);
  }
  // SIGHUP re-reads the static orchestrator list (the file's, plus --static-orchestrator), the
  // API keys file and the node identity policy file.
  auto reload = [&]() -> absl::Status {
    auto fresh = gateway::LoadGatewayConfig(flags.config_path);
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
    // And node_identity.policy_file (allow, deny, rebind); a bad file keeps the old lists.
    if (auto st = (*server)->ReloadNodeKeys(); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("node identity policy not reloaded, old lists "
                                                  "kept: ",
                                                  st.message()));
    }
    return absl::OkStatus();
  };
  return process.Serve(**server, reload, "draining", flags.grace());
}
