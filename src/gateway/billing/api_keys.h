// API keys for app developers: a JSON file of hashed keys, each with a rate limit (token bucket)
// and a concurrency quota (jobs in flight). See docs/security.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "gateway/billing/quota_backend.h"

namespace switchyard::gateway {

struct ApiKeyEntry {
  std::string id;              // names the key in logs and errors; never the key itself
  std::string sha256;          // lowercase hex SHA-256 of the key
  double rate_per_second = 0;  // sustained requests per second; 0: unlimited
  double burst = 0;            // bucket size; defaults to max(1, rate_per_second)
  int max_concurrent = 0;      // jobs (calls) in flight at once; 0: unlimited
};

// Lowercase hex SHA-256 (OpenSSL libcrypto).
std::string Sha256Hex(absl::string_view data);
// A new random key: "sy_" and 64 hex digits (256 bits from the OpenSSL CSPRNG). Keys this long
// and random need no salt: a salt slows guessing of low-entropy passwords, and a 256-bit key
// cannot be guessed, so a plain SHA-256 lets the gateway look a key up in one step.
absl::StatusOr<std::string> NewApiKey();

// Parses {"keys": [{"id", "sha256", "rate_per_second", "burst", "max_concurrent"}]}; errors name
// the file and the field ("keys.json: keys[1].sha256: ...").
absl::StatusOr<std::vector<ApiKeyEntry>> ParseApiKeys(const std::string& json_text,
                                                      const std::filesystem::path& file);
absl::StatusOr<std::vector<ApiKeyEntry>> LoadApiKeys(const std::filesystem::path& file);

// Thread-safe; admits a call for a presented key or says why not. The key's quota state lives in
// a QuotaBackend: this gateway's memory by default, or one shared by several gateways (Redis).
class ApiKeyStore {
 public:
  using Clock = std::function<absl::Time()>;
  // Quotas in this gateway's memory, timed by `clock`.
  explicit ApiKeyStore(Clock clock = [] { return absl::Now(); })
      : backend_(InMemoryQuotaBackend::Create(std::move(clock))) {}
  // Quotas in `backend` (not null).
  explicit ApiKeyStore(QuotaBackendPtr backend) : backend_(std::move(backend)) {}

  // Holds one concurrency slot of a key; gives it back when destroyed, also across reloads.
  class Lease {
   public:
    ~Lease() = default;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    const std::string& key_id() const { return key_id_; }

   private:
    friend class ApiKeyStore;
    Lease(QuotaSlotPtr slot, std::string key_id)
        : slot_(std::move(slot)), key_id_(std::move(key_id)) {}
    QuotaSlotPtr slot_;
    std::string key_id_;
  };

  // Replaces the keys. A key id kept across the swap keeps its bucket and its calls in flight
  // (so a reload neither refills buckets nor forgets running jobs); new limits apply at once.
  void Replace(const std::vector<ApiKeyEntry>& entries) ABSL_LOCKS_EXCLUDED(mu_);

  // UNAUTHENTICATED for a missing or unknown key; RESOURCE_EXHAUSTED naming the quota
  // ("rate limit" or "concurrency quota") when over it; UNAVAILABLE when shared quota state
  // cannot be reached and the backend refuses then (state.on_unavailable "deny"). The lease must
  // live as long as the call.
  absl::StatusOr<std::unique_ptr<Lease>> Admit(absl::string_view presented_key)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Whether Admit may wait for a network round trip (QuotaBackend::AcquireWaits).
  bool AdmitWaits() const { return backend_->AcquireWaits(); }

  // Whether `presented_key` is a known key (OK, else UNAUTHENTICATED as Admit says), without
  // taking a token or a slot: the HTTP server's check before it reads a body.
  absl::Status Authenticate(absl::string_view presented_key) const ABSL_LOCKS_EXCLUDED(mu_);

  // Calls in flight that this gateway admitted for a key id (-1 if unknown), for tests and
  // metrics.
  int InFlight(const std::string& key_id) const ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const QuotaBackendPtr backend_;
  mutable Mutex mu_;
  std::map<std::string, ApiKeyEntry> by_hash_ ABSL_GUARDED_BY(mu_);  // sha256 -> key
};

}  // namespace switchyard::gateway
