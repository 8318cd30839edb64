// PeerGateways (gateway/api/peer_gateways.h): who holds an id, the internal endpoint's secret
// check, and the fetch pool's bounds, without a network (a closed loopback port at most).
#include "gateway/api/peer_gateways.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "support/redis_server.h"

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

}  // namespace
}  // namespace switchyard::gateway
