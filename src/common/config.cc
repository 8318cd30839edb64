#include "common/config.h"

#include <fstream>
#include <sstream>

#include "common/json_limits.h"

namespace switchyard {

absl::StatusOr<nlohmann::json> ParseConfigJson(std::string_view text,
                                               const std::filesystem::path& file) {
  auto parsed = ParseJson(text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.string(), ": invalid JSON: ", parsed.status().message()));
  }
  return parsed;
}

absl::StatusOr<nlohmann::json> ParseConfigJson(std::string_view text,
                                               const std::filesystem::path& file,
                                               absl::Span<const absl::string_view> known_keys) {
  auto parsed = ParseConfigJson(text, file);
  if (!parsed.ok()) return parsed;
  if (absl::Status st = ConfigObject(*parsed, file.string(), "").CheckKeys(known_keys); !st.ok()) {
    return st;
  }
  return parsed;
}

absl::StatusOr<nlohmann::json> LoadJsonFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open config file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfigJson(ss.str(), path);
}

std::string ConfigObject::Path(absl::string_view key) const {
  if (where_.empty()) return std::string(key);
  if (key.empty()) return where_;
  return absl::StrCat(where_, ".", key);
}

absl::Status ConfigObject::Error(absl::string_view key, absl::string_view reason) const {
  return absl::InvalidArgumentError(absl::StrCat(file_, ": ", Path(key), ": ", reason));
}

absl::Status ConfigObject::CheckKeys(absl::Span<const absl::string_view> known) const {
  if (!json_.is_object()) return Error("", "must be a JSON object");
  for (const auto& [key, value] : json_.items()) {
    bool found = false;
    for (auto k : known) found = found || k == key;
    if (!found) {
      std::string list;
      for (auto k : known) absl::StrAppend(&list, list.empty() ? "" : ", ", k);
      return Error(key, absl::StrCat("unknown field (known fields: ", list, ")"));
    }
  }
  return absl::OkStatus();
}

ConfigObject ConfigObject::Child(absl::string_view key) const {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  auto it = json_.find(std::string(key));
  return ConfigObject(it == json_.end() ? kEmpty : *it, file_, Path(key));
}

std::filesystem::path ResolveConfigPath(const std::filesystem::path& config_file,
                                        const std::string& value) {
  std::filesystem::path p(value);
  if (p.is_absolute() || config_file.empty()) return p;
  return config_file.parent_path() / p;
}

absl::Status ValidateHostPort(const std::string& address, const std::string& what) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", address, "' is not HOST:PORT (e.g. 127.0.0.1:50051)"));
  }
  std::string port = address.substr(colon + 1);
  for (char c : port) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": port '", port, "' in '", address, "' is not a number"));
    }
  }
  if (port.size() > 5 || std::stoi(port) > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": port ", port, " is out of range"));
  }
  return absl::OkStatus();
}

}  // namespace switchyard
