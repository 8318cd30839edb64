#include "gateway/state/redis_tls_tunnel.h"

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "common/status.h"
#include "common/tls_client.h"

namespace switchyard::gateway {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Local = asio::local::stream_protocol;
using ErrorCode = boost::system::error_code;

// Per direction, one read in flight at a time into this buffer, the next only once it was written
// on: a tunnel holds at most twice this (plus OpenSSL's own record buffers), however fast either
// side sends. Larger than Redis's replies to our commands, which are small.
constexpr size_t kBufferBytes = 16 * 1024;
// Open() waits this much longer than the handshake's own timer, which normally answers first.
constexpr absl::Duration kOpenSlack = absl::Seconds(1);

class Tunnel;

}  // namespace

struct RedisTlsTunnels::Impl {
  explicit Impl(asio::ssl::context context)
      : ssl(std::move(context)), work(asio::make_work_guard(io)) {}

  asio::ssl::context ssl;
  std::string host;
  int port = 0;
  std::string server_name;  // checked in the server's certificate
  std::string address;      // for messages
  // Only on the io thread: the tunnels to close when the client goes.
  std::vector<std::weak_ptr<Tunnel>> live;
  std::atomic<int> open{0};
  // hiredis's fd -> the tunnel that Open() handed it out with, and why that tunnel was closed
  // from the TLS side. Open() replaces the entry when it hands out the same fd number again, so a
  // tunnel whose hiredis end was already closed (and its number reused) writes nothing; the
  // reason is written before the tunnel closes its end, so it is there when hiredis sees the
  // close. At most one entry per fd number.
  struct Reason {
    const void* tunnel = nullptr;
    std::string why;
  };
  mutable Mutex reasons_mu;
  std::map<int, Reason> reasons ABSL_GUARDED_BY(reasons_mu);
  // Last: destroyed first, with any handler still queued (and the tunnel it holds) while
  // everything above still exists.
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
};

namespace {

// One TLS connection and the socketpair end it pumps to. Lives on the io thread (every member
// after construction is touched only there); owned by its pending handlers, so it goes once it is
// closed and they all ran.
class Tunnel : public std::enable_shared_from_this<Tunnel> {
 public:
  Tunnel(RedisTlsTunnels::Impl* impl, int local_fd, int hiredis_fd)
      : impl_(impl),
        hiredis_fd_(hiredis_fd),
        tls_(impl->io, impl->ssl),
        local_(impl->io),
        resolver_(impl->io),
        timer_(impl->io),
        local_fd_(local_fd),
        up_(std::make_unique<std::array<char, kBufferBytes>>()),
        down_(std::make_unique<std::array<char, kBufferBytes>>()) {
    impl_->open.fetch_add(1);
  }
  ~Tunnel() {
    if (local_fd_ >= 0) ::close(local_fd_);
    Settle(absl::UnavailableError(absl::StrCat("Redis at ", impl_->address, ": tunnel closed")));
    impl_->open.fetch_sub(1);
  }

  std::future<absl::Status> result() { return result_.get_future(); }

  // On the io thread: resolve, connect, handshake, all under one timer.
  void Start(absl::Duration timeout) {
    auto& live = impl_->live;
    std::erase_if(live, [](const std::weak_ptr<Tunnel>& t) { return t.expired(); });
    live.push_back(weak_from_this());
    ErrorCode ec;
    local_.assign(Local(), local_fd_, ec);
    if (ec) return Fail(absl::StrCat("cannot use a socketpair: ", ec.message()));
    local_fd_ = -1;  // local_ owns it now
    if (auto st = SetUpVerification(); !st.ok()) return Fail(std::string(st.message()));
    timer_.expires_after(absl::ToChronoMilliseconds(timeout));
    timer_.async_wait([self = shared_from_this(), timeout](const ErrorCode& ec) {
      if (ec || self->closed_ || self->established_) return;
      self->Fail(absl::StrCat("no TLS connection within ", absl::FormatDuration(timeout),
                              " (state.redis.timeout_ms)"));
    });
    const asio::ip::address ip = asio::ip::make_address(impl_->host, ec);
    if (!ec) {
      Connect({tcp::endpoint(ip, static_cast<uint16_t>(impl_->port))});
      return;
    }
    resolver_.async_resolve(
        impl_->host, std::to_string(impl_->port),
        [self = shared_from_this()](const ErrorCode& ec, tcp::resolver::results_type results) {
          if (self->closed_) return;
          if (ec) return self->Fail(absl::StrCat("cannot resolve the host: ", ec.message()));
          self->Connect({results.begin(), results.end()});
        });
  }

  // On the io thread.
  void Close() {
    if (closed_) return;
    closed_ = true;
    ErrorCode ignored;
    timer_.cancel();
    resolver_.cancel();
    // No TLS close_notify: Redis takes a closed connection as the end of the session, and waiting
    // for the peer's answer would be one more thing to bound. Closing our socketpair end is what
    // hiredis sees (end of stream, or EPIPE on its next write).
    tls_.lowest_layer().close(ignored);
    local_.close(ignored);
    Settle(absl::UnavailableError(absl::StrCat("Redis at ", impl_->address, ": tunnel closed")));
  }

 private:
  absl::Status SetUpVerification() {
    return RequireServerName(tls_.native_handle(), impl_->server_name);
  }

  void Connect(std::vector<tcp::endpoint> endpoints) {
    asio::async_connect(tls_.lowest_layer(), endpoints,
                        [self = shared_from_this()](const ErrorCode& ec, const tcp::endpoint&) {
                          if (self->closed_) return;
                          if (ec) return self->Fail(absl::StrCat("cannot connect: ", ec.message()));
                          ErrorCode ignored;
                          self->tls_.lowest_layer().set_option(tcp::no_delay(true), ignored);
                          self->Handshake();
                        });
  }

  void Handshake() {
    tls_.async_handshake(
        asio::ssl::stream_base::client, [self = shared_from_this()](const ErrorCode& ec) {
          if (self->closed_) return;
          if (ec) {
            return self->Fail(absl::StrCat("TLS handshake failed: ",
                                           TlsHandshakeError(ec, self->tls_.native_handle())));
          }
          self->established_ = true;
          self->timer_.cancel();
          self->Settle(absl::OkStatus());
          self->PumpUp();
          self->PumpDown();
        });
  }

  // hiredis -> Redis.
  void PumpUp() {
    local_.async_read_some(
        asio::buffer(*up_), [self = shared_from_this()](const ErrorCode& ec, size_t n) {
          if (self->closed_) return;
          if (ec) return self->Close();  // hiredis freed its context (or the pair broke)
          asio::async_write(self->tls_, asio::buffer(*self->up_, n),
                            [self](const ErrorCode& ec, size_t) {
                              if (self->closed_) return;
                              if (ec) {
                                self->Record(ec.message());
                                return self->Close();
                              }
                              self->PumpUp();
                            });
        });
  }

  // Redis -> hiredis.
  void PumpDown() {
    tls_.async_read_some(asio::buffer(*down_),
                         [self = shared_from_this()](const ErrorCode& ec, size_t n) {
                           if (self->closed_) return;
                           if (ec) {  // the server closed, reset, refused us (a TLS alert) or broke
                                      // TLS
                             self->Record(ec.message());
                             return self->Close();
                           }
                           asio::async_write(self->local_, asio::buffer(*self->down_, n),
                                             [self](const ErrorCode& ec, size_t) {
                                               if (self->closed_) return;
                                               if (ec) return self->Close();
                                               self->PumpDown();
                                             });
                         });
  }

  void Fail(const std::string& why) {
    Settle(absl::UnavailableError(
        absl::StrCat("Redis at ", impl_->address, ": ", absl::CHexEscape(why.substr(0, 300)))));
    Close();
  }

  void Record(const std::string& why) {
    MutexLock lock(&impl_->reasons_mu);
    auto it = impl_->reasons.find(hiredis_fd_);
    if (it != impl_->reasons.end() && it->second.tunnel == this) {
      it->second.why = absl::CHexEscape(why.substr(0, 200));
    }
  }

  void Settle(absl::Status st) {
    if (settled_) return;
    settled_ = true;
    result_.set_value(std::move(st));
  }

  RedisTlsTunnels::Impl* const impl_;
  const int hiredis_fd_;  // the other end's number, for CloseReason()
  asio::ssl::stream<tcp::socket> tls_;
  Local::socket local_;
  tcp::resolver resolver_;
  asio::steady_timer timer_;
  int local_fd_;  // until local_ owns it
  std::unique_ptr<std::array<char, kBufferBytes>> up_;
  std::unique_ptr<std::array<char, kBufferBytes>> down_;
  bool closed_ = false;
  bool established_ = false;
  bool settled_ = false;
  std::promise<absl::Status> result_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RedisTlsTunnels>> RedisTlsTunnels::Create(const TlsClientConfig& tls,
                                                                         std::string host, int port,
                                                                         std::string address,
                                                                         absl::string_view what) {
  auto context = MakeTlsClientContext(tls, what);
  if (!context.ok()) return context.status();
  auto impl = std::make_unique<Impl>(*std::move(context));
  impl->server_name = tls.server_name_override.empty() ? host : tls.server_name_override;
  impl->host = std::move(host);
  impl->port = port;
  impl->address = std::move(address);
  return std::unique_ptr<RedisTlsTunnels>(new RedisTlsTunnels(std::move(impl)));
}

RedisTlsTunnels::RedisTlsTunnels(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), thread_([io = &impl_->io] { io->run(); }) {}

RedisTlsTunnels::~RedisTlsTunnels() {
  asio::post(impl_->io, [impl = impl_.get()] {
    // Copied: Close() does not touch the list, but a tunnel's last handler may run meanwhile.
    const auto live = impl->live;
    for (const auto& weak : live) {
      if (auto t = weak.lock()) t->Close();
    }
    impl->live.clear();
  });
  // Every tunnel is closed, so its pending handlers complete at once; then run() returns.
  impl_->work.reset();
  thread_.join();
}

absl::StatusOr<int> RedisTlsTunnels::Open(absl::Duration timeout) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "Redis at ", impl_->address, ": cannot make a socketpair: ", std::strerror(errno)));
  }
  auto tunnel = std::make_shared<Tunnel>(impl_.get(), fds[1], fds[0]);
  {
    MutexLock lock(&impl_->reasons_mu);
    // Replaces a closed tunnel's entry whose hiredis end had this number.
    impl_->reasons[fds[0]] = Impl::Reason{tunnel.get(), ""};
  }
  auto result = tunnel->result();
  asio::post(impl_->io, [tunnel, timeout] { tunnel->Start(timeout); });
  tunnel.reset();  // the io thread's from now on
  if (result.wait_for(absl::ToChronoMilliseconds(timeout + kOpenSlack)) !=
      std::future_status::ready) {
    // The io thread is stuck (it never should be): our end closed, the tunnel sees it and goes.
    ::close(fds[0]);
    return absl::UnavailableError(absl::StrCat("Redis at ", impl_->address,
                                               ": no TLS connection within ",
                                               absl::FormatDuration(timeout + kOpenSlack)));
  }
  if (absl::Status st = result.get(); !st.ok()) {
    ::close(fds[0]);
    return st;
  }
  return fds[0];
}

int RedisTlsTunnels::open_tunnels() const { return impl_->open.load(); }

std::string RedisTlsTunnels::CloseReason(int fd) const {
  MutexLock lock(&impl_->reasons_mu);
  auto it = impl_->reasons.find(fd);
  return it == impl_->reasons.end() ? "" : it->second.why;
}

}  // namespace switchyard::gateway
