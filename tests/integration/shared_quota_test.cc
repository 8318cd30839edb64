// Three real gateways share one API key's concurrency quota through a real redis-server
// (config state.redis; docs/operations.md "Several gateways"). No orchestrator is needed: an
// open TranscodeStream holds its key's slot until the client closes it, so the test decides how
// many calls run at once. Every wait is bounded. SharedQuotaTlsTest: the same through a TLS-only
// Redis that requires client certificates (state.redis.tls).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "gateway/billing/api_keys.h"
#include "gateway/state/redis_client.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/tls_certs.h"

namespace switchyard::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kKey[] = "sy_shared_quota_test_key";
constexpr char kRatedKey[] = "sy_shared_quota_test_rated_key";
constexpr double kRate = 20, kBurst = 2;
constexpr int kQuota = 4;
constexpr int kLeaseTtlMs = 1500;

class SharedQuotaTest : public ::testing::Test {
 protected:
  // Whether Redis is TLS-only, with client certificates required (SharedQuotaTlsTest).
  virtual bool Tls() const { return false; }

  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RedisServer>> redis;
    nlohmann::json redis_config = {
        {"timeout_ms", 200}, {"lease_ttl_ms", kLeaseTtlMs}, {"tls", false}};
    if (Tls()) {
      std::filesystem::create_directories(redis_dir_.path() / "certs");
      auto certs = MakeTestCerts(redis_dir_.path() / "certs");
      ASSERT_TRUE(certs.ok()) << certs.status();
      redis = RedisServer::StartTls(redis_dir_.path(), RedisTls{*certs, true});
      tls_.enabled = true;
      tls_.ca_file = certs->ca;
      tls_.cert_file = certs->client_cert;
      tls_.key_file = certs->client_key;
      redis_config["tls"] = {{"ca_file", certs->ca.string()},
                             {"cert_file", certs->client_cert.string()},
                             {"key_file", certs->client_key.string()}};
      // Room for the handshake on a busy test host (loopback's takes a few ms).
      redis_config["timeout_ms"] = 400;
    } else {
      redis = RedisServer::Start(redis_dir_.path());
    }
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *std::move(redis);
    redis_config["address"] = redis_->address();
    const auto keys_file = redis_dir_.path() / "keys.json";
    WriteFile(keys_file, nlohmann::json({{"keys",
                                          {{{"id", "app"},
                                            {"sha256", gateway::Sha256Hex(kKey)},
                                            {"rate_per_second", 0},
                                            {"max_concurrent", kQuota}},
                                           {{"id", "rated"},
                                            {"sha256", gateway::Sha256Hex(kRatedKey)},
                                            {"rate_per_second", kRate},
                                            {"burst", kBurst}}}}})
                             .dump());
    ClusterOptions options;
    options.orchestrators = 0;
    options.extra_gateways = 2;
    options.api_key = kKey;
    options.gateway_config = {{"api_keys_file", keys_file.string()},
                              {"state", {{"redis", redis_config}, {"on_unavailable", "deny"}}}};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << cluster_.Logs();
    stubs_.push_back(cluster_.GatewayStub());
    stubs_.push_back(cluster_.ExtraGatewayStub(0));
    stubs_.push_back(cluster_.ExtraGatewayStub(1));
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key = kKey) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", key));
    return ctx;
  }

  // A call that needs a token and a slot for a moment: OK, or why not.
  grpc::Status Probe(size_t gateway, const std::string& key = kKey) {
    auto ctx = Ctx(key);
    v1::ListCapabilitiesRequest req;
    v1::ListCapabilitiesResponse resp;
    return stubs_.at(gateway)->ListCapabilities(ctx.get(), req, &resp);
  }

  // An open stream: holds a slot (if admitted) until Close().
  struct Stream {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::TranscodeRequest, v1::TranscodeStreamResponse>> rw;
    grpc::Status Close() {
      rw->WritesDone();
      return rw->Finish();
    }
  };
  Stream Open(size_t gateway) {
    Stream s;
    s.ctx = Ctx();
    s.rw = stubs_.at(gateway)->TranscodeStream(s.ctx.get());
    return s;
  }

  // Calls of kKey in flight as Redis counts them (its leases), read from Redis itself; -1 when it
  // cannot be read.
  int LeasesInRedis() {
    gateway::RedisClientOptions options;
    options.address = redis_->address();
    options.timeout = absl::Seconds(2);
    options.tls = tls_;
    auto client = gateway::RedisClient::Create(options);
    if (!client.ok()) return -1;
    auto reply = (*client)->Run({"ZCARD", "switchyard:quota:{app}:leases"});
    if (!reply.ok() || reply->type != gateway::RedisReply::Type::kInteger) return -1;
    return static_cast<int>(reply->integer);
  }

  // Waits (at most 10 s) until Redis holds `n` leases of kKey. Streams are admitted after Open()
  // returns: a probe sent before then would take a slot itself and could crowd a stream out.
  bool AwaitLeasesInRedis(int n) {
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < until) {
      if (LeasesInRedis() == n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // Twelve streams at once, four on each gateway: without sharing each would admit four.
  void ConcurrencyQuotaHolds();
  // Redis stopped: calls refused (on_unavailable "deny"); Redis back: calls admitted again.
  void RedisDownRefusesThenRecovers();

  TempDir redis_dir_;
  std::unique_ptr<RedisServer> redis_;
  TlsClientConfig tls_;  // the test's own client, as the gateways
  LocalCluster cluster_;
  std::vector<std::unique_ptr<v1::Gateway::Stub>> stubs_;
};

class SharedQuotaTlsTest : public SharedQuotaTest {
 protected:
  bool Tls() const override { return true; }
};

TEST_F(SharedQuotaTest, ConcurrencyQuotaHoldsAcrossThreeGateways) { ConcurrencyQuotaHolds(); }

TEST_F(SharedQuotaTlsTest, ConcurrencyQuotaHoldsAcrossThreeGatewaysOverTls) {
  ConcurrencyQuotaHolds();
  EXPECT_TRUE(absl::StrContains(cluster_.Logs(), "API key quotas shared through Redis at"))
      << cluster_.Logs();
}

void SharedQuotaTest::ConcurrencyQuotaHolds() {
  std::vector<Stream> streams;
  for (int round = 0; round < kQuota; ++round) {
    for (size_t g = 0; g < stubs_.size(); ++g) streams.push_back(Open(g));
  }
  ASSERT_TRUE(AwaitLeasesInRedis(kQuota)) << LeasesInRedis() << cluster_.Logs();
  // Every gateway has decided once a fresh call is refused on each of them (bounded wait).
  for (size_t g = 0; g < stubs_.size(); ++g) {
    grpc::Status probe;
    for (int i = 0; i < 100; ++i) {
      probe = Probe(g);
      if (probe.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_EQ(probe.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << "gateway " << g << ": " << probe.error_message();
    EXPECT_TRUE(absl::StrContains(probe.error_message(), "concurrency quota: 4 of 4"))
        << probe.error_message();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the last streams' verdicts
  int admitted = 0, refused = 0, other = 0;
  for (auto& s : streams) {
    const grpc::Status st = s.Close();
    if (st.ok()) {
      admitted++;
    } else if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      refused++;
    } else {
      other++;
      ADD_FAILURE() << GrpcCodeName(st.error_code()) << ": " << st.error_message();
    }
  }
  std::printf("SHARED-QUOTA%s: 12 streams on 3 gateways, quota %d: %d admitted, %d refused\n",
              Tls() ? " (TLS)" : "", kQuota, admitted, refused);
  EXPECT_EQ(admitted, kQuota) << cluster_.Logs();
  EXPECT_EQ(refused, 12 - kQuota);
  // All slots are back at once (given back, not expired).
  for (size_t g = 0; g < stubs_.size(); ++g) {
    const grpc::Status st = Probe(g);
    EXPECT_TRUE(st.ok()) << "gateway " << g << ": " << st.error_message();
  }
}

// A key limited to 20 calls/s (burst 2), called on all three gateways at once: together they
// admit rate x elapsed + burst, within 5%.
TEST_F(SharedQuotaTest, RateLimitHoldsAcrossThreeGateways) {
  std::atomic<int> granted{0}, refused{0}, other{0};
  const auto window = std::chrono::milliseconds(3000);
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (size_t g = 0; g < stubs_.size(); ++g) {
    threads.emplace_back([&, g] {
      for (int i = 0; i < 5000 && Clock::now() - start < window; ++i) {
        const grpc::Status st = Probe(g, kRatedKey);
        if (st.ok()) {
          granted++;
        } else if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
                   absl::StrContains(st.error_message(), "rate limit")) {
          refused++;
        } else {
          other++;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double expected = kBurst + kRate * elapsed;
  std::printf(
      "SHARED-QUOTA: rate %.0f/s burst %.0f on 3 gateways over %.2f s: %d granted, %.1f "
      "expected (%+.1f%%), %d refused\n",
      kRate, kBurst, elapsed, granted.load(), expected,
      100.0 * (granted.load() - expected) / expected, refused.load());
  EXPECT_EQ(other.load(), 0) << cluster_.Logs();
  EXPECT_GT(refused.load(), 0);
  EXPECT_LE(granted.load(), expected * 1.05);
  EXPECT_GE(granted.load(), expected * 0.95);
}

TEST_F(SharedQuotaTest, KilledGatewaysSlotsFreeAfterLeaseTtl) {
  // The first gateway takes the whole quota, then dies with kill -9.
  std::vector<Stream> held;
  for (int i = 0; i < kQuota; ++i) held.push_back(Open(0));
  ASSERT_TRUE(AwaitLeasesInRedis(kQuota)) << LeasesInRedis() << cluster_.Logs();
  grpc::Status full;
  for (int i = 0; i < 100; ++i) {
    full = Probe(1);
    if (full.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << full.error_message() << cluster_.Logs();
  cluster_.gateway().Kill();
  const auto killed = Clock::now();
  grpc::Status freed;
  for (int attempt = 0; Clock::now() - killed < std::chrono::seconds(15); ++attempt) {
    freed = Probe(1 + attempt % 2);  // either survivor
    if (freed.ok()) break;
    ASSERT_EQ(freed.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << freed.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count();
  ASSERT_TRUE(freed.ok()) << "slots of the killed gateway not freed: " << freed.error_message()
                          << cluster_.Logs();
  std::printf(
      "SHARED-QUOTA: a gateway killed holding %d slots: free again on the others after "
      "%lld ms (lease_ttl_ms %d)\n",
      kQuota, static_cast<long long>(waited), kLeaseTtlMs);
  EXPECT_GE(waited, kLeaseTtlMs / 2);  // they expired; they were not given back
  for (auto& s : held) s.ctx->TryCancel();
}

TEST_F(SharedQuotaTest, RedisDownWithDenyRefusesThenRecovers) { RedisDownRefusesThenRecovers(); }

// The gateways' TLS connections die with Redis; they make new ones when it is back.
TEST_F(SharedQuotaTlsTest, RedisDownWithDenyRefusesThenRecoversOverTls) {
  RedisDownRefusesThenRecovers();
}

void SharedQuotaTest::RedisDownRefusesThenRecovers() {
  ASSERT_TRUE(Probe(1).ok()) << cluster_.Logs();
  redis_->Stop();
  grpc::Status down;
  for (int i = 0; i < 50; ++i) {
    down = Probe(1);
    if (down.error_code() == grpc::StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE) << down.error_message();
  EXPECT_TRUE(absl::StrContains(down.error_message(), "Redis")) << down.error_message();
  ASSERT_TRUE(redis_->Restart().ok());
  grpc::Status back;
  for (int i = 0; i < 100; ++i) {
    back = Probe(2);
    if (back.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(back.ok()) << back.error_message() << cluster_.Logs();
}

}  // namespace
}  // namespace switchyard::testing
