// A small HTTP/1.1 server on Boost.Beast for the daemons' operator endpoints (/healthz, /readyz,
// /metrics) and the gateway's HTTP API. Handlers answer asynchronously: they get the request and
// a `reply` callback they must call exactly once, from any thread. A reply is either a whole body
// or a streamed one (Response::stream), which server-sent events need: the body is then sent in
// pieces as the handler writes them, chunked on HTTP/1.1.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "common/tls.h"

namespace switchyard::http {

struct Request {
  std::string method;                          // "GET", "POST", ...
  std::string target;                          // path and query, as sent
  std::string path;                            // target without the query
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

namespace internal {
// What a StreamWriter and the connection share; see StreamWriter.
struct StreamState {
  Mutex mu;
  CondVar drained;  // signalled when pending shrinks or the stream ends
  std::deque<std::string> pending ABSL_GUARDED_BY(mu);  // written, not yet sent
  size_t pending_bytes ABSL_GUARDED_BY(mu) = 0;         // the sizes in `pending` together
  bool closed ABSL_GUARDED_BY(mu) = false;              // the writer has finished the body
  bool gone ABSL_GUARDED_BY(mu) = false;           // the client went away (or the write failed)
  std::function<void()> wake ABSL_GUARDED_BY(mu);  // set by the connection: sends what is pending
  // Backpressure (see StreamWriter::Write); the server sets its ServerOptions' values when the
  // reply starts.
  size_t max_pending_bytes ABSL_GUARDED_BY(mu) = 1 << 20;
  std::chrono::milliseconds max_wait ABSL_GUARDED_BY(mu){30000};
};
}  // namespace internal

// The handler's end of a streamed body. Writes queue data (the connection sends it in order, from
// its own thread); the body ends at Close() or when the last copy of the writer is destroyed, so
// a handler that forgets to close still ends the response.
//
// Backpressure: at most ServerOptions::stream_max_pending_bytes wait to be sent. A Write that
// would go over blocks the producer until the connection has taken enough (the client reads), for
// at most ServerOptions::stream_max_wait; a client that reads nothing for that long is treated as
// gone: the write is refused (false), the connection closed, and the producer should stop (the LLM
// relay cancels its call). Blocking rather than refusing at once keeps a briefly slow reader's
// stream whole; the bound keeps a stalled one from holding producer threads or memory. Never call
// Write from a server I/O thread (handlers run on the handler pool, see ServerOptions).
class StreamWriter {
 public:
  StreamWriter() : state_(std::make_shared<internal::StreamState>()) {}
  ~StreamWriter() { Close(); }
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  // Queues `data` (empty data is skipped), waiting (bounded) for room as above. False once the
  // client is gone, too slow, or the writer closed: the producer should stop then.
  bool Write(std::string data);
  // Ends the body. Later writes are refused.
  void Close();
  // Whether the client is known to be gone (a write to it failed).
  bool gone() const;

  const std::shared_ptr<internal::StreamState>& state() const { return state_; }

 private:
  std::shared_ptr<internal::StreamState> state_;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::map<std::string, std::string> headers;
  // When set, `body` is ignored and the body is what the StreamWriter owning this state writes
  // (Transfer-Encoding: chunked on HTTP/1.1; on HTTP/1.0 sent raw and the connection closed).
  std::shared_ptr<internal::StreamState> stream;
};

using Reply = std::function<void(Response)>;
using Handler = std::function<void(const Request&, Reply)>;

// Called once a request's headers are read, before its body is: nullopt lets the request on;
// a response (e.g. 401) is sent at once, the body is never read and the connection is closed.
// Runs on an I/O thread, so it must be quick (no I/O). `request.body` is empty.
using Authorizer = std::function<std::optional<Response>(const Request& request)>;

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // HOST:PORT; port 0 picks a free one
  int threads = 2;                     // I/O threads: reading, writing, TLS
  size_t max_body_bytes = 64 << 20;    // larger bodies get 413
  // HTTPS when enabled (certificate and key; client certificates as TlsServerConfig says).
  TlsServerConfig tls;
  // See Authorizer; unset: every request goes on to its handler.
  Authorizer authorize = nullptr;
  // Open connections at once, in all and from one client address; a connection over either is
  // closed as soon as it is accepted (and counted in a rate-limited log line). 0: no cap.
  int max_connections = 1024;
  int max_connections_per_ip = 64;
  // Handlers run on this many threads of their own, so that a handler's work (parsing a large
  // body, say) never holds up the I/O threads; paths in `inline_paths` (cheap probes) run on the
  // I/O thread instead, so they answer even while every handler thread is busy.
  int handler_threads = 4;
  std::set<std::string> inline_paths = {"/healthz", "/readyz"};
  // A request (headers and body) must arrive within this from its first byte being awaited; an
  // idle keep-alive connection is closed after it too. Not running while a handler works.
  std::chrono::milliseconds read_timeout{60000};
  // A reply write that makes no progress for this long is cut (a long reply to a client that
  // reads steadily, like a slow download, is not).
  std::chrono::milliseconds write_stall_timeout{60000};
  // Streamed replies' backpressure (see StreamWriter).
  size_t stream_max_pending_bytes = 1 << 20;
  std::chrono::milliseconds stream_max_wait{30000};
};

class Server {
 public:
  // Binds and starts serving. INVALID_ARGUMENT for a malformed address or TLS files that do not
  // load (naming the file), UNAVAILABLE when the port cannot be bound. Exact paths are routed
  // to their handler (method checks are the handler's); a route ending in '*' (e.g. "/stream/*")
  // takes every path starting with what precedes the '*' that no exact route takes (the longest
  // such prefix wins); anything else is 404. The server's own errors (404, 413, malformed request)
  // have the body
  // {"error":{"message":M},"detail":{"msg":M}}: the first for operators' tools, the second is
  // the Livepeer AI API's error shape.
  static absl::StatusOr<std::unique_ptr<Server>> Create(ServerOptions options,
                                                        std::map<std::string, Handler> routes);
  // Stops accepting, closes connections and joins the threads. Handlers must have replied (or
  // dropped their reply callbacks) before: a reply after destruction is not allowed. Streamed
  // replies still in progress are cut off: their writers' writes are refused from then on.
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
// The server's own error body (see Server::Create) with `status` and `message`.
Response Error(int status, const std::string& message);

}  // namespace switchyard::http
