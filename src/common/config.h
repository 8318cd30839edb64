// Strict JSON config reading: unknown fields and wrongly typed values are errors that name the
// file, the field and the reason.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>
#include "absl/strings/string_view.h"

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace switchyard {

// A config file's text parsed as JSON, depth-limited (common/json_limits.h: the readers of a config
// recurse per nesting level); malformed text fails as "<file>: invalid JSON: <why>". With
// `known_keys`, the top level must also be an object with no other keys (ConfigObject::CheckKeys).
absl::StatusOr<nlohmann::json> ParseConfigJson(std::string_view text,
                                               const std::filesystem::path& file);
absl::StatusOr<nlohmann::json> ParseConfigJson(std::string_view text,
                                               const std::filesystem::path& file,
                                               absl::Span<const absl::string_view> known_keys);
// The same, reading the file first; NOT_FOUND when it cannot be opened.
absl::StatusOr<nlohmann::json> LoadJsonFile(const std::filesystem::path& path);

// A view of one JSON object in a config file, e.g. ("configs/orch.json", "models[2]").
class ConfigObject {
 public:
  ConfigObject(const nlohmann::json& json, std::string file, std::string where)
      : json_(json), file_(std::move(file)), where_(std::move(where)) {}

  // Fails if the object is not an object or has a key not in `known`.
  absl::Status CheckKeys(absl::Span<const absl::string_view> known) const;

  // Reads `key` into `out` if present (else `out` keeps its default), or fails if `required`.
  template <typename T>
  absl::Status Read(absl::string_view key, T* out, bool required = false) const {
    auto it = json_.find(std::string(key));
    if (it == json_.end()) {
      if (required) return Error(key, "is required");
      return absl::OkStatus();
    }
    return Convert(key, *it, out);
  }

  // Reads the object at `key`, if present, into `out` entry by entry (entries already in `out`
  // and not in the file stay): each value converted as Read does, then passed to
  // `check(object, entry key, value)`, which returns an error (object.Error(entry key, ...)) for
  // a bad entry. `shape` says what the object maps, for the error when `key` is not an object:
  // "pipeline -> milliseconds".
  template <typename Map, typename Check>
  absl::Status ReadMap(absl::string_view key, absl::string_view shape, Map* out,
                       Check check) const {
    if (!Has(key)) return absl::OkStatus();
    const ConfigObject object = Child(key);
    if (!object.json().is_object())
      return object.Error("", absl::StrCat("must be an object ", shape));
    for (const auto& item : object.json().items()) {
      typename Map::mapped_type value{};
      if (absl::Status st = object.Read(item.key(), &value); !st.ok()) return st;
      if (absl::Status st = check(object, item.key(), value); !st.ok()) return st;
      (*out)[item.key()] = std::move(value);
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
  // Strict conversions: nlohmann would turn true into 1 and 2.9 into 2; a config must not.
  template <typename T>
  absl::Status Convert(absl::string_view key, const nlohmann::json& v, T* out) const {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) return WrongType(key, v, "true or false");
      *out = v.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) return WrongType(key, v, "an integer");
      if (v.is_number_unsigned()) {
        auto u = v.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
          return Error(key, absl::StrCat(u, " is out of range"));
        }
        *out = static_cast<T>(u);
      } else {
        auto i = v.get<int64_t>();
        if (i < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
            (i > 0 &&
             static_cast<uint64_t>(i) > static_cast<uint64_t>(std::numeric_limits<T>::max()))) {
          return Error(key, absl::StrCat(i, " is out of range"));
        }
        *out = static_cast<T>(i);
      }
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) return WrongType(key, v, "a number");
      *out = v.get<T>();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) return WrongType(key, v, "a string");
      *out = v.get<std::string>();
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (!v.is_array()) return WrongType(key, v, "an array of strings");
      std::vector<std::string> items;
      for (const auto& item : v) {
        if (!item.is_string()) return WrongType(key, v, "an array of strings");
        items.push_back(item.get<std::string>());
      }
      *out = std::move(items);
    } else {
      static_assert(sizeof(T) == 0, "ConfigObject::Read does not support this type");
    }
    return absl::OkStatus();
  }
  absl::Status WrongType(absl::string_view key, const nlohmann::json& v,
                         absl::string_view expected) const {
    return Error(key, absl::StrCat("has the wrong type: must be ", expected, ", got ",
                                   v.type_name(), " ", v.dump()));
  }

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
