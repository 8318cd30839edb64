#include "support/redis_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace fs = std::filesystem;

namespace {

std::string FindRedisServer() {
  const char* path = std::getenv("PATH");
  std::vector<std::string> dirs = absl::StrSplit(path != nullptr ? path : "", ':');
  dirs.push_back("/usr/bin");
  dirs.push_back("/usr/sbin");
  for (const auto& d : dirs) {
    if (d.empty()) continue;
    fs::path candidate = fs::path(d) / "redis-server";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

}  // namespace

int PickFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

bool RedisAnswers(int port, int timeout_ms, const std::string& password) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        password.empty() ? "PING\r\n" : absl::StrCat("AUTH ", password, "\r\nPING\r\n");
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      std::string got;
      char buf[256];
      // Bounded: at most a few reads, each under SO_RCVTIMEO.
      for (int i = 0; i < 4 && got.find("+PONG") == std::string::npos; ++i) {
        ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
      }
      ok = got.find("+PONG") != std::string::npos;
    }
  }
  ::close(fd);
  return ok;
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(
    const std::filesystem::path& dir, std::vector<std::string> extra_args) {
  return StartWith(dir, std::move(extra_args), /*tls=*/false);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartTls(
    const std::filesystem::path& dir, const RedisTls& tls, std::vector<std::string> extra_args) {
  std::vector<std::string> args = {"--tls-cert-file",    tls.certs.server_cert.string(),
                                   "--tls-key-file",     tls.certs.server_key.string(),
                                   "--tls-ca-cert-file", tls.certs.ca.string(),
                                   "--tls-auth-clients", tls.require_client_cert ? "yes" : "no"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return StartWith(dir, std::move(args), /*tls=*/true);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartWith(
    const std::filesystem::path& dir, std::vector<std::string> extra_args, bool tls) {
  std::string binary = FindRedisServer();
  if (binary.empty()) {
    return absl::FailedPreconditionError(
        "redis-server is not installed (Debian's redis-server package): run scripts/install-deps");
  }
  std::unique_ptr<RedisServer> server(new RedisServer(dir, binary, std::move(extra_args), tls));
  absl::Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const int port = PickFreePort();
    if (port == 0) continue;
    last = server->StartOn(port);
    if (last.ok()) return server;
  }
  return absl::InternalError(absl::StrCat("redis-server did not start: ", last.message()));
}

absl::Status RedisServer::StartOn(int port) {
  Stop();
  auto daemon = std::make_unique<Daemon>("redis", dir_ / absl::StrCat("redis-", ++starts_, ".log"));
  std::vector<std::string> args = {"--port",       tls_ ? "0" : std::to_string(port),
                                   "--bind",       "127.0.0.1",
                                   "--save",       "",
                                   "--appendonly", "no",
                                   "--dir",        dir_.string(),
                                   "--daemonize",  "no",
                                   "--logfile",    ""};
  if (tls_) {
    args.push_back("--tls-port");
    args.push_back(std::to_string(port));
  }
  std::string password;
  for (size_t i = 0; i + 1 < extra_args_.size(); ++i) {
    if (extra_args_[i] == "--requirepass") password = extra_args_[i + 1];
  }
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  if (auto st = daemon->Start(binary_, args); !st.ok()) return st;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!daemon->Alive()) {
      return absl::UnavailableError(
          absl::StrCat("redis-server exited on port ", port, " (taken?): ", daemon->Log()));
    }
    // A TLS port cannot be asked PING in plaintext: Redis logs that it is ready once it listens
    // (and the daemon still being alive says the port was not someone else's).
    if (tls_ ? absl::StrContains(daemon->Log(), "Ready to accept connections")
             : RedisAnswers(port, 200, password)) {
      port_ = port;
      daemon_ = std::move(daemon);
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("redis-server on port ", port, " did not answer PING in 10 s: ", daemon->Log()));
}

void RedisServer::Stop() {
  if (daemon_ == nullptr) return;
  daemon_->Kill();
  daemon_.reset();
}

absl::Status RedisServer::Restart() {
  const int port = port_;
  // The port was ours a moment ago; a rare clash with another process is reported, not hidden.
  return StartOn(port);
}

std::string RedisServer::Log() const { return daemon_ != nullptr ? daemon_->Log() : ""; }

}  // namespace switchyard::testing
