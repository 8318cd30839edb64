#include "gateway/gateway_config.h"

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/status.h"

namespace switchyard::gateway {

absl::StatusOr<GatewayConfig> ParseGatewayConfig(const std::string& json_text,
                                                 const std::filesystem::path& file) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": invalid JSON: ", e.what()));
  }
  GatewayConfig c;
  c.file = file;
  ConfigObject root(json, file.string(), "");
  SY_RETURN_IF_ERROR(root.CheckKeys({"gateway_id", "listen", "static_orchestrators",
                                     "poll_interval_ms", "heartbeat_interval_ms", "max_attempts",
                                     "default_timeout_ms", "max_message_bytes", "log"}));
  SY_RETURN_IF_ERROR(root.Read("gateway_id", &c.gateway_id));
  SY_RETURN_IF_ERROR(root.Read("listen", &c.listen));
  SY_RETURN_IF_ERROR(root.Read("static_orchestrators", &c.static_orchestrators));
  SY_RETURN_IF_ERROR(root.Read("poll_interval_ms", &c.poll_interval_ms));
  SY_RETURN_IF_ERROR(root.Read("heartbeat_interval_ms", &c.heartbeat_interval_ms));
  SY_RETURN_IF_ERROR(root.Read("max_attempts", &c.max_attempts));
  SY_RETURN_IF_ERROR(root.Read("default_timeout_ms", &c.default_timeout_ms));
  SY_RETURN_IF_ERROR(root.Read("max_message_bytes", &c.max_message_bytes));
  ConfigObject log = root.Child("log");
  SY_RETURN_IF_ERROR(log.CheckKeys({"level", "format"}));
  SY_RETURN_IF_ERROR(log.Read("level", &c.log_level));
  SY_RETURN_IF_ERROR(log.Read("format", &c.log_format));

  if (c.gateway_id.empty()) return root.Error("gateway_id", "must not be empty");
  SY_RETURN_IF_ERROR(ValidateHostPort(c.listen, absl::StrCat(file.string(), ": listen")));
  for (size_t i = 0; i < c.static_orchestrators.size(); ++i) {
    SY_RETURN_IF_ERROR(ValidateHostPort(
        c.static_orchestrators[i], absl::StrCat(file.string(), ": static_orchestrators[", i, "]")));
  }
  if (c.poll_interval_ms < 100) return root.Error("poll_interval_ms", "must be >= 100");
  if (c.heartbeat_interval_ms < 50) return root.Error("heartbeat_interval_ms", "must be >= 50");
  if (c.max_attempts < 1 || c.max_attempts > 20) return root.Error("max_attempts", "must be 1..20");
  if (c.default_timeout_ms < 100) return root.Error("default_timeout_ms", "must be >= 100");
  if (c.max_message_bytes < (1 << 20) || c.max_message_bytes > (1LL << 31) - 1) {
    return root.Error("max_message_bytes", "must be 1 MiB .. 2 GiB");
  }
  return c;
}

absl::StatusOr<GatewayConfig> LoadGatewayConfig(const std::filesystem::path& file) {
  auto json = LoadJsonFile(file);
  if (!json.ok()) return json.status();
  return ParseGatewayConfig(json->dump(), file);
}

}  // namespace switchyard::gateway
