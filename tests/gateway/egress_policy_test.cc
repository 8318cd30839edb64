// The egress policy of live-video URLs (gateway/egress_policy.h) and its config block.
#include "gateway/egress_policy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gateway/gateway_config.h"

namespace switchyard::gateway {
namespace {

namespace ip = boost::asio::ip;

std::string Kind(const std::string& address) {
  return std::string(RefusedAddressKind(ip::make_address(address)));
}

TEST(EgressPolicyTest, ClassifiesAddresses) {
  struct Case {
    const char* address;
    const char* kind;
  };
  const std::vector<Case> cases = {
      {"127.0.0.1", "a loopback address"},
      {"127.255.1.2", "a loopback address"},
      {"::1", "a loopback address"},
      {"::ffff:127.0.0.1", "a loopback address"},  // IPv4-mapped
      {"::127.0.0.1", "a loopback address"},       // IPv4-compatible
      {"64:ff9b::7f00:1", "a loopback address"},   // NAT64
      {"2002:7f00:1::", "a loopback address"},     // 6to4
      {"169.254.169.254", "a link-local address"},
      {"fe80::1", "a link-local address"},
      {"febf::1", "a link-local address"},
      {"::ffff:169.254.169.254", "a link-local address"},
      {"10.0.0.1", "a private address"},
      {"172.16.0.1", "a private address"},
      {"172.31.255.255", "a private address"},
      {"192.168.1.1", "a private address"},
      {"fc00::1", "a private address"},
      {"fd12:3456::1", "a private address"},
      {"fec0::1", "a private address"},
      {"::ffff:10.1.2.3", "a private address"},
      {"100.64.0.1", "a private (carrier-grade NAT) address"},
      {"100.127.255.254", "a private (carrier-grade NAT) address"},
      {"0.0.0.0", "an unspecified address"},
      {"0.1.2.3", "an unspecified address"},
      {"::", "an unspecified address"},
      {"224.0.0.1", "a multicast address"},
      {"239.255.255.250", "a multicast address"},
      {"ff02::1", "a multicast address"},
      {"255.255.255.255", "a broadcast address"},
      {"240.0.0.1", "a reserved address"},
      {"198.18.0.1", "a reserved address"},
      // Public unicast: allowed by default.
      {"8.8.8.8", ""},
      {"172.32.0.1", ""},
      {"172.15.255.255", ""},
      {"100.128.0.1", ""},
      {"192.0.2.1", ""},
      {"2001:4860:4860::8888", ""},
      {"::ffff:8.8.8.8", ""},
      {"64:ff9b::808:808", ""},
  };
  for (const auto& c : cases) EXPECT_EQ(Kind(c.address), c.kind) << c.address;
}

TEST(EgressPolicyTest, DefaultRefusesInternalAddressesAndNamesTheKind) {
  EgressPolicy policy;
  absl::Status st = policy.CheckResolved("127.0.0.1", ip::make_address("127.0.0.1"));
  EXPECT_TRUE(absl::IsPermissionDenied(st)) << st;
  EXPECT_EQ(st.message(),
            "host 127.0.0.1 resolves to a loopback address, which live_video.allowed_hosts does "
            "not allow");
  st = policy.CheckResolved("db.internal", ip::make_address("10.2.3.4"));
  EXPECT_TRUE(absl::IsPermissionDenied(st)) << st;
  // The kind of address, never the address: callers must not map the operator's DNS.
  EXPECT_FALSE(absl::StrContains(st.message(), "10.2.3.4")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "db.internal resolves to a private address")) << st;
  EXPECT_TRUE(policy.CheckResolved("example.com", ip::make_address("93.184.216.34")).ok());
}

TEST(EgressPolicyTest, AllowlistOpensCidrsAndNames) {
  auto policy = EgressPolicy::Create(
      {"127.0.0.1/32", "10.1.0.0/16", "fd00::/8", "::1", "Media.Internal.", "192.168.7.7"});
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_TRUE(policy->CheckResolved("127.0.0.1", ip::make_address("127.0.0.1")).ok());
  EXPECT_TRUE(policy->CheckResolved("x", ip::make_address("::ffff:127.0.0.1")).ok());  // mapped
  EXPECT_FALSE(policy->CheckResolved("127.0.0.2", ip::make_address("127.0.0.2")).ok());
  EXPECT_TRUE(policy->CheckResolved("a", ip::make_address("10.1.255.3")).ok());
  EXPECT_FALSE(policy->CheckResolved("a", ip::make_address("10.2.0.1")).ok());
  EXPECT_TRUE(policy->CheckResolved("a", ip::make_address("fd99::1")).ok());
  EXPECT_FALSE(policy->CheckResolved("a", ip::make_address("fc00::1")).ok());
  EXPECT_TRUE(policy->CheckResolved("a", ip::make_address("::1")).ok());
  EXPECT_TRUE(policy->CheckResolved("a", ip::make_address("192.168.7.7")).ok());
  EXPECT_FALSE(policy->CheckResolved("a", ip::make_address("192.168.7.8")).ok());
  // A name entry trusts the name whatever it resolves to (case and a trailing dot aside).
  EXPECT_TRUE(policy->CheckResolved("media.internal", ip::make_address("10.9.9.9")).ok());
  EXPECT_TRUE(policy->CheckResolved("MEDIA.internal.", ip::make_address("169.254.1.1")).ok());
  EXPECT_FALSE(policy->CheckResolved("media.internal.evil", ip::make_address("10.9.9.9")).ok());
  EXPECT_TRUE(policy->HostNameAllowed("media.internal"));
  EXPECT_FALSE(policy->HostNameAllowed("other"));
}

TEST(EgressPolicyTest, BadAllowlistEntriesAreNamed) {
  for (const std::string bad :
       {"", "10.0.0.0/33", "::/129", "10.0.0.0/x", "name/8", "host name", "http://x/"}) {
    auto policy = EgressPolicy::Create({"ok.example", bad});
    ASSERT_FALSE(policy.ok()) << bad;
    EXPECT_TRUE(absl::StrContains(policy.status().message(), "allowed_hosts[1]"))
        << policy.status();
  }
}

TEST(EgressPolicyTest, RequestTimeCheckResolvesLiteralsAndNames) {
  EgressPolicy policy;
  // Literals in every form connect() would take, checked without DNS.
  for (const char* host : {"127.0.0.1", "127.1", "2130706433", "0x7f.0.0.1", "::1",
                           "::ffff:127.0.0.1", "0.0.0.0", "169.254.169.254", "10.0.0.1"}) {
    absl::Status st = policy.CheckHost(host, absl::ZeroDuration());
    EXPECT_TRUE(absl::IsPermissionDenied(st)) << host << ": " << st;
  }
  EXPECT_TRUE(policy.CheckHost("192.0.2.1", absl::ZeroDuration()).ok());
  // "localhost" resolves (from /etc/hosts) at once to loopback.
  absl::Status st = policy.CheckHost("localhost", absl::Seconds(5));
  EXPECT_TRUE(absl::IsPermissionDenied(st)) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "localhost resolves to a loopback address")) << st;
  // Names are left to the connection when no time is given; a name that does not resolve passes
  // here (the connection fails on it later).
  EXPECT_TRUE(policy.CheckHost("localhost", absl::ZeroDuration()).ok());
  EXPECT_TRUE(policy.CheckHost("no-such-host.invalid", absl::Seconds(5)).ok());
  auto allowed = EgressPolicy::Create({"localhost"});
  ASSERT_TRUE(allowed.ok());
  EXPECT_TRUE(allowed->CheckHost("localhost", absl::Seconds(5)).ok());
  EXPECT_FALSE(allowed->CheckHost("127.0.0.1", absl::Seconds(5)).ok());  // the name, not the IP
}

TEST(EgressPolicyTest, GatewayConfigLiveVideoBlock) {
  auto c = ParseGatewayConfig("{}", "gw.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->live_video.egress.allowed_hosts().empty());
  EXPECT_EQ(c->live_video.max_sessions, 64);
  EXPECT_EQ(c->live_video.max_sessions_per_key, 8);
  c = ParseGatewayConfig(
      R"({"live_video": {"allowed_hosts": ["127.0.0.1/32", "media.internal"],
                         "max_sessions": 10, "max_sessions_per_key": 2}})",
      "gw.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->live_video.max_sessions, 10);
  EXPECT_EQ(c->live_video.max_sessions_per_key, 2);
  EXPECT_TRUE(c->live_video.egress.CheckResolved("x", ip::make_address("127.0.0.1")).ok());
  EXPECT_TRUE(c->live_video.egress.HostNameAllowed("media.internal"));

  auto bad = ParseGatewayConfig(R"({"live_video": {"allowed_hosts": ["10.0.0.0/40"]}})", "gw.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "gw.json: live_video: allowed_hosts[0]"))
      << bad.status();
  bad = ParseGatewayConfig(R"({"live_video": {"allowed_host": []}})", "gw.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "unknown field")) << bad.status();
  bad = ParseGatewayConfig(R"({"live_video": {"max_sessions_per_key": 0}})", "gw.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "max_sessions_per_key")) << bad.status();
  bad = ParseGatewayConfig(R"({"live_video": {"allowed_hosts": "127.0.0.1"}})", "gw.json");
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace switchyard::gateway
