// switchyard-gateway configuration (JSON), documented in docs/configuration.md.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::gateway {

struct GatewayConfig {
  std::filesystem::path file;
  std::string gateway_id = "gateway";
  std::string listen = "127.0.0.1:50051";         // public API and orchestrator registry
  std::vector<std::string> static_orchestrators;  // polled instead of registering
  int poll_interval_ms = 1000;
  int heartbeat_interval_ms = 500;  // asked of registered orchestrators
  int max_attempts = 3;             // orchestrators tried per job
  int default_timeout_ms = 120000;  // deadline for jobs whose client set none
  int64_t max_message_bytes = 256 << 20;
  std::string log_level = "info";
  std::string log_format = "text";
};

absl::StatusOr<GatewayConfig> ParseGatewayConfig(const std::string& json_text,
                                                 const std::filesystem::path& file);
absl::StatusOr<GatewayConfig> LoadGatewayConfig(const std::filesystem::path& file);

}  // namespace switchyard::gateway
