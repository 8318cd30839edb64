// Which orchestrator each live stream's segments go to, so a stream stays where its transcoding
// session is. Entries idle for longer than the timeout are forgotten; the table is bounded.
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

class StreamAffinity {
 public:
  StreamAffinity(
      absl::Duration idle_timeout, size_t max_streams,
      std::function<absl::Time()> now = [] { return absl::Now(); });

  // The node the stream last ran on ("" when unknown or idle too long).
  std::string NodeOf(const std::string& tenant, const std::string& stream_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Records that the stream's latest segment ran on `node_id`. When the table is full, entries
  // idle too long are dropped first, then the least recently used.
  void Set(const std::string& tenant, const std::string& stream_id, const std::string& node_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets the stream (it ended); returns the node it was on, if known.
  std::optional<std::string> Forget(const std::string& tenant, const std::string& stream_id)
      ABSL_LOCKS_EXCLUDED(mu_);
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
