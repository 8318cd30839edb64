// A TCP listener on 127.0.0.1 that is no real server, for tests of clients' bounds (TLS to Redis,
// HTTPS between gateways): each connection it accepts gets `behaviour`.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace switchyard::testing {

class HostileServer {
 public:
  enum class Behaviour {
    kGarbage,            // not TLS: an HTTP 400, then about 1 MiB of noise
    kCloseAtOnce,        // accepted and closed
    kCloseMidHandshake,  // reads the ClientHello, sends part of a TLS record, closes
    kSilent,             // never a byte, never closed (until the server goes)
  };
  explicit HostileServer(Behaviour behaviour);
  ~HostileServer();
  HostileServer(const HostileServer&) = delete;
  HostileServer& operator=(const HostileServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // 127.0.0.1:PORT
  int accepted() const { return accepted_.load(); }

 private:
  void Serve();

  const Behaviour behaviour_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> held_;  // only the server thread, then the destructor after join
  std::thread thread_;
};

}  // namespace switchyard::testing
