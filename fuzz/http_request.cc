// Fuzzes http::Server's request handling end to end: the input is sent as raw bytes over a
// loopback TCP connection to a real server (Boost.Beast's parser with the server's header and
// body limits, then its own conversion into http::Request, routing with exact and "prefix*"
// routes, keep-alive, and replies whole or streamed, chunked or not), the write side is shut and
// the answer read until the server closes. Properties: the server closes the connection within
// 5 s of the input ending, and what it sends is HTTP/1.x responses.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "fuzz/fuzz_util.h"

namespace {

namespace http = switchyard::http;

std::map<std::string, http::Handler> Routes() {
  std::map<std::string, http::Handler> routes;
  // Echoes what the server made of the request.
  routes["/echo"] = [](const http::Request& req, http::Reply reply) {
    std::string body = absl::StrCat(req.method, " ", req.target, " ", req.path, "\n");
    for (const auto& [k, v] : req.headers) absl::StrAppend(&body, k, ": ", v, "\n");
    absl::StrAppend(&body, req.body.size(), " bytes\n");
    http::Response r;
    r.body = std::move(body);
    r.headers["X-Body-Bytes"] = std::to_string(req.body.size());
    reply(std::move(r));
  };
  routes["/files/*"] = [](const http::Request& req, http::Reply reply) {
    reply(http::Json(200, "{\"prefix\":true}"));
  };
  // A streamed body (server-sent events), written after the reply.
  routes["/events"] = [](const http::Request& req, http::Reply reply) {
    auto writer = std::make_shared<http::StreamWriter>();
    http::Response r;
    r.content_type = "text/event-stream";
    r.stream = writer->state();
    reply(std::move(r));
    for (int i = 0; i < 3; ++i) writer->Write(absl::StrCat("data: ", i, "\n\n"));
    writer->Close();
  };
  routes["/throws"] = [](const http::Request&, http::Reply) {
    throw std::runtime_error("handler failure");
  };
  return routes;
}

int Port() {
  static const int port = [] {
    http::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.threads = 1;
    options.max_body_bytes = 64 << 10;
    auto created = http::Server::Create(options, Routes());
    SWITCHYARD_FUZZ_CHECK(created.ok(), created.status().ToString());
    // Lives as long as the process (reachable from here, so not a leak).
    static http::ServerPtr* server = new http::ServerPtr(*std::move(created));
    return (*server)->port();
  }();
  return port;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int port = Port();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  SWITCHYARD_FUZZ_CHECK(fd >= 0, std::strerror(errno));
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  SWITCHYARD_FUZZ_CHECK(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0,
                        std::strerror(errno));
  // The server may answer (413, 400) and close before it has read everything: a failed send is
  // not a finding.
  for (size_t sent = 0; sent < size;) {
    const ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  std::string answer;
  char buf[16384];
  while (true) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      answer.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      close(fd);
      SWITCHYARD_FUZZ_CHECK(false, "the server did not close within 5 s of the request's end");
    }
    break;  // closed (or reset after an early error answer)
  }
  close(fd);
  if (!answer.empty()) {
    SWITCHYARD_FUZZ_CHECK(absl::StartsWith(answer, "HTTP/1."), "not an HTTP response: " + answer);
  }
  return 0;
}
