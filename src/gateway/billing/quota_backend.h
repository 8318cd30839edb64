// Where API keys' quota state lives: the rate limit's token bucket and the concurrency quota's
// calls in flight. ApiKeyStore (api_keys.h) finds the key; a QuotaBackend admits its call or says
// why not. The in-memory backend is this gateway's own state (the default: a single gateway needs
// nothing but its binary); the Redis one (redis_quota.h) shares it between gateways.
// See docs/security.md ("API keys") and docs/operations.md ("Several gateways").
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"

namespace switchyard::gateway {

// One key's limits, as its api_keys_file entry says.
struct QuotaLimits {
  double rate_per_second = 0;  // 0: unlimited
  double burst = 1;            // bucket size
  int max_concurrent = 0;      // 0: unlimited
};

// One call's concurrency slot; given back when destroyed.
class QuotaSlot {
 public:
  virtual ~QuotaSlot() = default;
};
using QuotaSlotPtr = std::unique_ptr<QuotaSlot>;

// Thread-safe.
class QuotaBackend {
 public:
  virtual ~QuotaBackend() = default;

  // Admits one call of key `key_id` under `limits`: takes a token from its bucket (when it has a
  // rate limit) and a slot (the slot is always counted, the limit checked when max_concurrent >
  // 0). RESOURCE_EXHAUSTED naming the quota ("rate limit" or "concurrency quota") when over it;
  // the concurrency quota is checked first, so a refused call takes no token. UNAVAILABLE when
  // the shared state cannot be reached and the backend is told to refuse then.
  virtual absl::StatusOr<QuotaSlotPtr> Acquire(const std::string& key_id,
                                               const QuotaLimits& limits) = 0;

  // The key ids in force (after a reload): the state of the others may be dropped. A key id kept
  // keeps its bucket and its calls in flight.
  virtual void Retain(const std::set<std::string>& key_ids) = 0;

  // Calls in flight of a key that this gateway admitted (0 if none), for tests and metrics.
  virtual int InFlight(const std::string& key_id) const = 0;

  // Whether Acquire waits for a network round trip (shared state): callers on threads that must
  // not wait (gRPC's callback threads) run it elsewhere.
  virtual bool AcquireWaits() const { return false; }
};
using QuotaBackendPtr = std::unique_ptr<QuotaBackend>;

// The refusals' wording, shared by the backends.
std::string OverConcurrencyMessage(const std::string& key_id, int in_flight, int max_concurrent);
std::string OverRateMessage(const std::string& key_id, const QuotaLimits& limits);

// This gateway's own quota state, in memory.
class InMemoryQuotaBackend final : public QuotaBackend {
 public:
  using Clock = std::function<absl::Time()>;
  static std::unique_ptr<InMemoryQuotaBackend> Create(Clock clock = nullptr);

  absl::StatusOr<QuotaSlotPtr> Acquire(const std::string& key_id,
                                       const QuotaLimits& limits) override ABSL_LOCKS_EXCLUDED(mu_);
  void Retain(const std::set<std::string>& key_ids) override ABSL_LOCKS_EXCLUDED(mu_);
  int InFlight(const std::string& key_id) const override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct State;
  class Slot;
  explicit InMemoryQuotaBackend(Clock clock) : clock_(std::move(clock)) {}

  Clock clock_;
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<State>> by_id_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::gateway
