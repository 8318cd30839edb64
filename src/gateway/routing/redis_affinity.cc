#include "gateway/routing/redis_affinity.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace switchyard::gateway {
namespace {

// Follows a stream: its node, and the entry kept alive for another idle timeout.
// KEYS[1]: the stream's entry; ARGV[1]: ttl in milliseconds. Returns the node id or nil.
constexpr char kFollowScript[] = R"lua(
local v = redis.call('GET', KEYS[1])
if v then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return v
)lua";

// Records where a segment ran. The entry is written when there is none (the stream's claim, like
// SET NX), when it still says the node the segment was routed with (the stream moved: its node
// could not take it), or when it says this node already (kept alive); otherwise another gateway
// claimed or moved the stream since it was read, and its entry stands.
// KEYS[1]: the stream's entry; ARGV: the node routed with ("" none), the node that ran the
// segment, ttl in milliseconds. Returns the node the stream goes to from now on.
constexpr char kRecordScript[] = R"lua(
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return cur
)lua";

// Ends a stream. KEYS[1]: the stream's entry. Returns the node it was on, or nil.
constexpr char kForgetScript[] = R"lua(
local v = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
return v
)lua";

}  // namespace

absl::StatusOr<std::unique_ptr<RedisStreamAffinity>> RedisStreamAffinity::Create(
    RedisAffinityOptions options, Metrics* metrics, std::function<absl::Time()> now) {
  if (options.ttl < absl::Milliseconds(1)) {
    return absl::InvalidArgumentError("stream affinity ttl (stream_idle_timeout_ms) must be >= 1");
  }
  if (options.key_prefix.size() > 256) {
    return absl::InvalidArgumentError("state.redis.key_prefix: must be 256 bytes at most");
  }
  auto client = RedisClient::Create(options.redis);
  if (!client.ok()) return client.status();
  return std::unique_ptr<RedisStreamAffinity>(
      new RedisStreamAffinity(std::move(options), *std::move(client), metrics, std::move(now)));
}

RedisStreamAffinity::RedisStreamAffinity(RedisAffinityOptions options,
                                         std::unique_ptr<RedisClient> client, Metrics* metrics,
                                         std::function<absl::Time()> now)
    : options_(std::move(options)),
      ttl_ms_(absl::StrCat(absl::ToInt64Milliseconds(options_.ttl))),
      client_(std::move(client)),
      local_(options_.ttl, options_.max_local_streams, std::move(now)),
      follow_(kFollowScript),
      record_(kRecordScript),
      forget_(kForgetScript) {
  if (metrics != nullptr) {
    fallbacks_metric_ =
        &metrics
             ->CounterFamily("affinity_store_fallbacks_total",
                             "Stream affinity lookups and updates answered by this gateway's own "
                             "table because the shared affinity store (Redis) could not be "
                             "reached or answered something unexpected.")
             .Add({});
  }
}

std::string RedisStreamAffinity::KeyOf(const std::string& tenant,
                                       const std::string& stream_id) const {
  return absl::StrCat(options_.key_prefix, "affinity:", tenant.size(), ":", tenant, ":", stream_id);
}

bool RedisStreamAffinity::NodeReply(const absl::StatusOr<RedisReply>& reply, bool* absent) {
  *absent = false;
  if (!reply.ok()) return false;
  if (reply->type == RedisReply::Type::kNil) {
    *absent = true;
    return true;
  }
  return reply->type == RedisReply::Type::kString && !reply->str.empty() &&
         reply->str.size() <= kMaxNodeIdBytes;
}

std::string RedisStreamAffinity::NodeOf(const std::string& tenant, const std::string& stream_id) {
  auto reply = client_->Eval(follow_, {KeyOf(tenant, stream_id)}, {ttl_ms_});
  bool absent = false;
  if (!NodeReply(reply, &absent)) {
    Fallback("lookup", reply);
    return local_.NodeOf(tenant, stream_id);
  }
  Answered();
  // No entry in Redis but one here: Redis lost it (a restart without persistence, an eviction).
  // The stream keeps its node; the segment's Record writes the entry back.
  if (absent) return local_.NodeOf(tenant, stream_id);
  local_.Set(tenant, stream_id, reply->str);
  return reply->str;
}

std::string RedisStreamAffinity::Record(const std::string& tenant, const std::string& stream_id,
                                        const std::string& home, const std::string& node_id) {
  auto reply = client_->Eval(record_, {KeyOf(tenant, stream_id)}, {home, node_id, ttl_ms_});
  bool absent = false;
  if (!NodeReply(reply, &absent) || absent) {
    Fallback("update", reply);
    local_.Set(tenant, stream_id, node_id);
    return node_id;
  }
  Answered();
  if (reply->str != node_id) {
    spdlog::info("stream '{}' stays on {}: another gateway placed it there meanwhile",
                 LogSafe(stream_id), LogSafe(reply->str));
  }
  local_.Set(tenant, stream_id, reply->str);
  return reply->str;
}

std::optional<std::string> RedisStreamAffinity::Forget(const std::string& tenant,
                                                       const std::string& stream_id) {
  std::optional<std::string> local = local_.Forget(tenant, stream_id);
  auto reply = client_->Eval(forget_, {KeyOf(tenant, stream_id)}, {});
  bool absent = false;
  if (!NodeReply(reply, &absent)) {
    // The entry expires by itself after the idle timeout.
    Fallback("removal", reply);
    return local;
  }
  Answered();
  if (absent) return local;
  return reply->str;
}

void RedisStreamAffinity::Fallback(const char* what, const absl::StatusOr<RedisReply>& reply) {
  fallbacks_++;
  if (fallbacks_metric_ != nullptr) fallbacks_metric_->Increment();
  MutexLock lock(&mu_);
  if (outage_) return;
  outage_ = true;
  const std::string why =
      reply.ok() ? absl::StrCat("Redis at ", options_.redis.address, " answered the affinity ",
                                what, " with ", reply->Describe())
                 : std::string(reply.status().message());
  spdlog::warn(
      "stream affinity: the shared affinity store cannot be used ({}); streams follow this "
      "gateway's own table until it answers again (their jobs go on)",
      why);
}

void RedisStreamAffinity::Answered() {
  MutexLock lock(&mu_);
  if (!outage_) return;
  outage_ = false;
  spdlog::info("Redis at {} answers again: stream affinity is shared again",
               options_.redis.address);
}

}  // namespace switchyard::gateway
