// The other gateways that hold async results and served media (config state.gateway_id,
// state.peers, state.internal_secret_file; docs/operations.md "Several gateways"). Ids this
// gateway hands out carry its short id ("<gateway id>.<32 hex digits>"); a request for an id
// another gateway holds is answered by fetching it from that gateway's internal endpoint
// (GET /internal/v1/..., which serves only what that gateway holds, never fetching further) with
// the shared secret and the client's own API key, so the holder applies today's ownership rule.
// Only configured peers are ever contacted, at their configured address: nothing a client sends
// chooses where a request goes (no open proxy). Peers are all http:// or all https://; with
// https:// (config state.peer_tls) every fetch verifies the peer's certificate against the
// configured CA and name, with no plain-HTTP fallback. Every fetch is bounded in time and size, and
// runs on a small pool of its own threads, bounded in queued fetches, so that slow peers hold up no
// HTTP handler thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/http_server.h"
#include "common/mutex.h"
#include "common/tls.h"
#include "gateway/api/live_video.h"
#include "gateway/egress_policy.h"

namespace switchyard::gateway {

struct PeerGatewaysOptions {
  std::string self_id;                       // state.gateway_id
  std::map<std::string, std::string> peers;  // id -> "http://HOST:PORT" or "https://HOST:PORT"
  std::string secret;                        // state.internal_secret_file's first line
  // state.peer_tls: required (enabled, with a ca_file) when the peers are https://, refused when
  // they are http://. server_name_override: the name every peer's certificate must carry instead
  // of its URL's host.
  TlsClientConfig tls;
  absl::Duration timeout = absl::Seconds(10);
  int threads = 4;
  size_t max_queued = 64;  // fetches waiting for a thread; more are refused at once
};

class PeerGateways {
 public:
  // The header internal calls carry the secret in.
  static constexpr char kSecretHeader[] = "x-switchyard-internal-secret";
  // The most a fetched video or result may weigh.
  static constexpr int64_t kMaxMediaBytes = int64_t{128} << 20;
  static constexpr int64_t kMaxResultBytes = int64_t{1} << 20;
  // The longest id (gateway id, '.', 32 hex digits is 49) and media name accepted.
  static constexpr size_t kMaxIdBytes = 64;
  static constexpr size_t kMaxNameBytes = 64;

  // INVALID_ARGUMENT for ids, URLs, a secret or TLS files the config check would refuse (NOT_FOUND
  // for a TLS file that cannot be read), and for http:// and https:// peers mixed, https://
  // without `tls` or `tls` without https://.
  static absl::StatusOr<std::shared_ptr<PeerGateways>> Create(PeerGatewaysOptions options);
  ~PeerGateways();

  const std::string& self_id() const { return options_.self_id; }

  // Who holds an id: nullopt when no gateway this one knows could (a gateway id that is not
  // this one's or a peer's, or an id that is not one of ours at all); "" for this gateway (its
  // own ids, and ids without a gateway id); else the peer's id.
  std::optional<std::string> HolderOf(absl::string_view id) const;

  // The internal endpoints' check: nullopt when the request carries the secret (compared in
  // constant time), else the 401 (none) or 403 (a wrong one) to answer.
  std::optional<http::Response> CheckSecret(const http::Request& req) const;

  // GET <peer's URL><path> with the secret and `headers`, on a thread of the pool; `done` gets
  // the answer or why not, once, from that thread (or from this one: NOT_FOUND for a peer not
  // configured, ABORTED when the queue is full, CANCELLED once stopped). `path` is built by the
  // caller from checked parts only.
  void Fetch(const std::string& peer, const std::string& path,
             std::map<std::string, std::string> headers, int64_t max_body,
             std::function<void(absl::StatusOr<TrickleResponse>)> done) ABSL_LOCKS_EXCLUDED(mu_);

  // Cancels fetches in flight (each answered CANCELLED within ~50 ms), answers queued ones
  // CANCELLED and joins the threads. Called by the gateway before its HTTP server goes, so no
  // reply comes after; idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Task {
    std::string url;
    std::map<std::string, std::string> headers;
    int64_t max_body = 0;
    std::function<void(absl::StatusOr<TrickleResponse>)> done;
  };
  PeerGateways(PeerGatewaysOptions options, EgressPolicy policy, std::optional<TrickleTls> tls);
  void Work() ABSL_LOCKS_EXCLUDED(mu_);

  const PeerGatewaysOptions options_;
  const EgressPolicy policy_;            // exactly the peers' hosts
  const std::optional<TrickleTls> tls_;  // set: https:// peers
  std::atomic<bool> cancel_{false};
  Mutex mu_;
  CondVar wake_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace switchyard::gateway
