// http::Server: streamed replies (chunked on HTTP/1.1, raw on HTTP/1.0, the connection reused
// after a stream, producers told when the client is gone), prefix routes and error bodies.
#include "common/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
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
  explicit Conn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
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

std::unique_ptr<Server> Start(std::map<std::string, Handler> routes) {
  auto server = Server::Create(ServerOptions{}, std::move(routes));
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

}  // namespace
}  // namespace switchyard::http
