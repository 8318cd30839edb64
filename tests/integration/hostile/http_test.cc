// Hostile clients at the gateway's public HTTP port (issue 18, "the HTTP front door"): a request
// without a key announcing a huge body, a connection flood from one address, slow-loris bodies,
// and the operators' pages asked of the public port. Each sends the attack to a real cluster on
// loopback, then checks the gateway is alive, the answer is the documented one, and another
// client's job still succeeds. Other clients use other loopback addresses (127.0.0.2, ...), which
// is how the per-address cap tells them apart.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/billing/api_keys.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kBoundary[] = "hostilehttpboundary";
constexpr char kKey[] = "sy_hostile_http_test_key_0123456789abcdef0123456789abcdef";

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A raw loopback connection from `source` (another loopback address is another client).
class RawConn {
 public:
  RawConn(int port, const char* source, int receive_timeout_s = 10) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{receive_timeout_s, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in local{};
    local.sin_family = AF_INET;
    ::inet_pton(AF_INET, source, &local.sin_addr);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  bool connected() const { return connected_; }
  bool Send(const std::string& data) {
    return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }
  // Everything until the server closes, the receive timeout, or 1 MiB (at most 1000 reads).
  std::string ReadAll() {
    std::string out;
    char buf[4096];
    for (int i = 0; i < 1000 && out.size() < (1 << 20); ++i) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

std::string Form(const std::string& png) {
  return absl::StrCat("--", kBoundary,
                      "\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n"
                      "esrgan-slim-x4\r\n--",
                      kBoundary,
                      "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\n"
                      "Content-Type: image/png\r\n\r\n",
                      png, "\r\n--", kBoundary, "--\r\n");
}

// Another client's job: an upscale over the public HTTP port.
HttpResult UpscaleOverHttp(int port, const std::string& png, const std::string& key = "") {
  HttpCall call;
  call.method = "POST";
  call.path = "/upscale";
  call.content_type = absl::StrCat("multipart/form-data; boundary=", kBoundary);
  call.body = Form(png);
  if (!key.empty()) call.headers["Authorization"] = absl::StrCat("Bearer ", key);
  return HttpRequest(port, call);
}

class HostileHttpTest : public ::testing::Test {
 protected:
  void StartCluster(nlohmann::json gateway_config, const std::string& api_key = "") {
    ASSERT_TRUE(std::filesystem::exists(ModelDir() / "esrgan-slim-x4.pt"))
        << "models are not prepared; run scripts/prepare-models";
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {"esrgan-slim-x4"};
    options.gateway_config = std::move(gateway_config);
    options.api_key = api_key;
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st;
    port_ = cluster_.gateway().http_port();
    ASSERT_GT(port_, 0);
    png_ = MakeTestImage(tmp_, 16, 12, "png");
  }

  TempDir tmp_;
  LocalCluster cluster_;
  int port_ = 0;
  std::string png_;
};

// A request without a key announcing a 200 MB body (under max_message_bytes, 256 MiB) and sending
// a few bytes gets 401 at once, from the headers alone: the old gateway read (and waited for) the
// body first, answering nothing until its 60 s read deadline. Validation answers (405, 415, 422)
// and image-to-video's async 202 come after the key too.
TEST_F(HostileHttpTest, NoKeyHugeBodyGets401BeforeTheBodyIsRead) {
  const auto keys_file = tmp_.path() / "keys.json";
  WriteFile(
      keys_file,
      nlohmann::json{{"keys", {{{"id", "app"}, {"sha256", gateway::Sha256Hex(kKey)}}}}}.dump());
  StartCluster({{"api_keys_file", keys_file.string()}}, kKey);
  if (HasFatalFailure()) return;

  for (const char* path : {"/upscale", "/text-to-image", "/live-video-to-video", "/usage"}) {
    RawConn conn(port_, "127.0.0.2");
    ASSERT_TRUE(conn.connected());
    const auto start = Clock::now();
    ASSERT_TRUE(conn.Send(absl::StrCat("POST ", path,
                                       " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                       "Content-Length: 209715200\r\n\r\n{\"a\":")));
    const std::string answer = conn.ReadAll();  // the gateway answers and closes
    const double took = SecondsSince(start);
    EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << path << ": " << answer;
    EXPECT_TRUE(absl::StrContains(answer, "\"detail\":{\"msg\":\"API key required"))
        << path << ": " << answer;
    EXPECT_LT(took, 5.0) << path;
    std::cout << path << ": 401 after " << took * 1000 << " ms, body never read\n";
  }
  // A wrong key, and validation or async answers: all 401 first.
  HttpCall call;
  call.method = "POST";
  call.path = "/image-to-video";
  call.content_type = "application/json";
  call.body = "[]";  // would be 422
  call.headers["Prefer"] = "respond-async";
  call.headers["Authorization"] = "Bearer sy_wrong";
  HttpResult wrong = HttpRequest(port_, call);
  EXPECT_EQ(wrong.status, 401) << wrong.body;
  EXPECT_TRUE(absl::StrContains(wrong.body, "unknown API key")) << wrong.body;
  EXPECT_EQ(HttpRequest(port_, "GET", "/text-to-image").status, 401);  // would be 405

  // Still alive; the probes stay open; a client with the key gets its job done.
  EXPECT_TRUE(cluster_.gateway().Alive());
  EXPECT_EQ(HttpRequest(port_, "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpRequest(port_, "GET", "/readyz").status, 200);
  HttpResult job = UpscaleOverHttp(port_, png_, kKey);
  EXPECT_EQ(job.status, 200) << job.body << cluster_.Logs();
}

// A flood of connections from one address is capped (http_max_connections_per_ip): those over it
// are closed at accept, counted in a rate-limited log line, while another client's probe and job
// still succeed. The old gateway accepted every connection.
TEST_F(HostileHttpTest, ConnectionFloodOverThePerAddressCapIsRefused) {
  constexpr int kCap = 8;
  StartCluster({{"http_max_connections_per_ip", kCap}});
  if (HasFatalFailure()) return;
  std::vector<std::unique_ptr<RawConn>> flood;
  for (int i = 0; i < kCap; ++i) {
    flood.push_back(std::make_unique<RawConn>(port_, "127.0.0.2"));
    ASSERT_TRUE(flood.back()->connected());
  }
  // Each held connection is served once (so the gateway has surely counted it), then idles.
  for (auto& c : flood) {
    ASSERT_TRUE(c->Send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int refused = 0;
  for (int i = 0; i < 3 * kCap; ++i) {
    RawConn over(port_, "127.0.0.2", /*receive_timeout_s=*/5);
    if (!over.connected()) {
      ++refused;
      continue;
    }
    over.Send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if (over.ReadAll().empty()) ++refused;  // closed without an answer
  }
  EXPECT_EQ(refused, 3 * kCap);
  // Another client is unaffected.
  const auto start = Clock::now();
  EXPECT_EQ(HttpRequest(port_, "GET", "/healthz").status, 200);
  EXPECT_LT(SecondsSince(start), 2.0);
  HttpResult job = UpscaleOverHttp(port_, png_);
  EXPECT_EQ(job.status, 200) << job.body << cluster_.Logs();
  EXPECT_TRUE(cluster_.gateway().Alive());
  bool logged = false;
  for (int i = 0; i < 50 && !logged; ++i) {
    logged = absl::StrContains(cluster_.gateway().Log(), "connection(s) over the cap");
    if (!logged) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(logged) << cluster_.gateway().Log();
}

// Slow-loris bodies (headers announcing 50 MB, then a byte every 100 ms) on as many connections as
// one address may open, plus large bodies sent at full speed from another, do not stall the
// probes or another client's job: reading is asynchronous and handlers (which parse the bodies)
// run off the I/O threads.
TEST_F(HostileHttpTest, SlowLorisBodiesDoNotStallHealth) {
  constexpr int kSlow = 16;
  StartCluster({{"http_max_connections_per_ip", kSlow}});
  if (HasFatalFailure()) return;
  std::vector<std::unique_ptr<RawConn>> slow;
  for (int i = 0; i < kSlow; ++i) {
    slow.push_back(std::make_unique<RawConn>(port_, "127.0.0.2"));
    ASSERT_TRUE(slow.back()->connected());
    slow.back()->Send(
        "POST /upscale HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 52428800\r\n\r\n{");
  }
  // Large JSON bodies sent whole, as fast as loopback goes: parsing them (an array of 15 million
  // numbers, about 1 s each) is the handlers' work. The old gateway parsed on its 2 I/O threads,
  // and its /healthz took over 10 s under this load (tests/integration/hostile/http_old_vs_new.py).
  std::vector<std::thread> heavy;
  std::string big = "{\"model_id\":\"x\",\"prompt\":\"p\",\"loras\":[1";
  for (int i = 0; i < 15'000'000; ++i) big += ",1";
  big += "]}";
  for (int i = 0; i < 4; ++i) {
    heavy.emplace_back([this, &big] {
      HttpCall call;
      call.method = "POST";
      call.path = "/text-to-image";
      call.content_type = "application/json";
      call.body = big;
      // Refused for its content (no orchestrator offers the model); what matters is the probes
      // meanwhile.
      HttpRequest(port_, call);
    });
  }
  double worst = 0;
  const auto end = Clock::now() + std::chrono::seconds(4);
  int probes = 0;
  for (int tick = 0; Clock::now() < end && tick < 100; ++tick) {
    for (auto& c : slow) c->Send("1");
    const auto start = Clock::now();
    EXPECT_EQ(HttpRequest(port_, "GET", "/healthz").status, 200);
    worst = std::max(worst, SecondsSince(start));
    ++probes;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& t : heavy) t.join();
  std::cout << probes << " probes during " << kSlow
            << " slow-loris bodies and 4 x 30 MB JSON bodies: slowest " << worst * 1000 << " ms\n";
  EXPECT_LT(worst, 1.0);
  HttpResult job = UpscaleOverHttp(port_, png_);
  EXPECT_EQ(job.status, 200) << job.body << cluster_.Logs();
  EXPECT_TRUE(cluster_.gateway().Alive());
}

// The operators' pages (/status, /status.json, /, /metrics) show every tenant's request ids and
// errors and the orchestrators' addresses: they are on admin_listen (loopback), not on the public
// port, where the old gateway served them to anyone.
TEST_F(HostileHttpTest, OperatorPagesAreNotOnThePublicPort) {
  StartCluster(nlohmann::json::object());
  if (HasFatalFailure()) return;
  const int admin = cluster_.gateway().admin_port();
  ASSERT_GT(admin, 0);
  ASSERT_NE(admin, port_);
  for (const char* path : {"/status", "/status.json", "/metrics", "/"}) {
    HttpResult pub = HttpRequest(port_, "GET", path);
    EXPECT_EQ(pub.status, 404) << path << ": " << pub.body.substr(0, 200);
    EXPECT_FALSE(absl::StrContains(pub.body, "orch-1")) << path;
    EXPECT_FALSE(absl::StrContains(pub.body, "switchyard_gateway_")) << path;
  }
  EXPECT_EQ(HttpRequest(admin, "GET", "/status").status, 200);
  HttpResult status = HttpRequest(admin, "GET", "/status.json");
  EXPECT_EQ(status.status, 200);
  EXPECT_TRUE(absl::StrContains(status.body, "orch-1")) << status.body.substr(0, 300);
  EXPECT_TRUE(absl::StrContains(HttpRequest(admin, "GET", "/metrics").body, "switchyard_gateway_"));
  EXPECT_EQ(HttpRequest(admin, "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpRequest(port_, "GET", "/healthz").status, 200);
  EXPECT_EQ(UpscaleOverHttp(port_, png_).status, 200);
}

}  // namespace
}  // namespace switchyard::testing
