#include "support/trickle_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchyard::testing {

absl::StatusOr<std::unique_ptr<TrickleServer>> TrickleServer::Start() {
  std::unique_ptr<TrickleServer> s(new TrickleServer());
  std::map<std::string, http::Handler> routes;
  TrickleServer* self = s.get();
  routes["/*"] = [self](const http::Request& req, http::Reply reply) {
    self->Handle(req, std::move(reply));
  };
  http::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.threads = 4;
  auto server = http::Server::Create(options, std::move(routes));
  if (!server.ok()) return server.status();
  s->server_ = *std::move(server);
  s->port_ = s->server_->port();
  return s;
}

TrickleServer::~TrickleServer() {
  std::vector<std::pair<http::Reply, http::Response>> replies;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [name, ch] : channels_) {
      ch.closed = true;
      auto r = WakeLocked(ch);
      for (auto& x : r) replies.push_back(std::move(x));
    }
  }
  for (auto& [reply, response] : replies) reply(std::move(response));
  // The replies hold their HTTP sessions, whose sockets belong to the server's io_context: they
  // go before the server does (ASan: use after free in ~Session otherwise).
  replies.clear();
  server_.reset();
}

std::string TrickleServer::Url(const std::string& channel) const {
  return absl::StrCat("http://127.0.0.1:", port_, "/", channel);
}

http::Response TrickleServer::SegmentLocked(const Channel& ch, int64_t seq) const {
  http::Response r;
  const int64_t latest = ch.segments.empty() ? -1 : ch.segments.rbegin()->first;
  r.headers["Lp-Trickle-Latest"] = absl::StrCat(latest);
  if (ch.dropped.count(seq) > 0) {
    r.status = 470;
    r.body = "segment gone";
    return r;
  }
  auto it = ch.segments.find(seq);
  if (it == ch.segments.end()) {  // only asked when closed
    r.status = 404;
    r.headers["Lp-Trickle-Closed"] = "terminated";
    r.body = "stream closed";
    return r;
  }
  r.status = 200;
  r.content_type = "video/mp2t";
  r.headers["Lp-Trickle-Seq"] = absl::StrCat(seq);
  r.body = it->second;
  return r;
}

std::vector<std::pair<http::Reply, http::Response>> TrickleServer::WakeLocked(Channel& ch) {
  std::vector<std::pair<http::Reply, http::Response>> out;
  std::vector<std::pair<int64_t, http::Reply>> still;
  for (auto& [seq, reply] : ch.waiting) {
    if (ch.closed || ch.segments.count(seq) > 0 || ch.dropped.count(seq) > 0) {
      out.emplace_back(std::move(reply), SegmentLocked(ch, seq));
    } else {
      still.emplace_back(seq, std::move(reply));
    }
  }
  ch.waiting.swap(still);
  cv_.notify_all();
  return out;
}

void TrickleServer::Handle(const http::Request& req, http::Reply reply) {
  // "/<channel>/<seq>" or "/<channel>".
  std::string path = req.path.substr(1);
  std::string channel = path;
  int64_t seq = 0;
  bool has_seq = false;
  if (const size_t slash = path.rfind('/'); slash != std::string::npos) {
    has_seq = absl::SimpleAtoi(path.substr(slash + 1), &seq);
    if (has_seq) channel = path.substr(0, slash);
  }
  http::Response r;
  std::vector<std::pair<http::Reply, http::Response>> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++requests_;
    Channel& ch = channels_[channel];
    if (req.method == "DELETE" && !has_seq) {
      ch.closed = true;
      wake = WakeLocked(ch);
      r.status = 200;
    } else if (req.method == "POST" && has_seq && seq >= 0) {
      ch.segments[seq] = req.body;
      wake = WakeLocked(ch);
      r.status = 200;
      r.headers["Lp-Trickle-Seq"] = absl::StrCat(seq);
    } else if (req.method == "GET" && has_seq && seq >= 0) {
      if (ch.segments.count(seq) > 0 || ch.dropped.count(seq) > 0 || ch.closed) {
        r = SegmentLocked(ch, seq);
      } else {
        ch.waiting.emplace_back(seq, std::move(reply));  // answered when it exists
        return;
      }
    } else {
      r.status = 400;
      r.body = "unsupported request";
    }
  }
  for (auto& [w, response] : wake) w(std::move(response));
  reply(std::move(r));
}

void TrickleServer::Publish(const std::string& channel, std::string data) {
  std::vector<std::pair<http::Reply, http::Response>> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Channel& ch = channels_[channel];
    ch.segments[ch.next++] = std::move(data);
    wake = WakeLocked(ch);
  }
  for (auto& [w, response] : wake) w(std::move(response));
}

void TrickleServer::Close(const std::string& channel) {
  std::vector<std::pair<http::Reply, http::Response>> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Channel& ch = channels_[channel];
    ch.closed = true;
    wake = WakeLocked(ch);
  }
  for (auto& [w, response] : wake) w(std::move(response));
}

void TrickleServer::Drop(const std::string& channel, int64_t seq) {
  std::vector<std::pair<http::Reply, http::Response>> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Channel& ch = channels_[channel];
    ch.segments.erase(seq);
    ch.dropped[seq] = true;
    if (ch.next <= seq) ch.next = seq + 1;
    wake = WakeLocked(ch);
  }
  for (auto& [w, response] : wake) w(std::move(response));
}

std::map<int64_t, std::string> TrickleServer::Segments(const std::string& channel) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = channels_.find(channel);
  return it == channels_.end() ? std::map<int64_t, std::string>() : it->second.segments;
}

bool TrickleServer::Closed(const std::string& channel) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = channels_.find(channel);
  return it != channels_.end() && it->second.closed;
}

bool TrickleServer::WaitClosed(const std::string& channel,
                               std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] {
    auto it = channels_.find(channel);
    return it != channels_.end() && it->second.closed;
  });
}

bool TrickleServer::WaitSegments(const std::string& channel, size_t n,
                                 std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] {
    auto it = channels_.find(channel);
    return it != channels_.end() && it->second.segments.size() >= n;
  });
}

int TrickleServer::held() const {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (const auto& [name, ch] : channels_) n += static_cast<int>(ch.waiting.size());
  return n;
}

int TrickleServer::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

absl::StatusOr<std::unique_ptr<ConnectionCounter>> ConnectionCounter::Start(bool ipv6) {
  std::unique_ptr<ConnectionCounter> c(new ConnectionCounter());
  c->fd_ = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_storage storage{};
  socklen_t len = 0;
  if (ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*a);
  }
  if (bind(c->fd_, reinterpret_cast<sockaddr*>(&storage), len) != 0 || listen(c->fd_, 64) != 0 ||
      getsockname(c->fd_, reinterpret_cast<sockaddr*>(&storage), &len) != 0) {
    return absl::UnavailableError(
        absl::StrCat("listening on ", ipv6 ? "[::1]" : "127.0.0.1", ": ", std::strerror(errno)));
  }
  c->port_ = ntohs(ipv6 ? reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port
                        : reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
  ConnectionCounter* self = c.get();
  c->thread_ = std::thread([self] {
    while (!self->stop_) {
      pollfd p{self->fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      const int conn = accept4(self->fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn >= 0) {
        ++self->accepted_;
        close(conn);
      }
    }
  });
  return c;
}

ConnectionCounter::~ConnectionCounter() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) close(fd_);
}

}  // namespace switchyard::testing
