#include "gateway/api/shared_verdicts.h"

#include <cmath>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchyard::gateway {
namespace {

// One more mismatch for a node. KEYS[1]: its counter; ARGV[1]: how long it is kept (ms).
// Returns the count.
constexpr char kAddBlameScript[] = R"lua(
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
)lua";

// An ejection; the one that ends later stands. KEYS[1]: the ejections; ARGV: the node, until
// (Unix ms).
constexpr char kEjectScript[] = R"lua(
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 1
)lua";

// The ejections in force, those that end last first; ended ones are removed. KEYS[1]: the
// ejections; ARGV: now (Unix ms), the most to return.
constexpr char kEjectedScript[] = R"lua(
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. ARGV[1], 'WITHSCORES', 'LIMIT', 0,
                  ARGV[2])
)lua";

absl::Status Unexpected(const char* what, const RedisReply& reply) {
  return absl::UnavailableError(absl::StrCat("shared spot-check verdicts: Redis answered ", what,
                                             " with ", reply.Describe()));
}

bool ValidNodeId(const std::string& node) {
  return !node.empty() && node.size() <= RedisSharedVerdicts::kMaxNodeIdBytes;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisSharedVerdicts>> RedisSharedVerdicts::Create(
    RedisSharedVerdictsOptions options) {
  if (options.key_prefix.size() > 256) {
    return absl::InvalidArgumentError("state.redis.key_prefix: must be 256 bytes at most");
  }
  if (options.blame_ttl < absl::Seconds(1)) {
    return absl::InvalidArgumentError("shared spot-check verdicts: blame_ttl must be >= 1 s");
  }
  if (options.max_ejected == 0 || options.max_ejected > 100000) {
    return absl::InvalidArgumentError("shared spot-check verdicts: max_ejected must be 1..100000");
  }
  auto client = RedisClient::Create(options.redis);
  if (!client.ok()) return client.status();
  return std::unique_ptr<RedisSharedVerdicts>(
      new RedisSharedVerdicts(std::move(options), *std::move(client)));
}

RedisSharedVerdicts::RedisSharedVerdicts(RedisSharedVerdictsOptions options,
                                         std::unique_ptr<RedisClient> client)
    : options_(std::move(options)),
      client_(std::move(client)),
      add_blame_(kAddBlameScript),
      eject_(kEjectScript),
      ejected_(kEjectedScript) {}

std::string RedisSharedVerdicts::BlameKey(const std::string& node) const {
  return absl::StrCat(options_.key_prefix, "verify:blamed:", node);
}

absl::StatusOr<int64_t> RedisSharedVerdicts::AddBlame(const std::string& node) {
  if (!ValidNodeId(node)) return absl::InvalidArgumentError("not a node id");
  auto reply = client_->Eval(add_blame_, {BlameKey(node)},
                             {absl::StrCat(absl::ToInt64Milliseconds(options_.blame_ttl))});
  if (!reply.ok()) return reply.status();
  if (reply->type != RedisReply::Type::kInteger || reply->integer < 1) {
    return Unexpected("a mismatch count", *reply);
  }
  return static_cast<int64_t>(reply->integer);
}

absl::Status RedisSharedVerdicts::Eject(const std::string& node, absl::Time until) {
  if (!ValidNodeId(node)) return absl::InvalidArgumentError("not a node id");
  auto reply =
      client_->Eval(eject_, {EjectedKey()}, {node, absl::StrCat(absl::ToUnixMillis(until))});
  if (!reply.ok()) return reply.status();
  if (reply->type != RedisReply::Type::kInteger) return Unexpected("an ejection", *reply);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SharedVerdicts::Ejection>> RedisSharedVerdicts::Ejected(absl::Time now) {
  auto reply =
      client_->Eval(ejected_, {EjectedKey()},
                    {absl::StrCat(absl::ToUnixMillis(now)), absl::StrCat(options_.max_ejected)});
  if (!reply.ok()) return reply.status();
  if (reply->type != RedisReply::Type::kArray || reply->elements.size() % 2 != 0 ||
      reply->elements.size() > 2 * options_.max_ejected) {
    return Unexpected("the ejections", *reply);
  }
  std::vector<Ejection> out;
  for (size_t i = 0; i < reply->elements.size(); i += 2) {
    const RedisReply& node = reply->elements[i];
    const RedisReply& score = reply->elements[i + 1];
    double until_ms = 0;
    // Not an entry of ours (another program's key under our prefix): skipped, not trusted.
    if (node.type != RedisReply::Type::kString || !ValidNodeId(node.str) ||
        score.type != RedisReply::Type::kString || !absl::SimpleAtod(score.str, &until_ms) ||
        !std::isfinite(until_ms) || until_ms < 0 || until_ms > 1e15) {
      continue;
    }
    out.push_back({node.str, absl::FromUnixMillis(static_cast<int64_t>(until_ms))});
  }
  return out;
}

}  // namespace switchyard::gateway
