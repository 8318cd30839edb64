// http::Server: streamed replies (chunked on HTTP/1.1, raw on HTTP/1.0, the connection reused
// after a stream, producers told when the client is gone, backpressure), prefix routes and error
// bodies, the header-phase authorizer, connection caps, handlers off the I/O threads and the
// read/write deadlines.
#include "common/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/http_client.h"

namespace switchyard::http {
namespace {

using ::switchyard::testing::HttpCall;
using ::switchyard::testing::HttpRequest;
using ::switchyard::testing::HttpResult;

// A raw loopback connection, to see exactly what the server sends and to reuse the connection.
class Conn {
 public:
  // `source`: the local address to connect from (another loopback address is another client).
  explicit Conn(int port, const char* source = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (source != nullptr) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      ::inet_pton(AF_INET, source, &local.sin_addr);
      ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local));
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Conn() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  void Send(const std::string& data) {
    ASSERT_EQ(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(data.size()));
  }
  // Reads until `end` has arrived (bounded by the 10 s receive timeout and 1000 reads).
  std::string ReadUntil(const std::string& end) {
    char buf[4096];
    for (int i = 0; i < 1000 && received_.find(end) == std::string::npos; ++i) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      received_.append(buf, static_cast<size_t>(n));
    }
    const size_t at = received_.find(end);
    if (at == std::string::npos) return std::exchange(received_, "");
    std::string out = received_.substr(0, at + end.size());
    received_.erase(0, at + end.size());
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string received_;
};

// Replies with a stream and writes `pieces` from another thread, a few ms apart.
Handler Streaming(std::vector<std::string> pieces, bool close_explicitly = true) {
  return [pieces, close_explicitly](const Request&, Reply reply) {
    auto writer = std::make_shared<StreamWriter>();
    Response r;
    r.content_type = "text/event-stream";
    r.stream = writer->state();
    reply(std::move(r));
    std::thread([writer, pieces, close_explicitly] {
      for (const auto& p : pieces) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        writer->Write(p);
      }
      if (close_explicitly) writer->Close();
      // Otherwise the last reference going away ends the body.
    }).detach();
  };
}

std::unique_ptr<Server> Start(std::map<std::string, Handler> routes,
                              ServerOptions options = ServerOptions{}) {
  auto server = Server::Create(std::move(options), std::move(routes));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(HttpServerTest, StreamedReplyIsChunkedAndTheConnectionIsReusedAfterIt) {
  auto server = Start({{"/sse", Streaming({"data: 1\n\n", "", "data: 22\n\n"})},
                       {"/plain", [](const Request&, Reply reply) {
                          Response r;
                          r.body = "plain";
                          reply(std::move(r));
                        }}});
  ASSERT_NE(server, nullptr);
  Conn conn(server->port());
  ASSERT_TRUE(conn.connected());
  conn.Send("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string streamed = conn.ReadUntil("0\r\n\r\n");
  EXPECT_NE(streamed.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("Content-Type: text/event-stream\r\n"), std::string::npos);
  // The empty write is skipped: an empty chunk would end the body early.
  const std::string body = streamed.substr(streamed.find("\r\n\r\n") + 4);
  EXPECT_EQ(body, "9\r\ndata: 1\n\n\r\na\r\ndata: 22\n\n\r\n0\r\n\r\n");
  // Keep-alive: the next request on the same connection is answered.
  conn.Send("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string next = conn.ReadUntil("\r\n\r\nplain");
  EXPECT_NE(next.find("HTTP/1.1 200 OK"), std::string::npos) << next;
  EXPECT_NE(next.find("Content-Length: 5"), std::string::npos) << next;
}

TEST(HttpServerTest, Http10GetsTheRawStreamEndedByClosing) {
  auto server = Start({{"/sse", Streaming({"a", "b", "c"}, /*close_explicitly=*/false)}});
  ASSERT_NE(server, nullptr);
  HttpResult r = HttpRequest(server->port(), "GET", "/sse");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "abc");
  EXPECT_EQ(r.headers.count("transfer-encoding"), 0u);
  EXPECT_EQ(r.headers["connection"], "close");
}

// The close comes well after the last data went out, so the end has nothing left to send.
TEST(HttpServerTest, Http10StreamEndsPromptlyWhenClosedAfterEverythingWasSent) {
  auto server = Start({{"/sse", [](const Request&, Reply reply) {
                          auto writer = std::make_shared<StreamWriter>();
                          Response r;
                          r.stream = writer->state();
                          reply(std::move(r));
                          std::thread([writer] {
                            writer->Write("only");
                            std::this_thread::sleep_for(std::chrono::milliseconds(50));
                            writer->Close();
                          }).detach();
                        }}});
  ASSERT_NE(server, nullptr);
  const auto start = std::chrono::steady_clock::now();
  HttpResult r = HttpRequest(server->port(), "GET", "/sse");
  EXPECT_EQ(r.body, "only");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(HttpServerTest, WritesFailOnceTheClientIsGone) {
  auto writer = std::make_shared<StreamWriter>();
  auto server = Start({{"/sse", [writer](const Request&, Reply reply) {
                          Response r;
                          r.stream = writer->state();
                          reply(std::move(r));
                        }}});
  ASSERT_NE(server, nullptr);
  {
    Conn conn(server->port());
    ASSERT_TRUE(conn.connected());
    conn.Send("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.ReadUntil("\r\n\r\n");
  }  // the client hangs up
  bool refused = false;
  const std::string piece(64 * 1024, 'x');
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0; i < 2000 && std::chrono::steady_clock::now() < deadline; ++i) {
    if (!writer->Write(piece)) {
      refused = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(refused) << "writes kept succeeding after the client closed";
  EXPECT_TRUE(writer->gone());
  writer->Close();
}

TEST(HttpServerTest, AServerGoingAwayCutsOffStreamsInProgress) {
  auto writer = std::make_shared<StreamWriter>();
  auto server = Start({{"/sse", [writer](const Request&, Reply reply) {
                          Response r;
                          r.stream = writer->state();
                          reply(std::move(r));
                        }}});
  ASSERT_NE(server, nullptr);
  Conn conn(server->port());
  ASSERT_TRUE(conn.connected());
  conn.Send("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
  conn.ReadUntil("\r\n\r\n");
  EXPECT_TRUE(writer->Write("data: 1\n\n"));
  server.reset();
  // The producer outlives the server (an LLM still generating): refused, and nothing is posted
  // to the gone server.
  EXPECT_FALSE(writer->Write("data: 2\n\n"));
  EXPECT_TRUE(writer->gone());
  writer->Close();
}

TEST(HttpServerTest, PrefixRoutesAndErrorBodies) {
  auto answer = [](std::string name) -> Handler {
    return [name](const Request& req, Reply reply) {
      Response r;
      r.body = name + " " + req.path;
      reply(std::move(r));
    };
  };
  auto server = Start({{"/a/*", answer("a")}, {"/a/b/*", answer("ab")}, {"/a/b", answer("exact")}});
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  EXPECT_EQ(HttpRequest(port, "GET", "/a/x/y").body, "a /a/x/y");
  EXPECT_EQ(HttpRequest(port, "GET", "/a/b/c?q=1").body, "ab /a/b/c");
  EXPECT_EQ(HttpRequest(port, "GET", "/a/b").body, "exact /a/b");
  HttpResult missing = HttpRequest(port, "GET", "/a");
  EXPECT_EQ(missing.status, 404);
  auto j = nlohmann::json::parse(missing.body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << missing.body;
  EXPECT_EQ(j["detail"]["msg"], "no such path: /a");
  EXPECT_EQ(j["error"]["message"], "no such path: /a");

  HttpCall huge;
  huge.method = "POST";
  huge.path = "/a/x";
  huge.content_length = size_t{1} << 30;  // over the 64 MiB default, refused from the header
  HttpResult too_large = HttpRequest(port, huge);
  EXPECT_EQ(too_large.status, 413);
  EXPECT_NE(too_large.body.find("\"detail\":{\"msg\":\"request body over"), std::string::npos)
      << too_large.body;
}

Handler Echo() {
  return [](const Request& req, Reply reply) {
    Response r;
    r.body = "got " + std::to_string(req.body.size()) + " bytes";
    reply(std::move(r));
  };
}

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A refusal from the authorizer comes right after the headers: a client announcing 200 MB and
// sending 3 bytes gets it at once (the old server waited for the body until its read deadline),
// the handler never runs, and the connection is closed.
TEST(HttpServerTest, AuthorizerAnswersBeforeTheBodyIsRead) {
  std::atomic<int> handled{0};
  ServerOptions options;
  options.max_body_bytes = 256 << 20;
  options.authorize = [](const Request& req) -> std::optional<Response> {
    auto it = req.headers.find("authorization");
    if (it != req.headers.end() && it->second == "Bearer good") return std::nullopt;
    EXPECT_TRUE(req.body.empty());
    return Error(401, "API key required");
  };
  auto server = Start({{"/up",
                        [&handled](const Request& req, Reply reply) {
                          ++handled;
                          Echo()(req, std::move(reply));
                        }}},
                      options);
  ASSERT_NE(server, nullptr);
  {
    Conn conn(server->port());
    ASSERT_TRUE(conn.connected());
    const auto start = Clock::now();
    conn.Send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\nabc");
    const std::string answer = conn.ReadUntil("}}");
    EXPECT_LT(SecondsSince(start), 2.0);
    EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
    EXPECT_NE(answer.find("\"detail\":{\"msg\":\"API key required\"}"), std::string::npos)
        << answer;
    EXPECT_EQ(conn.ReadUntil("never"), "");  // closed: nothing more comes
  }
  // Refused before the size check too: a body over the limit without a key is 401, not 413.
  HttpCall huge;
  huge.method = "POST";
  huge.path = "/up";
  huge.content_length = size_t{1} << 30;
  EXPECT_EQ(HttpRequest(server->port(), huge).status, 401);
  huge.headers["Authorization"] = "Bearer good";
  EXPECT_EQ(HttpRequest(server->port(), huge).status, 413);
  EXPECT_EQ(handled.load(), 0);

  // With the key the body is read and handled; "Expect: 100-continue" is answered first.
  Conn conn(server->port());
  ASSERT_TRUE(conn.connected());
  conn.Send(
      "POST /up HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nContent-Length: 5\r\n"
      "Expect: 100-continue\r\n\r\n");
  EXPECT_EQ(conn.ReadUntil("\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
  conn.Send("hello");
  EXPECT_NE(conn.ReadUntil("got 5 bytes").find("HTTP/1.1 200"), std::string::npos);
  EXPECT_EQ(handled.load(), 1);
}

// Connections over the per-address cap are closed at accept; another address still gets in, and
// a closed connection gives its place back. (The old server accepted any number.)
TEST(HttpServerTest, ConnectionsOverThePerAddressCapAreClosedAtAccept) {
  ServerOptions options;
  options.max_connections_per_ip = 3;
  auto server = Start({{"/x", Echo()}}, options);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  std::vector<std::unique_ptr<Conn>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<Conn>(port));
    ASSERT_TRUE(held.back()->connected());
  }
  // Each of the first three is served (and so counted) before the fourth comes.
  for (auto& c : held) {
    c->Send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(c->ReadUntil("got 0 bytes").find("200 OK"), std::string::npos);
  }
  {
    Conn over(port);  // the kernel completes the handshake; the server then closes it
    ASSERT_TRUE(over.connected());
    ::send(over.fd(), "GET /x HTTP/1.1\r\nHost: x\r\n\r\n", 29, MSG_NOSIGNAL);
    EXPECT_EQ(over.ReadUntil("got"), "");
  }
  Conn other(port, "127.0.0.2");
  ASSERT_TRUE(other.connected());
  other.Send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(other.ReadUntil("got 0 bytes").find("200 OK"), std::string::npos);

  held.pop_back();  // one place is free again once the server sees the close
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    served = HttpRequest(port, "GET", "/x").status == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(served);
}

// Handlers run off the I/O threads: with the only I/O thread's worth of slow handlers in flight,
// /healthz (an inline path) still answers at once. The old server ran handlers on the I/O
// threads, so the probe waited for a slow handler to finish.
TEST(HttpServerTest, ProbesAnswerWhileHandlersAreBusy) {
  ServerOptions options;
  options.threads = 1;
  options.handler_threads = 2;
  auto slow = [](const Request&, Reply reply) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // parsing a huge body, say
    reply(Response{});
  };
  auto health = [](const Request&, Reply reply) {
    Response r;
    r.body = "ok\n";
    reply(std::move(r));
  };
  auto server = Start({{"/slow", slow}, {"/healthz", health}}, options);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([port] { EXPECT_EQ(HttpRequest(port, "GET", "/slow").status, 200); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  double worst = 0;
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    EXPECT_EQ(HttpRequest(port, "GET", "/healthz").status, 200);
    worst = std::max(worst, SecondsSince(start));
  }
  EXPECT_LT(worst, 0.5) << "a probe waited " << worst << " s behind slow handlers";
  for (auto& t : clients) t.join();
}

// The read deadline does not run while the handler works: a reply that takes longer than it is
// still sent (the old server's expired read timer cut the write), while an idle keep-alive
// connection is still closed after it.
TEST(HttpServerTest, AReplySlowerThanTheReadTimeoutIsStillSent) {
  ServerOptions options;
  options.read_timeout = std::chrono::milliseconds(300);
  auto late = [](const Request&, Reply reply) {
    std::thread([reply] {
      std::this_thread::sleep_for(std::chrono::milliseconds(900));
      Response r;
      r.body = "late but here";
      reply(std::move(r));
    }).detach();
  };
  auto server = Start({{"/late", late}}, options);
  ASSERT_NE(server, nullptr);
  Conn conn(server->port());
  ASSERT_TRUE(conn.connected());
  conn.Send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string answer = conn.ReadUntil("late but here");
  EXPECT_NE(answer.find("HTTP/1.1 200"), std::string::npos) << answer;
  // Then idle: closed after the read timeout (well before the 10 s receive timeout).
  const auto start = Clock::now();
  EXPECT_EQ(conn.ReadUntil("never"), "");
  EXPECT_LT(SecondsSince(start), 3.0);
}

// Backpressure: a client that stops reading stalls the producer (Write blocks once the bound is
// queued) and, after stream_max_wait, is dropped: Write says false and the queue never held much
// more than the bound. The old writer queued everything (the test's 64 MiB) and kept saying true.
TEST(HttpServerTest, AStreamToAClientThatStopsReadingIsBoundedThenDropped) {
  ServerOptions options;
  options.stream_max_pending_bytes = 64 << 10;
  options.stream_max_wait = std::chrono::milliseconds(500);
  auto writer = std::make_shared<StreamWriter>();
  auto server = Start({{"/sse",
                        [writer](const Request&, Reply reply) {
                          Response r;
                          r.stream = writer->state();
                          reply(std::move(r));
                        }}},
                      options);
  ASSERT_NE(server, nullptr);
  Conn conn(server->port());
  ASSERT_TRUE(conn.connected());
  int small = 4096;  // a small receive buffer, so the kernel does not hold the whole test
  ::setsockopt(conn.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  conn.Send("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
  conn.ReadUntil("\r\n\r\n");  // then reads nothing more
  const std::string piece(16 << 10, 'x');
  bool refused = false;
  size_t most_pending = 0;
  const auto start = Clock::now();
  for (int i = 0; i < 4096 && SecondsSince(start) < 20; ++i) {  // at most 64 MiB
    if (!writer->Write(piece)) {
      refused = true;
      break;
    }
    MutexLock lock(&writer->state()->mu);
    most_pending = std::max(most_pending, writer->state()->pending_bytes);
  }
  EXPECT_TRUE(refused) << "the producer was never told to stop";
  EXPECT_TRUE(writer->gone());
  EXPECT_LE(most_pending, options.stream_max_pending_bytes + piece.size());
  writer->Close();
}

// A client that reads slowly but steadily gets the whole stream: the producer waits, nothing is
// dropped.
TEST(HttpServerTest, ASlowButSteadyReaderGetsTheWholeStream) {
  ServerOptions options;
  options.stream_max_pending_bytes = 32 << 10;
  auto writer = std::make_shared<StreamWriter>();
  auto server = Start({{"/sse",
                        [writer](const Request&, Reply reply) {
                          Response r;
                          r.stream = writer->state();
                          reply(std::move(r));
                        }}},
                      options);
  ASSERT_NE(server, nullptr);
  const std::string piece(8 << 10, 'y');
  constexpr int kPieces = 256;  // 2 MiB, 64 times the bound
  std::thread producer([writer, piece] {
    for (int i = 0; i < kPieces; ++i) EXPECT_TRUE(writer->Write(piece));
    writer->Close();
  });
  HttpCall call;
  call.path = "/sse";
  call.http11 = true;
  size_t reads = 0;
  call.on_read = [&reads](const std::string&) {
    if (++reads % 16 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
  HttpResult r = HttpRequest(server->port(), call);
  producer.join();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), piece.size() * kPieces);
  EXPECT_FALSE(writer->gone());
}

}  // namespace
}  // namespace switchyard::http
