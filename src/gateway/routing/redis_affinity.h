// Stream affinity shared by several gateways through Redis (config `state.redis`;
// docs/operations.md "Several gateways"): the segments of one stream reach the same orchestrator
// whichever gateway receives them. Each stream is one Redis string, its node id, that expires
// after the stream's idle timeout and is kept alive by every use; the first gateway to run a
// segment of a new stream claims it, and a gateway whose routing moved the stream (its node was
// gone, ejected, draining or full here) overwrites it only while it still says the node it read,
// so two gateways that both see a node go do not send the stream back and forth.
//
// This gateway's own table (StreamAffinity) is a copy of what Redis said and the fallback: when
// Redis cannot be reached or answers something unexpected, the stream follows the local table,
// logged once per outage and counted in switchyard_gateway_affinity_store_fallbacks_total.
// Affinity is a preference, not a limit, so state.on_unavailable ("deny") does not apply to it:
// no job fails because Redis is down.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <prometheus/counter.h>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "gateway/routing/stream_affinity.h"
#include "gateway/state/redis_client.h"

namespace switchyard::gateway {

struct RedisAffinityOptions {
  RedisClientOptions redis;
  std::string key_prefix = "switchyard:";  // state.redis.key_prefix
  // How long an unused stream's entry lives (stream_idle_timeout_ms), in Redis and locally.
  absl::Duration ttl = absl::Seconds(60);
  size_t max_local_streams = 100000;  // the local table's bound
};

class RedisStreamAffinity final : public AffinityStore {
 public:
  // Longest node id taken from Redis (the registry allows 128 bytes): anything longer is not an
  // entry of ours.
  static constexpr size_t kMaxNodeIdBytes = 256;

  // Validates the options; does not need Redis to be up. `metrics` (may be null) gets the
  // fallbacks counter; `now` is the local table's clock.
  static absl::StatusOr<std::unique_ptr<RedisStreamAffinity>> Create(
      RedisAffinityOptions options, Metrics* metrics = nullptr,
      std::function<absl::Time()> now = [] { return absl::Now(); });

  std::string NodeOf(const std::string& tenant, const std::string& stream_id) override
      ABSL_LOCKS_EXCLUDED(mu_);
  std::string Record(const std::string& tenant, const std::string& stream_id,
                     const std::string& home, const std::string& node_id) override
      ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<std::string> Forget(const std::string& tenant,
                                    const std::string& stream_id) override ABSL_LOCKS_EXCLUDED(mu_);

  // One PING (a start-up check for the log).
  absl::Status Ping() { return client_->Ping(); }
  // Lookups and updates answered by the local table because Redis could not be used.
  uint64_t fallbacks() const { return fallbacks_.load(); }
  // The Redis key of a stream: the tenant's length first, so that no (tenant, stream id) pair
  // names another's key whatever bytes the ids hold.
  std::string KeyOf(const std::string& tenant, const std::string& stream_id) const;

 private:
  RedisStreamAffinity(RedisAffinityOptions options, std::unique_ptr<RedisClient> client,
                      Metrics* metrics, std::function<absl::Time()> now);
  // Whether a reply is a node id of ours (a string of 1..kMaxNodeIdBytes bytes); nil is
  // `*absent` (true) and valid too.
  static bool NodeReply(const absl::StatusOr<RedisReply>& reply, bool* absent);
  // Redis could not be used for `what`: counted, logged once per outage.
  void Fallback(const char* what, const absl::StatusOr<RedisReply>& reply) ABSL_LOCKS_EXCLUDED(mu_);
  // Redis answered: ends an outage (logged).
  void Answered() ABSL_LOCKS_EXCLUDED(mu_);

  const RedisAffinityOptions options_;
  const std::string ttl_ms_;
  const std::unique_ptr<RedisClient> client_;
  StreamAffinity local_;
  const RedisScript follow_;
  const RedisScript record_;
  const RedisScript forget_;
  prometheus::Counter* fallbacks_metric_ = nullptr;
  std::atomic<uint64_t> fallbacks_{0};
  Mutex mu_;
  bool outage_ ABSL_GUARDED_BY(mu_) = false;  // logged once per outage
};

}  // namespace switchyard::gateway
