#include "support/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>

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
  std::string req = call.method + " " + call.path +
                    (call.http11 ? " HTTP/1.1\r\nConnection: close\r\n" : " HTTP/1.0\r\n") +
                    "Host: 127.0.0.1:" + std::to_string(port) + "\r\n";
  if (!call.content_type.empty()) req += "Content-Type: " + call.content_type + "\r\n";
  for (const auto& [k, v] : call.headers) req += k + ": " + v + "\r\n";
  req += "Content-Length: " + std::to_string(call.content_length.value_or(call.body.size())) +
         "\r\n\r\n" + call.body;
  size_t sent = 0;
  while (sent < req.size()) {
    ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[65536];
  for (int i = 0; i < 100000; ++i) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
    if (call.on_read) call.on_read(raw);
  }
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
