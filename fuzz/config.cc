// Fuzzes the daemons' config parsing from JSON text: gateway::ParseGatewayConfig and
// orchestrator::ParseOrchestratorConfig. (What the pipelines read from a model's `options` needs
// libtorch's headers; request_validators covers it.)
// Input: one byte, 'O' or 'o' for the orchestrator (anything else: the gateway), then the JSON.
// The config file is named in a directory that does not exist, so relative files it names
// (models_file, registration_secret_file, ...) are not found rather than read.
#include <cstdint>
#include <string>

#include "common/json_limits.h"
#include "fuzz/fuzz_util.h"
#include "gateway/gateway_config.h"
#include "orchestrator/orchestrator_config.h"

namespace {

constexpr const char* kFile = "/nonexistent-switchyard-fuzz/config.json";

void CheckError(const absl::Status& status) {
  SWITCHYARD_FUZZ_CHECK(!status.ok(), "CheckError on OK");
  SWITCHYARD_FUZZ_CHECK(!status.message().empty(), "an error without a message");
}

// A config nested past kMaxJsonDepth is refused while parsing, naming the limit: the readers
// (and the dump() in their errors) recurse once per level, and a deep enough file overflowed the
// stack (issue 18).
void CheckDepth(const std::string& text, const absl::Status& status) {
  if (switchyard::CheckJsonDepth(text).ok()) return;
  SWITCHYARD_FUZZ_CHECK(status.message().find("nested deeper than") != absl::string_view::npos,
                        "a config past the JSON depth limit was not refused naming it: " +
                            std::string(status.message().substr(0, 200)));
}

void Orchestrator(const std::string& text) {
  using namespace switchyard::orchestrator;  // NOLINT: a fuzz target's body
  auto config = ParseOrchestratorConfig(text, kFile);
  CheckDepth(text, config.status());
  if (!config.ok()) return CheckError(config.status());
  for (const ModelConfig& model : config->models) {
    SWITCHYARD_FUZZ_CHECK(!model.id.empty(), "a model without an id");
    SWITCHYARD_FUZZ_CHECK(model.instances >= 1 && model.instances <= 64, "instances out of range");
    SWITCHYARD_FUZZ_CHECK(model.options.is_object(), "options is not an object");
  }
}

void Gateway(const std::string& text) {
  auto config = switchyard::gateway::ParseGatewayConfig(text, kFile);
  CheckDepth(text, config.status());
  if (!config.ok()) return CheckError(config.status());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(switchyard::fuzz::AsView(data + 1, size - 1));
  if (data[0] == 'O' || data[0] == 'o') {
    Orchestrator(text);
  } else {
    Gateway(text);
  }
  return 0;
}
