// TLS to Redis (state.redis.tls; gateway/state/redis_tls_tunnel.h) against a real TLS-only
// redis-server the tests start (tests/support/redis_server.h) with certificates made by
// tests/support/tls_certs.h, and against hostile "servers" of the test's own. Every wait is
// bounded in time.
#include "gateway/state/redis_tls_tunnel.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "gateway/billing/redis_quota.h"
#include "gateway/state/redis_client.h"
#include "support/hostile_server.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/tls_certs.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::HostileServer;
using ::switchyard::testing::RedisServer;
using ::switchyard::testing::RedisTls;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::TestCerts;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// A command's wall time, to check that failures are bounded.
template <typename F>
std::chrono::milliseconds Timed(F f) {
  const auto start = Clock::now();
  f();
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

class RedisTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto certs = ::switchyard::testing::MakeTestCerts(tmp_.path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *std::move(certs);
  }

  void StartRedis(bool require_client_cert, std::vector<std::string> extra_args = {}) {
    auto redis = RedisServer::StartTls(tmp_.path(), RedisTls{certs_, require_client_cert},
                                       std::move(extra_args));
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *std::move(redis);
  }

  TlsClientConfig Tls() const {
    TlsClientConfig t;
    t.enabled = true;
    t.ca_file = certs_.ca;
    return t;
  }
  TlsClientConfig MutualTls() const {
    TlsClientConfig t = Tls();
    t.cert_file = certs_.client_cert;
    t.key_file = certs_.client_key;
    return t;
  }

  RedisClientOptions Options(TlsClientConfig tls) const {
    RedisClientOptions o;
    o.address = redis_ != nullptr ? redis_->address() : "127.0.0.1:1";
    o.timeout = absl::Milliseconds(1000);  // generous: the test host may be busy
    o.retry_interval = absl::Milliseconds(100);
    o.tls = std::move(tls);
    return o;
  }

  std::unique_ptr<RedisClient> Client(RedisClientOptions options) {
    auto c = RedisClient::Create(std::move(options));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  TempDir tmp_;
  TestCerts certs_;
  std::unique_ptr<RedisServer> redis_;
};

TEST_F(RedisTlsTest, CommandsOverTls) {
  StartRedis(false, {"--requirepass", "tls-pass"});
  RedisClientOptions o = Options(Tls());
  o.password = "tls-pass";  // AUTH goes through the tunnel like any command
  auto client = Client(o);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Ping().ok()) << client->Ping();
  auto set = client->Run({"SET", "k", std::string("v\0\r\n", 4)});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, RedisReply::Type::kStatus);
  auto get = client->Run({"GET", "k"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, std::string("v\0\r\n", 4));
  // A value larger than the tunnel's 16 KiB buffers, both ways.
  const std::string big(300 * 1024, 'x');
  ASSERT_TRUE(client->Run({"SET", "big", big}).ok());
  auto big_back = client->Run({"GET", "big"});
  ASSERT_TRUE(big_back.ok()) << big_back.status();
  EXPECT_EQ(big_back->str, big);
  static const RedisScript kScript("return {KEYS[1], ARGV[1]}");
  auto eval = client->Eval(kScript, {"a"}, {"b"});
  ASSERT_TRUE(eval.ok()) << eval.status();
  ASSERT_EQ(eval->elements.size(), 2u);
  EXPECT_EQ(eval->elements[1].str, "b");
  // Commands from several threads at once, each on a connection (and tunnel) of the pool.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        auto r = client->Run({"INCR", absl::StrCat("n", t)});
        if (r.ok() && r->type == RedisReply::Type::kInteger && r->integer == i + 1) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 120);
  // The server is TLS-only: a plain client is not answered.
  RedisClientOptions plain = Options(TlsClientConfig());
  plain.timeout = absl::Milliseconds(300);
  auto plain_client = Client(plain);
  ASSERT_NE(plain_client, nullptr);
  EXPECT_FALSE(plain_client->Ping().ok());
}

// What the tunnel adds to a command on a pooled connection: the same PING on loopback to a plain
// and a TLS port of one Redis, 2000 times each (printed for docs/operations.md; the bound only
// catches a tunnel that waits on something).
TEST_F(RedisTlsTest, RoundTripCostOnLoopback) {
  const int plain_port = ::switchyard::testing::PickFreePort();
  ASSERT_NE(plain_port, 0);
  StartRedis(false, {"--port", std::to_string(plain_port)});  // the later --port wins
  auto tls = Client(Options(Tls()));
  RedisClientOptions plain_options = Options(TlsClientConfig());
  plain_options.address = absl::StrCat("127.0.0.1:", plain_port);
  auto plain = Client(plain_options);
  ASSERT_TRUE(tls != nullptr && plain != nullptr);
  auto measure = [](RedisClient* c) {
    std::vector<double> us;
    for (int i = 0; i < 2000; ++i) {
      const auto start = Clock::now();
      if (!c->Ping().ok()) return std::vector<double>();
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
    std::sort(us.begin(), us.end());
    return us;
  };
  ASSERT_TRUE(plain->Ping().ok() && tls->Ping().ok());  // connected, pooled
  const auto p = measure(plain.get());
  const auto t = measure(tls.get());
  ASSERT_EQ(p.size(), 2000u);
  ASSERT_EQ(t.size(), 2000u);
  std::printf(
      "REDIS-TLS-COST: PING p50 %.0f us, p99 %.0f us over TLS; p50 %.0f us, p99 %.0f us "
      "plain\n",
      t[1000], t[1980], p[1000], p[1980]);
  EXPECT_LT(t[1000], 5000);
}

TEST_F(RedisTlsTest, NameChecks) {
  StartRedis(false);
  // The certificate names 127.0.0.1 (IP SAN) and localhost: the address's IP matches, and so does
  // a server_name of localhost.
  TlsClientConfig named = Tls();
  named.server_name_override = "localhost";
  auto by_name = Client(Options(named));
  ASSERT_NE(by_name, nullptr);
  EXPECT_TRUE(by_name->Ping().ok()) << by_name->Ping();
  // A host name in the address: resolved (localhost may be ::1 first, where Redis does not
  // listen: the next address is tried) and checked in the certificate (DNS:localhost).
  RedisClientOptions by_host = Options(Tls());
  by_host.address = absl::StrCat("localhost:", redis_->port());
  auto resolved = Client(by_host);
  ASSERT_NE(resolved, nullptr);
  EXPECT_TRUE(resolved->Ping().ok()) << resolved->Ping();
  // A name the certificate does not carry.
  TlsClientConfig other = Tls();
  other.server_name_override = "redis.example.com";
  auto wrong = Client(Options(other));
  ASSERT_NE(wrong, nullptr);
  const absl::Status st = wrong->Ping();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_THAT(st.message(), HasSubstr("TLS handshake failed"));
  EXPECT_THAT(st.message(), HasSubstr("hostname mismatch"));
  // An IP the certificate does not carry.
  other.server_name_override = "127.0.0.2";
  auto wrong_ip = Client(Options(other));
  ASSERT_NE(wrong_ip, nullptr);
  EXPECT_THAT(wrong_ip->Ping().message(), HasSubstr("IP address mismatch"));
}

TEST_F(RedisTlsTest, WrongCaIsRefusedClearlyAndOnUnavailableApplies) {
  StartRedis(false);
  TlsClientConfig untrusted = Tls();
  untrusted.ca_file = certs_.other_ca;
  auto client = Client(Options(untrusted));
  ASSERT_NE(client, nullptr);
  absl::Status st;
  const auto took = Timed([&] { st = client->Ping(); });
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_THAT(st.message(), HasSubstr(redis_->address()));
  EXPECT_THAT(st.message(), HasSubstr("certificate verify failed"));
  EXPECT_LT(took, std::chrono::seconds(3));
  // Marked down: the next call fails at once, with the same reason.
  const absl::Status again = client->Ping();
  EXPECT_THAT(again.message(), HasSubstr("certificate verify failed"));
  EXPECT_THAT(again.message(), HasSubstr("not retried"));

  // The quotas' state.on_unavailable: "deny" refuses, "local" admits on this gateway's own.
  RedisQuotaOptions q;
  q.address = redis_->address();
  q.timeout = absl::Milliseconds(1000);
  q.lease_ttl = absl::Milliseconds(3000);
  q.tls = untrusted;
  q.on_unavailable = QuotaOnUnavailable::kDeny;
  auto deny = RedisQuotaBackend::Create(q);
  ASSERT_TRUE(deny.ok()) << deny.status();
  QuotaLimits limits;
  limits.max_concurrent = 1;
  auto denied = (*deny)->Acquire("app", limits);
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kUnavailable) << denied.status();
  q.on_unavailable = QuotaOnUnavailable::kLocal;
  auto local = RedisQuotaBackend::Create(q);
  ASSERT_TRUE(local.ok()) << local.status();
  auto admitted = (*local)->Acquire("app", limits);
  EXPECT_TRUE(admitted.ok()) << admitted.status();
  EXPECT_EQ((*local)->fallbacks(), 1u);
}

TEST_F(RedisTlsTest, QuotaLeaseRoundTripOverTls) {
  StartRedis(true);
  RedisQuotaOptions q;
  q.address = redis_->address();
  q.key_prefix = "sytls:";
  q.timeout = absl::Milliseconds(1000);
  q.lease_ttl = absl::Milliseconds(3000);
  q.tls = MutualTls();
  q.on_unavailable = QuotaOnUnavailable::kDeny;  // nothing admitted without Redis
  // Two backends: two gateways sharing one key's concurrency through the TLS Redis.
  auto a = RedisQuotaBackend::Create(q);
  auto b = RedisQuotaBackend::Create(q);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Ping().ok()) << (*a)->Ping();
  QuotaLimits limits;
  limits.max_concurrent = 1;
  auto first = (*a)->Acquire("app", limits);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = (*b)->Acquire("app", limits);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  first->reset();  // the lease given back in Redis
  auto third = (*b)->Acquire("app", limits);
  EXPECT_TRUE(third.ok()) << third.status();
  EXPECT_EQ((*a)->fallbacks() + (*b)->fallbacks(), 0u);
  auto keys = Client(Options(MutualTls()))->Run({"KEYS", "sytls:*"});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_FALSE(keys->elements.empty());
}

TEST_F(RedisTlsTest, ClientCertificateRequired) {
  StartRedis(true);
  auto with_cert = Client(Options(MutualTls()));
  ASSERT_NE(with_cert, nullptr);
  EXPECT_TRUE(with_cert->Ping().ok()) << with_cert->Ping();
  // Without one the server refuses: in the handshake (TLS 1.2), or with an alert right after it
  // (TLS 1.3, where the client finishes first), which hiredis sees as the connection closed.
  auto without = Client(Options(Tls()));
  ASSERT_NE(without, nullptr);
  absl::Status st;
  const auto took = Timed([&] { st = without->Ping(); });
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_THAT(st.message(), HasSubstr(redis_->address()));
  EXPECT_THAT(st.message(), HasSubstr("certificate required")) << st;
  EXPECT_LT(took, std::chrono::seconds(3));
  // A certificate from a CA the server does not trust is no better.
  TlsClientConfig rogue = Tls();
  rogue.cert_file = certs_.rogue_cert;
  rogue.key_file = certs_.rogue_key;
  auto rogue_client = Client(Options(rogue));
  ASSERT_NE(rogue_client, nullptr);
  EXPECT_EQ(rogue_client->Ping().code(), absl::StatusCode::kUnavailable);
}

TEST_F(RedisTlsTest, ReconnectsAfterServerRestart) {
  StartRedis(false);
  auto client = Client(Options(Tls()));
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Run({"SET", "k", "1"}).ok());
  // Pooled connections (and their tunnels) die with the server.
  ASSERT_TRUE(redis_->Restart().ok()) << redis_->Log();
  absl::Status st = absl::UnknownError("not yet");
  const auto start = Clock::now();
  int tries = 0;
  while (Clock::now() - start < std::chrono::seconds(5)) {
    ++tries;
    st = client->Ping();
    if (st.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(st.ok()) << st;
  // The dead pooled connection is retried once on a new one, within the same call.
  EXPECT_EQ(tries, 1);
  // Down, then back: marked down while it is gone, then reconnects.
  redis_->Stop();
  EXPECT_EQ(client->Ping().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(redis_->Restart().ok()) << redis_->Log();
  st = absl::UnknownError("not yet");
  while (Clock::now() - start < std::chrono::seconds(10)) {
    st = client->Ping();
    if (st.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(st.ok()) << st;
}

TEST_F(RedisTlsTest, CommandTimeoutHoldsOverTheTunnel) {
  // A server that is connected but does not answer in time: hiredis's own timeout on its end of
  // the socketpair must still apply. DEBUG SLEEP holds single-threaded Redis.
  StartRedis(false, {"--enable-debug-command", "yes"});
  RedisClientOptions slow_options = Options(Tls());
  slow_options.timeout = absl::Seconds(5);
  auto sleeper = Client(slow_options);
  RedisClientOptions quick = Options(Tls());
  auto client = Client(quick);
  ASSERT_TRUE(sleeper != nullptr && client != nullptr);
  ASSERT_TRUE(client->Ping().ok());  // connected and pooled before Redis sleeps
  std::thread sleep([&] { EXPECT_TRUE(sleeper->Run({"DEBUG", "SLEEP", "2.5"}).ok()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  absl::Status st;
  const auto took = Timed([&] { st = client->Ping(); });
  sleep.join();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_THAT(st.message(), HasSubstr("no answer within"));
  EXPECT_GE(took, std::chrono::milliseconds(900));
  EXPECT_LT(took, std::chrono::milliseconds(2200));
}

TEST_F(RedisTlsTest, HostileServersFailBounded) {
  for (auto behaviour :
       {HostileServer::Behaviour::kGarbage, HostileServer::Behaviour::kCloseAtOnce,
        HostileServer::Behaviour::kCloseMidHandshake, HostileServer::Behaviour::kSilent}) {
    SCOPED_TRACE(static_cast<int>(behaviour));
    HostileServer server(behaviour);
    RedisClientOptions o = Options(Tls());
    o.address = server.address();
    o.timeout = absl::Milliseconds(400);
    auto client = Client(o);
    ASSERT_NE(client, nullptr);
    for (int i = 0; i < 3; ++i) {
      absl::Status st;
      const auto took = Timed([&] { st = client->Ping(); });
      EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
      EXPECT_THAT(st.message(), HasSubstr(server.address()));
      // The handshake's own timer bounds it: 400 ms and some scheduling.
      EXPECT_LT(took, std::chrono::milliseconds(1400)) << st;
      if (behaviour == HostileServer::Behaviour::kSilent && i == 0) {
        EXPECT_THAT(st.message(), HasSubstr("no TLS connection within"));
      }
      if (behaviour == HostileServer::Behaviour::kGarbage && i == 0) {
        EXPECT_THAT(st.message(), HasSubstr("TLS handshake failed"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(120));  // past retry_interval
    }
    EXPECT_GE(server.accepted(), 1);
  }
}

TEST_F(RedisTlsTest, TunnelsCloseBothWays) {
  StartRedis(false);
  auto tunnels = RedisTlsTunnels::Create(Tls(), "127.0.0.1", redis_->port(), redis_->address(),
                                         "state.redis.tls");
  ASSERT_TRUE(tunnels.ok()) << tunnels.status();
  auto fd = (*tunnels)->Open(absl::Seconds(2));
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_EQ((*tunnels)->open_tunnels(), 1);
  // Plain RESP on our end comes back from the TLS server.
  const std::string ping = "PING\r\n";
  ASSERT_EQ(::send(*fd, ping.data(), ping.size(), MSG_NOSIGNAL), 6);
  pollfd p{*fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1);
  char buf[64];
  ASSERT_EQ(::recv(*fd, buf, sizeof(buf), 0), 7);
  EXPECT_EQ(std::string(buf, 7), "+PONG\r\n");
  // Our end closed (hiredis freed its context): the tunnel goes.
  ::close(*fd);
  const auto start = Clock::now();
  while ((*tunnels)->open_tunnels() != 0 && Clock::now() - start < std::chrono::seconds(3)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*tunnels)->open_tunnels(), 0);
  // The server gone: our end sees the end of the stream.
  auto fd2 = (*tunnels)->Open(absl::Seconds(2));
  ASSERT_TRUE(fd2.ok()) << fd2.status();
  redis_->Stop();
  p = {*fd2, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1);
  EXPECT_EQ(::recv(*fd2, buf, sizeof(buf), 0), 0);
  ::close(*fd2);
  // The tunnels destroyed with one open: it is closed (our end sees EOF) and the thread joined.
  ASSERT_TRUE(redis_->Restart().ok());
  auto fd3 = (*tunnels)->Open(absl::Seconds(2));
  ASSERT_TRUE(fd3.ok()) << fd3.status();
  tunnels->reset();
  p = {*fd3, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1);
  EXPECT_EQ(::recv(*fd3, buf, sizeof(buf), 0), 0);
  ::close(*fd3);
}

TEST_F(RedisTlsTest, CreateChecksTheFiles) {
  auto refused = [&](TlsClientConfig tls, const std::string& field, const std::string& file) {
    RedisClientOptions o = Options(std::move(tls));
    auto c = RedisClient::Create(o);
    ASSERT_FALSE(c.ok()) << field;
    // NOT_FOUND for a file that cannot be read (common/tls.h's ReadPemFile).
    EXPECT_THAT(c.status().code(),
                ::testing::AnyOf(absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound))
        << c.status();
    EXPECT_THAT(c.status().message(), HasSubstr(field));
    EXPECT_THAT(c.status().message(), HasSubstr(file));
  };
  TlsClientConfig t = Tls();
  t.ca_file.clear();
  refused(t, "state.redis.tls.ca_file", "required");
  t.ca_file = tmp_.path() / "none.pem";
  refused(t, "state.redis.tls.ca_file", "none.pem");
  ::switchyard::testing::WriteFile(tmp_.path() / "junk.pem", "junk");
  t.ca_file = tmp_.path() / "junk.pem";
  refused(t, "state.redis.tls.ca_file", "junk.pem");
  t = MutualTls();
  t.key_file = certs_.server_key;
  refused(t, "state.redis.tls.key_file", "does not match");
  t = MutualTls();
  t.key_file.clear();
  refused(t, "state.redis.tls", "go together");
}

}  // namespace
}  // namespace switchyard::gateway
