#include "gateway/membership/shared_hardware_findings.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchyard::gateway {
namespace {

// A finding recorded or renewed. KEYS: the sorted set (entry -> until), the hash (entry -> JSON);
// ARGV: the entry, until (Unix ms), the JSON, how long the keys must live at least (ms), the most
// findings kept (those that end first are dropped).
constexpr char kRecordScript[] = R"lua(
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if over > 0 then
  local drop = redis.call('ZRANGE', KEYS[1], 0, over - 1)
  for _, e in ipairs(drop) do
    redis.call('ZREM', KEYS[1], e)
    redis.call('HDEL', KEYS[2], e)
  end
end
local ttl = tonumber(ARGV[4])
for _, k in ipairs(KEYS) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
return 1
)lua";

// A gateway's own finding removed. KEYS: as above; ARGV: the entry.
constexpr char kClearScript[] = R"lua(
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
)lua";

// The findings in force, those that end last first: entry, until, JSON (false when missing or
// over the size limit) for each; ended ones are removed (at most 1000 per call). KEYS: as above;
// ARGV: now (Unix ms), the most to return, the largest JSON and entry returned.
constexpr char kReadScript[] = R"lua(
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
for _, e in ipairs(gone) do
  redis.call('ZREM', KEYS[1], e)
  redis.call('HDEL', KEYS[2], e)
end
local live = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
                        ARGV[2])
local out = {}
for i = 1, #live, 2 do
  if #live[i] <= tonumber(ARGV[4]) then
    local v = false
    if redis.call('HSTRLEN', KEYS[2], live[i]) <= tonumber(ARGV[3]) then
      v = redis.call('HGET', KEYS[2], live[i])
    end
    out[#out + 1] = live[i]
    out[#out + 1] = live[i + 1]
    out[#out + 1] = v
  end
end
return out
)lua";

constexpr size_t kInstanceBytes = 16;  // hex digits
constexpr size_t kMaxGatewayIdBytes = 128;
constexpr size_t kMaxNodeKeyHexBytes = 256;
// Times outside this are not ours (Unix ms; year 2286).
constexpr double kMaxUnixMs = 1e13;

absl::Status Unexpected(const char* what, const RedisReply& reply) {
  return absl::UnavailableError(
      absl::StrCat("shared hardware findings: Redis answered ", what, " with ", reply.Describe()));
}

bool ValidNodeId(const std::string& node) {
  return !node.empty() && node.size() <= RedisHardwareFindings::kMaxNodeIdBytes;
}

bool ValidInstance(const std::string& instance) {
  return instance.size() == kInstanceBytes &&
         std::all_of(instance.begin(), instance.end(),
                     [](char c) { return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'); });
}

bool ValidVerdict(const std::string& verdict) {
  return verdict == "too_slow" || verdict == "wrong" || verdict == "unanswered";
}

bool ValidHex(const std::string& s, size_t max_bytes) {
  return s.size() <= max_bytes && std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisHardwareFindings>> RedisHardwareFindings::Create(
    RedisHardwareFindingsOptions options) {
  if (options.key_prefix.size() > 256) {
    return absl::InvalidArgumentError("state.redis.key_prefix: must be 256 bytes at most");
  }
  if (options.max_entries == 0 || options.max_entries > 100000) {
    return absl::InvalidArgumentError("shared hardware findings: max_entries must be 1..100000");
  }
  if (options.max_read == 0 || options.max_read > options.max_entries) {
    return absl::InvalidArgumentError("shared hardware findings: max_read must be 1..max_entries");
  }
  auto client = RedisClient::Create(options.redis);
  if (!client.ok()) return client.status();
  return std::unique_ptr<RedisHardwareFindings>(
      new RedisHardwareFindings(std::move(options), *std::move(client)));
}

RedisHardwareFindings::RedisHardwareFindings(RedisHardwareFindingsOptions options,
                                             std::unique_ptr<RedisClient> client)
    : options_(std::move(options)),
      client_(std::move(client)),
      record_(kRecordScript),
      clear_(kClearScript),
      read_(kReadScript) {}

std::string RedisHardwareFindings::Entry(const std::string& instance, const std::string& node) {
  return absl::StrCat(instance, ":", node);
}

absl::StatusOr<std::string> RedisHardwareFindings::Encode(const HardwareFinding& f) {
  if (!ValidNodeId(f.node) || !ValidInstance(f.instance) || !ValidVerdict(f.verdict) ||
      f.gateway.size() > kMaxGatewayIdBytes || f.claim_key.size() > kMaxClaimKeyBytes ||
      !ValidHex(f.node_key, kMaxNodeKeyHexBytes)) {
    return absl::InvalidArgumentError("shared hardware findings: not a finding to share");
  }
  nlohmann::json j = {{"gateway", f.gateway},
                      {"verdict", f.verdict},
                      {"claim", f.claim_key},
                      {"key", f.node_key},
                      {"detail", f.detail.substr(0, kMaxDetailBytes)},
                      {"checked_ms", absl::ToUnixMillis(f.checked)}};
  // Bytes that are not UTF-8 (a cut character, a node's device name) are replaced, not thrown on.
  std::string out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (out.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError("shared hardware findings: the finding is too large");
  }
  return out;
}

absl::StatusOr<HardwareFinding> RedisHardwareFindings::Decode(const std::string& entry,
                                                              const std::string& json,
                                                              absl::Time until) {
  const auto bad = [](const char* why) {
    return absl::InvalidArgumentError(absl::StrCat("not a hardware finding: ", why));
  };
  if (entry.size() < kInstanceBytes + 2 || entry[kInstanceBytes] != ':') return bad("entry");
  HardwareFinding f;
  f.instance = entry.substr(0, kInstanceBytes);
  f.node = entry.substr(kInstanceBytes + 1);
  f.until = until;
  if (!ValidInstance(f.instance) || !ValidNodeId(f.node)) return bad("entry");
  if (json.size() > kMaxValueBytes) return bad("size");
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("JSON");
  const auto text = [&j](const char* field, size_t max_bytes, std::string* out) {
    auto it = j.find(field);
    if (it == j.end() || !it->is_string()) return false;
    *out = it->get<std::string>();
    return out->size() <= max_bytes;
  };
  if (!text("gateway", kMaxGatewayIdBytes, &f.gateway) || !text("verdict", 32, &f.verdict) ||
      !ValidVerdict(f.verdict) || !text("claim", kMaxClaimKeyBytes, &f.claim_key) ||
      !text("key", kMaxNodeKeyHexBytes, &f.node_key) ||
      !ValidHex(f.node_key, kMaxNodeKeyHexBytes) || !text("detail", kMaxDetailBytes, &f.detail)) {
    return bad("fields");
  }
  auto checked = j.find("checked_ms");
  if (checked == j.end() || !checked->is_number_integer() || checked->get<int64_t>() < 0 ||
      checked->get<int64_t>() > static_cast<int64_t>(kMaxUnixMs)) {
    return bad("checked_ms");
  }
  f.checked = absl::FromUnixMillis(checked->get<int64_t>());
  return f;
}

absl::Status RedisHardwareFindings::Record(const HardwareFinding& finding, absl::Time now) {
  auto json = Encode(finding);
  if (!json.ok()) return json.status();
  if (finding.until <= now) return absl::OkStatus();  // over already: nothing to share
  // The keys outlive the finding by a minute: the gateways' clocks and Redis's may differ.
  const int64_t ttl_ms = absl::ToInt64Milliseconds(finding.until - now + absl::Minutes(1));
  auto reply = client_->Eval(
      record_, {FailedKey(), FindingsKey()},
      {Entry(finding.instance, finding.node), absl::StrCat(absl::ToUnixMillis(finding.until)),
       *json, absl::StrCat(ttl_ms), absl::StrCat(options_.max_entries)});
  if (!reply.ok()) return reply.status();
  if (reply->type != RedisReply::Type::kInteger) return Unexpected("a finding", *reply);
  return absl::OkStatus();
}

absl::Status RedisHardwareFindings::Clear(const std::string& node, const std::string& instance) {
  if (!ValidNodeId(node) || !ValidInstance(instance)) {
    return absl::InvalidArgumentError("shared hardware findings: not a finding of ours");
  }
  auto reply = client_->Eval(clear_, {FailedKey(), FindingsKey()}, {Entry(instance, node)});
  if (!reply.ok()) return reply.status();
  if (reply->type != RedisReply::Type::kInteger) return Unexpected("a clear", *reply);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<HardwareFinding>> RedisHardwareFindings::Read(absl::Time now) {
  auto reply = client_->Eval(
      read_, {FailedKey(), FindingsKey()},
      {absl::StrCat(absl::ToUnixMillis(now)), absl::StrCat(options_.max_read),
       absl::StrCat(kMaxValueBytes), absl::StrCat(kInstanceBytes + 1 + kMaxNodeIdBytes)});
  if (!reply.ok()) return reply.status();
  if (reply->type != RedisReply::Type::kArray || reply->elements.size() % 3 != 0 ||
      reply->elements.size() > 3 * options_.max_read) {
    return Unexpected("the findings", *reply);
  }
  std::vector<HardwareFinding> out;
  for (size_t i = 0; i < reply->elements.size(); i += 3) {
    const RedisReply& entry = reply->elements[i];
    const RedisReply& score = reply->elements[i + 1];
    const RedisReply& value = reply->elements[i + 2];
    double until_ms = 0;
    // Not a finding of ours (another program's member under our prefix, a value spoiled or
    // missing): skipped, not trusted.
    if (entry.type != RedisReply::Type::kString || score.type != RedisReply::Type::kString ||
        !absl::SimpleAtod(score.str, &until_ms) || !std::isfinite(until_ms) || until_ms < 0 ||
        until_ms > kMaxUnixMs || value.type != RedisReply::Type::kString) {
      continue;
    }
    auto finding =
        Decode(entry.str, value.str, absl::FromUnixMillis(static_cast<int64_t>(until_ms)));
    if (finding.ok()) out.push_back(*std::move(finding));
  }
  return out;
}

}  // namespace switchyard::gateway
