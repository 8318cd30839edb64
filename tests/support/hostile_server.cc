#include "support/hostile_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace switchyard::testing {

HostileServer::HostileServer(Behaviour behaviour) : behaviour_(behaviour) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd_, 16) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "cannot listen";
    return;
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Serve(); });
}

HostileServer::~HostileServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  for (int c : held_) ::close(c);
  ::close(fd_);
}

std::string HostileServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

void HostileServer::Serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    ++accepted_;
    switch (behaviour_) {
      case Behaviour::kGarbage: {
        // Not TLS: an HTTP answer, then a lot of noise (bounded: 1 MiB or until it breaks).
        const std::string noise = "HTTP/1.1 400 Bad Request\r\n\r\n" + std::string(4096, '\x17');
        for (int i = 0; i < 256; ++i) {
          if (::send(c, noise.data(), noise.size(), MSG_NOSIGNAL | MSG_DONTWAIT) <= 0) break;
        }
        held_.push_back(c);
        break;
      }
      case Behaviour::kCloseAtOnce:
        ::close(c);
        break;
      case Behaviour::kCloseMidHandshake: {
        // Read the ClientHello, answer a TLS record header promising more, then close.
        pollfd cp{c, POLLIN, 0};
        char buf[4096];
        if (::poll(&cp, 1, 2000) > 0) (void)::recv(c, buf, sizeof(buf), 0);
        const char partial[] = {0x16, 0x03, 0x03, 0x00, 0x40, 0x02, 0x00};
        (void)::send(c, partial, sizeof(partial), MSG_NOSIGNAL);
        ::close(c);
        break;
      }
      case Behaviour::kSilent:
        held_.push_back(c);  // never a byte, never closed (until the test ends)
        break;
    }
  }
}

}  // namespace switchyard::testing
