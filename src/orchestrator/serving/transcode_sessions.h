// The orchestrator's live transcoding sessions: one per stream, kept between its segments,
// bounded in number (the node's transcode capacity, and a share of it per tenant) and closed
// when idle.
//
// A stream is named by (tenant, stream id): the tenant is the API key id the gateway admitted the
// client with ("" without keys), so the same stream id sent under another key names another
// stream, and no key can continue, reset or close another's session (docs/security.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "orchestrator/serving/transcode_session.h"
#include "orchestrator/transcode/transcoder.h"

namespace switchyard::orchestrator {

// Longest stream id accepted (they key the session map and appear in logs).
inline constexpr size_t kMaxStreamIdBytes = 128;

struct TranscodeSessionsOptions {
  // Streams with an open session, plus one-off segments (no stream id) running, at most.
  int capacity = 2;
  // A session with no segment for this long is closed and its slot freed.
  absl::Duration idle_timeout = absl::Seconds(30);
  // How often idle sessions are looked for; 0 disables the background sweep (tests call
  // CloseIdle themselves).
  absl::Duration sweep_interval = absl::Seconds(1);
  // Sessions one non-empty tenant may hold open at once; a new stream beyond that is refused
  // (RESOURCE_EXHAUSTED, IsTenantLimit). 0: no per-tenant cap. The empty tenant (a gateway
  // without API keys: every client alike) is bounded by `capacity` only.
  int max_sessions_per_tenant = 0;
};

// Whether a Transcode refusal is the per-tenant cap (waiting for a free slot would not help)
// rather than the node's capacity.
bool IsTenantLimit(const absl::Status& status);

class TranscodeSessions {
 public:
  // `on_change` is called (without locks held) whenever in_use() changes, so the node can
  // advertise its load; `now` is the clock for idleness.
  TranscodeSessions(
      TranscodeSessionsOptions options, std::function<void()> on_change,
      std::function<absl::Time()> now = [] { return absl::Now(); });
  // Stops the sweeper thread and joins it.
  ~TranscodeSessions();

  TranscodeSessions(const TranscodeSessions&) = delete;
  TranscodeSessions& operator=(const TranscodeSessions&) = delete;

  // Transcodes one segment. With a `stream_id`, the tenant's stream's session is used (opened on
  // its first segment; reopened when the ladder or container changes); segments of one stream
  // run one at a time, in arrival order. A session none of whose segments succeeded is closed as
  // soon as its failed segment ends, so a bad first segment holds no slot. Without a stream id,
  // the segment runs on its own, holding a slot while it runs. RESOURCE_EXHAUSTED when a new
  // stream or one-off segment finds every slot taken, or a new stream's tenant holds
  // max_sessions_per_tenant sessions already; a segment of a stream already open here is never
  // refused.
  absl::StatusOr<TranscodeResult> Transcode(const std::string& tenant, const std::string& stream_id,
                                            int64_t sequence, std::string_view segment,
                                            const std::vector<RenditionSpec>& ladder,
                                            const TranscodeOptions& options,
                                            const std::function<bool()>& cancelled = {})
      ABSL_LOCKS_EXCLUDED(mu_);

  // Closes the tenant's stream's session (the gateway says the stream ended). False if none was
  // open (another tenant's stream of that id is not touched).
  bool Close(const std::string& tenant, const std::string& stream_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Closes sessions idle for longer than the timeout; returns how many.
  int CloseIdle() ABSL_LOCKS_EXCLUDED(mu_);

  int in_use() const ABSL_LOCKS_EXCLUDED(mu_);
  int open_sessions() const ABSL_LOCKS_EXCLUDED(mu_);
  // Sessions open for `tenant`.
  int open_sessions(const std::string& tenant) const ABSL_LOCKS_EXCLUDED(mu_);
  int capacity() const { return options_.capacity; }

 private:
  struct Session {
    Mutex run_mu;  // one segment at a time
    TranscodeSessionPtr session ABSL_GUARDED_BY(run_mu);
    // Guarded by TranscodeSessions::mu_ (the analysis cannot name the outer object's lock here):
    absl::Time last_used;
    int running = 0;  // segments running or waiting for run_mu
  };

  using Key = std::pair<std::string, std::string>;  // (tenant, stream id)

  void Sweep();
  int OpenSessionsLocked(const std::string& tenant) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const TranscodeSessionsOptions options_;
  const std::function<void()> on_change_;
  const std::function<absl::Time()> now_;

  mutable Mutex mu_;
  std::map<Key, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  int one_off_running_ ABSL_GUARDED_BY(mu_) = 0;
  // Segments being transcoded now (one-off and streams'), for the "auto" thread policy.
  std::atomic<int> segments_running_{0};
  StopSignal stop_;
  std::thread sweeper_;
};

// Whether two ladders ask for the same renditions (a stream that changes its ladder gets a new
// session).
bool SameLadder(const std::vector<RenditionSpec>& a, const std::vector<RenditionSpec>& b);

}  // namespace switchyard::orchestrator
