// PeerGateways (gateway/api/peer_gateways.h): who holds an id, the internal endpoint's secret
// check, and the fetch pool's bounds, without a network (a closed loopback port at most); HTTPS
// to peers (state.peer_tls) against in-process HTTPS servers and hostile listeners on loopback.
#include "gateway/api/peer_gateways.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>

#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "support/hostile_server.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/tls_certs.h"

namespace switchyard::gateway {
namespace {

constexpr char kSecret[] = "0123456789abcdef0123456789abcdef";
constexpr char kHex[] = "0123456789abcdef0123456789abcdef";

PeerGatewaysOptions Options() {
  PeerGatewaysOptions o;
  o.self_id = "ga";
  o.peers = {{"gb", "http://127.0.0.1:1"}, {"gc", "http://gw-c.internal:8935"}};
  o.secret = kSecret;
  o.timeout = absl::Seconds(2);
  return o;
}

TEST(PeerGatewaysTest, CreateValidates) {
  EXPECT_TRUE(PeerGateways::Create(Options()).ok());
  auto bad = [](auto change) {
    PeerGatewaysOptions o = Options();
    change(o);
    auto p = PeerGateways::Create(o);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  };
  bad([](PeerGatewaysOptions& o) { o.self_id = "GA"; });
  bad([](PeerGatewaysOptions& o) { o.secret = "short"; });
  bad([](PeerGatewaysOptions& o) { o.peers["ga"] = "http://h:1"; });  // itself
  bad([](PeerGatewaysOptions& o) { o.peers["gd"] = "http://h:1/path"; });
  bad([](PeerGatewaysOptions& o) { o.peers["gd"] = "https://h:1"; });
  bad([](PeerGatewaysOptions& o) { o.peers["g.d"] = "http://h:1"; });
}

TEST(PeerGatewaysTest, HolderOfReadsOnlyWellFormedIdsOfKnownGateways) {
  auto peers = PeerGateways::Create(Options());
  ASSERT_TRUE(peers.ok()) << peers.status();
  const auto& p = **peers;
  EXPECT_EQ(p.HolderOf(absl::StrCat("ga.", kHex)), "");  // this gateway's
  EXPECT_EQ(p.HolderOf(kHex), "");                       // an id from before peers
  EXPECT_EQ(p.HolderOf(absl::StrCat("gb.", kHex)), "gb");
  EXPECT_EQ(p.HolderOf(absl::StrCat("gc.", kHex)), "gc");
  for (const std::string& id :
       {absl::StrCat("zz.", kHex), absl::StrCat("gb.", kHex, "0"), std::string("gb.") + "0123",
        absl::StrCat("gb.", "0123456789ABCDEF0123456789ABCDEF"), std::string("gb..."),
        std::string("../../etc/passwd"), std::string(""), std::string("nope"),
        absl::StrCat(".", kHex), absl::StrCat("gb.", std::string(31, 'a'), "/"),
        std::string(1000, 'a'), absl::StrCat(std::string(40, 'g'), ".", kHex)}) {
    EXPECT_EQ(p.HolderOf(id), std::nullopt) << id;
  }
}

TEST(PeerGatewaysTest, TheSecretIsRequiredAndCompared) {
  auto peers = PeerGateways::Create(Options());
  ASSERT_TRUE(peers.ok());
  http::Request req;
  auto refused = (*peers)->CheckSecret(req);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->status, 401);
  req.headers[PeerGateways::kSecretHeader] = "";
  EXPECT_EQ((*peers)->CheckSecret(req)->status, 401);
  for (const std::string& wrong : {std::string("x"), std::string(kSecret) + "x",
                                   std::string(kSecret).substr(1), std::string(100000, 'a')}) {
    req.headers[PeerGateways::kSecretHeader] = wrong;
    auto r = (*peers)->CheckSecret(req);
    ASSERT_TRUE(r.has_value()) << wrong.size();
    EXPECT_EQ(r->status, 403);
  }
  req.headers[PeerGateways::kSecretHeader] = kSecret;
  EXPECT_FALSE((*peers)->CheckSecret(req).has_value());
}

TEST(PeerGatewaysTest, FetchesOnlyConfiguredPeersAndAnswersEveryFetchOnce) {
  PeerGatewaysOptions o = Options();
  o.peers = {{"gb", absl::StrCat("http://127.0.0.1:", switchyard::testing::PickFreePort())}};
  auto peers = PeerGateways::Create(o);
  ASSERT_TRUE(peers.ok());
  // Not a peer: refused at once, nothing connected to.
  absl::Status unknown;
  (*peers)->Fetch("zz", "/internal/v1/x", {}, 100,
                  [&](absl::StatusOr<TrickleResponse> r) { unknown = r.status(); });
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  // A peer nobody listens for: UNAVAILABLE (a 502 for the client), within the timeout.
  std::promise<absl::Status> done;
  auto down_future = done.get_future();
  const auto start = std::chrono::steady_clock::now();
  (*peers)->Fetch("gb", "/internal/v1/x", {}, 100,
                  [&](absl::StatusOr<TrickleResponse> r) { done.set_value(r.status()); });
  ASSERT_EQ(down_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  const absl::Status down = down_future.get();
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  // After Stop every fetch is answered (none lost, none twice), later ones at once.
  std::atomic<int> answered{0};
  for (int i = 0; i < 10; ++i) {
    (*peers)->Fetch("gb", "/internal/v1/x", {}, 100,
                    [&](absl::StatusOr<TrickleResponse>) { answered++; });
  }
  (*peers)->Stop();
  EXPECT_EQ(answered.load(), 10);
  absl::Status after;
  (*peers)->Fetch("gb", "/internal/v1/x", {}, 100,
                  [&](absl::StatusOr<TrickleResponse> r) { after = r.status(); });
  EXPECT_EQ(after.code(), absl::StatusCode::kCancelled) << after;
}

using ::switchyard::testing::HostileServer;
using ::testing::HasSubstr;

// One fetch, waited for (bounded): its answer and how long it took.
struct Fetched {
  absl::StatusOr<TrickleResponse> answer = absl::UnknownError("not answered");
  std::chrono::milliseconds took{0};
};
Fetched FetchOne(PeerGateways& peers, const std::string& peer) {
  std::promise<absl::StatusOr<TrickleResponse>> done;
  auto future = done.get_future();
  const auto start = std::chrono::steady_clock::now();
  peers.Fetch(peer, "/internal/v1/x", {}, 1000,
              [&](absl::StatusOr<TrickleResponse> r) { done.set_value(std::move(r)); });
  Fetched out;
  if (future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "no answer within 20 s";
    return out;
  }
  out.answer = future.get();
  out.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return out;
}

class PeerGatewaysTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto certs = ::switchyard::testing::MakeTestCerts(dir_.path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
  }

  // An HTTPS server on `listen` presenting `cert`: /internal/v1/x answers 200 "held" to callers
  // with the secret.
  http::ServerPtr Serve(const std::filesystem::path& cert, const std::filesystem::path& key,
                        const std::string& listen = "127.0.0.1:0", bool require_client = false) {
    http::ServerOptions o;
    o.listen = listen;
    o.tls.cert_file = cert;
    o.tls.key_file = key;
    if (require_client) {
      o.tls.client_ca_file = certs_.ca;
      o.tls.require_client_cert = true;
    }
    std::map<std::string, http::Handler> routes;
    routes["/internal/v1/x"] = [](const http::Request& req, http::Reply reply) {
      auto it = req.headers.find(PeerGateways::kSecretHeader);
      if (it == req.headers.end() || it->second != kSecret) return reply(http::Error(403, "no"));
      reply(http::Json(200, "\"held\""));
    };
    auto server = http::Server::Create(std::move(o), std::move(routes));
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }

  PeerGatewaysOptions Https(std::map<std::string, std::string> peers) {
    PeerGatewaysOptions o = Options();
    o.peers = std::move(peers);
    o.tls.enabled = true;
    o.tls.ca_file = certs_.ca;
    o.timeout = absl::Milliseconds(800);
    return o;
  }

  std::shared_ptr<PeerGateways> Create(PeerGatewaysOptions o) {
    auto p = PeerGateways::Create(std::move(o));
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : nullptr;
  }

  ::switchyard::testing::TempDir dir_;
  ::switchyard::testing::TestCerts certs_;
};

TEST_F(PeerGatewaysTlsTest, CreateWantsOneSchemeAndLoadableFiles) {
  EXPECT_TRUE(PeerGateways::Create(Https({{"gb", "https://127.0.0.1:1"}})).ok());
  auto bad = [&](auto change, const std::string& says) {
    PeerGatewaysOptions o = Https({{"gb", "https://127.0.0.1:1"}});
    change(o);
    auto p = PeerGateways::Create(o);
    ASSERT_FALSE(p.ok()) << says;
    // NOT_FOUND for a file that cannot be read, as for every TLS block (common/tls.h).
    EXPECT_THAT(p.status().code(),
                ::testing::AnyOf(absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound))
        << p.status();
    EXPECT_THAT(p.status().message(), HasSubstr(says));
  };
  // An http:// peer with TLS configured (no plain fallback), https:// without it, a missing CA.
  bad([](PeerGatewaysOptions& o) { o.peers["gc"] = "http://127.0.0.1:2"; }, "state.peers.gc");
  bad([](PeerGatewaysOptions& o) { o.tls = TlsClientConfig(); }, "needs state.peer_tls");
  bad([](PeerGatewaysOptions& o) { o.tls.ca_file.clear(); }, "state.peer_tls.ca_file");
  bad([&](PeerGatewaysOptions& o) { o.tls.ca_file = dir_.path() / "missing.pem"; }, "missing.pem");
}

TEST_F(PeerGatewaysTlsTest, FetchesOverVerifiedHttps) {
  auto server = Serve(certs_.server_cert, certs_.server_key);
  ASSERT_NE(server, nullptr);
  // By IP (the certificate's IP SAN) and by name (its DNS name).
  for (const char* host : {"127.0.0.1", "localhost"}) {
    auto peers = Create(Https({{"gb", absl::StrCat("https://", host, ":", server->port())}}));
    ASSERT_NE(peers, nullptr);
    Fetched f = FetchOne(*peers, "gb");
    ASSERT_TRUE(f.answer.ok()) << host << ": " << f.answer.status();
    EXPECT_EQ(f.answer->status, 200) << host;
    EXPECT_EQ(f.answer->body, "\"held\"") << host;
  }
  // The same server over plain HTTP is no fallback: an http:// URL never reaches it.
  auto plain_peers = PeerGateways::Create([&] {
    PeerGatewaysOptions o = Options();
    o.peers = {{"gb", absl::StrCat("http://127.0.0.1:", server->port())}};
    return o;
  }());
  ASSERT_TRUE(plain_peers.ok());
  Fetched plain = FetchOne(**plain_peers, "gb");
  EXPECT_FALSE(plain.answer.ok() && plain.answer->status == 200) << "plain HTTP to an HTTPS port";
}

TEST_F(PeerGatewaysTlsTest, ACertificateOfAnotherCaIsRefused) {
  auto rogue = Serve(certs_.rogue_cert, certs_.rogue_key);
  ASSERT_NE(rogue, nullptr);
  auto peers = Create(Https({{"gb", absl::StrCat("https://127.0.0.1:", rogue->port())}}));
  ASSERT_NE(peers, nullptr);
  Fetched f = FetchOne(*peers, "gb");
  EXPECT_EQ(f.answer.status().code(), absl::StatusCode::kUnavailable) << f.answer.status();
  EXPECT_THAT(f.answer.status().message(), HasSubstr("TLS handshake failed"));
  EXPECT_THAT(f.answer.status().message(), HasSubstr("certificate verify failed"));
  // And with the rogue's CA trusted instead, our real peer is the one refused.
  auto good = Serve(certs_.server_cert, certs_.server_key);
  ASSERT_NE(good, nullptr);
  PeerGatewaysOptions o = Https({{"gb", absl::StrCat("https://127.0.0.1:", good->port())}});
  o.tls.ca_file = certs_.other_ca;
  auto wrong_ca = Create(o);
  ASSERT_NE(wrong_ca, nullptr);
  EXPECT_THAT(FetchOne(*wrong_ca, "gb").answer.status().message(),
              HasSubstr("certificate verify failed"));
}

TEST_F(PeerGatewaysTlsTest, AWrongNameIsRefused) {
  auto server = Serve(certs_.server_cert, certs_.server_key);
  ASSERT_NE(server, nullptr);
  // state.peer_tls.server_name that the certificate does not carry.
  PeerGatewaysOptions named = Https({{"gb", absl::StrCat("https://127.0.0.1:", server->port())}});
  named.tls.server_name_override = "gateway.example.com";
  auto by_name = Create(named);
  ASSERT_NE(by_name, nullptr);
  Fetched f = FetchOne(*by_name, "gb");
  EXPECT_EQ(f.answer.status().code(), absl::StatusCode::kUnavailable) << f.answer.status();
  EXPECT_THAT(f.answer.status().message(), HasSubstr("hostname mismatch"));
  // A peer address whose IP the certificate does not carry (127.0.0.2: loopback too, but not in
  // the certificate's IP SANs).
  auto other_ip = Serve(certs_.server_cert, certs_.server_key, "127.0.0.2:0");
  ASSERT_NE(other_ip, nullptr);
  auto by_ip = Create(Https({{"gb", absl::StrCat("https://127.0.0.2:", other_ip->port())}}));
  ASSERT_NE(by_ip, nullptr);
  EXPECT_THAT(FetchOne(*by_ip, "gb").answer.status().message(), HasSubstr("IP address mismatch"));
  // The same server, with server_name naming what the certificate does carry: accepted.
  PeerGatewaysOptions fixed = Https({{"gb", absl::StrCat("https://127.0.0.2:", other_ip->port())}});
  fixed.tls.server_name_override = "localhost";
  auto ok = Create(fixed);
  ASSERT_NE(ok, nullptr);
  Fetched good = FetchOne(*ok, "gb");
  ASSERT_TRUE(good.answer.ok()) << good.answer.status();
  EXPECT_EQ(good.answer->status, 200);
}

TEST_F(PeerGatewaysTlsTest, AClientCertificateIsPresentedWhenConfigured) {
  auto server = Serve(certs_.server_cert, certs_.server_key, "127.0.0.1:0", true);
  ASSERT_NE(server, nullptr);
  const std::string url = absl::StrCat("https://127.0.0.1:", server->port());
  auto without = Create(Https({{"gb", url}}));
  ASSERT_NE(without, nullptr);
  Fetched refused = FetchOne(*without, "gb");
  EXPECT_EQ(refused.answer.status().code(), absl::StatusCode::kUnavailable)
      << refused.answer.status();
  PeerGatewaysOptions o = Https({{"gb", url}});
  o.tls.cert_file = certs_.client_cert;
  o.tls.key_file = certs_.client_key;
  auto with = Create(o);
  ASSERT_NE(with, nullptr);
  Fetched f = FetchOne(*with, "gb");
  ASSERT_TRUE(f.answer.ok()) << f.answer.status();
  EXPECT_EQ(f.answer->status, 200);
}

// Hostile "peers": the handshake is bounded by the same timeout (DEADLINE_EXCEEDED: 504 for the
// client) or fails at once (UNAVAILABLE: 502), and a good peer is served meanwhile.
TEST_F(PeerGatewaysTlsTest, HostilePeersAreBoundedByTheTimeout) {
  HostileServer silent(HostileServer::Behaviour::kSilent);
  HostileServer garbage(HostileServer::Behaviour::kGarbage);
  HostileServer half(HostileServer::Behaviour::kCloseMidHandshake);
  auto good = Serve(certs_.server_cert, certs_.server_key);
  ASSERT_NE(good, nullptr);
  auto peers = Create(Https({{"gs", absl::StrCat("https://", silent.address())},
                             {"gg", absl::StrCat("https://", garbage.address())},
                             {"gh", absl::StrCat("https://", half.address())},
                             {"gb", absl::StrCat("https://127.0.0.1:", good->port())}}));
  ASSERT_NE(peers, nullptr);
  // Three silent fetches hold three of the four threads; the good peer still answers at once.
  std::vector<std::future<Fetched>> stalled;
  for (int i = 0; i < 3; ++i) {
    stalled.push_back(std::async(std::launch::async, [&] { return FetchOne(*peers, "gs"); }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  Fetched ok = FetchOne(*peers, "gb");
  ASSERT_TRUE(ok.answer.ok()) << ok.answer.status();
  EXPECT_EQ(ok.answer->status, 200);
  EXPECT_LT(ok.took, std::chrono::milliseconds(700));
  for (auto& s : stalled) {
    Fetched f = s.get();
    EXPECT_EQ(f.answer.status().code(), absl::StatusCode::kDeadlineExceeded) << f.answer.status();
    EXPECT_GE(f.took, std::chrono::milliseconds(750));
    EXPECT_LT(f.took, std::chrono::milliseconds(2000));
  }
  for (const char* peer : {"gg", "gh"}) {
    Fetched f = FetchOne(*peers, peer);
    EXPECT_EQ(f.answer.status().code(), absl::StatusCode::kUnavailable)
        << peer << ": " << f.answer.status();
    EXPECT_THAT(f.answer.status().message(), HasSubstr("TLS handshake failed")) << peer;
    EXPECT_LT(f.took, std::chrono::milliseconds(2000)) << peer;
  }
  EXPECT_GE(silent.accepted(), 3);
  EXPECT_GE(garbage.accepted(), 1);
}

}  // namespace
}  // namespace switchyard::gateway
