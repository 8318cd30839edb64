#include "gateway/billing/quota_backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace switchyard::gateway {

std::string OverConcurrencyMessage(const std::string& key_id, int in_flight, int max_concurrent) {
  return absl::StrCat("API key '", key_id, "' is over its concurrency quota: ", in_flight, " of ",
                      max_concurrent, " calls in flight");
}

std::string OverRateMessage(const std::string& key_id, const QuotaLimits& limits) {
  return absl::StrCat("API key '", key_id, "' is over its rate limit: ", limits.rate_per_second,
                      " requests per second (burst ", limits.burst, ")");
}

// A key's live quota state, shared by the backend and the slots of its calls in flight (a slot
// outlives a reload that drops its key).
struct InMemoryQuotaBackend::State {
  Mutex mu;
  double tokens ABSL_GUARDED_BY(mu) = 0;
  absl::Time refilled ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  int in_flight ABSL_GUARDED_BY(mu) = 0;
};

class InMemoryQuotaBackend::Slot final : public QuotaSlot {
 public:
  explicit Slot(std::shared_ptr<State> state) : state_(std::move(state)) {}
  ~Slot() override {
    MutexLock lock(&state_->mu);
    state_->in_flight--;
  }

 private:
  std::shared_ptr<State> state_;
};

std::unique_ptr<InMemoryQuotaBackend> InMemoryQuotaBackend::Create(Clock clock) {
  if (!clock) clock = [] { return absl::Now(); };
  return std::unique_ptr<InMemoryQuotaBackend>(new InMemoryQuotaBackend(std::move(clock)));
}

absl::StatusOr<QuotaSlotPtr> InMemoryQuotaBackend::Acquire(const std::string& key_id,
                                                           const QuotaLimits& limits) {
  std::shared_ptr<State> state;
  {
    MutexLock lock(&mu_);
    auto& slot = by_id_[key_id];
    if (!slot) {
      slot = std::make_shared<State>();
      MutexLock state_lock(&slot->mu);
      slot->tokens = limits.burst;  // a new key starts with a full bucket
    }
    state = slot;
  }
  const absl::Time now = clock_();
  MutexLock lock(&state->mu);
  // A reload may have lowered the burst: the bucket holds no more than it.
  state->tokens = std::min(state->tokens, limits.burst);
  if (limits.max_concurrent > 0 && state->in_flight >= limits.max_concurrent) {
    return absl::ResourceExhaustedError(
        OverConcurrencyMessage(key_id, state->in_flight, limits.max_concurrent));
  }
  if (limits.rate_per_second > 0) {
    if (state->refilled != absl::InfinitePast() && now > state->refilled) {
      state->tokens =
          std::min(limits.burst, state->tokens + limits.rate_per_second *
                                                     absl::ToDoubleSeconds(now - state->refilled));
    }
    state->refilled = std::max(state->refilled, now);
    if (state->tokens < 1) return absl::ResourceExhaustedError(OverRateMessage(key_id, limits));
    state->tokens -= 1;
  }
  state->in_flight++;
  return QuotaSlotPtr(new Slot(std::move(state)));
}

void InMemoryQuotaBackend::Retain(const std::set<std::string>& key_ids) {
  MutexLock lock(&mu_);
  for (auto it = by_id_.begin(); it != by_id_.end();) {
    it = key_ids.count(it->first) != 0 ? std::next(it) : by_id_.erase(it);
  }
}

int InMemoryQuotaBackend::InFlight(const std::string& key_id) const {
  MutexLock lock(&mu_);
  auto it = by_id_.find(key_id);
  if (it == by_id_.end()) return 0;
  MutexLock state_lock(&it->second->mu);
  return it->second->in_flight;
}

}  // namespace switchyard::gateway
