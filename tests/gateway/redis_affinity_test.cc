// Stream affinity shared through Redis (gateway/routing/redis_affinity.h), against a real
// redis-server started by the test on a free loopback port (tests/support/redis_server.h). Two
// stores sharing one Redis stand for two gateways. Every loop is bounded in count and time.
#include "gateway/routing/redis_affinity.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "gateway/state/redis_client.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/redis_test_fixture.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::RedisServer;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// A Redis of the test's own, a key prefix per test (support/redis_test_fixture.h).
class RedisAffinityTest : public ::switchyard::testing::RedisTest {
 protected:
  RedisAffinityOptions Options(absl::Duration ttl = absl::Seconds(30)) const {
    RedisAffinityOptions o;
    o.redis = ClientOptions();
    o.key_prefix = prefix_;
    o.ttl = ttl;
    return o;
  }

  // A "gateway": its own store on the shared Redis.
  std::unique_ptr<RedisStreamAffinity> Gateway(RedisAffinityOptions o, Metrics* metrics = nullptr) {
    auto a = RedisStreamAffinity::Create(std::move(o), metrics);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *std::move(a) : nullptr;
  }
  std::unique_ptr<RedisStreamAffinity> Gateway() { return Gateway(Options()); }

  // What Redis holds for the stream ("" none), read directly.
  std::string InRedis(const RedisStreamAffinity& a, const std::string& tenant,
                      const std::string& stream) {
    auto reply = raw_->Run({"GET", a.KeyOf(tenant, stream)});
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() && reply->type == RedisReply::Type::kString ? reply->str : "";
  }
  long long TtlMs(const RedisStreamAffinity& a, const std::string& tenant,
                  const std::string& stream) {
    auto reply = raw_->Run({"PTTL", a.KeyOf(tenant, stream)});
    EXPECT_TRUE(reply.ok() && reply->type == RedisReply::Type::kInteger);
    return reply.ok() ? reply->integer : -100;
  }
};

TEST_F(RedisAffinityTest, CreateValidatesOptions) {
  RedisAffinityOptions o = Options();
  o.redis.address = "nohost";
  auto bad = RedisStreamAffinity::Create(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("state.redis.address"));
  o = Options();
  o.ttl = absl::ZeroDuration();
  EXPECT_EQ(RedisStreamAffinity::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options();
  o.key_prefix = std::string(300, 'p');
  EXPECT_THAT(RedisStreamAffinity::Create(o).status().message(), HasSubstr("key_prefix"));
}

TEST_F(RedisAffinityTest, AStreamPlacedByOneGatewayIsFollowedByTheOthers) {
  auto a = Gateway(), b = Gateway(), c = Gateway();
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->NodeOf("key", "s1"), "");
  EXPECT_EQ(a->Record("key", "s1", "", "orch-1"), "orch-1");  // the claim
  EXPECT_EQ(InRedis(*a, "key", "s1"), "orch-1");
  EXPECT_EQ(b->NodeOf("key", "s1"), "orch-1");
  EXPECT_EQ(c->NodeOf("key", "s1"), "orch-1");
  EXPECT_EQ(b->Record("key", "s1", "orch-1", "orch-1"), "orch-1");
  // orch-1 cannot take the stream on gateway c (gone, ejected, draining, not a member there):
  // c's router picked orch-2 and the stream moves for everyone.
  EXPECT_EQ(c->Record("key", "s1", "orch-1", "orch-2"), "orch-2");
  EXPECT_EQ(a->NodeOf("key", "s1"), "orch-2");
  EXPECT_EQ(b->NodeOf("key", "s1"), "orch-2");
  EXPECT_EQ(a->fallbacks() + b->fallbacks() + c->fallbacks(), 0u);
}

TEST_F(RedisAffinityTest, ConcurrentClaimsAndMovesConvergeOnTheFirst) {
  auto a = Gateway(), b = Gateway();
  ASSERT_TRUE(a && b);
  // Both see a new stream and route its first segments to different nodes: the first claim
  // stands and the other gateway follows it (it does not overwrite).
  EXPECT_EQ(a->NodeOf("", "s"), "");
  EXPECT_EQ(b->NodeOf("", "s"), "");
  EXPECT_EQ(a->Record("", "s", "", "orch-1"), "orch-1");
  EXPECT_EQ(b->Record("", "s", "", "orch-2"), "orch-1");
  EXPECT_EQ(b->NodeOf("", "s"), "orch-1");
  // Both see orch-1 go and move the stream at once, to different nodes: the first move stands.
  EXPECT_EQ(a->Record("", "s", "orch-1", "orch-3"), "orch-3");
  EXPECT_EQ(b->Record("", "s", "orch-1", "orch-4"), "orch-3");
  EXPECT_EQ(a->NodeOf("", "s"), "orch-3");
  EXPECT_EQ(b->NodeOf("", "s"), "orch-3");
  EXPECT_EQ(InRedis(*a, "", "s"), "orch-3");
}

TEST_F(RedisAffinityTest, EntriesExpireWhenIdleAndUseKeepsThemAlive) {
  const absl::Duration ttl = absl::Milliseconds(600);
  auto a = Gateway(Options(ttl)), b = Gateway(Options(ttl));
  ASSERT_TRUE(a && b);
  a->Record("", "live", "", "orch-1");
  a->Record("", "idle", "", "orch-1");
  const long long ttl_ms = TtlMs(*a, "", "live");
  EXPECT_GT(ttl_ms, 0);
  EXPECT_LE(ttl_ms, 600);
  // Used every 200 ms for 1.2 s (twice the ttl): kept alive, by lookups on another gateway too.
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(b->NodeOf("", "live"), "orch-1") << "use " << i;
  }
  EXPECT_EQ(InRedis(*a, "", "idle"), "");  // unused for 1.2 s: expired in Redis
  EXPECT_EQ(InRedis(*a, "", "live"), "orch-1");
  auto fresh = Gateway(Options(ttl));  // a gateway that never saw the streams
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->NodeOf("", "idle"), "");
  EXPECT_EQ(fresh->NodeOf("", "live"), "orch-1");
}

// What shared affinity adds per segment: a lookup before routing and a record after, against
// this gateway's own table. Printed for docs/operations.md; the bound is a sanity check only.
TEST_F(RedisAffinityTest, CostPerSegmentOnLoopback) {
  auto shared = Gateway();
  ASSERT_TRUE(shared);
  StreamAffinity local(absl::Seconds(30), 100000);
  auto measure = [](AffinityStore* store, std::vector<double>* micros) {
    for (int i = 0; i < 1000; ++i) {
      const std::string stream = absl::StrCat("s", i % 50);
      const auto start = Clock::now();
      const std::string home = store->NodeOf("key", stream);
      store->Record("key", stream, home, "orch-1");
      micros->push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
    std::sort(micros->begin(), micros->end());
  };
  std::vector<double> redis_us, memory_us;
  measure(shared.get(), &redis_us);
  measure(&local, &memory_us);
  ASSERT_EQ(redis_us.size(), 1000u);
  std::printf(
      "AFFINITY-COST: lookup + record per segment, 1000 segments: Redis p50 %.0f us p99 %.0f us; "
      "in memory p50 %.1f us p99 %.1f us\n",
      redis_us[500], redis_us[990], memory_us[500], memory_us[990]);
  EXPECT_EQ(shared->fallbacks(), 0u);
  EXPECT_LT(redis_us[500], 1e6);  // sanity only
}

TEST_F(RedisAffinityTest, TenantsAndStreamIdsCannotNameAnothersEntry) {
  auto a = Gateway(), b = Gateway();
  ASSERT_TRUE(a && b);
  a->Record("key-a", "live", "", "orch-1");
  EXPECT_EQ(b->NodeOf("key-b", "live"), "");  // the same stream id under another key
  EXPECT_EQ(b->NodeOf("", "live"), "");
  // Separators in the ids do not make one pair spell another's key.
  a->Record("t:x", "s", "", "orch-2");
  EXPECT_EQ(b->NodeOf("t", "x:s"), "");
  EXPECT_NE(a->KeyOf("t:x", "s"), a->KeyOf("t", "x:s"));
  EXPECT_EQ(b->NodeOf("t:x", "s"), "orch-2");
  EXPECT_THAT(a->KeyOf("t:x", "s"), ::testing::StartsWith(prefix_ + "affinity:"));
  // Ending B's stream of that id leaves A's.
  b->Record("key-b", "live", "", "orch-3");
  EXPECT_EQ(b->Forget("key-b", "live"), "orch-3");
  EXPECT_EQ(a->NodeOf("key-a", "live"), "orch-1");
}

TEST_F(RedisAffinityTest, ForgetEndsTheStreamForEveryGateway) {
  auto a = Gateway(), b = Gateway();
  ASSERT_TRUE(a && b);
  a->Record("", "s", "", "orch-1");
  EXPECT_EQ(b->Forget("", "s"), "orch-1");  // b never saw it: Redis knows
  EXPECT_EQ(InRedis(*a, "", "s"), "");
  EXPECT_EQ(b->Forget("", "s"), std::nullopt);
  auto fresh = Gateway();
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->NodeOf("", "s"), "");
}

// Redis down: affinity falls back to this gateway's table (never an error), counted and
// logged; when Redis returns (empty: a restart without persistence), entries are written back.
TEST_F(RedisAffinityTest, RedisDownFallsBackToTheLocalTableAndRecovers) {
  Metrics metrics("gateway");
  auto a = Gateway(Options(), &metrics);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->Record("", "s", "", "orch-1"), "orch-1");
  redis_->Stop();
  const auto start = Clock::now();
  EXPECT_EQ(a->NodeOf("", "s"), "orch-1");
  EXPECT_EQ(a->Record("", "s", "orch-1", "orch-2"), "orch-2");  // moved while Redis is down
  EXPECT_EQ(a->NodeOf("", "s"), "orch-2");
  EXPECT_EQ(a->NodeOf("", "unknown"), "");
  // Each answer at once or within one timeout: no job waits long on a dead Redis.
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(a->fallbacks(), 4u);
  EXPECT_THAT(metrics.Render(), HasSubstr("switchyard_gateway_affinity_store_fallbacks_total 4"));

  ASSERT_TRUE(redis_->Restart().ok());
  // Back (bounded wait past the retry interval): Redis lost the entry, the local one stands and
  // the next segment's Record writes it back for the other gateways.
  std::string node;
  uint64_t fallbacks = 0;
  for (int i = 0; i < 100; ++i) {
    fallbacks = a->fallbacks();
    node = a->NodeOf("", "s");
    if (a->fallbacks() == fallbacks) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(a->fallbacks(), fallbacks) << "Redis not used again after it returned";
  EXPECT_EQ(node, "orch-2");
  EXPECT_EQ(a->Record("", "s", "orch-2", "orch-2"), "orch-2");
  auto b = Gateway();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->NodeOf("", "s"), "orch-2");
}

TEST_F(RedisAffinityTest, NothingListeningFallsBackAtOnce) {
  RedisAffinityOptions o = Options();
  o.redis.address = absl::StrCat("127.0.0.1:", switchyard::testing::PickFreePort());
  auto a = Gateway(o);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->Ping().ok());
  EXPECT_EQ(a->NodeOf("", "s"), "");
  EXPECT_EQ(a->Record("", "s", "", "orch-1"), "orch-1");
  EXPECT_EQ(a->NodeOf("", "s"), "orch-1");
  EXPECT_EQ(a->Forget("", "s"), "orch-1");
  EXPECT_EQ(a->fallbacks(), 4u);
}

// Entries another writer spoiled are not trusted: an overlong value or a key of another type is
// answered from the local table; a value naming a node this gateway does not know is just a
// preference its router cannot use, and the next Record (routed with it) overwrites it.
TEST_F(RedisAffinityTest, SpoiledEntriesAreNotTrusted) {
  auto a = Gateway();
  ASSERT_TRUE(a);
  a->Record("", "long", "", "orch-1");
  ASSERT_TRUE(raw_->Run({"SET", a->KeyOf("", "long"), std::string(100000, 'x')}).ok());
  EXPECT_EQ(a->NodeOf("", "long"), "orch-1");
  EXPECT_EQ(a->fallbacks(), 1u);

  a->Record("", "hash", "", "orch-1");
  ASSERT_TRUE(raw_->Run({"DEL", a->KeyOf("", "hash")}).ok());
  ASSERT_TRUE(raw_->Run({"HSET", a->KeyOf("", "hash"), "f", "v"}).ok());
  EXPECT_EQ(a->NodeOf("", "hash"), "orch-1");  // WRONGTYPE: an error reply, not an entry
  EXPECT_EQ(a->Record("", "hash", "orch-1", "orch-2"), "orch-2");
  EXPECT_GE(a->fallbacks(), 3u);

  ASSERT_TRUE(raw_->Run({"SET", a->KeyOf("", "forged"), "no-such-node\n[forged"}).ok());
  const std::string forged = a->NodeOf("", "forged");
  EXPECT_EQ(forged, "no-such-node\n[forged");
  EXPECT_EQ(a->Record("", "forged", forged, "orch-1"), "orch-1");
  EXPECT_EQ(InRedis(*a, "", "forged"), "orch-1");
}

}  // namespace
}  // namespace switchyard::gateway
