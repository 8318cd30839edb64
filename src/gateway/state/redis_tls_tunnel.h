// TLS to Redis although Debian 12's hiredis (0.14) has none: hiredis speaks plain RESP on one end
// of a socketpair (redisConnectFd), and a tunnel pumps the other end through a TLS connection to
// the server (Boost.Asio's ssl::stream over OpenSSL). Config `state.redis.tls`;
// docs/operations.md "Several gateways".
//
// When the TLS side fails or the server closes it, the tunnel closes hiredis's end: hiredis then
// sees the connection closed, exactly as with a plain connection to a Redis that went away, and
// RedisClient's reconnect and fallback logic applies unchanged. When hiredis frees its context
// (closing its end), the tunnel closes the TLS connection.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"

namespace switchyard::gateway {

// All the TLS connections of one RedisClient, served by one thread of their own. One thread, not
// one per connection: a client holds up to a pool's worth of connections (16 idle plus those in
// use), each carrying small commands, and a thread each would be 16+ threads per client for
// almost no work. The thread only copies bytes and runs handshakes; hiredis's callers block on
// their own socket, never on it.
class RedisTlsTunnels {
 public:
  // Loads the CA (`tls.ca_file`, required) and the client certificate and key (mutual TLS, both
  // or neither) into the TLS context; errors name `what`.<field> and the file. The server's
  // certificate must chain to the CA and name `tls.server_name_override` when set, else `host`
  // (a DNS name, or an IP address matched against the certificate's IP SANs). TLS 1.2 at least.
  // `address` (HOST:PORT) is for messages.
  static absl::StatusOr<std::unique_ptr<RedisTlsTunnels>> Create(const TlsClientConfig& tls,
                                                                 std::string host, int port,
                                                                 std::string address,
                                                                 absl::string_view what);
  // Closes every tunnel (hiredis's ends see the connection closed) and joins the thread. A DNS
  // lookup still running (a host name in state.redis.address whose resolver hangs) is waited for:
  // getaddrinfo cannot be interrupted, only bounded by the system resolver's own timeouts.
  ~RedisTlsTunnels();
  RedisTlsTunnels(const RedisTlsTunnels&) = delete;
  RedisTlsTunnels& operator=(const RedisTlsTunnels&) = delete;

  // A new TLS connection to the server: name resolution, TCP connect and the TLS handshake within
  // `timeout`. Returns hiredis's end of the tunnel (a connected AF_UNIX stream socket the caller
  // owns, e.g. through redisConnectFd), or UNAVAILABLE naming the address and what failed
  // (e.g. "TLS handshake failed: certificate verify failed (unable to get local issuer
  // certificate)"). Blocks the caller at most `timeout` plus a second.
  absl::StatusOr<int> Open(absl::Duration timeout);

  // Why the tunnel whose hiredis end is `fd` was closed from the TLS side (e.g. "tlsv13 alert
  // certificate required", "stream truncated"), or "" when it was not (or is unknown). hiredis
  // only sees the connection closed; this is the reason behind it, for messages. Valid while the
  // caller still holds `fd` open.
  std::string CloseReason(int fd) const;

  // Tunnels open now (tests: none left behind once hiredis closed its ends).
  int open_tunnels() const;

  struct Impl;  // opaque: the .cc's (public so that its tunnels can name it)

 private:
  explicit RedisTlsTunnels(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace switchyard::gateway
