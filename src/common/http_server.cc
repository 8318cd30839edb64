#include "common/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace switchyard::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

// The handler for `path`: the exact route, else the longest matching "prefix*" route.
const Handler* FindRoute(const std::map<std::string, Handler>& routes, const std::string& path) {
  if (auto it = routes.find(path); it != routes.end()) return &it->second;
  const Handler* best = nullptr;
  size_t best_len = 0;
  for (const auto& [key, handler] : routes) {
    if (key.empty() || key.back() != '*') continue;
    const size_t len = key.size() - 1;
    if (path.compare(0, len, key, 0, len) == 0 && (best == nullptr || len > best_len)) {
      best = &handler;
      best_len = len;
    }
  }
  return best;
}

// The streamed replies in progress, so that a server going away can cut their writers off: a
// write after that must not post to the destroyed io_context.
struct StreamRegistry {
  Mutex mu;
  std::vector<std::weak_ptr<internal::StreamState>> streams ABSL_GUARDED_BY(mu);

  void Add(const std::shared_ptr<internal::StreamState>& state) ABSL_LOCKS_EXCLUDED(mu) {
    MutexLock lock(&mu);
    std::erase_if(streams, [](const auto& w) { return w.expired(); });
    streams.push_back(state);
  }

  void CutAll() ABSL_LOCKS_EXCLUDED(mu) {
    MutexLock lock(&mu);
    for (auto& w : streams) {
      if (auto state = w.lock()) {
        MutexLock state_lock(&state->mu);
        state->gone = true;
        state->wake = nullptr;
        state->drained.SignalAll();
      }
    }
    streams.clear();
  }
};

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// Holds one connection's place under the caps; gives it back when destroyed.
class ConnectionLimiter;
struct ConnectionSlot {
  std::shared_ptr<ConnectionLimiter> limiter;
  asio::ip::address address;
  ~ConnectionSlot();
};

// Counts open connections, in all and per client address, against ServerOptions' caps.
class ConnectionLimiter : public std::enable_shared_from_this<ConnectionLimiter> {
 public:
  ConnectionLimiter(int max_total, int max_per_ip)
      : max_total_(max_total), max_per_ip_(max_per_ip) {}

  // A slot for a connection from `address`; null when that would go over a cap.
  std::unique_ptr<ConnectionSlot> TryAcquire(const asio::ip::address& address, int port)
      ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    auto it = per_ip_.find(address);
    const int from_address = it == per_ip_.end() ? 0 : it->second;
    const bool over_total = max_total_ > 0 && total_ >= max_total_;
    if (over_total || (max_per_ip_ > 0 && from_address >= max_per_ip_)) {
      ++refused_;
      // One line per 10 s at most, however fast a flood comes.
      const auto now = std::chrono::steady_clock::now();
      if (now - last_log_ >= std::chrono::seconds(10)) {
        last_log_ = now;
        spdlog::warn(
            "HTTP port {}: refused {} connection(s) over the cap since the last report (last "
            "from {}: {} open from it of {} allowed, {} open in all of {})",
            port, std::exchange(refused_, 0), address.to_string(), from_address, max_per_ip_,
            total_, max_total_);
      }
      return nullptr;
    }
    ++per_ip_[address];
    ++total_;
    return std::unique_ptr<ConnectionSlot>(new ConnectionSlot{shared_from_this(), address});
  }

  void Release(const asio::ip::address& address) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    --total_;
    auto it = per_ip_.find(address);
    if (it != per_ip_.end() && --it->second <= 0) per_ip_.erase(it);
  }

 private:
  const int max_total_;
  const int max_per_ip_;
  Mutex mu_;
  int total_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<asio::ip::address, int> per_ip_ ABSL_GUARDED_BY(mu_);
  int refused_ ABSL_GUARDED_BY(mu_) = 0;  // since the last log line
  std::chrono::steady_clock::time_point last_log_ ABSL_GUARDED_BY(mu_){};
};

ConnectionSlot::~ConnectionSlot() { limiter->Release(address); }

// What every connection of a server shares; lives as long as the server.
struct Shared {
  const ServerOptions* options;
  const std::map<std::string, Handler>* routes;
  StreamRegistry* streams;
  asio::thread_pool* handlers;
};

bool IsDisconnect(const beast::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
         ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
         ec == asio::ssl::error::stream_truncated || ec == asio::error::eof;
}

// One connection: reads requests one after another (keep-alive), hands each to its handler, and
// writes the reply when the handler calls back. Owns itself through shared_ptr. `Stream` is
// beast::tcp_stream (plaintext) or TlsStream (HTTPS: a handshake first, close_notify at the end).
//
// Deadlines: reading a request has ServerOptions::read_timeout from when it is awaited; no timer
// runs while the handler works; every write has write_stall_timeout to make some progress.
template <typename Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;

 public:
  Session(tcp::socket socket, const Shared* shared, std::unique_ptr<ConnectionSlot> slot,
          asio::ssl::context* tls)
      : stream_(MakeStream(std::move(socket), tls)),
        shared_(shared),
        options_(*shared->options),
        slot_(std::move(slot)) {}

  void Start() {
    if constexpr (kTls) {
      asio::dispatch(stream_.get_executor(),
                     beast::bind_front_handler(&Session::Handshake, shared_from_this()));
    } else {
      asio::dispatch(stream_.get_executor(),
                     beast::bind_front_handler(&Session::Read, shared_from_this()));
    }
  }

 private:
  static Stream MakeStream(tcp::socket socket, asio::ssl::context* tls) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *tls);
    } else {
      (void)tls;
      return Stream(std::move(socket));
    }
  }

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void Handshake() {
    lowest().expires_after(std::chrono::seconds(30));
    stream_.async_handshake(asio::ssl::stream_base::server,
                            beast::bind_front_handler(&Session::OnHandshake, shared_from_this()));
  }

  void OnHandshake(beast::error_code ec) {
    if (!ec) return Read();
    // A plaintext client, a client without an accepted certificate (mutual TLS), or one that
    // does not trust ours.
    spdlog::debug("HTTPS handshake with {} failed: {}", Peer(), ec.message());
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  std::string Peer() {
    beast::error_code ec;
    auto ep = lowest().socket().remote_endpoint(ec);
    return ec ? std::string("?") : absl::StrCat(ep.address().to_string(), ":", ep.port());
  }

  // The headers first: the authorizer and the size check answer before any of the body is read.
  void Read() {
    parser_.emplace();
    parser_->header_limit(64 * 1024);
    // No limit while the headers are read (beast would refuse a large Content-Length there,
    // before the authorizer); OnHeader checks it and sets the limit for the body. (Not
    // boost::none: Boost 1.74 compares the length to the optional, and none is below any value.)
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    lowest().expires_after(options_.read_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
  }

  void OnHeader(beast::error_code ec, size_t) {
    if (IsDisconnect(ec)) return Close();
    if (ec) {
      return Refuse(Error(400, absl::StrCat("malformed HTTP request: ", ec.message())));
    }
    const auto& head = parser_->get();
    keep_alive_ = head.keep_alive();
    version_ = head.version();
    request_ = Request();
    request_.method = std::string(head.method_string());
    request_.target = std::string(head.target());
    request_.path = request_.target.substr(0, request_.target.find('?'));
    for (const auto& field : head) {
      request_.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
          std::string(field.value());
    }
    if (options_.authorize) {
      std::optional<Response> refusal;
      try {
        refusal = options_.authorize(request_);
      } catch (const std::exception& e) {
        spdlog::error("HTTP authorizer for {} threw: {}", LogSafe(request_.path), e.what());
        refusal = Error(500, "internal error");
      }
      if (refusal) return Refuse(std::move(*refusal));
    }
    const size_t max_body = options_.max_body_bytes;
    if (auto length = parser_->content_length(); length && *length > max_body) {
      return Refuse(Error(413, absl::StrCat("request body over ", max_body, " bytes")));
    }
    parser_->body_limit(max_body);  // a chunked body is held to it as it arrives
    if (parser_->is_done()) return OnRead({}, 0);
    auto expect = request_.headers.find("expect");
    if (version_ >= 11 && expect != request_.headers.end() &&
        absl::EqualsIgnoreCase(expect->second, "100-continue")) {
      // The client waits for this before sending a body: it is let on.
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(stream_, asio::buffer(kContinue),
                        [self = shared_from_this()](beast::error_code ec, size_t) {
                          if (ec) return self->Close();
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t) {
    if (IsDisconnect(ec)) return Close();
    if (ec == bhttp::error::body_limit) {
      return Refuse(
          Error(413, absl::StrCat("request body over ", options_.max_body_bytes, " bytes")));
    }
    if (ec) return Refuse(Error(400, absl::StrCat("malformed HTTP request: ", ec.message())));
    // The handler's time is not the client's: no deadline until the reply is written.
    lowest().expires_never();
    Request r = std::move(request_);
    r.body = std::move(parser_->get().body());
    parser_.reset();
    const Handler* handler = FindRoute(*shared_->routes, r.path);
    if (handler == nullptr) return Send(Error(404, absl::StrCat("no such path: ", r.path)));
    if (options_.inline_paths.count(r.path) > 0) return Run(*handler, r);
    asio::post(*shared_->handlers,
               [self = shared_from_this(), handler, r = std::move(r)] { self->Run(*handler, r); });
  }

  // Calls the handler (on an I/O thread for inline paths, else on a handler thread).
  void Run(const Handler& handler, const Request& r) {
    auto self = shared_from_this();
    auto replied = std::make_shared<std::atomic<bool>>(false);
    Reply reply = [self, replied](Response response) {
      if (replied->exchange(true)) return;  // a second reply is a handler bug; ignore it
      asio::post(self->stream_.get_executor(), [self, response = std::move(response)]() mutable {
        self->Send(std::move(response));
      });
    };
    try {
      handler(r, reply);
    } catch (const std::exception& e) {
      spdlog::error("HTTP handler for {} threw: {}", LogSafe(r.path), e.what());
      reply(Error(500, "internal error"));
    }
  }

  // Answers without reading the body (or the rest of it) and closes the connection.
  void Refuse(Response response) {
    keep_alive_ = false;
    refused_ = true;
    Send(std::move(response));
  }

  void Send(Response response) {
    if (response.stream) return SendStreamHeader(std::move(response));
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>();
    res->version(11);
    res->result(static_cast<unsigned>(response.status));
    res->set(bhttp::field::server, "switchyard");
    res->set(bhttp::field::content_type, response.content_type);
    for (const auto& [k, v] : response.headers) res->set(k, v);
    res->body() = std::move(response.body);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    auto sr = std::make_shared<bhttp::response_serializer<bhttp::string_body>>(*res);
    WriteResponse(std::move(res), std::move(sr));
  }

  // Writes a whole reply piece by piece, each with its own stall deadline.
  void WriteResponse(std::shared_ptr<bhttp::response<bhttp::string_body>> res,
                     std::shared_ptr<bhttp::response_serializer<bhttp::string_body>> sr) {
    lowest().expires_after(options_.write_stall_timeout);
    bhttp::async_write_some(stream_, *sr,
                            [self = shared_from_this(), res, sr](beast::error_code ec, size_t) {
                              if (ec) return self->Close();
                              if (!sr->is_done()) return self->WriteResponse(res, sr);
                              if (self->refused_) return self->Linger();
                              if (!self->keep_alive_) return self->Close();
                              self->Read();
                            });
  }

  // A streamed body: the header now, then whatever the writer queues (Pump), chunked on
  // HTTP/1.1. HTTP/1.0 has no chunked encoding, so there the body ends when the connection does.
  void SendStreamHeader(Response response) {
    chunked_ = version_ >= 11;
    if (!chunked_) keep_alive_ = false;
    body_ = std::move(response.stream);
    shared_->streams->Add(body_);
    std::string head = absl::StrCat(
        version_ >= 11 ? "HTTP/1.1 " : "HTTP/1.0 ", response.status, " ",
        std::string(bhttp::obsolete_reason(static_cast<bhttp::status>(response.status))),
        "\r\nServer: switchyard\r\nContent-Type: ", response.content_type, "\r\n");
    for (const auto& [k, v] : response.headers) absl::StrAppend(&head, k, ": ", v, "\r\n");
    if (chunked_) absl::StrAppend(&head, "Transfer-Encoding: chunked\r\n");
    absl::StrAppend(&head, "Connection: ", keep_alive_ ? "keep-alive" : "close", "\r\n\r\n");
    out_ = std::move(head);
    {
      MutexLock lock(&body_->mu);
      body_->max_pending_bytes = options_.stream_max_pending_bytes;
      body_->max_wait = options_.stream_max_wait;
      // The state keeps the session alive until the body is done; the cycle is broken in
      // FinishStream.
      body_->wake = [self = shared_from_this()] {
        asio::post(self->stream_.get_executor(), [self] { self->Pump(); });
      };
    }
    Pump();
  }

  // Sends what the writer has queued (one write at a time), then the end of the body.
  void Pump() {
    if (!body_) return;
    bool last = false;
    bool ended = false;
    std::function<void()> dropped_wake;  // destroyed after the lock is released
    {
      MutexLock lock(&body_->mu);
      if (body_->gone) {
        // The writer gave up on a client that read nothing for too long (StreamWriter::Write):
        // drop the connection. A write in progress then fails and finishes the stream.
        beast::error_code ignored;
        lowest().socket().close(ignored);
        if (writing_) return;
        dropped_wake = EndStreamLocked(/*gone=*/true);
        ended = true;
      } else {
        if (writing_) return;
        for (; !body_->pending.empty(); body_->pending.pop_front()) {
          std::string& piece = body_->pending.front();
          if (chunked_) {
            absl::StrAppend(&out_, absl::Hex(piece.size()), "\r\n", piece, "\r\n");
          } else {
            absl::StrAppend(&out_, piece);
          }
        }
        body_->pending_bytes = 0;
        body_->drained.SignalAll();  // room for a producer waiting in Write
        if (body_->closed) {
          last = true;
          if (chunked_) absl::StrAppend(&out_, "0\r\n\r\n");
        }
      }
    }
    if (ended) {
      body_.reset();
      out_.clear();
      return Close();
    }
    // The end still has to be acted on when nothing is left to send (HTTP/1.0: the close).
    if (out_.empty() && !last) return;
    writing_ = true;
    auto data = std::make_shared<std::string>(std::move(out_));
    out_.clear();
    WriteStream(std::move(data), 0, last);
  }

  void WriteStream(std::shared_ptr<std::string> data, size_t offset, bool last) {
    lowest().expires_after(options_.write_stall_timeout);
    stream_.async_write_some(asio::buffer(*data) + offset, [self = shared_from_this(), data, offset,
                                                            last](beast::error_code ec, size_t n) {
      if (ec) {
        self->writing_ = false;
        self->FinishStream(/*gone=*/true);
        return self->Close();
      }
      if (offset + n < data->size()) return self->WriteStream(data, offset + n, last);
      self->writing_ = false;
      if (!last) return self->Pump();
      self->FinishStream(/*gone=*/false);
      if (!self->keep_alive_) return self->Close();
      self->Read();
    });
  }

  // Ends the streamed reply: drops the state's reference to this session and, when the client is
  // gone, tells the writer so its producer can stop.
  void FinishStream(bool gone) {
    if (!body_) return;
    std::function<void()> wake;  // holds this session: destroyed after the lock is released
    {
      MutexLock lock(&body_->mu);
      wake = EndStreamLocked(gone);
    }
    body_.reset();
  }

  // FinishStream's part under body_->mu: returns the state's wake function, which the caller
  // destroys once the lock is released (it holds this session: the cycle is broken here).
  std::function<void()> EndStreamLocked(bool gone) ABSL_EXCLUSIVE_LOCKS_REQUIRED(body_->mu) {
    if (gone) body_->gone = true;
    body_->pending.clear();
    body_->pending_bytes = 0;
    body_->drained.SignalAll();
    std::function<void()> wake = std::move(body_->wake);
    body_->wake = nullptr;
    return wake;
  }

  // After the reply to a refused request: stop sending, then read and drop what the client
  // still sends for a short while, so that closing does not reset the connection (which can
  // discard our reply at the client) while a client still sends the body it announced.
  void Linger() {
    if constexpr (kTls) {
      return Close();
    } else {
      beast::error_code ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      lowest().expires_after(std::chrono::seconds(2));
      drain_left_ = 1 << 20;
      Drain();
    }
  }

  void Drain() {
    if (!scratch_) scratch_ = std::make_unique<char[]>(kScratch);
    lowest().async_read_some(asio::buffer(scratch_.get(), kScratch),
                             [self = shared_from_this()](beast::error_code ec, size_t n) {
                               if (ec || n >= self->drain_left_) return;
                               self->drain_left_ -= n;
                               self->Drain();
                             });
  }

  void Close() {
    if constexpr (kTls) {
      if (closing_) return;
      closing_ = true;
      // close_notify, so the client can tell the end of a body read to the close from a cut.
      lowest().expires_after(std::chrono::seconds(5));
      stream_.async_shutdown([self = shared_from_this()](beast::error_code) {
        beast::error_code ec;
        beast::get_lowest_layer(self->stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
      });
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  }

  static constexpr size_t kScratch = 16 * 1024;

  Stream stream_;
  const Shared* shared_;
  const ServerOptions& options_;
  std::unique_ptr<ConnectionSlot> slot_;  // released when the connection is gone
  bool closing_ = false;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Request request_;  // the request whose headers were read
  bool keep_alive_ = true;
  unsigned version_ = 11;
  bool refused_ = false;  // answered before the body was read: linger, then close
  size_t drain_left_ = 0;
  std::unique_ptr<char[]> scratch_;
  // A streamed reply in progress (see SendStreamHeader).
  std::shared_ptr<internal::StreamState> body_;
  bool chunked_ = false;
  bool writing_ = false;
  std::string out_;
};

// The server's TLS context: its certificate and key, and client certificates as `tls` asks.
absl::StatusOr<std::unique_ptr<asio::ssl::context>> MakeTlsContext(const TlsServerConfig& tls) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  beast::error_code ec;
  auto fail = [&](const char* what, const std::filesystem::path& file) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTPS: cannot load the ", what, " '", file.string(), "': ", ec.message()));
  };
  if (ctx->use_certificate_chain_file(tls.cert_file.string(), ec); ec) {
    return fail("certificate chain", tls.cert_file);
  }
  if (ctx->use_private_key_file(tls.key_file.string(), asio::ssl::context::pem, ec); ec) {
    return fail("private key", tls.key_file);
  }
  if (!tls.client_ca_file.empty()) {
    if (ctx->load_verify_file(tls.client_ca_file.string(), ec); ec) {
      return fail("client CA file", tls.client_ca_file);
    }
    const int mode = asio::ssl::verify_peer |
                     (tls.require_client_cert ? asio::ssl::verify_fail_if_no_peer_cert : 0);
    ctx->set_verify_mode(mode, ec);
    if (ec) return fail("client CA file", tls.client_ca_file);
  }
  return ctx;
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  std::map<std::string, Handler> routes;
  StreamRegistry streams;
  std::shared_ptr<ConnectionLimiter> limiter;
  asio::io_context io;
  std::unique_ptr<asio::ssl::context> tls;  // HTTPS when set
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};
  std::vector<std::thread> threads;
  // Destroyed before `io` (declared after it): handlers still queued hold connections whose
  // sockets belong to `io`.
  std::unique_ptr<asio::thread_pool> handlers;
  Shared shared{};
  int port = 0;

  void Accept() {
    acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {
        // Out of file descriptors, say: try again shortly rather than spin.
        spdlog::warn("HTTP port {}: accept failed: {}", port, ec.message());
        accept_retry.expires_after(std::chrono::milliseconds(100));
        accept_retry.async_wait([this](beast::error_code wait_ec) {
          if (!wait_ec) Accept();
        });
        return;
      }
      beast::error_code peer_ec;
      const auto peer = socket.remote_endpoint(peer_ec);
      auto slot = peer_ec ? nullptr : limiter->TryAcquire(peer.address(), port);
      if (slot == nullptr) {
        socket.close(peer_ec);  // over a cap (logged), or already gone
      } else if (tls) {
        std::make_shared<Session<TlsStream>>(std::move(socket), &shared, std::move(slot), tls.get())
            ->Start();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(std::move(socket), &shared, std::move(slot),
                                                     nullptr)
            ->Start();
      }
      Accept();
    });
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options,
                                                       std::map<std::string, Handler> routes) {
  const size_t colon = options.listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP listen address '", options.listen, "' is not HOST:PORT"));
  }
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  beast::error_code ec;
  const auto address = asio::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP listen host '", host, "' is not an IP address"));
  }
  auto impl = std::make_unique<Impl>();
  if (options.tls.enabled()) {
    auto tls = MakeTlsContext(options.tls);
    if (!tls.ok()) return tls.status();
    impl->tls = *std::move(tls);
  }
  impl->options = options;
  impl->routes = std::move(routes);
  impl->limiter =
      std::make_shared<ConnectionLimiter>(options.max_connections, options.max_connections_per_ip);
  impl->handlers = std::make_unique<asio::thread_pool>(std::max(1, options.handler_threads));
  impl->shared = Shared{&impl->options, &impl->routes, &impl->streams, impl->handlers.get()};
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", options.listen, ": ", ec.message()));
  }
  impl->port = impl->acceptor.local_endpoint().port();
  impl->Accept();
  const int threads = std::max(1, options.threads);
  for (int i = 0; i < threads; ++i) {
    impl->threads.emplace_back([io = &impl->io] { io->run(); });
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::~Server() {
  if (!impl_) return;
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ec;
    impl->acceptor.close(ec);
  });
  impl_->streams.CutAll();
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  // Handlers have replied (the contract above); what is still queued is dropped.
  impl_->handlers->stop();
  impl_->handlers->join();
}

int Server::port() const { return impl_->port; }

// wake() only posts (never runs the connection inline), so it is called under the lock: a server
// being destroyed clears `wake` under the same lock, and no post can reach its io_context after.
bool StreamWriter::Write(std::string data) {
  internal::StreamState& s = *state_;
  MutexLock lock(&s.mu);
  if (s.gone || s.closed) return false;
  if (data.empty()) return true;
  // Backpressure (see the class comment): wait for room, but a piece always fits an empty queue.
  auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    return s.gone || s.closed || s.pending_bytes == 0 ||
           s.pending_bytes + data.size() <= s.max_pending_bytes;
  };
  if (!room() && !s.drained.WaitFor(&s.mu, s.max_wait, room)) {
    // The client has read nothing for max_wait: give up on it, and have the connection closed.
    spdlog::info(
        "streamed reply: the client read nothing for {} ms with {} bytes waiting; "
        "closing it",
        s.max_wait.count(), s.pending_bytes);
    s.gone = true;
    s.pending.clear();
    s.pending_bytes = 0;
    if (s.wake) s.wake();
    return false;
  }
  if (s.gone || s.closed) return false;
  s.pending_bytes += data.size();
  s.pending.push_back(std::move(data));
  if (s.wake) s.wake();
  return true;
}

void StreamWriter::Close() {
  MutexLock lock(&state_->mu);
  if (state_->closed) return;
  state_->closed = true;
  state_->drained.SignalAll();
  if (state_->wake) state_->wake();
}

bool StreamWriter::gone() const {
  MutexLock lock(&state_->mu);
  return state_->gone;
}

Response Error(int status, const std::string& message) {
  // "error" is also OpenAI's error shape (the gateway's /v1 API): type, param and code with it.
  nlohmann::json error{{"message", message},
                       {"type", status >= 500 ? "server_error" : "invalid_request_error"},
                       {"param", nullptr},
                       {"code", nullptr}};
  return Json(status,
              nlohmann::json{{"error", std::move(error)}, {"detail", {{"msg", message}}}}.dump(
                  -1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Response Json(int status, std::string body) {
  Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

}  // namespace switchyard::http
