#include "gateway/membership/node_keys.h"

#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/logging.h"
#include "common/node_identity.h"

namespace switchyard::gateway {
namespace {

using Json = nlohmann::json;

// The file's text, or why not. A missing file is NOT_FOUND.
absl::StatusOr<std::string> ReadBounded(const std::filesystem::path& path, size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path.string(), " does not exist"));
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot read ", path.string(), ": ", ec.message()));
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " is ", size, " bytes; at most ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof())
    return absl::UnavailableError(absl::StrCat("cannot read ", path.string()));
  return text.str();
}

// `entry[field]` as a string, or "" when absent; INVALID_ARGUMENT when not a string.
absl::StatusOr<std::string> OptionalString(const Json& entry, const char* field,
                                           const std::string& where) {
  if (!entry.contains(field)) return std::string();
  if (!entry[field].is_string())
    return absl::InvalidArgumentError(absl::StrCat(where, ".", field, ": must be a string"));
  return entry[field].get<std::string>();
}

absl::StatusOr<std::string> KeyField(const Json& entry, const std::string& where) {
  auto hex = OptionalString(entry, "public_key", where);
  if (!hex.ok()) return hex.status();
  auto key = ParseNodeKeyHex(*hex);
  if (!key.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".public_key: ", key.status().message()));
  }
  return key;
}

absl::Status CheckNodeId(const std::string& id, const std::string& where) {
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": a node id is 1 to 128 characters"));
  }
  for (unsigned char c : id) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": a node id is printable ASCII without spaces"));
    }
  }
  return absl::OkStatus();
}

// Checks the top level: an object with only `allowed` fields, each an array of at most
// kMaxEntries.
absl::Status CheckTop(const Json& doc, std::initializer_list<const char*> allowed,
                      const std::string& file) {
  if (!doc.is_object())
    return absl::InvalidArgumentError(absl::StrCat(file, ": must be a JSON object"));
  for (const auto& [key, value] : doc.items()) {
    bool known = false;
    for (const char* a : allowed) known = known || key == a;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": unknown field '", LogSafe(key), "'"));
    }
    if (!value.is_array())
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", key, " must be an array"));
    if (value.size() > NodeKeys::kMaxEntries) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", key, " has ", value.size(),
                                                     " entries; at most ", NodeKeys::kMaxEntries));
    }
  }
  return absl::OkStatus();
}

std::string Short(const std::string& key) { return NodeKeyHex(key).substr(0, 16); }

}  // namespace

absl::StatusOr<NodeKeysPtr> NodeKeys::Create(NodeIdentityConfig config) {
  NodeKeysPtr keys(new NodeKeys(std::move(config)));
  if (!keys->config_.policy_file.empty()) {
    if (auto st = keys->Reload(); !st.ok()) return st;
  }
  if (!keys->config_.bindings_file.empty()) {
    const std::string file = keys->config_.bindings_file.string();
    auto text = ReadBounded(keys->config_.bindings_file, kMaxFileBytes);
    if (text.ok()) {
      auto doc = ParseJson(*text);
      if (!doc.ok())
        return absl::InvalidArgumentError(absl::StrCat(file, ": ", doc.status().message()));
      if (auto st = CheckTop(*doc, {"nodes"}, file); !st.ok()) return st;
      MutexLock lock(&keys->mu_);
      size_t i = 0;
      for (const Json& entry : doc->value("nodes", Json::array())) {
        const std::string where = absl::StrCat(file, ": nodes[", i++, "]");
        if (!entry.is_object())
          return absl::InvalidArgumentError(absl::StrCat(where, ": must be an object"));
        auto id = OptionalString(entry, "node_id", where);
        if (!id.ok()) return id.status();
        if (auto st = CheckNodeId(*id, where + ".node_id"); !st.ok()) return st;
        auto key = KeyField(entry, where);
        if (!key.ok()) return key.status();
        keys->bindings_[*id] = *key;
      }
    } else if (!absl::IsNotFound(text.status())) {
      return text.status();
    }
  }
  return keys;
}

absl::Status NodeKeys::Reload() {
  if (config_.policy_file.empty()) return absl::OkStatus();
  const std::string file = config_.policy_file.string();
  auto text = ReadBounded(config_.policy_file, kMaxFileBytes);
  if (!text.ok()) return text.status();
  auto doc = ParseJson(*text);
  if (!doc.ok())
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", doc.status().message()));
  if (auto st = CheckTop(*doc, {"allow", "deny", "rebind"}, file); !st.ok()) return st;
  Policy fresh;
  size_t i = 0;
  for (const Json& entry : doc->value("allow", Json::array())) {
    const std::string where = absl::StrCat(file, ": allow[", i++, "]");
    if (!entry.is_object())
      return absl::InvalidArgumentError(absl::StrCat(where, ": must be an object"));
    auto key = KeyField(entry, where);
    if (!key.ok()) return key.status();
    auto id = OptionalString(entry, "node_id", where);
    if (!id.ok()) return id.status();
    if (!id->empty()) {
      if (auto st = CheckNodeId(*id, where + ".node_id"); !st.ok()) return st;
    }
    fresh.allow[*key] = *id;
  }
  i = 0;
  for (const Json& entry : doc->value("deny", Json::array())) {
    const std::string where = absl::StrCat(file, ": deny[", i++, "]");
    if (!entry.is_object())
      return absl::InvalidArgumentError(absl::StrCat(where, ": must be an object"));
    const bool has_key = entry.contains("public_key");
    const bool has_id = entry.contains("node_id");
    if (has_key == has_id) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": give exactly one of public_key and node_id"));
    }
    if (has_key) {
      auto key = KeyField(entry, where);
      if (!key.ok()) return key.status();
      fresh.deny_keys.insert(*key);
    } else {
      auto id = OptionalString(entry, "node_id", where);
      if (!id.ok()) return id.status();
      if (auto st = CheckNodeId(*id, where + ".node_id"); !st.ok()) return st;
      fresh.deny_ids.insert(*id);
    }
  }
  i = 0;
  for (const Json& entry : doc->value("rebind", Json::array())) {
    const std::string where = absl::StrCat(file, ": rebind[", i++, "]");
    if (!entry.is_string())
      return absl::InvalidArgumentError(absl::StrCat(where, ": must be a node id string"));
    if (auto st = CheckNodeId(entry.get<std::string>(), where); !st.ok()) return st;
    fresh.rebind.insert(entry.get<std::string>());
  }
  MutexLock lock(&mu_);
  policy_ = std::move(fresh);
  spdlog::info(
      "node identity policy {}: {} allowed keys, {} denied keys, {} denied ids, {} ids "
      "that may change keys",
      file, policy_.allow.size(), policy_.deny_keys.size(), policy_.deny_ids.size(),
      policy_.rebind.size());
  return absl::OkStatus();
}

absl::Status NodeKeys::CheckLocked(const std::string& node_id,
                                   const std::string& public_key) const {
  using Mode = NodeIdentityConfig::Mode;
  if (config_.mode == Mode::kOff) return absl::OkStatus();
  const std::string refused =
      absl::StrCat("registration of node '", LogSafe(node_id), "' refused: ");
  if (policy_.deny_ids.count(node_id) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(refused, "the id is denied by the gateway's node_identity.policy_file"));
  }
  if (public_key.empty()) {
    if (config_.mode == Mode::kRequire) {
      return absl::UnauthenticatedError(absl::StrCat(
          refused,
          "this gateway requires a node identity key (node_identity.mode \"require\"); "
          "the node sent none"));
    }
    if (!policy_.allow.empty()) {
      return absl::PermissionDeniedError(
          absl::StrCat(refused, "the gateway allows listed keys only and the node sent none"));
    }
    if (auto it = bindings_.find(node_id); it != bindings_.end()) {
      return absl::PermissionDeniedError(absl::StrCat(
          refused, "the id is bound to key ", Short(it->second), "... and the node sent no key"));
    }
    return absl::OkStatus();
  }
  if (policy_.deny_keys.count(public_key) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(refused, "its key ", Short(public_key),
                                                    "... is denied by node_identity.policy_file"));
  }
  if (!policy_.allow.empty()) {
    auto it = policy_.allow.find(public_key);
    if (it == policy_.allow.end()) {
      return absl::PermissionDeniedError(
          absl::StrCat(refused, "its key ", Short(public_key),
                       "... is not in node_identity.policy_file's allow list"));
    }
    if (!it->second.empty() && it->second != node_id) {
      return absl::PermissionDeniedError(absl::StrCat(refused, "its key ", Short(public_key),
                                                      "... is allowed for node '",
                                                      LogSafe(it->second), "' only"));
    }
  }
  if (auto it = bindings_.find(node_id);
      it != bindings_.end() && it->second != public_key && policy_.rebind.count(node_id) == 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        refused, "the id is bound to key ", Short(it->second), "..., not ", Short(public_key),
        "...; to allow the change list the id under \"rebind\" in node_identity.policy_file "
        "and send the gateway SIGHUP"));
  }
  return absl::OkStatus();
}

absl::Status NodeKeys::Check(const std::string& node_id, const std::string& public_key) const {
  MutexLock lock(&mu_);
  return CheckLocked(node_id, public_key);
}

absl::Status NodeKeys::Bind(const std::string& node_id, const std::string& public_key) {
  MutexLock lock(&mu_);
  if (config_.mode == NodeIdentityConfig::Mode::kOff || public_key.empty()) return absl::OkStatus();
  if (auto st = CheckLocked(node_id, public_key); !st.ok()) return st;
  auto it = bindings_.find(node_id);
  if (it != bindings_.end() && it->second == public_key) return absl::OkStatus();
  auto fresh = bindings_;
  fresh[node_id] = public_key;
  if (!config_.bindings_file.empty()) {
    if (auto st = WriteBindings(fresh); !st.ok()) return st;
  }
  if (it != bindings_.end()) {
    spdlog::warn("node '{}' moved from key {}... to key {}... (listed under rebind)",
                 LogSafe(node_id), Short(it->second), Short(public_key));
  } else {
    spdlog::info("node '{}' bound to key {}", LogSafe(node_id), NodeKeyHex(public_key));
  }
  bindings_ = std::move(fresh);
  return absl::OkStatus();
}

std::string NodeKeys::BoundKey(const std::string& node_id) const {
  MutexLock lock(&mu_);
  auto it = bindings_.find(node_id);
  return it == bindings_.end() ? "" : it->second;
}

absl::Status NodeKeys::WriteBindings(const std::map<std::string, std::string>& bindings) const {
  Json nodes = Json::array();
  for (const auto& [id, key] : bindings) {
    nodes.push_back({{"node_id", id}, {"public_key", NodeKeyHex(key)}});
  }
  const std::string text = Json{{"nodes", nodes}}.dump(2) + "\n";
  return WritePrivateFile(config_.bindings_file, text);
}

}  // namespace switchyard::gateway
