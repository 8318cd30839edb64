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

namespace switchyard::testing {

class RedisServer {
 public:
  // FAILED_PRECONDITION naming scripts/install-deps when redis-server is not installed: tests
  // that need it fail rather than skip (CI installs it). `extra_args`: e.g. {"--requirepass", "x"}.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(
      const std::filesystem::path& dir, std::vector<std::string> extra_args = {});
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
  RedisServer(std::filesystem::path dir, std::string binary, std::vector<std::string> extra_args)
      : dir_(std::move(dir)), binary_(std::move(binary)), extra_args_(std::move(extra_args)) {}
  absl::Status StartOn(int port);

  std::filesystem::path dir_;
  std::string binary_;
  std::vector<std::string> extra_args_;
  int port_ = 0;
  int starts_ = 0;
  std::unique_ptr<Daemon> daemon_;
};

// A free TCP port on 127.0.0.1 (bound, then closed); 0 if none could be had.
int PickFreePort();

// Whether a Redis on 127.0.0.1:port answers PING with +PONG within `timeout_ms`.
bool RedisAnswers(int port, int timeout_ms, const std::string& password = "");

}  // namespace switchyard::testing
