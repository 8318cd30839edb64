// API key quotas shared through Redis (gateway/billing/redis_quota.h), against a real
// redis-server started by the test on a free loopback port (tests/support/redis_server.h). Two
// backends sharing one Redis stand for two gateways. Every loop is bounded in count and time.
#include "gateway/billing/redis_quota.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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
#include <hiredis/hiredis.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "gateway/billing/api_keys.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/redis_test_fixture.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::RedisServer;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr char kKey[] = "sy_test_key";

// A Redis of the test's own, a key prefix per test (support/redis_test_fixture.h).
class RedisQuotaTest : public ::switchyard::testing::RedisTest {
 protected:
  RedisQuotaOptions Options() const {
    RedisQuotaOptions o;
    o.address = redis_->address();
    o.key_prefix = prefix_;
    o.timeout = absl::Milliseconds(500);  // generous: the test host may be busy
    o.lease_ttl = absl::Milliseconds(1500);
    o.retry_interval = absl::Milliseconds(100);
    return o;
  }

  // A store whose quotas live in Redis, with one key "app".
  std::unique_ptr<ApiKeyStore> Store(const RedisQuotaOptions& options, double rate, double burst,
                                     int max_concurrent, Metrics* metrics = nullptr,
                                     RedisQuotaBackend** backend_out = nullptr) {
    auto backend = RedisQuotaBackend::Create(options, metrics);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return nullptr;
    if (backend_out != nullptr) *backend_out = backend->get();
    auto store = std::make_unique<ApiKeyStore>(QuotaBackendPtr(*std::move(backend)));
    ApiKeyEntry e;
    e.id = "app";
    e.sha256 = Sha256Hex(kKey);
    e.rate_per_second = rate;
    e.burst = burst;
    e.max_concurrent = max_concurrent;
    store->Replace({e});
    return store;
  }
};

TEST_F(RedisQuotaTest, CreateValidatesOptions) {
  auto bad = [](RedisQuotaOptions o, const std::string& want) {
    auto b = RedisQuotaBackend::Create(std::move(o));
    ASSERT_FALSE(b.ok()) << want;
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(b.status().message(), HasSubstr(want));
  };
  RedisQuotaOptions o = Options();
  o.address = "";
  bad(o, "address");
  o.address = "nohost";
  bad(o, "address");
  o.address = "h:0";
  bad(o, "address");
  o = Options();
  o.timeout = absl::ZeroDuration();
  bad(o, "timeout_ms");
  o = Options();
  o.lease_ttl = absl::Milliseconds(50);
  bad(o, "lease_ttl_ms");
}

TEST_F(RedisQuotaTest, PingAndAdmitInOrder) {
  RedisQuotaBackend* backend = nullptr;
  auto store = Store(Options(), 0, 1, 2, nullptr, &backend);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(backend->Ping().ok()) << backend->Ping();
  EXPECT_EQ(store->Admit("").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(store->Admit("wrong").status().code(), absl::StatusCode::kUnauthenticated);
  auto a = store->Admit(kKey);
  auto b = store->Admit(kKey);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(store->InFlight("app"), 2);
  auto c = store->Admit(kKey);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("concurrency quota: 2 of 2"));
  a->reset();
  EXPECT_EQ(store->InFlight("app"), 1);
  auto d = store->Admit(kKey);
  EXPECT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(backend->fallbacks(), 0u);
}

// A slot given back is free for the next call at once: the release is sent without waiting for
// Redis's answer (RedisClient::Send) and may reach Redis after the next admission (another
// connection), which therefore removes it again (same gateway) or is tried once more (another
// gateway). One key with one slot, calls one after another through one gateway and alternating
// between two, and four threads sharing a key with four slots: never refused.
TEST_F(RedisQuotaTest, AGivenBackSlotIsFreeForTheNextCallAtOnce) {
  RedisQuotaBackend* backend = nullptr;
  auto one = Store(Options(), 0, 1, 1, nullptr, &backend);
  ASSERT_TRUE(one);
  int refused = 0;
  for (int i = 0; i < 300; ++i) {
    auto lease = one->Admit(kKey);
    if (!lease.ok()) {
      refused++;
      continue;
    }
    lease->reset();
  }
  EXPECT_EQ(refused, 0);

  // Through another gateway: the release may reach Redis after the other gateway's admission
  // (another connection), which is then tried once more (Redis has read the release by then).
  auto other = Store(Options(), 0, 1, 1);
  ASSERT_TRUE(other);
  int refused_elsewhere = 0;
  for (int i = 0; i < 300; ++i) {
    auto lease = (i % 2 == 0 ? one : other)->Admit(kKey);
    if (!lease.ok()) {
      refused_elsewhere++;
      continue;
    }
    lease->reset();
  }
  EXPECT_EQ(refused_elsewhere, 0);

  auto four = Store(Options(), 0, 1, 4, nullptr, &backend);
  ASSERT_TRUE(four);
  std::atomic<int> refused_four{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 150; ++i) {
        auto lease = four->Admit(kKey);
        if (!lease.ok()) {
          refused_four++;
          continue;
        }
        lease->reset();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(refused_four.load(), 0);
  // Every release is answered by the time the next commands settle their connections.
  for (int i = 0; i < 20 && backend->PendingReleases() > 0; ++i) {  // bounded: 20 admissions
    auto lease = four->Admit(kKey);
    ASSERT_TRUE(lease.ok()) << lease.status();
  }
  EXPECT_LE(backend->PendingReleases(), 1u);  // the last release's answer may still be owed
}

// What a shared quota check costs per call on loopback: admission (a round trip) and release (sent
// without waiting),
// against the in-memory backend in the same run. Printed, not asserted (timings on a shared
// host); issue 22's target is under 0.5 ms p50 added per job.
TEST_F(RedisQuotaTest, AdmissionCostOnLoopback) {
  auto shared = Store(Options(), 0, 1, 64);
  ASSERT_TRUE(shared);
  ApiKeyStore local;
  {
    ApiKeyEntry e;
    e.id = "app";
    e.sha256 = Sha256Hex(kKey);
    e.max_concurrent = 64;
    local.Replace({e});
  }
  auto measure = [](ApiKeyStore* store, std::vector<double>* micros) {
    for (int i = 0; i < 1000; ++i) {
      const auto start = Clock::now();
      auto lease = store->Admit(kKey);
      ASSERT_TRUE(lease.ok()) << lease.status();
      lease->reset();
      micros->push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
    std::sort(micros->begin(), micros->end());
  };
  std::vector<double> redis_us, memory_us;
  measure(shared.get(), &redis_us);
  measure(&local, &memory_us);
  ASSERT_EQ(redis_us.size(), 1000u);
  ASSERT_EQ(memory_us.size(), 1000u);
  std::printf(
      "QUOTA-COST: admit + release per call, 1000 calls: Redis p50 %.0f us p99 %.0f us; "
      "in memory p50 %.1f us p99 %.1f us\n",
      redis_us[500], redis_us[990], memory_us[500], memory_us[990]);
  EXPECT_LT(redis_us[500], 1e6);  // sanity only
}

// Two gateways, one key limited to `rate` per second: together they get rate * elapsed + burst,
// within 5%.
TEST_F(RedisQuotaTest, RateLimitIsSharedByTwoGateways) {
  constexpr double kRate = 40, kBurst = 4;
  auto a = Store(Options(), kRate, kBurst, 0);
  auto b = Store(Options(), kRate, kBurst, 0);
  ASSERT_TRUE(a && b);
  std::atomic<int> granted{0}, refused{0}, other{0};
  const auto window = std::chrono::milliseconds(3000);
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    ApiKeyStore* store = t % 2 == 0 ? a.get() : b.get();
    threads.emplace_back([&, store] {
      for (int i = 0; i < 20000 && Clock::now() - start < window; ++i) {
        auto lease = store->Admit(kKey);
        if (lease.ok()) {
          granted++;
        } else if (lease.status().code() == absl::StatusCode::kResourceExhausted) {
          refused++;
        } else {
          other++;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double expected = kBurst + kRate * elapsed;
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(refused.load(), 0);
  EXPECT_LE(granted.load(), expected * 1.05) << "elapsed " << elapsed;
  EXPECT_GE(granted.load(), expected * 0.95) << "elapsed " << elapsed;
  std::printf(
      "QUOTA-RATE: rate %.0f/s burst %.0f over %.2f s on two gateways: %d granted, %.1f "
      "expected (%+.1f%%), %d refused\n",
      kRate, kBurst, elapsed, granted.load(), expected,
      100.0 * (granted.load() - expected) / expected, refused.load());
}

// Two gateways, eight threads, one key with concurrency 4: never more than 4 at once.
TEST_F(RedisQuotaTest, ConcurrencyQuotaHoldsAcrossTwoGateways) {
  auto a = Store(Options(), 0, 1, 4);
  auto b = Store(Options(), 0, 1, 4);
  ASSERT_TRUE(a && b);
  std::atomic<int> running{0}, most{0}, admitted{0}, refused{0}, other{0};
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    ApiKeyStore* store = t % 2 == 0 ? a.get() : b.get();
    threads.emplace_back([&, store] {
      for (int i = 0; i < 150 && Clock::now() - start < std::chrono::seconds(10); ++i) {
        auto lease = store->Admit(kKey);
        if (!lease.ok()) {
          (lease.status().code() == absl::StatusCode::kResourceExhausted ? refused : other)++;
          continue;
        }
        admitted++;
        const int now = ++running;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        --running;  // before the slot goes back
        lease->reset();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_LE(most.load(), 4);
  EXPECT_EQ(most.load(), 4) << "the quota was never full: the test proves little";
  EXPECT_GT(admitted.load(), 0);
  EXPECT_GT(refused.load(), 0);
  std::printf(
      "QUOTA-CONCURRENCY: 8 threads on two gateways, quota 4: at most %d at once, %d "
      "admitted, %d refused\n",
      most.load(), admitted.load(), refused.load());
  EXPECT_EQ(a->InFlight("app"), 0);
  EXPECT_EQ(b->InFlight("app"), 0);
}

// A gateway that dies holding slots (its leases no longer renewed) frees them after lease_ttl;
// a live gateway's leases are renewed and outlast it.
TEST_F(RedisQuotaTest, DeadGatewaysLeasesExpireLiveOnesAreRenewed) {
  RedisQuotaOptions dead_options = Options();
  dead_options.renew_leases = false;
  auto dead = Store(dead_options, 0, 1, 2);
  RedisQuotaBackend* live_backend = nullptr;
  auto live = Store(Options(), 0, 1, 2, nullptr, &live_backend);
  ASSERT_TRUE(dead && live);
  auto held1 = dead->Admit(kKey);
  auto held2 = dead->Admit(kKey);
  ASSERT_TRUE(held1.ok() && held2.ok());
  const auto taken = Clock::now();
  EXPECT_EQ(live->Admit(kKey).status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<std::unique_ptr<ApiKeyStore::Lease>> freed = absl::UnknownError("not yet");
  while (Clock::now() - taken < std::chrono::seconds(10)) {
    freed = live->Admit(kKey);
    if (freed.ok()) break;
    ASSERT_EQ(freed.status().code(), absl::StatusCode::kResourceExhausted) << freed.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto waited = Clock::now() - taken;
  ASSERT_TRUE(freed.ok()) << "the dead gateway's slots were not freed: " << freed.status();
  EXPECT_GE(waited, std::chrono::milliseconds(1300));  // lease_ttl 1.5 s, less scheduling slack
  freed->reset();

  // The live gateway holds both slots for three lease lifetimes: renewed, they stay taken.
  auto mine1 = live->Admit(kKey);
  auto mine2 = live->Admit(kKey);
  ASSERT_TRUE(mine1.ok() && mine2.ok());
  const auto renewals_before = live_backend->renewals();
  std::this_thread::sleep_for(std::chrono::milliseconds(4500));
  auto other_gateway = Store(Options(), 0, 1, 2);
  ASSERT_TRUE(other_gateway);
  auto refused = other_gateway->Admit(kKey);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_GE(live_backend->renewals(), renewals_before + 4);
  mine1->reset();
  EXPECT_TRUE(other_gateway->Admit(kKey).ok());  // given back at once, not at expiry
}

TEST_F(RedisQuotaTest, RedisDownDenyRefusesAndRecovers) {
  RedisQuotaOptions options = Options();
  options.on_unavailable = QuotaOnUnavailable::kDeny;
  RedisQuotaBackend* backend = nullptr;
  auto store = Store(options, 0, 1, 3, nullptr, &backend);
  ASSERT_TRUE(store);
  auto before = store->Admit(kKey);
  ASSERT_TRUE(before.ok()) << before.status();
  redis_->Stop();
  for (int i = 0; i < 3; ++i) {
    auto down = store->Admit(kKey);
    ASSERT_FALSE(down.ok());
    EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
    EXPECT_THAT(down.status().message(), HasSubstr("Redis"));
  }
  before->reset();  // the lease cannot be given back: it expires in Redis (gone anyway here)
  EXPECT_EQ(backend->fallbacks(), 0u);
  ASSERT_TRUE(redis_->Restart().ok());
  absl::StatusOr<std::unique_ptr<ApiKeyStore::Lease>> back = absl::UnknownError("not yet");
  const auto start = Clock::now();
  while (Clock::now() - start < std::chrono::seconds(5)) {
    back = store->Admit(kKey);
    if (back.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(back.ok()) << "not back after Redis returned: " << back.status();
}

TEST_F(RedisQuotaTest, RedisDownLocalFallsBackCountsAndRecovers) {
  Metrics metrics("gateway");
  RedisQuotaOptions options = Options();
  options.on_unavailable = QuotaOnUnavailable::kLocal;
  RedisQuotaBackend* backend = nullptr;
  auto store = Store(options, 0, 1, 1, &metrics, &backend);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Admit(kKey).ok());
  redis_->Stop();
  // This gateway's own limits apply meanwhile: one call at a time.
  auto local = store->Admit(kKey);
  ASSERT_TRUE(local.ok()) << local.status();
  auto second = store->Admit(kKey);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  EXPECT_EQ(backend->fallbacks(), 2u);
  EXPECT_THAT(metrics.Render(), HasSubstr("switchyard_gateway_quota_backend_fallbacks_total 2"));
  local->reset();

  ASSERT_TRUE(redis_->Restart().ok());
  // Back on Redis: a second gateway sees this one's slot.
  const auto start = Clock::now();
  absl::StatusOr<std::unique_ptr<ApiKeyStore::Lease>> shared = absl::UnknownError("not yet");
  uint64_t fallbacks = backend->fallbacks();
  while (Clock::now() - start < std::chrono::seconds(5)) {
    fallbacks = backend->fallbacks();
    shared = store->Admit(kKey);
    if (shared.ok() && backend->fallbacks() == fallbacks) break;  // admitted by Redis
    shared = absl::UnknownError("not yet");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(shared.ok()) << "Redis not used again after it returned";
  auto other_gateway = Store(Options(), 0, 1, 1);
  ASSERT_TRUE(other_gateway);
  EXPECT_EQ(other_gateway->Admit(kKey).status().code(), absl::StatusCode::kResourceExhausted);
}

// A TCP server that is not Redis: answers every read with `reply` (or nothing when empty).
class FakeServer {
 public:
  // `reset`: each connection is reset (RST) right after its first answer.
  explicit FakeServer(std::string reply, bool reset = false)
      : reply_(std::move(reply)), reset_(reset) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "fake server: cannot listen";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  void Serve() {
    std::vector<int> conns;
    while (!stop_) {
      std::vector<pollfd> fds = {{fd_, POLLIN, 0}};
      for (int c : conns) fds.push_back({c, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) conns.push_back(c);
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buf[4096];
        ssize_t n = ::recv(fds[i].fd, buf, sizeof(buf), 0);
        if (n <= 0) {
          ::close(fds[i].fd);
          conns.erase(std::find(conns.begin(), conns.end(), fds[i].fd));
          continue;
        }
        if (!reply_.empty()) ::send(fds[i].fd, reply_.data(), reply_.size(), MSG_NOSIGNAL);
        if (reset_) {
          linger hard{1, 0};
          ::setsockopt(fds[i].fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
          ::close(fds[i].fd);
          conns.erase(std::find(conns.begin(), conns.end(), fds[i].fd));
        }
      }
    }
    for (int c : conns) ::close(c);
  }

  std::string reply_;
  bool reset_ = false;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(RedisQuotaHostileTest, GarbageAndWrongRepliesAreCleanErrors) {
  const std::vector<std::string> replies = {
      "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",  // not Redis's protocol
      std::string("\x00\xff\xfe garbage \x01\r\n", 14),
      "+OK\r\n",                  // a status where the script answers an array
      "*2\r\n:7\r\n:1\r\n",       // a verdict that does not exist
      "*2\r\n:1\r\n:-5\r\n",      // a negative count
      "*1\r\n:1\r\n",             // too short
      "*2\r\n$1\r\n1\r\n:1\r\n",  // a string where an integer belongs
      "*2\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n:1\r\n",  // nested deep
      "-ERR something\r\n",                                // an error reply
      "$5\r\nab",  // a truncated bulk string (then silence: a timeout)
      "",          // silence: a timeout
  };
  for (const auto& reply : replies) {
    FakeServer server(reply);
    RedisQuotaOptions options;
    options.address = server.address();
    options.timeout = absl::Milliseconds(200);
    options.lease_ttl = absl::Milliseconds(1000);
    options.on_unavailable = QuotaOnUnavailable::kDeny;
    auto backend = RedisQuotaBackend::Create(options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    const auto start = Clock::now();
    auto slot = (*backend)->Acquire("app", QuotaLimits{10, 10, 2});
    const auto took = Clock::now() - start;
    ASSERT_FALSE(slot.ok()) << "admitted on " << absl::CHexEscape(reply);
    EXPECT_EQ(slot.status().code(), absl::StatusCode::kUnavailable) << slot.status();
    EXPECT_THAT(slot.status().message(), HasSubstr("Redis"));
    // Bounded by the timeout: the connect, EVALSHA and at most one EVAL.
    EXPECT_LT(took, std::chrono::seconds(2)) << absl::CHexEscape(reply);
    EXPECT_FALSE((*backend)->Ping().ok()) << absl::CHexEscape(reply);
  }
}

// A server that resets each connection after answering: the next write on the pooled
// connection fails with EPIPE/ECONNRESET, an error, not a SIGPIPE that ends the process.
TEST(RedisQuotaHostileTest, ResetConnectionsAreErrorsNotSignals) {
  FakeServer server("+OK\r\n", /*reset=*/true);
  RedisQuotaOptions options;
  options.address = server.address();
  options.timeout = absl::Milliseconds(200);
  options.lease_ttl = absl::Milliseconds(1000);
  options.retry_interval = absl::ZeroDuration();
  options.on_unavailable = QuotaOnUnavailable::kDeny;
  auto backend = RedisQuotaBackend::Create(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  for (int i = 0; i < 20; ++i) {
    auto slot = (*backend)->Acquire("app", QuotaLimits{0, 1, 1});
    EXPECT_EQ(slot.status().code(), absl::StatusCode::kUnavailable) << slot.status();
    EXPECT_FALSE((*backend)->Ping().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the reset arrives
  }
}

TEST(RedisQuotaHostileTest, NothingListeningIsUnavailableAtOnce) {
  RedisQuotaOptions options;
  options.address = absl::StrCat("127.0.0.1:", switchyard::testing::PickFreePort());
  options.on_unavailable = QuotaOnUnavailable::kDeny;
  auto backend = RedisQuotaBackend::Create(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto slot = (*backend)->Acquire("app", QuotaLimits{0, 1, 1});
  EXPECT_EQ(slot.status().code(), absl::StatusCode::kUnavailable) << slot.status();
}

// Quota state in Redis that another writer spoiled: bucket fields that are not numbers (or are
// NaN, or in the future) start a fresh bucket; a key of the wrong type is a clean error.
TEST_F(RedisQuotaTest, SpoiledStateInRedisIsNotTrusted) {
  auto command = [&](std::vector<std::string> argv) {
    redisContext* c = redisConnect("127.0.0.1", redis_->port());
    ASSERT_TRUE(c != nullptr && c->err == 0);
    std::vector<const char*> args;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data()));
    EXPECT_TRUE(r != nullptr && r->type != REDIS_REPLY_ERROR) << argv[0];
    if (r != nullptr) freeReplyObject(r);
    redisFree(c);
  };
  const std::string bucket = prefix_ + "quota:{app}:bucket";
  const std::string leases = prefix_ + "quota:{app}:leases";
  RedisQuotaOptions options = Options();
  options.on_unavailable = QuotaOnUnavailable::kDeny;
  auto store = Store(options, 1, 2, 0);
  ASSERT_TRUE(store);
  struct Case {
    std::string tokens, us;
    int admitted;  // of three calls at once
  };
  const std::vector<Case> cases = {
      {"nan", "1", 2},
      {"abc", "def", 2},
      {"inf", "0", 2},
      {"-inf", "1", 2},
      {"5", "1", 2},                     // more than the burst: a full bucket, not more
      {"1", "99999999999999999999", 1},  // refilled in the future: no refill, no full bucket
  };
  for (const auto& c : cases) {
    command({"HSET", bucket, "tokens", c.tokens, "us", c.us});
    int admitted = 0;
    std::vector<std::unique_ptr<ApiKeyStore::Lease>> held;
    for (int i = 0; i < 3; ++i) {
      auto lease = store->Admit(kKey);
      if (lease.ok()) {
        admitted++;
        held.push_back(*std::move(lease));
      } else {
        EXPECT_EQ(lease.status().code(), absl::StatusCode::kResourceExhausted) << lease.status();
      }
    }
    EXPECT_EQ(admitted, c.admitted) << c.tokens << " " << c.us;
  }
  command({"DEL", leases});
  command({"SET", leases, "not a sorted set"});
  auto wrong_type = store->Admit(kKey);
  EXPECT_EQ(wrong_type.status().code(), absl::StatusCode::kUnavailable) << wrong_type.status();
  command({"DEL", leases});
  command({"DEL", bucket});
  EXPECT_TRUE(store->Admit(kKey).ok());
}

TEST_F(RedisQuotaTest, PasswordIsSentAndAWrongOneRefused) {
  TempDir dir;
  auto secured = RedisServer::Start(dir.path(), {"--requirepass", "pa55word"});
  ASSERT_TRUE(secured.ok()) << secured.status();
  RedisQuotaOptions options = Options();
  options.address = (*secured)->address();
  options.password = "pa55word";
  options.on_unavailable = QuotaOnUnavailable::kDeny;
  auto store = Store(options, 0, 1, 1);
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->Admit(kKey).ok());
  options.password = "wrong";
  auto wrong = Store(options, 0, 1, 1);
  ASSERT_TRUE(wrong);
  auto refused = wrong->Admit(kKey);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  options.password = "";
  auto none = Store(options, 0, 1, 1);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->Admit(kKey).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace switchyard::gateway
