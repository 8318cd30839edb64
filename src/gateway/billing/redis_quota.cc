#include "gateway/billing/redis_quota.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/secure_random.h"
#include "gateway/state/redis_client.h"

namespace switchyard::gateway {
namespace {

// Takes a token and a slot, atomically, on Redis's clock.
// KEYS[1]: the key's token bucket (a hash: tokens, us = when last refilled, microseconds).
// KEYS[2]: the key's calls in flight (a sorted set: lease id -> expiry, milliseconds).
// ARGV: rate_per_second, burst, max_concurrent, lease id, lease ttl in milliseconds, then the
// leases this gateway gave back without hearing yet that Redis removed them (removed here first:
// a release and the next call's admission may reach Redis on two connections in either order).
// Returns {1, in flight} admitted, {0, in flight} over the concurrency quota, {-1, in flight}
// over the rate limit. Expired leases (their gateway stopped renewing them) are dropped first.
constexpr char kAcquireScript[] = R"lua(
for i = 6, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now_ms))
local n = redis.call('ZCARD', KEYS[2])
if max > 0 and n >= max then return {0, n} end
if rate > 0 then
  local v = redis.call('HMGET', KEYS[1], 'tokens', 'us')
  local tokens = tonumber(v[1])
  local us = tonumber(v[2])
  if tokens == nil or us == nil or not (tokens <= burst and tokens > -1) then
    tokens = burst
    us = now_us
  end
  -- Redis's clock went back (or the field is not a number): no refill, no full bucket either.
  if not (us <= now_us) then us = now_us end
  tokens = math.min(burst, tokens + rate * (now_us - us) / 1000000)
  if tokens < 1 then return {-1, n} end
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens - 1), 'us',
             string.format('%.0f', now_us))
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(burst / rate * 1000) + 1000))
end
redis.call('ZADD', KEYS[2], string.format('%.0f', now_ms + ttl), ARGV[4])
redis.call('PEXPIRE', KEYS[2], string.format('%.0f', 2 * ttl))
return {1, n + 1}
)lua";

// Pushes the expiry of this gateway's live leases of one key to now + ttl. A lease already gone
// (it expired while Redis could not be reached) is not added back: its slot may have been given
// to another call since.
// KEYS[1]: the key's calls in flight; ARGV[1]: lease ttl in milliseconds; ARGV[2..]: lease ids.
// Returns how many were renewed.
constexpr char kRenewScript[] = R"lua(
local t = redis.call('TIME')
local expiry = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) +
                                     tonumber(ARGV[1]))
local renewed = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
    renewed = renewed + 1
  end
end
if renewed > 0 then
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 2 * tonumber(ARGV[1])))
end
return renewed
)lua";

using Reply = RedisReply;

}  // namespace

// The connection to Redis (shared helper, gateway/state/redis_client.h) and this gateway's live
// leases. Shared by the backend and its slots, so a slot may end after the backend.
class RedisQuotaBackend::Core {
 public:
  Core(const RedisQuotaOptions& options, std::unique_ptr<RedisClient> client)
      : options_(options),
        client_(std::move(client)),
        lease_prefix_(SecureRandomHex(8)),
        acquire_(kAcquireScript),
        renew_(kRenewScript) {}

  absl::Status Send(const std::vector<std::string>& argv, RedisClient::Answered answered) {
    return client_->Send(argv, std::move(answered));
  }
  absl::StatusOr<Reply> Eval(const RedisScript& script, const std::vector<std::string>& keys,
                             const std::vector<std::string>& args) {
    return client_->Eval(script, keys, args);
  }
  absl::Status Ping() { return client_->Ping(); }

  const RedisScript& acquire() const { return acquire_; }
  const RedisScript& renew() const { return renew_; }
  const RedisQuotaOptions& options() const { return options_; }

  std::string NewLeaseId() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return absl::StrCat(lease_prefix_, ":", ++next_lease_);
  }
  std::string LeasesKey(const std::string& key_id) const {
    return absl::StrCat(options_.key_prefix, "quota:{", key_id, "}:leases");
  }
  std::string BucketKey(const std::string& key_id) const {
    return absl::StrCat(options_.key_prefix, "quota:{", key_id, "}:bucket");
  }

  // Releases: given back (Send) and not yet known to be removed in Redis. The next admission of
  // the key removes them again in its script, so a slot given back is free for the next call of
  // this gateway whatever order Redis serves them in. Forgotten once Redis answered the release
  // or an admission carried it, or after lease_ttl (the lease expired by then anyway).
  void AddRelease(const std::string& key_id, const std::string& lease) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    auto& pending = releasing_[key_id];
    if (pending.size() >= RedisQuotaBackend::kMaxPendingReleases)
      return;  // the lease expires by itself
    pending.emplace(lease, absl::Now());
  }
  void ForgetRelease(const std::string& key_id, const std::string& lease) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    auto it = releasing_.find(key_id);
    if (it == releasing_.end()) return;
    it->second.erase(lease);
    if (it->second.empty()) releasing_.erase(it);
  }
  // Up to kMaxReleasesPerAdmission of the key's pending releases (dropping those past lease_ttl).
  std::vector<std::string> PendingReleases(const std::string& key_id) ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::string> out;
    MutexLock lock(&mu_);
    auto it = releasing_.find(key_id);
    if (it == releasing_.end()) return out;
    const absl::Time expired = absl::Now() - options_.lease_ttl;
    for (auto r = it->second.begin(); r != it->second.end();) {
      if (r->second < expired) {
        r = it->second.erase(r);
        continue;
      }
      if (out.size() < RedisQuotaBackend::kMaxReleasesPerAdmission) out.push_back(r->first);
      ++r;
    }
    if (it->second.empty()) releasing_.erase(it);
    return out;
  }
  size_t PendingReleaseCount() const ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    size_t n = 0;
    for (const auto& entry : releasing_) n += entry.second.size();
    return n;
  }

  void AddLease(const std::string& key_id, const std::string& lease) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    leases_[key_id].insert(lease);
  }
  void RemoveLease(const std::string& key_id, const std::string& lease) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    auto it = leases_.find(key_id);
    if (it == leases_.end()) return;
    it->second.erase(lease);
    if (it->second.empty()) leases_.erase(it);
  }
  int LeaseCount(const std::string& key_id) const ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    auto it = leases_.find(key_id);
    return it == leases_.end() ? 0 : static_cast<int>(it->second.size());
  }
  std::map<std::string, std::set<std::string>> Leases() const ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return leases_;
  }

 private:
  const RedisQuotaOptions options_;
  const std::unique_ptr<RedisClient> client_;
  const std::string lease_prefix_;  // random: this gateway's leases, unlike any other's
  const RedisScript acquire_;
  const RedisScript renew_;
  mutable Mutex mu_;
  uint64_t next_lease_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::set<std::string>> leases_ ABSL_GUARDED_BY(mu_);  // key id -> ids
  // key id -> lease id -> when it was given back
  std::map<std::string, std::map<std::string, absl::Time>> releasing_ ABSL_GUARDED_BY(mu_);
};

// A slot whose lease is in Redis: removed from the key's set when the call ends. If Redis cannot
// be reached then, the lease expires by itself after lease_ttl (it is no longer renewed).
class RedisQuotaBackend::RedisSlot final : public QuotaSlot {
 public:
  RedisSlot(std::shared_ptr<Core> core, std::string key_id, std::string lease)
      : core_(std::move(core)), key_id_(std::move(key_id)), lease_(std::move(lease)) {}
  ~RedisSlot() override {
    core_->RemoveLease(key_id_, lease_);
    // Sent, not waited for: the slot is given back as the call's status goes out, and a round
    // trip here would be on every call's path. Until Redis answers, this gateway's next
    // admissions of the key remove the lease again (Core::AddRelease).
    core_->AddRelease(key_id_, lease_);
    std::weak_ptr<Core> core = core_;  // the pool holding the callback is the core's
    const absl::Status sent = core_->Send({"ZREM", core_->LeasesKey(key_id_), lease_},
                                          [core, key_id = key_id_, lease = lease_](bool answered) {
                                            auto live = core.lock();
                                            if (live != nullptr && answered)
                                              live->ForgetRelease(key_id, lease);
                                          });
    if (!sent.ok()) {
      spdlog::debug("API key '{}': lease not given back to Redis ({}); it expires in {}", key_id_,
                    std::string(sent.message()), absl::FormatDuration(core_->options().lease_ttl));
    }
  }

 private:
  std::shared_ptr<Core> core_;
  std::string key_id_;
  std::string lease_;
};

absl::StatusOr<std::unique_ptr<RedisQuotaBackend>> RedisQuotaBackend::Create(
    RedisQuotaOptions options, Metrics* metrics) {
  RedisClientOptions client_options;
  client_options.address = options.address;
  client_options.password = options.password;
  client_options.timeout = options.timeout;
  client_options.retry_interval = options.retry_interval;
  client_options.tls = options.tls;
  auto client = RedisClient::Create(std::move(client_options));
  if (!client.ok()) return client.status();
  if (options.lease_ttl < absl::Milliseconds(100) || options.lease_ttl < 3 * options.timeout) {
    return absl::InvalidArgumentError(
        "state.redis.lease_ttl_ms: must be >= 100 and >= 3 times timeout_ms (leases are renewed "
        "every third of it)");
  }
  if (options.key_prefix.size() > 256) {
    return absl::InvalidArgumentError("state.redis.key_prefix: must be 256 bytes at most");
  }
  auto core = std::make_shared<Core>(options, *std::move(client));
  return std::unique_ptr<RedisQuotaBackend>(
      new RedisQuotaBackend(std::move(options), std::move(core), metrics));
}

RedisQuotaBackend::RedisQuotaBackend(RedisQuotaOptions options, std::shared_ptr<Core> core,
                                     Metrics* metrics)
    : options_(std::move(options)), core_(std::move(core)), local_(InMemoryQuotaBackend::Create()) {
  if (metrics != nullptr) {
    fallbacks_metric_ =
        &metrics
             ->CounterFamily("quota_backend_fallbacks_total",
                             "API key calls admitted under this gateway's own in-memory quotas "
                             "because the shared quota store (Redis) could not be reached "
                             "(state.on_unavailable \"local\").")
             .Add({});
  }
  if (options_.renew_leases) renewer_ = std::thread([this] { RenewLoop(); });
}

RedisQuotaBackend::~RedisQuotaBackend() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  wake_.SignalAll();
  if (renewer_.joinable()) renewer_.join();
}

void RedisQuotaBackend::RenewLoop() {
  const absl::Duration interval = options_.lease_ttl / 3;
  const std::string ttl_ms = absl::StrCat(absl::ToInt64Milliseconds(options_.lease_ttl));
  constexpr size_t kBatch = 256;  // lease ids per script run
  while (true) {
    {
      MutexLock lock(&mu_);
      wake_.WaitFor(&mu_, absl::ToChronoMilliseconds(interval),
                    [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; });
      if (stop_) return;
    }
    for (const auto& entry : core_->Leases()) {
      // Not a structured binding: clang 14 (scripts/check-thread-safety) cannot capture one.
      const std::string& key_id = entry.first;
      const std::set<std::string>& leases = entry.second;
      std::vector<std::string> args = {ttl_ms};
      auto flush = [&] {
        if (args.size() <= 1) return;
        auto reply = core_->Eval(core_->renew(), {core_->LeasesKey(key_id)}, args);
        if (reply.ok() && reply->type == Reply::Type::kInteger && reply->integer >= 0) {
          renewals_ += static_cast<uint64_t>(reply->integer);
        } else {
          spdlog::debug("API key '{}': leases not renewed in Redis: {}", key_id,
                        reply.ok() ? reply->Describe() : std::string(reply.status().message()));
        }
        args.resize(1);
      };
      for (const auto& lease : leases) {
        args.push_back(lease);
        if (args.size() > kBatch) flush();
      }
      flush();
    }
  }
}

absl::StatusOr<QuotaSlotPtr> RedisQuotaBackend::Acquire(const std::string& key_id,
                                                        const QuotaLimits& limits) {
  const std::string lease = core_->NewLeaseId();
  std::vector<std::string> args = {absl::StrFormat("%.17g", limits.rate_per_second),
                                   absl::StrFormat("%.17g", limits.burst),
                                   absl::StrCat(limits.max_concurrent), lease,
                                   absl::StrCat(absl::ToInt64Milliseconds(options_.lease_ttl))};
  const std::vector<std::string> releases = core_->PendingReleases(key_id);
  args.insert(args.end(), releases.begin(), releases.end());
  auto reply =
      core_->Eval(core_->acquire(), {core_->BucketKey(key_id), core_->LeasesKey(key_id)}, args);
  if (reply.ok() && reply->type == Reply::Type::kArray && reply->elements.size() == 2 &&
      reply->elements[0].type == Reply::Type::kInteger && reply->elements[0].integer == 0) {
    // Over the concurrency quota: tried once more, at once. A slot another gateway gave back
    // just before its client heard the call end (its release sent, not waited for) may have
    // reached Redis on another connection and been served after this admission; by the time
    // this one is answered Redis has read it. A refused admission took no token and no slot.
    reply =
        core_->Eval(core_->acquire(), {core_->BucketKey(key_id), core_->LeasesKey(key_id)}, args);
  }
  if (!reply.ok()) return Unavailable(key_id, limits, reply.status());
  // Bytes from Redis are checked like any peer's: exactly {verdict, in flight}.
  const bool valid = reply->type == Reply::Type::kArray && reply->elements.size() == 2 &&
                     reply->elements[0].type == Reply::Type::kInteger &&
                     reply->elements[1].type == Reply::Type::kInteger &&
                     reply->elements[0].integer >= -1 && reply->elements[0].integer <= 1 &&
                     reply->elements[1].integer >= 0 && reply->elements[1].integer <= (1LL << 30);
  if (!valid) {
    return Unavailable(
        key_id, limits,
        absl::InternalError(absl::StrCat("Redis at ", options_.address,
                                         " answered the quota script with ", reply->Describe())));
  }
  {
    MutexLock lock(&mu_);
    if (outage_) {
      outage_ = false;
      spdlog::info("Redis at {} answers again: API key quotas are shared again", options_.address);
    }
  }
  // The script removed them: nothing to remove again.
  for (const std::string& released : releases) core_->ForgetRelease(key_id, released);
  const int verdict = static_cast<int>(reply->elements[0].integer);
  const int in_flight = static_cast<int>(reply->elements[1].integer);
  if (verdict == 0) {
    return absl::ResourceExhaustedError(
        OverConcurrencyMessage(key_id, in_flight, limits.max_concurrent));
  }
  if (verdict == -1) return absl::ResourceExhaustedError(OverRateMessage(key_id, limits));
  core_->AddLease(key_id, lease);
  return QuotaSlotPtr(new RedisSlot(core_, key_id, lease));
}

absl::StatusOr<QuotaSlotPtr> RedisQuotaBackend::Unavailable(const std::string& key_id,
                                                            const QuotaLimits& limits,
                                                            const absl::Status& why) {
  const bool local = options_.on_unavailable == QuotaOnUnavailable::kLocal;
  {
    MutexLock lock(&mu_);
    if (!outage_) {
      outage_ = true;
      spdlog::warn(
          "API key quotas: the shared quota store cannot be used ({}); state.on_unavailable is "
          "\"{}\": {} until it answers again",
          std::string(why.message()), local ? "local" : "deny",
          local ? "calls are admitted under this gateway's own in-memory quotas"
                : "calls that need a key are refused (UNAVAILABLE)");
    }
  }
  if (!local) {
    // The client learns that the quota store is down, not where it is or why.
    return absl::UnavailableError(
        "the gateway's shared quota store (Redis) cannot be reached, so API key quotas cannot "
        "be checked; try again later");
  }
  fallbacks_++;
  if (fallbacks_metric_ != nullptr) fallbacks_metric_->Increment();
  return local_->Acquire(key_id, limits);
}

void RedisQuotaBackend::Retain(const std::set<std::string>& key_ids) { local_->Retain(key_ids); }

size_t RedisQuotaBackend::PendingReleases() const { return core_->PendingReleaseCount(); }

int RedisQuotaBackend::InFlight(const std::string& key_id) const {
  return core_->LeaseCount(key_id) + local_->InFlight(key_id);
}

absl::Status RedisQuotaBackend::Ping() { return core_->Ping(); }

}  // namespace switchyard::gateway
