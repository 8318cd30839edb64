// Spot-check verdicts shared by the gateways of one operator (config `state.redis`;
// docs/security.md "Spot checks"). Each gateway checks a sample of the jobs it answers, so with N
// gateways behind one load balancer each sees 1/N of a node's jobs: counted apart, a cheating node
// would need N times the mismatches to be ejected, and an ejection by one gateway would leave it
// routed by the others. Shared, the mismatches every gateway blames a node for are counted together
// (the ejection comes at `eject_after` of them in all) and an ejection reaches every gateway within
// a poll interval (SpotChecker's poll thread), which bans the node and disputes its own ledger
// rows.
//
// In Redis: one counter per node (`<prefix>verify:blamed:<node>`, kept `blame_ttl` after its last
// mismatch) and one sorted set of ejections (`<prefix>verify:ejected`: node -> until, in Unix
// milliseconds; the later ejection wins; past ones are removed as they are read).
//
// Every byte Redis answers is checked: a reply of another shape is an error (the caller falls back
// to its own counts), an entry that is not a node id of ours is skipped, and at most
// `max_ejected` ejections are read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/state/redis_client.h"

namespace switchyard::gateway {

class SharedVerdicts {
 public:
  virtual ~SharedVerdicts() = default;
  // Adds one mismatch blamed on `node` (by this gateway); returns the node's count over every
  // gateway. An error when the store cannot count it (the caller counts it itself).
  virtual absl::StatusOr<int64_t> AddBlame(const std::string& node) = 0;
  // Records that `node` is ejected until `until`; an ejection that lasts longer stands.
  virtual absl::Status Eject(const std::string& node, absl::Time until) = 0;
  struct Ejection {
    std::string node;
    absl::Time until;
  };
  // The ejections still in force at `now`.
  virtual absl::StatusOr<std::vector<Ejection>> Ejected(absl::Time now) = 0;
};
using SharedVerdictsPtr = std::unique_ptr<SharedVerdicts>;

struct RedisSharedVerdictsOptions {
  RedisClientOptions redis;
  std::string key_prefix = "switchyard:";  // state.redis.key_prefix
  // A node's mismatch count is forgotten this long after its last mismatch.
  absl::Duration blame_ttl = absl::Hours(24 * 30);
  // At most this many ejections are read per poll (the earliest to end are left out).
  size_t max_ejected = 4096;
};

class RedisSharedVerdicts final : public SharedVerdicts {
 public:
  // Longest node id taken from Redis (the registry allows 128 bytes).
  static constexpr size_t kMaxNodeIdBytes = 256;
  // Validates the options; does not need Redis to be up.
  static absl::StatusOr<std::unique_ptr<RedisSharedVerdicts>> Create(
      RedisSharedVerdictsOptions options);

  absl::StatusOr<int64_t> AddBlame(const std::string& node) override;
  absl::Status Eject(const std::string& node, absl::Time until) override;
  absl::StatusOr<std::vector<Ejection>> Ejected(absl::Time now) override;

  std::string BlameKey(const std::string& node) const;
  std::string EjectedKey() const { return options_.key_prefix + "verify:ejected"; }

 private:
  RedisSharedVerdicts(RedisSharedVerdictsOptions options, std::unique_ptr<RedisClient> client);

  const RedisSharedVerdictsOptions options_;
  const std::unique_ptr<RedisClient> client_;
  const RedisScript add_blame_;
  const RedisScript eject_;
  const RedisScript ejected_;
};

}  // namespace switchyard::gateway
