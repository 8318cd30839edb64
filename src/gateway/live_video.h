// Live video-to-video sessions of the Livepeer AI HTTP API (POST /live-video-to-video), speaking
// a subset of Livepeer's "trickle" protocol (go-livepeer's trickle package, ai-runner's live
// pipelines) as the ai-runner side does:
//
//   - subscribe: GET <subscribe_url>/<seq> for seq 0, 1, 2, ... (the server may hold the request
//     until the segment exists). 200: the segment (MPEG-TS); its Lp-Trickle-Seq header, when
//     present, names the sequence number actually served and the next GET asks for that + 1.
//     470: the segment is gone; the session jumps to Lp-Trickle-Latest. 404 (or a response with
//     Lp-Trickle-Closed): the stream ended, and so does the session.
//   - each segment goes to the gateway's own gRPC API (Gateway.LiveVideoSegment, over the
//     in-process channel), so it is routed by the one router, with the stream's affinity and
//     retries on another orchestrator when a node fails, and counted in the job metrics.
//   - publish: POST <publish_url>/<seq> for seq 0, 1, 2, ... with the output segment as a chunked
//     body (video/mp2t). At the end, DELETE <publish_url> closes the output channel.
//   - control (optional): GET <control_url>/<seq>, each segment a JSON object that replaces the
//     model's parameters from the next video segment on.
//   - events (optional): POST <events_url>/<seq>, one JSON object per event: {"type": "status",
//     "state": "running", ...} after each segment, {"type": "error", "message"} when a segment
//     fails, and a last {"type": "status", "state": "ended" | "failed", "reason"} when the
//     session ends; then DELETE <events_url>.
//
// Not supported (docs/http-api.md): https URLs, -1 ("latest") and negative sequence numbers on
// subscribe, preconnecting the next segment, Lp-Trickle-Reset, the /next query, resuming a
// partially received segment after a timeout.
//
// Sessions are owned by LiveVideoSessions: bounded in number, each bounded in lifetime and ended
// when no input segment arrives for idle_timeout; Stop() (gateway shutdown, or the destructor)
// ends them all and waits for their threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {

struct LiveVideoOptions {
  int max_sessions = 64;                             // sessions at once; more refused (429)
  absl::Duration max_lifetime = absl::Hours(12);     // a session ends after this long
  absl::Duration idle_timeout = absl::Seconds(60);   // ... or when no segment came for this long
  absl::Duration http_timeout = absl::Seconds(30);   // each publish or event request
  absl::Duration segment_timeout = absl::Seconds(60);  // each segment's gRPC call
  int64_t max_segment_bytes = 64 << 20;              // a larger input segment ends the session
  int max_failures_in_a_row = 3;  // segments that fail one after another before the session ends
};

// What a session was started with (validated by the HTTP handler).
struct LiveVideoParams {
  std::string request_id;
  std::string model_id;
  std::string stream_id;  // for routing affinity; the request id when the client sent none
  std::string manifest_id;
  std::string subscribe_url;
  std::string publish_url;
  std::string control_url;  // may be empty
  std::string events_url;   // may be empty
  std::string params = "{}";  // JSON object text
  std::string authorization;  // the client's Authorization header, sent with each segment
};

// An http://host[:port]/path URL. INVALID_ARGUMENT (naming what is wrong) for anything else.
struct HttpUrl {
  std::string host;
  std::string port;
  std::string target;  // path (and query), "/" when none
};
absl::StatusOr<HttpUrl> ParseHttpUrl(absl::string_view url);

// The result of one trickle HTTP request.
struct TrickleResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};

// One HTTP/1.1 request (Connection: close). The body, when not empty, is sent chunked. Gives up
// with DEADLINE_EXCEEDED after `timeout`, CANCELLED as soon as `*stop` is set (polled every
// 50 ms), UNAVAILABLE when the server cannot be reached or the connection breaks,
// RESOURCE_EXHAUSTED for a response body over `max_body`.
absl::StatusOr<TrickleResponse> TrickleRequest(const std::string& method, const std::string& url,
                                               const std::string& body,
                                               const std::string& content_type,
                                               absl::Duration timeout, int64_t max_body,
                                               const std::atomic<bool>* stop);

class LiveVideoSessions {
 public:
  LiveVideoSessions(std::shared_ptr<v1::Gateway::Stub> stub, LiveVideoOptions options = {});
  ~LiveVideoSessions();
  LiveVideoSessions(const LiveVideoSessions&) = delete;
  LiveVideoSessions& operator=(const LiveVideoSessions&) = delete;

  // Starts a session on its own thread and returns at once. RESOURCE_EXHAUSTED when
  // max_sessions are running; UNAVAILABLE after Stop().
  absl::Status Start(LiveVideoParams params);
  // Ends every session (their final events are still sent, best effort) and waits for them.
  void Stop();
  // Sessions running now.
  int active() const;

 private:
  class Session;
  void Reap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<v1::Gateway::Stub> stub_;
  const LiveVideoOptions options_;
  mutable std::mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::unique_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::gateway
