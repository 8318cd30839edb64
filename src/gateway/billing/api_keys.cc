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

// A key's live quota state, shared by the store and the leases of its calls in flight.
struct ApiKeyStore::Lease::State {
  Mutex mu;
  double rate_per_second ABSL_GUARDED_BY(mu) = 0;
  double burst ABSL_GUARDED_BY(mu) = 0;
  int max_concurrent ABSL_GUARDED_BY(mu) = 0;
  double tokens ABSL_GUARDED_BY(mu) = 0;
  absl::Time refilled ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  int in_flight ABSL_GUARDED_BY(mu) = 0;
};

ApiKeyStore::Lease::~Lease() {
  MutexLock lock(&state_->mu);
  state_->in_flight--;
}

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
  MutexLock lock(&mu_);
  std::map<std::string, std::shared_ptr<Lease::State>> old_by_id;
  for (auto& [hash, key] : by_hash_) old_by_id[key.entry.id] = key.state;
  std::map<std::string, Key> fresh;
  for (const auto& e : entries) {
    auto it = old_by_id.find(e.id);
    auto state = it != old_by_id.end() ? it->second : std::make_shared<Lease::State>();
    {
      MutexLock state_lock(&state->mu);
      state->rate_per_second = e.rate_per_second;
      state->burst = e.burst;
      state->max_concurrent = e.max_concurrent;
      if (it == old_by_id.end()) state->tokens = e.burst;  // a new key starts with a full bucket
      state->tokens = std::min(state->tokens, e.burst);
    }
    fresh[e.sha256] = Key{e, std::move(state)};
  }
  by_hash_ = std::move(fresh);
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
  std::shared_ptr<Lease::State> state;
  std::string id;
  {
    MutexLock lock(&mu_);
    auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return absl::UnauthenticatedError("unknown API key");
    state = it->second.state;
    id = it->second.entry.id;
  }
  const absl::Time now = clock_();
  MutexLock lock(&state->mu);
  if (state->max_concurrent > 0 && state->in_flight >= state->max_concurrent) {
    return absl::ResourceExhaustedError(
        absl::StrCat("API key '", id, "' is over its concurrency quota: ", state->in_flight, " of ",
                     state->max_concurrent, " calls in flight"));
  }
  if (state->rate_per_second > 0) {
    if (state->refilled != absl::InfinitePast() && now > state->refilled) {
      state->tokens =
          std::min(state->burst, state->tokens + state->rate_per_second *
                                                     absl::ToDoubleSeconds(now - state->refilled));
    }
    state->refilled = std::max(state->refilled, now);
    if (state->tokens < 1) {
      return absl::ResourceExhaustedError(
          absl::StrCat("API key '", id, "' is over its rate limit: ", state->rate_per_second,
                       " requests per second (burst ", state->burst, ")"));
    }
    state->tokens -= 1;
  }
  state->in_flight++;
  return std::unique_ptr<Lease>(new Lease(state, id));
}

int ApiKeyStore::InFlight(const std::string& key_id) const {
  MutexLock lock(&mu_);
  for (const auto& [hash, key] : by_hash_) {
    if (key.entry.id != key_id) continue;
    MutexLock state_lock(&key.state->mu);
    return key.state->in_flight;
  }
  return -1;
}

size_t ApiKeyStore::size() const {
  MutexLock lock(&mu_);
  return by_hash_.size();
}

}  // namespace switchyard::gateway
