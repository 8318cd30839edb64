#include "gateway/billing/redis_quota.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/time.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/config.h"
#include "common/secure_random.h"
#include "common/status.h"

namespace switchyard::gateway {
namespace {

// Takes a token and a slot, atomically, on Redis's clock.
// KEYS[1]: the key's token bucket (a hash: tokens, us = when last refilled, microseconds).
// KEYS[2]: the key's calls in flight (a sorted set: lease id -> expiry, milliseconds).
// ARGV: rate_per_second, burst, max_concurrent, lease id, lease ttl in milliseconds.
// Returns {1, in flight} admitted, {0, in flight} over the concurrency quota, {-1, in flight}
// over the rate limit. Expired leases (their gateway stopped renewing them) are dropped first.
constexpr char kAcquireScript[] = R"lua(
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

std::string Sha1Hex(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha1(), nullptr);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), static_cast<size_t>(len)));
}

// A Redis reply copied out of hiredis's (freed at once).
struct Reply {
  enum class Type { kString, kStatus, kInteger, kNil, kError, kArray, kOther };
  Type type = Type::kOther;
  std::string str;
  long long integer = 0;
  std::vector<Reply> elements;

  std::string Describe() const {
    switch (type) {
      case Type::kString:
        return "a string";
      case Type::kStatus:
        return "a status";
      case Type::kInteger:
        return absl::StrCat("the integer ", integer);
      case Type::kNil:
        return "nil";
      case Type::kError:
        return absl::StrCat("the error '", absl::CHexEscape(str.substr(0, 200)), "'");
      case Type::kArray:
        return absl::StrCat("an array of ", elements.size());
      case Type::kOther:
        break;
    }
    return "a reply of an unknown type";
  }
};

Reply Copy(const redisReply* r, int depth) {
  Reply out;
  if (r == nullptr) return out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      out.type = r->type == REDIS_REPLY_STRING   ? Reply::Type::kString
                 : r->type == REDIS_REPLY_STATUS ? Reply::Type::kStatus
                                                 : Reply::Type::kError;
      if (r->str != nullptr) out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_NIL:
      out.type = Reply::Type::kNil;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::kArray;
      // Our scripts answer two levels at most; deeper is not an answer of ours.
      if (depth > 4) {
        out.type = Reply::Type::kOther;
        break;
      }
      for (size_t i = 0; i < r->elements && r->element != nullptr; ++i) {
        out.elements.push_back(Copy(r->element[i], depth + 1));
      }
      break;
    default:
      break;
  }
  return out;
}

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct Script {
  const char* text;
  std::string sha;
};

}  // namespace

// The connections to Redis (a small pool: each call takes one, so calls do not wait on each
// other's round trips) and this gateway's live leases. Shared by the backend and its slots, so a
// slot may end after the backend.
class RedisQuotaBackend::Core {
 public:
  Core(const RedisQuotaOptions& options, std::string host, int port)
      : options_(options),
        host_(std::move(host)),
        port_(port),
        lease_prefix_(SecureRandomHex(8)),
        acquire_{kAcquireScript, Sha1Hex(kAcquireScript)},
        renew_{kRenewScript, Sha1Hex(kRenewScript)} {}

  // One command. Redis's error replies come back as replies (type kError); a failed connection,
  // a timeout or bytes that are not Redis's protocol as an UNAVAILABLE status.
  absl::StatusOr<Reply> Run(const std::vector<std::string>& argv) ABSL_LOCKS_EXCLUDED(mu_) {
    // A connection from the pool may have died with the server it knew (a Redis restart): one
    // failure on it drops the pool and tries once more on a new connection.
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool pooled = false;
      auto conn = Take(&pooled);
      if (!conn.ok()) return conn.status();
      std::vector<const char*> args;
      std::vector<size_t> lens;
      for (const auto& a : argv) {
        args.push_back(a.data());
        lens.push_back(a.size());
      }
      auto* raw = static_cast<redisReply*>(
          redisCommandArgv(conn->get(), static_cast<int>(args.size()), args.data(), lens.data()));
      if (raw == nullptr) {
        const std::string why = Failure(conn->get());
        // Only when the server closed the connection (a restart) before answering: a timeout
        // may have run the command, and running a script twice would take two slots.
        if (pooled && attempt == 0 && Closed(conn->get())) {
          DropIdle();
          continue;
        }
        MarkDown(why);
        return absl::UnavailableError(why);
      }
      Reply reply = Copy(raw, 0);
      freeReplyObject(raw);
      Give(*std::move(conn));
      return reply;
    }
    return absl::UnavailableError(absl::StrCat("Redis at ", options_.address, ": no connection"));
  }

  // EVALSHA, and EVAL when Redis does not know the script yet (NOSCRIPT: a new or restarted
  // server, or SCRIPT FLUSH).
  absl::StatusOr<Reply> Eval(const Script& script, const std::vector<std::string>& keys,
                             const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"EVALSHA", script.sha, absl::StrCat(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    auto reply = Run(argv);
    if (reply.ok() && reply->type == Reply::Type::kError &&
        absl::StartsWith(reply->str, "NOSCRIPT")) {
      argv[0] = "EVAL";
      argv[1] = script.text;
      reply = Run(argv);
    }
    return reply;
  }

  const Script& acquire() const { return acquire_; }
  const Script& renew() const { return renew_; }
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
  absl::StatusOr<ContextPtr> Take(bool* pooled) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      MutexLock lock(&mu_);
      if (!idle_.empty()) {
        ContextPtr c = std::move(idle_.back());
        idle_.pop_back();
        *pooled = true;
        return c;
      }
      if (absl::Now() < down_until_) {
        return absl::UnavailableError(absl::StrCat(last_error_, " (not retried for ",
                                                   absl::FormatDuration(options_.retry_interval),
                                                   " after a failure)"));
      }
    }
    *pooled = false;
    const timeval tv = absl::ToTimeval(options_.timeout);
    ContextPtr c(redisConnectWithTimeout(host_.c_str(), port_, tv));
    if (c == nullptr || c->err != 0) {
      const std::string why = c == nullptr ? absl::StrCat("Redis at ", options_.address,
                                                          ": cannot allocate a connection")
                                           : Failure(c.get());
      MarkDown(why);
      return absl::UnavailableError(why);
    }
    if (redisSetTimeout(c.get(), tv) != REDIS_OK) {
      const std::string why = Failure(c.get());
      MarkDown(why);
      return absl::UnavailableError(why);
    }
    if (!options_.password.empty()) {
      const char* argv[] = {"AUTH", options_.password.c_str()};
      const size_t lens[] = {4, options_.password.size()};
      auto* raw = static_cast<redisReply*>(redisCommandArgv(c.get(), 2, argv, lens));
      if (raw == nullptr) {
        const std::string why = Failure(c.get());
        MarkDown(why);
        return absl::UnavailableError(why);
      }
      Reply reply = Copy(raw, 0);
      freeReplyObject(raw);
      if (reply.type != Reply::Type::kStatus || reply.str != "OK") {
        // The password is never in the message; Redis's own error text may be (WRONGPASS ...).
        const std::string why =
            absl::StrCat("Redis at ", options_.address,
                         " refused the password (state.redis.password_file): ", reply.Describe());
        MarkDown(why);
        return absl::UnavailableError(why);
      }
    }
    return c;
  }

  void Give(ContextPtr c) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    if (idle_.size() < kMaxIdle) idle_.push_back(std::move(c));
  }

  void DropIdle() ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<ContextPtr> dropped;
    MutexLock lock(&mu_);
    dropped.swap(idle_);
  }

  void MarkDown(const std::string& why) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    down_until_ = absl::Now() + options_.retry_interval;
    last_error_ = why;
    idle_.clear();
  }

  static bool Closed(const redisContext* c) {
    if (c->err == REDIS_ERR_EOF) return true;
    if (c->err != REDIS_ERR_IO) return false;
    const absl::string_view why(c->errstr);
    return why == std::strerror(ECONNRESET) || why == std::strerror(EPIPE);
  }

  std::string Failure(const redisContext* c) const {
    const absl::string_view why(c->errstr);
    if (c->err == REDIS_ERR_IO && why == std::strerror(EAGAIN)) {
      return absl::StrCat("Redis at ", options_.address, ": no answer within ",
                          absl::FormatDuration(options_.timeout), " (state.redis.timeout_ms)");
    }
    std::string what = c->err == REDIS_ERR_PROTOCOL ? "not Redis's protocol: " : "";
    return absl::StrCat("Redis at ", options_.address, ": ", what,
                        absl::CHexEscape(why.substr(0, 200)));
  }

  static constexpr size_t kMaxIdle = 16;
  const RedisQuotaOptions options_;
  const std::string host_;
  const int port_;
  const std::string lease_prefix_;  // random: this gateway's leases, unlike any other's
  const Script acquire_;
  const Script renew_;
  mutable Mutex mu_;
  std::vector<ContextPtr> idle_ ABSL_GUARDED_BY(mu_);
  absl::Time down_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t next_lease_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::set<std::string>> leases_ ABSL_GUARDED_BY(mu_);  // key id -> ids
};

// A slot whose lease is in Redis: removed from the key's set when the call ends. If Redis cannot
// be reached then, the lease expires by itself after lease_ttl (it is no longer renewed).
class RedisQuotaBackend::RedisSlot final : public QuotaSlot {
 public:
  RedisSlot(std::shared_ptr<Core> core, std::string key_id, std::string lease)
      : core_(std::move(core)), key_id_(std::move(key_id)), lease_(std::move(lease)) {}
  ~RedisSlot() override {
    core_->RemoveLease(key_id_, lease_);
    auto reply = core_->Run({"ZREM", core_->LeasesKey(key_id_), lease_});
    if (!reply.ok() || reply->type != Reply::Type::kInteger) {
      spdlog::debug("API key '{}': lease not given back to Redis ({}); it expires in {}", key_id_,
                    reply.ok() ? reply->Describe() : std::string(reply.status().message()),
                    absl::FormatDuration(core_->options().lease_ttl));
    }
  }

 private:
  std::shared_ptr<Core> core_;
  std::string key_id_;
  std::string lease_;
};

absl::StatusOr<std::unique_ptr<RedisQuotaBackend>> RedisQuotaBackend::Create(
    RedisQuotaOptions options, Metrics* metrics) {
  const std::string what = "state.redis.address";
  if (options.address.empty()) return absl::InvalidArgumentError(what + ": is required");
  SY_RETURN_IF_ERROR(ValidateHostPort(options.address, what));
  const size_t colon = options.address.rfind(':');
  std::string host = options.address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  if (host.empty() || !absl::SimpleAtoi(options.address.substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", options.address, "' is not HOST:PORT with a port 1..65535"));
  }
  if (options.timeout < absl::Milliseconds(1) || options.timeout > absl::Seconds(60)) {
    return absl::InvalidArgumentError("state.redis.timeout_ms: must be 1..60000");
  }
  if (options.lease_ttl < absl::Milliseconds(100) || options.lease_ttl < 3 * options.timeout) {
    return absl::InvalidArgumentError(
        "state.redis.lease_ttl_ms: must be >= 100 and >= 3 times timeout_ms (leases are renewed "
        "every third of it)");
  }
  if (options.key_prefix.size() > 256) {
    return absl::InvalidArgumentError("state.redis.key_prefix: must be 256 bytes at most");
  }
  if (options.retry_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("retry_interval must be >= 0");
  }
  // hiredis writes with write(2), not send(MSG_NOSIGNAL): a write to a connection Redis (or
  // something posing as it) has reset would raise SIGPIPE, whose default ends the gateway. The
  // gateway handles EPIPE as a failed call instead.
  std::signal(SIGPIPE, SIG_IGN);
  auto core = std::make_shared<Core>(options, std::move(host), port);
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
  auto reply =
      core_->Eval(core_->acquire(), {core_->BucketKey(key_id), core_->LeasesKey(key_id)},
                  {absl::StrFormat("%.17g", limits.rate_per_second),
                   absl::StrFormat("%.17g", limits.burst), absl::StrCat(limits.max_concurrent),
                   lease, absl::StrCat(absl::ToInt64Milliseconds(options_.lease_ttl))});
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

int RedisQuotaBackend::InFlight(const std::string& key_id) const {
  return core_->LeaseCount(key_id) + local_->InFlight(key_id);
}

absl::Status RedisQuotaBackend::Ping() {
  auto reply = core_->Run({"PING"});
  if (!reply.ok()) return reply.status();
  if (reply->type != Reply::Type::kStatus || reply->str != "PONG") {
    return absl::UnavailableError(
        absl::StrCat("Redis at ", options_.address, " answered PING with ", reply->Describe()));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::gateway
