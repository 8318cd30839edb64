// switchyard-orchestrator: runs AI models and video transcodes for gateways.
#include <CLI/CLI.hpp>

#include "common/daemon.h"
#include "orchestrator/orchestrator_server.h"

int main(int argc, char** argv) {
  using namespace switchyard;
  CLI::App app{
      "switchyard-orchestrator: runs AI models (libtorch) and video transcodes (libav*) "
      "for switchyard gateways"};
  DaemonFlags flags;
  flags.AddTo(app,
              "Override `http_listen` (HOST:PORT for /healthz, /readyz, /metrics; empty "
              "disables)",
              /*config_required=*/true);
  std::string node_id;
  std::vector<std::string> gateways;
  bool no_gateways = false;
  app.add_option("--node-id", node_id, "Override `node_id`");
  app.add_option("--gateway", gateways,
                 "Register with this gateway (HOST:PORT) instead of the "
                 "config's `gateways`; repeatable");
  app.add_flag("--no-gateways", no_gateways, "Register with no gateway (for static polling)");
  std::string identity_key_file;
  app.add_option("--identity-key-file", identity_key_file,
                 "Override `identity_key_file` (the node's Ed25519 key, created with mode 0600 "
                 "on first start; default: node-identity.key next to the config file)");
  CLI11_PARSE(app, argc, argv);

  DaemonProcess process("switchyard-orchestrator", {.keep_freed_memory = true});
  auto config = orchestrator::LoadOrchestratorConfig(flags.config_path);
  if (!config.ok()) return process.ConfigError(config.status());
  flags.ApplyTo(&*config);
  if (!node_id.empty()) config->node_id = node_id;
  // After --listen: the default id is "<hostname>-<port>" (DefaultNodeId).
  if (config->node_id.empty()) config->node_id = orchestrator::DefaultNodeId(*config);
  if (!gateways.empty()) config->gateways = gateways;
  if (no_gateways) config->gateways.clear();
  if (!identity_key_file.empty()) config->identity_key_file = identity_key_file;
  if (auto st = process.InitLogging(config->log_level, config->log_format, config->node_id);
      !st.ok()) {
    return process.ConfigError(st);
  }
  auto server = orchestrator::OrchestratorServer::Create(std::move(*config));
  if (!server.ok()) return process.Fatal(server.status());
  if (auto st = WritePortFiles(
          {{flags.port_file, (*server)->port()}, {flags.http_port_file, (*server)->http_port()}});
      !st.ok()) {
    return process.Fatal(st);
  }
  // Serving once the warm models are loaded (or FAILED).
  (*server)->Start();
  return process.Serve(
      **server, [&] { return (*server)->ReloadModels(); }, "leaving gateways and draining",
      flags.grace());
}
