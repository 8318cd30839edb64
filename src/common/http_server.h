// A small HTTP/1.1 server on Boost.Beast for the daemons' operator endpoints (/healthz, /readyz,
// /metrics) and the gateway's HTTP API. Handlers answer asynchronously: they get the request and
// a `reply` callback they must call exactly once, from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::http {

struct Request {
  std::string method;                          // "GET", "POST", ...
  std::string target;                          // path and query, as sent
  std::string path;                            // target without the query
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::map<std::string, std::string> headers;
};

using Reply = std::function<void(Response)>;
using Handler = std::function<void(const Request&, Reply)>;

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // HOST:PORT; port 0 picks a free one
  int threads = 2;
  size_t max_body_bytes = 64 << 20;  // larger bodies get 413
};

class Server {
 public:
  // Binds and starts serving. INVALID_ARGUMENT for a malformed address, UNAVAILABLE when the
  // port cannot be bound. Exact paths are routed to their handler (method checks are the
  // handler's); anything else is 404.
  static absl::StatusOr<std::unique_ptr<Server>> Create(ServerOptions options,
                                                        std::map<std::string, Handler> routes);
  // Stops accepting, closes connections and joins the threads. Handlers must have replied (or
  // dropped their reply callbacks) before: a reply after destruction is not allowed.
  ~Server();

  int port() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

using ServerPtr = std::unique_ptr<Server>;

// A JSON body with the given status.
Response Json(int status, std::string body);

}  // namespace switchyard::http
