#include "common/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>
#include <filesystem>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchyard::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

// The server's own error body; see Server::Create.
Response ServerError(int status, const std::string& message) {
  return Json(
      status,
      nlohmann::json{{"error", {{"message", message}}}, {"detail", {{"msg", message}}}}.dump(
          -1, ' ', false, nlohmann::json::error_handler_t::replace));
}

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
  std::mutex mu;
  std::vector<std::weak_ptr<internal::StreamState>> streams;

  void Add(const std::shared_ptr<internal::StreamState>& state) {
    std::lock_guard<std::mutex> lock(mu);
    std::erase_if(streams, [](const auto& w) { return w.expired(); });
    streams.push_back(state);
  }

  void CutAll() {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& w : streams) {
      if (auto state = w.lock()) {
        std::lock_guard<std::mutex> state_lock(state->mu);
        state->gone = true;
        state->wake = nullptr;
      }
    }
    streams.clear();
  }
};

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// One connection: reads requests one after another (keep-alive), hands each to its handler, and
// writes the reply when the handler calls back. Owns itself through shared_ptr. `Stream` is
// beast::tcp_stream (plaintext) or TlsStream (HTTPS: a handshake first, close_notify at the end).
template <typename Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;

 public:
  Session(tcp::socket socket, const std::map<std::string, Handler>* routes, size_t max_body,
          StreamRegistry* streams, asio::ssl::context* tls)
      : stream_(MakeStream(std::move(socket), tls)),
        routes_(routes),
        max_body_(max_body),
        streams_(streams) {}

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

  void Handshake() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
    stream_.async_handshake(asio::ssl::stream_base::server,
                            beast::bind_front_handler(&Session::OnHandshake, shared_from_this()));
  }

  void OnHandshake(beast::error_code ec) {
    if (!ec) return Read();
    // A plaintext client, a client without an accepted certificate (mutual TLS), or one that
    // does not trust ours.
    spdlog::debug("HTTPS handshake with {} failed: {}", Peer(), ec.message());
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  std::string Peer() {
    beast::error_code ec;
    auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    return ec ? std::string("?") : absl::StrCat(ep.address().to_string(), ":", ep.port());
  }

  void Read() {
    parser_.emplace();
    parser_->body_limit(max_body_);
    parser_->header_limit(64 * 1024);
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(60));
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t) {
    if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == asio::ssl::error::stream_truncated || ec == asio::error::eof) {
      return Close();
    }
    if (ec == bhttp::error::body_limit) {
      keep_alive_ = false;
      return Send(ServerError(413, absl::StrCat("request body over ", max_body_, " bytes")));
    }
    if (ec) {
      keep_alive_ = false;
      return Send(ServerError(400, absl::StrCat("malformed HTTP request: ", ec.message())));
    }
    bhttp::request<bhttp::string_body> req = parser_->release();
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    Request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.path = r.target.substr(0, r.target.find('?'));
    for (const auto& field : req) {
      r.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
          std::string(field.value());
    }
    r.body = std::move(req.body());
    const Handler* handler = FindRoute(*routes_, r.path);
    if (handler == nullptr) return Send(ServerError(404, absl::StrCat("no such path: ", r.path)));
    auto self = shared_from_this();
    auto replied = std::make_shared<std::atomic<bool>>(false);
    try {
      (*handler)(r, [self, replied](Response response) {
        if (replied->exchange(true)) return;  // a second reply is a handler bug; ignore it
        asio::post(self->stream_.get_executor(), [self, response = std::move(response)]() mutable {
          self->Send(std::move(response));
        });
      });
    } catch (const std::exception& e) {
      spdlog::error("HTTP handler for {} threw: {}", r.path, e.what());
      if (!replied->exchange(true)) Send(ServerError(500, "internal error"));
    }
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
    bhttp::async_write(stream_, *res,
                       [self = shared_from_this(), res](beast::error_code ec, size_t) {
                         if (ec || !self->keep_alive_) return self->Close();
                         self->Read();
                       });
  }

  // A streamed body: the header now, then whatever the writer queues (Pump), chunked on
  // HTTP/1.1. HTTP/1.0 has no chunked encoding, so there the body ends when the connection does.
  void SendStreamHeader(Response response) {
    chunked_ = version_ >= 11;
    if (!chunked_) keep_alive_ = false;
    body_ = std::move(response.stream);
    streams_->Add(body_);
    std::string head = absl::StrCat(
        version_ >= 11 ? "HTTP/1.1 " : "HTTP/1.0 ", response.status, " ",
        std::string(bhttp::obsolete_reason(static_cast<bhttp::status>(response.status))),
        "\r\nServer: switchyard\r\nContent-Type: ", response.content_type, "\r\n");
    for (const auto& [k, v] : response.headers) absl::StrAppend(&head, k, ": ", v, "\r\n");
    if (chunked_) absl::StrAppend(&head, "Transfer-Encoding: chunked\r\n");
    absl::StrAppend(&head, "Connection: ", keep_alive_ ? "keep-alive" : "close", "\r\n\r\n");
    out_ = std::move(head);
    {
      std::lock_guard<std::mutex> lock(body_->mu);
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
    if (writing_ || !body_) return;
    bool last = false;
    {
      std::lock_guard<std::mutex> lock(body_->mu);
      for (; !body_->pending.empty(); body_->pending.pop_front()) {
        std::string& piece = body_->pending.front();
        if (chunked_) {
          absl::StrAppend(&out_, absl::Hex(piece.size()), "\r\n", piece, "\r\n");
        } else {
          absl::StrAppend(&out_, piece);
        }
      }
      if (body_->closed) {
        last = true;
        if (chunked_) absl::StrAppend(&out_, "0\r\n\r\n");
      }
    }
    // The end still has to be acted on when nothing is left to send (HTTP/1.0: the close).
    if (out_.empty() && !last) return;
    writing_ = true;
    auto data = std::make_shared<std::string>(std::move(out_));
    out_.clear();
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(60));
    asio::async_write(stream_, asio::buffer(*data),
                      [self = shared_from_this(), data, last](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec) {
                          self->FinishStream(/*gone=*/true);
                          return self->Close();
                        }
                        if (!last) return self->Pump();
                        self->FinishStream(/*gone=*/false);
                        if (!self->keep_alive_) return self->Close();
                        self->Read();
                      });
  }

  // Ends the streamed reply: drops the state's reference to this session and, when the client is
  // gone, tells the writer so its producer can stop.
  void FinishStream(bool gone) {
    std::function<void()> wake;
    {
      std::lock_guard<std::mutex> lock(body_->mu);
      if (gone) body_->gone = true;
      body_->pending.clear();
      wake = std::move(body_->wake);
      body_->wake = nullptr;
    }
    body_.reset();
  }

  void Close() {
    if constexpr (kTls) {
      if (closing_) return;
      closing_ = true;
      // close_notify, so the client can tell the end of a body read to the close from a cut.
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
      stream_.async_shutdown([self = shared_from_this()](beast::error_code) {
        beast::error_code ec;
        beast::get_lowest_layer(self->stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
      });
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  }

  Stream stream_;
  bool closing_ = false;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  const std::map<std::string, Handler>* routes_;
  size_t max_body_;
  StreamRegistry* streams_;
  bool keep_alive_ = true;
  unsigned version_ = 11;
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
  asio::io_context io;
  std::unique_ptr<asio::ssl::context> tls;  // HTTPS when set
  tcp::acceptor acceptor{io};
  std::vector<std::thread> threads;
  StreamRegistry streams;
  int port = 0;

  void Accept() {
    acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec && tls) {
        std::make_shared<Session<TlsStream>>(std::move(socket), &routes, options.max_body_bytes,
                                             &streams, tls.get())
            ->Start();
      } else if (!ec) {
        std::make_shared<Session<beast::tcp_stream>>(std::move(socket), &routes,
                                                     options.max_body_bytes, &streams, nullptr)
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
}

int Server::port() const { return impl_->port; }

// wake() only posts (never runs the connection inline), so it is called under the lock: a server
// being destroyed clears `wake` under the same lock, and no post can reach its io_context after.
bool StreamWriter::Write(std::string data) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->gone || state_->closed) return false;
  if (data.empty()) return true;
  state_->pending.push_back(std::move(data));
  if (state_->wake) state_->wake();
  return true;
}

void StreamWriter::Close() {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->closed) return;
  state_->closed = true;
  if (state_->wake) state_->wake();
}

bool StreamWriter::gone() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->gone;
}

Response Json(int status, std::string body) {
  Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

}  // namespace switchyard::http
