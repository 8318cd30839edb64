// Async results and served media found from any gateway (config state.gateway_id, state.peers,
// state.internal_secret_file; docs/operations.md "Several gateways"): two real gateways with API
// keys and one orchestrator serving a tiny image-to-video model. An async job started on gateway
// A is polled from B, its video fetched from B; another key gets 404 as on one gateway; hostile
// ids and calls to the internal endpoint are refused; a dead peer is a clear 502. Then the same
// over HTTPS (http_tls on both, https:// peers with state.peer_tls), with peers that must be
// refused: a certificate of another CA, a certificate for another address, a listener that stalls
// the handshake and one that answers garbage. Every wait is bounded; loopback only.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "common/media/image_codec.h"
#include "gateway/billing/api_keys.h"
#include "support/cluster.h"
#include "support/hostile_server.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/tiny_models.h"
#include "support/tls_certs.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kKey[] = "sy_shared_results_key";
constexpr char kOtherKey[] = "sy_shared_results_other_key";
constexpr char kSecret[] = "0123456789abcdef0123456789abcdef";
constexpr char kBoundary[] = "sharedresultsboundary";
constexpr char kHexId[] = "0123456789abcdef0123456789abcdef";

std::string Form(const std::string& png) {
  std::string body;
  for (const auto& [name, value] :
       std::map<std::string, std::string>{{"model_id", "i2v-test"},
                                          {"width", "16"},
                                          {"height", "16"},
                                          {"num_inference_steps", "2"}}) {
    absl::StrAppend(&body, "--", kBoundary, "\r\nContent-Disposition: form-data; name=\"", name,
                    "\"\r\n\r\n", value, "\r\n");
  }
  absl::StrAppend(&body, "--", kBoundary,
                  "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\n"
                  "Content-Type: image/png\r\n\r\n",
                  png, "\r\n--", kBoundary, "--\r\n");
  return body;
}

std::string Png() {
  media::RgbImage img{8, 8, std::vector<uint8_t>(8 * 8 * 3, 0)};
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 7);
  auto png = media::EncodePng(img);
  return png.ok() ? *png : std::string();
}

HttpResult Call(int port, const std::string& method, const std::string& path,
                const std::string& key, const std::map<std::string, std::string>& headers = {},
                const std::string& body = "", const std::string& content_type = "") {
  HttpCall call;
  call.method = method;
  call.path = path;
  call.body = body;
  call.content_type = content_type;
  call.headers = headers;
  if (!key.empty()) call.headers["Authorization"] = absl::StrCat("Bearer ", key);
  return HttpRequest(port, call);
}

HttpResult Poll(int port, const std::string& id, const std::string& key) {
  return Call(port, "POST", "/image-to-video/result", key, {}, Json{{"request_id", id}}.dump(),
              "application/json");
}

// Two gateways (their HTTP and state config added by each fixture) and one orchestrator serving
// the tiny image-to-video model at `model`, with the test's API key.
ClusterOptions TwoGatewaysOneNode(const fs::path& model) {
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {};
  options.extra_models.push_back({{"id", "i2v-test"},
                                  {"pipeline", "image-to-video"},
                                  {"path", model.string()},
                                  {"warm", true},
                                  {"device", "cpu"},
                                  {"warmup_size", 16},
                                  {"options", {{"max_frames", 16}}}});
  options.extra_gateways = 1;
  options.api_key = kKey;
  return options;
}

class SharedResultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path dir = dir_.path();
    const fs::path model = dir / "i2v-test.pt";
    SaveScriptModule(model, kTinyImageToVideoSource);
    WriteFile(dir / "keys.json",
              Json({{"keys",
                     {{{"id", "app"}, {"sha256", gateway::Sha256Hex(kKey)}},
                      {{"id", "other"}, {"sha256", gateway::Sha256Hex(kOtherKey)}}}}})
                  .dump());
    WriteFile(dir / "internal.secret", absl::StrCat(kSecret, "\n"));
    port_a_ = PickFreePort();
    port_b_ = PickFreePort();
    ASSERT_TRUE(port_a_ > 0 && port_b_ > 0 && port_a_ != port_b_);
    ClusterOptions options = TwoGatewaysOneNode(model);
    options.gateway_config = {{"api_keys_file", (dir / "keys.json").string()}};
    const std::string secret_file = (dir / "internal.secret").string();
    options.per_gateway_config = {
        {{"http_listen", absl::StrCat("127.0.0.1:", port_a_)},
         {"state",
          {{"gateway_id", "ga"},
           {"peers", {{"gb", absl::StrCat("http://127.0.0.1:", port_b_)}}},
           {"internal_secret_file", secret_file},
           {"peer_timeout_ms", 3000}}}},
        {{"http_listen", absl::StrCat("127.0.0.1:", port_b_)},
         {"state",
          {{"gateway_id", "gb"},
           {"peers", {{"ga", absl::StrCat("http://127.0.0.1:", port_a_)}}},
           {"internal_secret_file", secret_file},
           {"peer_timeout_ms", 3000}}}}};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << cluster_.Logs();
  }

  // Starts an async image-to-video job on gateway `port`; its request id.
  std::string StartAsync(int port) {
    HttpResult r = Call(port, "POST", "/image-to-video", kKey, {{"Prefer", "respond-async"}},
                        Form(Png()), absl::StrCat("multipart/form-data; boundary=", kBoundary));
    EXPECT_EQ(r.status, 202) << r.body << cluster_.Logs();
    Json j = Json::parse(r.body, nullptr, false);
    return j.is_object() && j["request_id"].is_string() ? j["request_id"].get<std::string>() : "";
  }

  // Polls (bounded: 200 x 50 ms) on gateway `port` until the job is not processing.
  Json PollDone(int port, const std::string& id) {
    Json last;
    for (int i = 0; i < 200; ++i) {
      HttpResult r = Poll(port, id, kKey);
      if (r.status != 200) return Json{{"http", r.status}, {"body", r.body}};
      last = Json::parse(r.body, nullptr, false);
      if (!last.is_object() || last["status"] != "processing") return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return last;
  }

  TempDir dir_;
  LocalCluster cluster_;
  int port_a_ = 0;
  int port_b_ = 0;
};

TEST_F(SharedResultsTest, AnAsyncResultAndItsVideoMadeOnAAreFoundFromB) {
  const std::string id = StartAsync(port_a_);
  ASSERT_EQ(id.rfind("ga.", 0), 0u) << id;  // the id says which gateway holds it
  ASSERT_EQ(id.size(), 3u + 32u) << id;
  Json done = PollDone(port_b_, id);  // polled from B only
  ASSERT_EQ(done["status"], "complete") << done.dump() << cluster_.Logs();
  ASSERT_EQ(done["result"]["images"].size(), 1u) << done.dump();
  const std::string url = done["result"]["images"][0]["url"];
  const std::string path = url.substr(url.find("/stream/"));
  EXPECT_EQ(path.rfind("/stream/ga.", 0), 0u) << path;

  HttpResult on_a = Call(port_a_, "GET", path, kKey);
  ASSERT_EQ(on_a.status, 200) << on_a.body;
  HttpResult on_b = Call(port_b_, "GET", path, kKey);
  ASSERT_EQ(on_b.status, 200) << on_b.body << cluster_.Logs();
  EXPECT_EQ(on_b.headers["content-type"], "video/mp4");
  EXPECT_EQ(on_b.body, on_a.body);
  EXPECT_GT(on_b.body.size(), 100u);
  auto probe = ProbeVideo(dir_, on_b.body, "mp4");
  ASSERT_TRUE(probe.ok) << probe.error;
  EXPECT_EQ(probe.frames, 2);
  std::printf(
      "SHARED-RESULTS: async job %s started on A, complete when polled from B; its %zu-byte "
      "video served by B\n",
      id.c_str(), on_b.body.size());

  // Today's ownership rule holds across gateways: another key gets 404 (as for an unknown id),
  // no key 401.
  EXPECT_EQ(Poll(port_b_, id, kOtherKey).status, 404);
  EXPECT_EQ(Call(port_b_, "GET", path, kOtherKey).status, 404);
  EXPECT_EQ(Poll(port_b_, id, "").status, 401);
  EXPECT_EQ(Call(port_b_, "GET", path, "").status, 401);
  // And the other way round: a job made on B, read from A.
  const std::string id_b = StartAsync(port_b_);
  ASSERT_EQ(id_b.rfind("gb.", 0), 0u) << id_b;
  EXPECT_EQ(PollDone(port_a_, id_b)["status"], "complete");

  // The holder is gone (kill -9): a clear 502 naming it, and B goes on.
  cluster_.gateway().Kill();
  HttpResult gone = Poll(port_b_, id, kKey);
  EXPECT_EQ(gone.status, 502) << gone.body;
  EXPECT_NE(gone.body.find("gateway 'ga'"), std::string::npos) << gone.body;
  EXPECT_EQ(Call(port_b_, "GET", path, kKey).status, 502);
  EXPECT_EQ(PollDone(port_b_, id_b)["status"], "complete");  // B's own still answer
  EXPECT_EQ(HttpRequest(port_b_, "GET", "/healthz").status, 200);
}

TEST_F(SharedResultsTest, HostileIdsAreNotFoundOrRefused) {
  const std::vector<std::string> unknown = {
      absl::StrCat("zz.", kHexId),                              // a gateway id no gateway has
      absl::StrCat("ga.", kHexId, "0"),                         // not 32 hex digits
      absl::StrCat("ga.", "0123456789ABCDEF0123456789ABCDEF"),  // upper case: not ours
      "ga..",
      "../../etc/passwd",
      absl::StrCat("gb.", kHexId),  // B's own form, never issued
      "nope",
  };
  for (const auto& id : unknown) {
    EXPECT_EQ(Poll(port_b_, id, kKey).status, 404) << id;
    EXPECT_EQ(Call(port_b_, "GET", absl::StrCat("/stream/", id, "/video-0.mp4"), kKey).status, 404)
        << id;
  }
  for (const char* name : {"..", "../../etc/passwd", ".hidden", "a%2f..%2fb", "a/b"}) {
    EXPECT_EQ(Call(port_b_, "GET", absl::StrCat("/stream/ga.", kHexId, "/", name), kKey).status,
              404)
        << name;
  }
  const std::string overlong(5000, 'a');
  EXPECT_EQ(Poll(port_b_, overlong, kKey).status, 400);
  EXPECT_EQ(Call(port_b_, "GET", absl::StrCat("/stream/", overlong, "/video-0.mp4"), kKey).status,
            400);
  // An id of a known peer that it does not hold: the peer's 404, relayed.
  EXPECT_EQ(Poll(port_b_, absl::StrCat("ga.", kHexId), kKey).status, 404);
  EXPECT_EQ(Call(port_b_, "GET", absl::StrCat("/stream/ga.", kHexId, "/video-0.mp4"), kKey).status,
            404);
  EXPECT_EQ(HttpRequest(port_b_, "GET", "/healthz").status, 200);
  // Nothing of the client's picks where the gateway connects: the peers' log shows only
  // internal calls to the configured address.
  EXPECT_EQ(cluster_.gateway().Log().find("zz."), std::string::npos);
}

// The internal endpoint as a hostile client sees it: without the secret 401, with a wrong one
// 403 (however long), only GET, only ids this gateway holds (it never fetches further), and the
// gateway keeps serving.
TEST_F(SharedResultsTest, TheInternalEndpointRefusesHostileCalls) {
  const std::string id = StartAsync(port_a_);
  ASSERT_FALSE(id.empty());
  const std::string internal = absl::StrCat("/internal/v1/result/image-to-video/", id);
  const std::string header = "x-switchyard-internal-secret";
  EXPECT_EQ(Call(port_a_, "GET", internal, kKey).status, 401);
  EXPECT_EQ(Call(port_a_, "GET", internal, kKey, {{header, ""}}).status, 401);
  EXPECT_EQ(Call(port_a_, "GET", internal, kKey, {{header, "wrong"}}).status, 403);
  EXPECT_EQ(Call(port_a_, "GET", internal, kKey, {{header, std::string(kSecret) + "x"}}).status,
            403);
  EXPECT_EQ(Call(port_a_, "GET", internal, kKey, {{header, std::string(kSecret).substr(1)}}).status,
            403);
  const HttpResult big = Call(port_a_, "GET", internal, kKey, {{header, std::string(60000, 's')}});
  EXPECT_EQ(big.status, 403) << big.body;  // under the server's 64 KiB header limit
  EXPECT_EQ(Call(port_a_, "GET", internal, "", {{header, kSecret}}).status, 401);  // no API key
  // With the secret: the holder answers for the key that made it, 404 for another key.
  HttpResult ok;
  for (int i = 0; i < 200; ++i) {
    ok = Call(port_a_, "GET", internal, kKey, {{header, kSecret}});
    if (ok.status != 200 || ok.body.find("processing") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(Call(port_a_, "GET", internal, kOtherKey, {{header, kSecret}}).status, 404);
  EXPECT_EQ(
      Call(port_a_, "POST", internal, kKey, {{header, kSecret}}, "{}", "application/json").status,
      405);
  // Ids another gateway holds are not fetched onward from the internal endpoint.
  EXPECT_EQ(Call(port_b_, "GET", internal, kKey, {{header, kSecret}}).status, 404);
  EXPECT_EQ(Call(port_a_, "GET", absl::StrCat("/internal/v1/stream/", id, "/../../x"), kKey,
                 {{header, kSecret}})
                .status,
            404);
  EXPECT_EQ(Call(port_a_, "GET", "/internal/v1/nothing", kKey, {{header, kSecret}}).status, 404);
  EXPECT_EQ(Call(port_a_, "GET",
                 absl::StrCat("/internal/v1/result/image-to-video/", std::string(20000, 'f')), kKey,
                 {{header, kSecret}})
                .status,
            404);
  EXPECT_EQ(HttpRequest(port_a_, "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpRequest(port_b_, "GET", "/healthz").status, 200);
}

// HTTPS between gateways: both gateways serve http_listen with http_tls, and each names the
// other as https://127.0.0.1:PORT with state.peer_tls (the test CA). Gateway B also names four
// peers that must be refused (in this process): "gr" presents a certificate of another CA, "gw" a
// certificate of the right CA that does not name its address (127.0.0.2), "gs" accepts and never
// answers the handshake, "gg" answers garbage.
class SharedResultsTlsTest : public ::testing::Test {
 protected:
  static constexpr int kPeerTimeoutMs = 2000;

  void SetUp() override {
    const fs::path dir = dir_.path();
    auto certs = MakeTestCerts(dir);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    const fs::path model = dir / "i2v-test.pt";
    SaveScriptModule(model, kTinyImageToVideoSource);
    WriteFile(dir / "keys.json",
              Json({{"keys", {{{"id", "app"}, {"sha256", gateway::Sha256Hex(kKey)}}}}}).dump());
    WriteFile(dir / "internal.secret", absl::StrCat(kSecret, "\n"));
    // The impostors answer a complete-looking result to anyone: a 200 from them would show.
    rogue_ = Impostor(certs_.rogue_cert, certs_.rogue_key, "127.0.0.1:0");
    wrong_host_ = Impostor(certs_.server_cert, certs_.server_key, "127.0.0.2:0");
    ASSERT_TRUE(rogue_ != nullptr && wrong_host_ != nullptr);
    port_a_ = PickFreePort();
    port_b_ = PickFreePort();
    ASSERT_TRUE(port_a_ > 0 && port_b_ > 0 && port_a_ != port_b_);
    ClusterOptions options = TwoGatewaysOneNode(model);
    const Json http_tls = {{"cert_file", certs_.server_cert.string()},
                           {"key_file", certs_.server_key.string()}};
    options.gateway_config = {{"api_keys_file", (dir / "keys.json").string()},
                              {"http_tls", http_tls}};
    const std::string secret_file = (dir / "internal.secret").string();
    const Json peer_tls = {{"ca_file", certs_.ca.string()}};
    auto https = [](const std::string& address) { return absl::StrCat("https://", address); };
    options.per_gateway_config = {
        {{"http_listen", absl::StrCat("127.0.0.1:", port_a_)},
         {"state",
          {{"gateway_id", "ga"},
           {"peers", {{"gb", https(absl::StrCat("127.0.0.1:", port_b_))}}},
           {"internal_secret_file", secret_file},
           {"peer_tls", peer_tls},
           {"peer_timeout_ms", kPeerTimeoutMs}}}},
        {{"http_listen", absl::StrCat("127.0.0.1:", port_b_)},
         {"state",
          {{"gateway_id", "gb"},
           {"peers",
            {{"ga", https(absl::StrCat("127.0.0.1:", port_a_))},
             {"gr", https(absl::StrCat("127.0.0.1:", rogue_->port()))},
             {"gw", https(absl::StrCat("127.0.0.2:", wrong_host_->port()))},
             {"gs", https(silent_.address())},
             {"gg", https(garbage_.address())}}},
           {"internal_secret_file", secret_file},
           {"peer_tls", peer_tls},
           {"peer_timeout_ms", kPeerTimeoutMs}}}}};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << cluster_.Logs();
  }

  http::ServerPtr Impostor(const fs::path& cert, const fs::path& key, const std::string& listen) {
    http::ServerOptions o;
    o.listen = listen;
    o.tls.cert_file = cert;
    o.tls.key_file = key;
    std::map<std::string, http::Handler> routes;
    routes["/internal/*"] = [this](const http::Request&, http::Reply reply) {
      impostor_calls_++;  // a request reached it: the secret and the client's key with it
      reply(http::Json(200, R"({"status":"complete","result":{"images":[]}})"));
    };
    auto server = http::Server::Create(std::move(o), std::move(routes));
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }

  // A call over HTTPS (the gateways' listeners), verified against the test CA.
  HttpResult Call(int port, const std::string& method, const std::string& path,
                  const std::map<std::string, std::string>& headers = {},
                  const std::string& body = "", const std::string& content_type = "") {
    HttpCall call;
    call.method = method;
    call.path = path;
    call.body = body;
    call.content_type = content_type;
    call.headers = headers;
    call.headers["Authorization"] = absl::StrCat("Bearer ", kKey);
    call.tls_ca_file = certs_.ca.string();
    return HttpRequest(port, call);
  }
  HttpResult Poll(int port, const std::string& id) {
    return Call(port, "POST", "/image-to-video/result", {}, Json{{"request_id", id}}.dump(),
                "application/json");
  }
  std::string StartAsync(int port) {
    HttpResult r = Call(port, "POST", "/image-to-video", {{"Prefer", "respond-async"}}, Form(Png()),
                        absl::StrCat("multipart/form-data; boundary=", kBoundary));
    EXPECT_EQ(r.status, 202) << r.body << r.error << cluster_.Logs();
    Json j = Json::parse(r.body, nullptr, false);
    return j.is_object() && j["request_id"].is_string() ? j["request_id"].get<std::string>() : "";
  }
  Json PollDone(int port, const std::string& id) {
    Json last;
    for (int i = 0; i < 200; ++i) {
      HttpResult r = Poll(port, id);
      if (r.status != 200) return Json{{"http", r.status}, {"body", r.body}, {"error", r.error}};
      last = Json::parse(r.body, nullptr, false);
      if (!last.is_object() || last["status"] != "processing") return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return last;
  }

  TempDir dir_;
  TestCerts certs_;
  std::atomic<int> impostor_calls_{0};
  http::ServerPtr rogue_;
  http::ServerPtr wrong_host_;
  HostileServer silent_{HostileServer::Behaviour::kSilent};
  HostileServer garbage_{HostileServer::Behaviour::kGarbage};
  LocalCluster cluster_;  // last: stopped first
  int port_a_ = 0;
  int port_b_ = 0;
};

TEST_F(SharedResultsTlsTest, AnAsyncResultMadeOnAIsFetchedFromBOverHttps) {
  EXPECT_NE(cluster_.gateway().Log().find("over HTTPS (state.peer_tls)"), std::string::npos)
      << cluster_.Logs();
  const std::string id = StartAsync(port_a_);
  ASSERT_EQ(id.rfind("ga.", 0), 0u) << id;
  Json done = PollDone(port_b_, id);  // polled from B only: B fetched it from A over HTTPS
  ASSERT_EQ(done["status"], "complete") << done.dump() << cluster_.Logs();
  const std::string url = done["result"]["images"][0]["url"];
  const std::string path = url.substr(url.find("/stream/"));
  HttpResult on_a = Call(port_a_, "GET", path);
  ASSERT_EQ(on_a.status, 200) << on_a.body << on_a.error;
  HttpResult on_b = Call(port_b_, "GET", path);
  ASSERT_EQ(on_b.status, 200) << on_b.body << on_b.error << cluster_.Logs();
  EXPECT_EQ(on_b.body, on_a.body);
  EXPECT_GT(on_b.body.size(), 100u);
  // And the other way round.
  const std::string id_b = StartAsync(port_b_);
  ASSERT_EQ(id_b.rfind("gb.", 0), 0u) << id_b;
  EXPECT_EQ(PollDone(port_a_, id_b)["status"], "complete");
  std::printf(
      "SHARED-RESULTS-TLS: async job %s started on A, complete when polled from B over "
      "HTTPS; its %zu-byte video served by B\n",
      id.c_str(), on_b.body.size());
}

TEST_F(SharedResultsTlsTest, PeersThatFailVerificationOrStallAreRefusedBounded) {
  const std::string real = StartAsync(port_a_);
  ASSERT_FALSE(real.empty());
  ASSERT_EQ(PollDone(port_b_, real)["status"], "complete") << cluster_.Logs();

  // Stalled handshakes first, three at once: each is 504 after peer_timeout_ms, not longer.
  std::vector<std::future<std::pair<HttpResult, std::chrono::milliseconds>>> stalled;
  for (int i = 0; i < 3; ++i) {
    stalled.push_back(std::async(std::launch::async, [this] {
      const auto start = std::chrono::steady_clock::now();
      HttpResult r = Poll(port_b_, absl::StrCat("gs.", kHexId));
      return std::make_pair(r, std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - start));
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Meanwhile B still answers: its health, and a real result from A over HTTPS (the fetch pool
  // has a thread left).
  const auto during = std::chrono::steady_clock::now();
  EXPECT_EQ(Call(port_b_, "GET", "/healthz").status, 200);
  EXPECT_EQ(PollDone(port_b_, real)["status"], "complete");
  EXPECT_LT(std::chrono::steady_clock::now() - during, std::chrono::milliseconds(1500));

  // A certificate of another CA, then one that does not name the peer's address: 502, the
  // reason in B's log, and no request ever reached either impostor (nor the secret with it).
  const struct {
    const char* peer;
    const char* logged;
  } refused[] = {{"gr", "certificate verify failed"},
                 {"gw", "IP address mismatch"},
                 {"gg", "TLS handshake failed"}};
  for (const auto& r : refused) {
    HttpResult result = Poll(port_b_, absl::StrCat(r.peer, ".", kHexId));
    EXPECT_EQ(result.status, 502) << r.peer << ": " << result.body;
    EXPECT_NE(result.body.find(absl::StrCat("gateway '", r.peer, "'")), std::string::npos)
        << result.body;
    HttpResult media =
        Call(port_b_, "GET", absl::StrCat("/stream/", r.peer, ".", kHexId, "/video-0.mp4"));
    EXPECT_EQ(media.status, 502) << r.peer << ": " << media.body;
  }
  for (auto& s : stalled) {
    auto [r, took] = s.get();
    EXPECT_EQ(r.status, 504) << r.body << r.error;
    EXPECT_GE(took, std::chrono::milliseconds(kPeerTimeoutMs - 100));
    EXPECT_LT(took, std::chrono::milliseconds(kPeerTimeoutMs + 2500));
  }
  const std::string log = cluster_.extra_gateway(0).Log();
  for (const auto& r : refused) {
    EXPECT_NE(log.find(r.logged), std::string::npos) << r.logged << "\n" << log;
  }
  EXPECT_EQ(impostor_calls_.load(), 0);
  EXPECT_GE(silent_.accepted(), 3);
  EXPECT_GE(garbage_.accepted(), 1);
  // B is none the worse.
  EXPECT_EQ(PollDone(port_b_, real)["status"], "complete");
  EXPECT_EQ(Call(port_b_, "GET", "/healthz").status, 200);
}

}  // namespace
}  // namespace switchyard::testing
