// The systemd notify protocol as the service tests see it (service_test.cc,
// service_reload_test.cc): a NOTIFY_SOCKET the test owns, the service environment for the
// daemons it starts, and small waits on ports and logs. Every loop is bounded.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "support/cluster.h"

namespace switchyard::testing::service_test {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The datagram socket systemd would own: NOTIFY_SOCKET for the daemons started while it lives.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    EXPECT_LT(path.string().size(), sizeof(addr.sun_path));
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
        << std::strerror(errno);
  }
  ~NotifySocket() { ::close(fd_); }

  // Next message, or "" if none arrives within `timeout`.
  std::string Receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return "";
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return "";
    std::string msg(buf, static_cast<size_t>(n));
    received_.push_back(msg);
    return msg;
  }

  // Waits (bounded in time and messages) for a message with the line `line`; returns the whole
  // message, or "" on timeout. Messages before it are kept in received().
  std::string WaitFor(const std::string& line, std::chrono::milliseconds timeout) {
    const auto end = Clock::now() + timeout;
    for (int i = 0; i < 10000 && Clock::now() < end; ++i) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      std::string msg = Receive(std::max(left, std::chrono::milliseconds(1)));
      if (msg.empty()) continue;
      for (absl::string_view l : absl::StrSplit(msg, '\n')) {
        if (l == line) return msg;
      }
    }
    return "";
  }

  std::string History() const {
    std::string all;
    for (const auto& m : received_) absl::StrAppend(&all, "[", m, "]\n");
    return all;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  int fd_ = -1;
  std::vector<std::string> received_;
};

// Sets the systemd service environment for the daemons started in its scope (fork inherits it).
class ServiceEnvironment {
 public:
  ServiceEnvironment(const NotifySocket& socket, int watchdog_usec) {
    ::setenv("NOTIFY_SOCKET", socket.path().c_str(), 1);
    ::setenv("WATCHDOG_USEC", std::to_string(watchdog_usec).c_str(), 1);
    ::unsetenv("WATCHDOG_PID");  // unset: meant for the child that reads it
  }
  ~ServiceEnvironment() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
  }
};

inline bool TcpConnects(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

inline int ReadPort(const fs::path& file) {
  std::ifstream in(file);
  int port = 0;
  return in >> port ? port : 0;
}

// Counts WATCHDOG=1 pings within `window`.
inline int CountWatchdogPings(NotifySocket& socket, std::chrono::milliseconds window) {
  int pings = 0;
  const auto end = Clock::now() + window;
  for (int i = 0; i < 1000 && Clock::now() < end; ++i) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    std::string msg = socket.Receive(std::max(left, std::chrono::milliseconds(1)));
    if (msg == "WATCHDOG=1") ++pings;
  }
  return pings;
}

// Waits until `log_file` contains `text` (bounded); returns the log.
inline std::string WaitForLog(const Daemon& daemon, const std::string& text,
                              std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  std::string log = daemon.Log();
  while (log.find(text) == std::string::npos && Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    log = daemon.Log();
  }
  return log;
}

}  // namespace switchyard::testing::service_test
