// Strict JSON config reading: unknown fields and wrongly typed values are errors that name the
// file, the field and the reason.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <string>
#include "absl/strings/string_view.h"

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace switchyard {

absl::StatusOr<nlohmann::json> LoadJsonFile(const std::filesystem::path& path);

// A view of one JSON object in a config file, e.g. ("configs/orch.json", "models[2]").
class ConfigObject {
 public:
  ConfigObject(const nlohmann::json& json, std::string file, std::string where)
      : json_(json), file_(std::move(file)), where_(std::move(where)) {}

  // Fails if the object is not an object or has a key not in `known`.
  absl::Status CheckKeys(std::initializer_list<absl::string_view> known) const;

  // Reads `key` into `out` if present (else `out` keeps its default), or fails if `required`.
  template <typename T>
  absl::Status Read(absl::string_view key, T* out, bool required = false) const {
    auto it = json_.find(std::string(key));
    if (it == json_.end()) {
      if (required) return Error(key, "is required");
      return absl::OkStatus();
    }
    try {
      *out = it->template get<T>();
    } catch (const nlohmann::json::exception& e) {
      return Error(key, absl::StrCat("has the wrong type (", it->type_name(), ")"));
    }
    return absl::OkStatus();
  }

  bool Has(absl::string_view key) const { return json_.contains(std::string(key)); }
  ConfigObject Child(absl::string_view key) const;
  const nlohmann::json& json() const { return json_; }
  const std::string& file() const { return file_; }

  // "configs/orch.json: models[2].capacity: must be > 0"
  absl::Status Error(absl::string_view key, absl::string_view reason) const;
  std::string Path(absl::string_view key) const;

 private:
  const nlohmann::json& json_;
  std::string file_;
  std::string where_;
};

// Resolves a path from a config file: absolute stays, relative is taken from the file's folder.
std::filesystem::path ResolveConfigPath(const std::filesystem::path& config_file,
                                        const std::string& value);

// Splits "host:port"; fails with a message naming `what` when malformed.
absl::Status ValidateHostPort(const std::string& address, const std::string& what);

}  // namespace switchyard
