// Hardware-check findings shared by the gateways of one operator (config `state.redis`;
// docs/security.md "Hardware claims"). Each gateway challenges every node itself
// (hardware_checker.h); alone, a node that fails one gateway's challenge stays fully routed by the
// others until each finds it out. Shared, a failed finding (too_slow, wrong, unanswered) reaches
// every gateway within a poll (HardwareChecker's poll thread), which caps the node as if it had
// found it itself, for the claim the finding judged.
//
// The rule (why no other gateway's `ok` lifts a finding): each finding belongs to the gateway
// process that made it (its random instance id) and only that process's later `ok` removes it;
// otherwise it ends at its `until` (2 x interval_s after the check, renewed by every failed
// re-check). A node that passes one gateway's challenge and fails another's (e.g. it can borrow a
// GPU's speed only some of the time, or is near one gateway) thus stays capped everywhere until the
// gateway that failed it finds it ok, or stops re-checking it (the node left it, the gateway is
// gone). Letting the latest check win would uncap it everywhere at every `ok` anywhere.
//
// In Redis: a sorted set `<prefix>hardware:failed` (entry -> until, Unix ms) and a hash
// `<prefix>hardware:findings` (entry -> the finding as JSON, at most kMaxValueBytes), the entry
// being `<instance id>:<node id>`. Both keys expire once every finding has ended; at most
// `max_entries` findings are kept (those ending first dropped) and `max_read` read per poll.
//
// Every byte Redis answers is checked: a reply of another shape is an error (the caller keeps its
// own findings), an entry that is not a finding of ours (a foreign member, bad JSON, an unknown
// verdict, a node id over kMaxNodeIdBytes) is skipped.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/state/redis_client.h"

namespace switchyard::gateway {

// One gateway's failed verdict on one node.
struct HardwareFinding {
  std::string node;
  std::string instance;   // the finding gateway process's id (16 hex digits): whose finding it is
  std::string gateway;    // its gateway_id, for people (logs, ListCapabilities)
  std::string verdict;    // "too_slow", "wrong" or "unanswered"
  std::string claim_key;  // the hardware list it judged (HardwareCheckRecord::claim_key)
  std::string node_key;   // hex of the identity key the finder binds to the node ("" none)
  std::string detail;     // the finder's sentence (at most kMaxDetailBytes)
  absl::Time checked;
  absl::Time until;
};

class SharedHardwareFindings {
 public:
  virtual ~SharedHardwareFindings() = default;
  // Records (or renews) `finding` as its instance's finding on its node.
  virtual absl::Status Record(const HardwareFinding& finding, absl::Time now) = 0;
  // Removes `instance`'s own finding on `node` (its later check found the node ok).
  virtual absl::Status Clear(const std::string& node, const std::string& instance) = 0;
  // Every gateway's findings still in force at `now` (ended ones are dropped).
  virtual absl::StatusOr<std::vector<HardwareFinding>> Read(absl::Time now) = 0;
};
using SharedHardwareFindingsPtr = std::unique_ptr<SharedHardwareFindings>;

struct RedisHardwareFindingsOptions {
  RedisClientOptions redis;
  std::string key_prefix = "switchyard:";  // state.redis.key_prefix
  size_t max_entries = 10000;              // findings kept (those that end first are dropped)
  size_t max_read = 4096;                  // findings read per poll (those that end last first)
};

class RedisHardwareFindings final : public SharedHardwareFindings {
 public:
  // Longest node id taken from Redis (the registry allows 128 bytes).
  static constexpr size_t kMaxNodeIdBytes = 256;
  static constexpr size_t kMaxValueBytes = 2048;  // one finding's JSON
  static constexpr size_t kMaxDetailBytes = 512;  // its detail (cut to fit when recorded)
  static constexpr size_t kMaxClaimKeyBytes = 512;
  // Validates the options; does not need Redis to be up.
  static absl::StatusOr<std::unique_ptr<RedisHardwareFindings>> Create(
      RedisHardwareFindingsOptions options);

  absl::Status Record(const HardwareFinding& finding, absl::Time now) override;
  absl::Status Clear(const std::string& node, const std::string& instance) override;
  absl::StatusOr<std::vector<HardwareFinding>> Read(absl::Time now) override;

  std::string FailedKey() const { return options_.key_prefix + "hardware:failed"; }
  std::string FindingsKey() const { return options_.key_prefix + "hardware:findings"; }
  static std::string Entry(const std::string& instance, const std::string& node);
  // The finding as stored (JSON), and back; Decode checks every field (an error: not ours).
  static absl::StatusOr<std::string> Encode(const HardwareFinding& finding);
  static absl::StatusOr<HardwareFinding> Decode(const std::string& entry, const std::string& json,
                                                absl::Time until);

 private:
  RedisHardwareFindings(RedisHardwareFindingsOptions options, std::unique_ptr<RedisClient> client);

  const RedisHardwareFindingsOptions options_;
  const std::unique_ptr<RedisClient> client_;
  const RedisScript record_;
  const RedisScript clear_;
  const RedisScript read_;
};

}  // namespace switchyard::gateway
