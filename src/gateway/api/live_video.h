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
// Sessions are owned by LiveVideoSessions: bounded in number (per gateway and per API key), each
// bounded in lifetime and ended when no input segment arrives for idle_timeout; Stop() (gateway
// shutdown, or the destructor) ends them all and waits for their threads.
//
// Every URL is the client's choice, so every connection goes through the egress policy
// (egress_policy.h): the host is resolved once per connection, every address checked, and only
// the checked addresses connected to; redirects are never followed (a 3xx is an error answer).
// A refused connection ends what needed it with "refused by policy" and no more detail in events
// (the operator's log has the host and the kind of address).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "gateway/egress_policy.h"
#include "gateway/live_video_options.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace boost::asio::ssl {
class context;  // <boost/asio/ssl/context.hpp>, for TrickleTls
}  // namespace boost::asio::ssl

namespace switchyard::gateway {

// What a session was started with (validated by the HTTP handler).
struct LiveVideoParams {
  std::string request_id;
  std::string model_id;
  std::string stream_id;  // for routing affinity; the request id when the client sent none
  std::string manifest_id;
  std::string subscribe_url;
  std::string publish_url;
  std::string control_url;    // may be empty
  std::string events_url;     // may be empty
  std::string params = "{}";  // JSON object text
  std::string authorization;  // the client's Authorization header, sent with each segment
  // The caller's API key id when the handler knows it; else the key in `authorization` counts
  // (as its SHA-256) for max_sessions_per_key. A caller with neither has only the gateway's cap.
  std::string api_key_id;
};

// An http://host[:port]/path URL. INVALID_ARGUMENT (naming what is wrong) for anything else.
struct HttpUrl {
  std::string host;
  std::string port;    // 80 (443 for https) when none
  std::string target;  // path (and query), "/" when none
  bool https = false;
};
absl::StatusOr<HttpUrl> ParseHttpUrl(absl::string_view url);
// The same, also taking https://host[:port]/path when `allow_https`.
absl::StatusOr<HttpUrl> ParseUrl(absl::string_view url, bool allow_https);

// How TrickleRequest speaks TLS to https:// URLs: the context (the CA the server's certificate
// must chain to, the client certificate if any; common/tls_client.h's MakeTlsClientContext) and
// the name the certificate must carry: `server_name` when set, else the URL's host.
struct TrickleTls {
  std::shared_ptr<boost::asio::ssl::context> context;
  std::string server_name;
};

// The result of one trickle HTTP request.
struct TrickleResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};

// One HTTP/1.1 request (Connection: close) to a host `policy` allows. The body, when not empty,
// is sent chunked. Redirects are not followed. Gives up with DEADLINE_EXCEEDED after `timeout`,
// CANCELLED as soon as `*stop` is set (polled every 50 ms), PERMISSION_DENIED "<method> <url>:
// refused by policy" before connecting when any address the host resolves to is refused,
// UNAVAILABLE when the server cannot be reached or the connection breaks (without the system's
// error text, which would make the gateway a port scanner; it is logged), RESOURCE_EXHAUSTED for
// a response body over `max_body`. `headers` are added to the request (names and values are
// the caller's, never a client's unchecked bytes).
// With `tls`, the URL must be https:// (an http:// one is INVALID_ARGUMENT: no plain fallback)
// and the TLS handshake is part of the same `timeout`; a server whose certificate does not verify
// (another CA, another name) or that breaks the handshake is UNAVAILABLE "...: TLS handshake
// failed: <why>" (the reason is for the caller's log). Without `tls`, https:// is refused.
absl::StatusOr<TrickleResponse> TrickleRequest(
    const EgressPolicy& policy, const std::string& method, const std::string& url,
    const std::string& body, const std::string& content_type, absl::Duration timeout,
    int64_t max_body, const std::atomic<bool>* stop,
    const std::map<std::string, std::string>& headers = {}, const TrickleTls* tls = nullptr);

class LiveVideoSessions {
 public:
  LiveVideoSessions(std::shared_ptr<v1::Gateway::Stub> stub, LiveVideoOptions options = {});
  ~LiveVideoSessions();
  LiveVideoSessions(const LiveVideoSessions&) = delete;
  LiveVideoSessions& operator=(const LiveVideoSessions&) = delete;

  // The request-time check of the URL in request field `field` (its syntax, then the egress
  // policy, options.resolve_timeout for a host name): INVALID_ARGUMENT "<field>: host H resolves
  // to a loopback address, which live_video.allowed_hosts does not allow" and the like. The
  // handler answers 422 with it before any other work.
  absl::Status CheckUrl(absl::string_view field, absl::string_view url) const;

  // Starts a session on its own thread and returns at once. RESOURCE_EXHAUSTED naming the limit
  // when max_sessions, or max_sessions_per_key for the caller's key, are running; UNAVAILABLE
  // after Stop(). The URLs are not checked again here (CheckUrl did, and each connection does).
  absl::Status Start(LiveVideoParams params) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends every session (their final events are still sent, best effort) and waits for them.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);
  // Sessions running now.
  int active() const ABSL_LOCKS_EXCLUDED(mu_);
  // The largest input segment a session takes (options.max_segment_bytes).
  int64_t max_segment_bytes() const { return options_.max_segment_bytes; }

 private:
  class Session;
  void Reap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<v1::Gateway::Stub> stub_;
  const LiveVideoOptions options_;
  mutable Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::unique_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> session_keys_ ABSL_GUARDED_BY(mu_);  // id -> key bucket
};

}  // namespace switchyard::gateway
