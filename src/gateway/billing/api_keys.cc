#include "gateway/billing/api_keys.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/status.h"

namespace switchyard::gateway {

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), static_cast<size_t>(len)));
}

absl::StatusOr<std::string> NewApiKey() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError("OpenSSL RAND_bytes failed: no key made");
  }
  return absl::StrCat("sy_", absl::BytesToHexString(absl::string_view(
                                 reinterpret_cast<const char*>(bytes), sizeof(bytes))));
}

absl::StatusOr<std::vector<ApiKeyEntry>> ParseApiKeys(const std::string& json_text,
                                                      const std::filesystem::path& file) {
  auto parsed = ParseConfigJson(json_text, file, {"keys"});
  if (!parsed.ok()) return parsed.status();
  nlohmann::json json = *std::move(parsed);
  ConfigObject root(json, file.string(), "");
  if (!root.Has("keys") || !json["keys"].is_array()) {
    return root.Error("keys", "is required: an array of {id, sha256, ...} entries");
  }
  std::vector<ApiKeyEntry> out;
  std::set<std::string> ids, hashes;
  for (size_t i = 0; i < json["keys"].size(); ++i) {
    ConfigObject k(json["keys"][i], file.string(), absl::StrCat("keys[", i, "]"));
    SY_RETURN_IF_ERROR(k.CheckKeys({"id", "sha256", "rate_per_second", "burst", "max_concurrent"}));
    ApiKeyEntry e;
    SY_RETURN_IF_ERROR(k.Read("id", &e.id, /*required=*/true));
    SY_RETURN_IF_ERROR(k.Read("sha256", &e.sha256, /*required=*/true));
    SY_RETURN_IF_ERROR(k.Read("rate_per_second", &e.rate_per_second));
    SY_RETURN_IF_ERROR(k.Read("burst", &e.burst));
    SY_RETURN_IF_ERROR(k.Read("max_concurrent", &e.max_concurrent));
    if (e.id.empty()) return k.Error("id", "must not be empty");
    if (!ids.insert(e.id).second) return k.Error("id", absl::StrCat("'", e.id, "' is repeated"));
    absl::AsciiStrToLower(&e.sha256);
    if (e.sha256.size() != 64 || !std::all_of(e.sha256.begin(), e.sha256.end(),
                                              [](char c) { return absl::ascii_isxdigit(c); })) {
      return k.Error("sha256", "must be 64 hex digits (the key's SHA-256; see docs/security.md)");
    }
    if (!hashes.insert(e.sha256).second) return k.Error("sha256", "is repeated (same key twice)");
    if (e.rate_per_second < 0) return k.Error("rate_per_second", "must be >= 0 (0: unlimited)");
    if (e.burst < 0) return k.Error("burst", "must be >= 0");
    if (e.burst == 0) e.burst = std::max(1.0, e.rate_per_second);
    if (e.max_concurrent < 0) return k.Error("max_concurrent", "must be >= 0 (0: unlimited)");
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<std::vector<ApiKeyEntry>> LoadApiKeys(const std::filesystem::path& file) {
  auto json = LoadJsonFile(file);
  if (!json.ok()) return json.status();
  return ParseApiKeys(json->dump(), file);
}

void ApiKeyStore::Replace(const std::vector<ApiKeyEntry>& entries) {
  std::map<std::string, ApiKeyEntry> fresh;
  std::set<std::string> ids;
  for (const auto& e : entries) {
    fresh[e.sha256] = e;
    ids.insert(e.id);
  }
  {
    MutexLock lock(&mu_);
    by_hash_ = std::move(fresh);
  }
  backend_->Retain(ids);
}

absl::Status ApiKeyStore::Authenticate(absl::string_view presented_key) const {
  if (presented_key.empty()) {
    return absl::UnauthenticatedError(
        "API key required: send 'authorization: Bearer <key>' (or 'x-api-key: <key>')");
  }
  const std::string hash = Sha256Hex(presented_key);
  MutexLock lock(&mu_);
  if (by_hash_.count(hash) == 0) return absl::UnauthenticatedError("unknown API key");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ApiKeyStore::Lease>> ApiKeyStore::Admit(
    absl::string_view presented_key) {
  if (presented_key.empty()) {
    return absl::UnauthenticatedError(
        "API key required: send 'authorization: Bearer <key>' (or 'x-api-key: <key>')");
  }
  const std::string hash = Sha256Hex(presented_key);
  ApiKeyEntry entry;
  {
    MutexLock lock(&mu_);
    auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return absl::UnauthenticatedError("unknown API key");
    entry = it->second;
  }
  auto slot = backend_->Acquire(
      entry.id, QuotaLimits{entry.rate_per_second, entry.burst, entry.max_concurrent});
  if (!slot.ok()) return slot.status();
  return std::unique_ptr<Lease>(new Lease(*std::move(slot), entry.id));
}

int ApiKeyStore::InFlight(const std::string& key_id) const {
  {
    MutexLock lock(&mu_);
    if (std::none_of(by_hash_.begin(), by_hash_.end(),
                     [&](const auto& item) { return item.second.id == key_id; })) {
      return -1;
    }
  }
  return backend_->InFlight(key_id);
}

size_t ApiKeyStore::size() const {
  MutexLock lock(&mu_);
  return by_hash_.size();
}

}  // namespace switchyard::gateway
