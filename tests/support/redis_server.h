// A redis-server of a test's own: 127.0.0.1 on a free port, no persistence (--save "",
// --appendonly no), its folder in a temp dir, killed by the destructor. Redis has no "--port 0":
// the port is one the kernel just gave a socket that was then closed, and a clash (another
// process took it meanwhile) is retried on another.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "support/cluster.h"
#include "support/tls_certs.h"

namespace switchyard::testing {

// A TLS-only Redis (`--port 0 --tls-port P`): the server certificate is certs.server_cert
// (127.0.0.1 / localhost, signed by certs.ca); client certificates are verified against certs.ca,
// and required when `require_client_cert`.
struct RedisTls {
  TestCerts certs;
  bool require_client_cert = false;
};

class RedisServer {
 public:
  // FAILED_PRECONDITION naming scripts/install-deps when redis-server is not installed: tests
  // that need it fail rather than skip (CI installs it). `extra_args`: e.g. {"--requirepass", "x"}.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(
      const std::filesystem::path& dir, std::vector<std::string> extra_args = {});
  // TLS only: port() and address() are the TLS port's; nothing listens in plaintext.
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartTls(
      const std::filesystem::path& dir, const RedisTls& tls,
      std::vector<std::string> extra_args = {});
  ~RedisServer() { Stop(); }

  // SIGKILL: Redis gone at once, its connections reset.
  void Stop();
  // Again on the same port (bounded wait until it answers PING).
  absl::Status Restart();
  bool running() const { return daemon_ != nullptr; }

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Log() const;

 private:
  RedisServer(std::filesystem::path dir, std::string binary, std::vector<std::string> extra_args,
              bool tls)
      : dir_(std::move(dir)),
        binary_(std::move(binary)),
        extra_args_(std::move(extra_args)),
        tls_(tls) {}
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartWith(const std::filesystem::path& dir,
                                                                std::vector<std::string> extra_args,
                                                                bool tls);
  absl::Status StartOn(int port);

  std::filesystem::path dir_;
  std::string binary_;
  std::vector<std::string> extra_args_;
  const bool tls_;  // extra_args_ hold the TLS options
  int port_ = 0;
  int starts_ = 0;
  std::unique_ptr<Daemon> daemon_;
};

// A free TCP port on 127.0.0.1 (bound, then closed); 0 if none could be had.
int PickFreePort();

// Whether a Redis on 127.0.0.1:port answers PING with +PONG within `timeout_ms`.
bool RedisAnswers(int port, int timeout_ms, const std::string& password = "");

}  // namespace switchyard::testing
