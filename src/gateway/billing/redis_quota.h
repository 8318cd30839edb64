// API keys' quotas shared by several gateways through Redis (config `state.redis`,
// docs/operations.md "Several gateways"). Each admission is one Lua script run atomically by Redis
// on its own clock (TIME): the key's token bucket (a hash) and its calls in flight (a sorted set of
// lease ids scored by their expiry). A gateway renews the leases of its live calls from a
// background thread, so the slots of a gateway that dies (kill -9, lost host) free themselves after
// lease_ttl. A slot is given back without waiting for Redis's answer (one round trip per call, the
// admission's); until Redis answered, the key's next admissions here remove it again. When Redis
// cannot be reached or answers something unexpected, `on_unavailable` decides: refuse the call
// (UNAVAILABLE) or admit it under this gateway's own in-memory limits.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/counter.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "common/tls.h"
#include "gateway/billing/quota_backend.h"

namespace switchyard::gateway {

enum class QuotaOnUnavailable { kDeny, kLocal };

struct RedisQuotaOptions {
  std::string address;   // HOST:PORT ("[::1]:6379" for IPv6)
  std::string password;  // AUTH with it when not empty
  std::string key_prefix = "switchyard:";
  absl::Duration timeout = absl::Milliseconds(200);      // connect and each command
  absl::Duration lease_ttl = absl::Milliseconds(15000);  // renewed every third of it
  QuotaOnUnavailable on_unavailable = QuotaOnUnavailable::kLocal;
  // After a failed connection, calls do not try Redis again for this long (answered as
  // unavailable at once), so an outage does not add a connect timeout to every call.
  absl::Duration retry_interval = absl::Milliseconds(500);
  TlsClientConfig tls;  // state.redis.tls (RedisClientOptions::tls); not enabled: plain TCP
  // Tests only: false simulates a gateway that died holding its leases (they are not renewed).
  bool renew_leases = true;
};

class RedisQuotaBackend final : public QuotaBackend {
 public:
  // Validates the options; does not need Redis to be up (the first calls connect). `metrics`
  // (may be null) gets switchyard_gateway_quota_backend_fallbacks_total.
  static absl::StatusOr<std::unique_ptr<RedisQuotaBackend>> Create(RedisQuotaOptions options,
                                                                   Metrics* metrics = nullptr);
  ~RedisQuotaBackend() override;

  absl::StatusOr<QuotaSlotPtr> Acquire(const std::string& key_id,
                                       const QuotaLimits& limits) override;
  void Retain(const std::set<std::string>& key_ids) override;
  // This gateway's calls in flight for the key (those admitted by Redis and by the local
  // fallback), not the other gateways'.
  int InFlight(const std::string& key_id) const override;
  bool AcquireWaits() const override { return true; }  // a round trip to Redis

  // One PING: OK when Redis answers PONG (a start-up check for the log).
  absl::Status Ping();
  // Calls admitted under the local limits because Redis could not be reached.
  uint64_t fallbacks() const { return fallbacks_.load(); }
  // Leases renewed by the background thread so far.
  uint64_t renewals() const { return renewals_.load(); }
  // Slots given back whose release Redis has not answered yet (they are removed again by the
  // key's next admission here; see redis_quota.cc).
  size_t PendingReleases() const;

  // Most pending releases kept per key (more expire with their lease), and carried by one
  // admission.
  static constexpr size_t kMaxPendingReleases = 4096;
  static constexpr size_t kMaxReleasesPerAdmission = 256;

  class Core;  // the connections and the live leases, shared with the slots

 private:
  class RedisSlot;
  RedisQuotaBackend(RedisQuotaOptions options, std::shared_ptr<Core> core, Metrics* metrics);
  void RenewLoop() ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<QuotaSlotPtr> Unavailable(const std::string& key_id, const QuotaLimits& limits,
                                           const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);

  const RedisQuotaOptions options_;
  std::shared_ptr<Core> core_;
  std::unique_ptr<InMemoryQuotaBackend> local_;  // the fallback's limits (on_unavailable local)
  prometheus::Counter* fallbacks_metric_ = nullptr;
  std::atomic<uint64_t> fallbacks_{0};
  std::atomic<uint64_t> renewals_{0};
  Mutex mu_;
  bool outage_ ABSL_GUARDED_BY(mu_) = false;  // logged once per outage
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  CondVar wake_;
  std::thread renewer_;
};

}  // namespace switchyard::gateway
