#include "support/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <csignal>
#include <cstdlib>
#include <memory>

namespace switchyard::testing {
namespace {

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Decodes a chunked body; what does not parse is returned as is, so a test sees the raw bytes.
std::string Dechunk(const std::string& raw) {
  std::string out;
  size_t pos = 0;
  for (int i = 0; i < 1000000 && pos < raw.size(); ++i) {
    const size_t eol = raw.find("\r\n", pos);
    if (eol == std::string::npos) return raw;
    const size_t size = std::strtoul(raw.substr(pos, eol - pos).c_str(), nullptr, 16);
    if (size == 0) return out;
    if (eol + 2 + size > raw.size()) return raw;
    out.append(raw, eol + 2, size);
    pos = eol + 2 + size + 2;
  }
  return out;
}

std::string SslErrors() {
  std::string out;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out.empty() ? "no OpenSSL error" : out;
}

// The connection's byte pipe: the socket itself, or TLS over it.
class Transport {
 public:
  explicit Transport(int fd) : fd_(fd) {}
  ~Transport() {
    if (ssl_ != nullptr) {
      SSL_shutdown(ssl_);
      SSL_free(ssl_);
    }
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  }
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // TLS handshake, verifying the server's certificate against `ca` for 127.0.0.1.
  bool StartTls(const HttpCall& call, std::string* error) {
    // OpenSSL writes to the socket with write(): a server that hung up must not kill the test.
    std::signal(SIGPIPE, SIG_IGN);
    ERR_clear_error();
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (ctx_ == nullptr) return Fail("SSL_CTX_new", error);
    if (SSL_CTX_load_verify_locations(ctx_, call.tls_ca_file.c_str(), nullptr) != 1) {
      return Fail("loading " + call.tls_ca_file, error);
    }
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (!call.tls_cert_file.empty()) {
      if (SSL_CTX_use_certificate_chain_file(ctx_, call.tls_cert_file.c_str()) != 1 ||
          SSL_CTX_use_PrivateKey_file(ctx_, call.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        return Fail("loading the client certificate", error);
      }
    }
    ssl_ = SSL_new(ctx_);
    if (ssl_ == nullptr) return Fail("SSL_new", error);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), "127.0.0.1");
    SSL_set_fd(ssl_, fd_);
    if (SSL_connect(ssl_) != 1) return Fail("TLS handshake", error);
    return true;
  }

  bool Send(const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n =
          ssl_ != nullptr
              ? SSL_write(ssl_, data.data() + sent, static_cast<int>(data.size() - sent))
              : ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  // Bytes read, or <= 0 at the end (or an error: with TLS 1.3 a server refusing the client's
  // certificate says so only here).
  ssize_t Recv(char* buf, size_t size, std::string* error) {
    if (ssl_ == nullptr) return ::recv(fd_, buf, size, 0);
    const int n = SSL_read(ssl_, buf, static_cast<int>(size));
    if (n <= 0 && SSL_get_error(ssl_, n) == SSL_ERROR_SSL && error->empty()) {
      *error = "TLS read: " + SslErrors();
    }
    return n;
  }

 private:
  bool Fail(const std::string& what, std::string* error) {
    *error = what + ": " + SslErrors();
    return false;
  }

  int fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

}  // namespace

HttpResult HttpRequest(int port, const HttpCall& call) {
  HttpResult r;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return r;
  timeval tv{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return r;
  }
  auto transport = std::make_unique<Transport>(fd);
  if (!call.tls_ca_file.empty() && !transport->StartTls(call, &r.error)) {
    transport.reset();
    ::close(fd);
    return r;
  }
  std::string req = call.method + " " + call.path +
                    (call.http11 ? " HTTP/1.1\r\nConnection: close\r\n" : " HTTP/1.0\r\n") +
                    "Host: 127.0.0.1:" + std::to_string(port) + "\r\n";
  if (!call.content_type.empty()) req += "Content-Type: " + call.content_type + "\r\n";
  for (const auto& [k, v] : call.headers) req += k + ": " + v + "\r\n";
  req += "Content-Length: " + std::to_string(call.content_length.value_or(call.body.size())) +
         "\r\n\r\n" + call.body;
  transport->Send(req);
  std::string raw;
  char buf[65536];
  for (int i = 0; i < 100000; ++i) {
    ssize_t n = transport->Recv(buf, sizeof(buf), &r.error);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
    if (call.on_read) call.on_read(raw);
  }
  transport.reset();
  ::close(fd);
  if (raw.rfind("HTTP/1.", 0) == 0 && raw.size() > 12) r.status = std::stoi(raw.substr(9, 3));
  const size_t at = raw.find("\r\n\r\n");
  if (at == std::string::npos) return r;
  size_t line = raw.find("\r\n");
  while (line < at) {
    const size_t next = raw.find("\r\n", line + 2);
    const std::string header = raw.substr(line + 2, next - line - 2);
    const size_t colon = header.find(':');
    if (colon != std::string::npos) {
      size_t v = colon + 1;
      while (v < header.size() && header[v] == ' ') ++v;
      r.headers[Lower(header.substr(0, colon))] = header.substr(v);
    }
    line = next;
  }
  r.body = raw.substr(at + 4);
  auto te = r.headers.find("transfer-encoding");
  if (te != r.headers.end() && Lower(te->second) == "chunked") r.body = Dechunk(r.body);
  return r;
}

HttpResult HttpRequest(int port, const std::string& method, const std::string& path,
                       const std::string& content_type, const std::string& body) {
  HttpCall call;
  call.method = method;
  call.path = path;
  call.content_type = content_type;
  call.body = body;
  return HttpRequest(port, call);
}

}  // namespace switchyard::testing
