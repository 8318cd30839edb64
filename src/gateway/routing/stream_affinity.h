// Which orchestrator each live stream's segments go to, so a stream stays where its transcoding
// session is. AffinityStore is where that is kept: StreamAffinity is this gateway's own table (the
// default), RedisStreamAffinity (redis_affinity.h) one that several gateways share. Entries idle
// for longer than the timeout are forgotten; the table is bounded.
//
// A stream is named by its tenant (the API key id it was sent with; "" when the gateway needs no
// key) and its stream id: the same stream id under another key is another stream, so one key
// can neither move nor end another's stream by reusing its id (docs/security.md).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"

namespace switchyard::gateway {

// Thread-safe. Affinity is a preference, never a limit: a store that cannot answer answers as if
// it did not know the stream, and no job fails because of it.
class AffinityStore {
 public:
  virtual ~AffinityStore() = default;

  // The node the stream's segments go to ("" when unknown or idle too long). A use keeps the
  // entry alive.
  virtual std::string NodeOf(const std::string& tenant, const std::string& stream_id) = 0;
  // Records that a segment of the stream ran on `node_id`, having been routed with `home` (what
  // NodeOf answered: "" for none). Returns the node the stream goes to from now on: `node_id`,
  // unless a shared store's entry was claimed or moved meanwhile by another gateway (it no longer
  // says `home`), in which case the stream follows that entry rather than flapping between nodes.
  virtual std::string Record(const std::string& tenant, const std::string& stream_id,
                             const std::string& home, const std::string& node_id) = 0;
  // Forgets the stream (it ended); returns the node it was on, if known.
  virtual std::optional<std::string> Forget(const std::string& tenant,
                                            const std::string& stream_id) = 0;
};

// This gateway's own table, in memory.
class StreamAffinity final : public AffinityStore {
 public:
  StreamAffinity(
      absl::Duration idle_timeout, size_t max_streams,
      std::function<absl::Time()> now = [] { return absl::Now(); });

  // The node the stream last ran on ("" when unknown or idle too long).
  std::string NodeOf(const std::string& tenant, const std::string& stream_id) override
      ABSL_LOCKS_EXCLUDED(mu_);
  // Records that the stream's latest segment ran on `node_id`. When the table is full, entries
  // idle too long are dropped first, then the least recently used.
  void Set(const std::string& tenant, const std::string& stream_id, const std::string& node_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Set: this gateway is the only writer, so the segment's node always wins.
  std::string Record(const std::string& tenant, const std::string& stream_id,
                     const std::string& home, const std::string& node_id) override
      ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets the stream (it ended); returns the node it was on, if known.
  std::optional<std::string> Forget(const std::string& tenant,
                                    const std::string& stream_id) override ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    std::string node_id;
    absl::Time last_used;
  };
  void MakeRoomLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration idle_timeout_;
  const size_t max_streams_;
  const std::function<absl::Time()> now_;
  mutable Mutex mu_;
  using Key = std::pair<std::string, std::string>;  // (tenant, stream id)
  std::map<Key, Entry> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::gateway
