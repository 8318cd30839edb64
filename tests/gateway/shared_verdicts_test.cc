// Spot-check verdicts shared by several gateways through Redis (gateway/api/shared_verdicts.h),
// against a real redis-server started by the test on a free loopback port
// (tests/support/redis_server.h): the store itself, hostile contents under its keys, and two spot
// checkers (two "gateways", each with its own router and ledger) that count a cheater's
// mismatches together and share its ejection. Every loop is bounded in count and time.
#include "gateway/api/shared_verdicts.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "gateway/api/spot_check.h"
#include "gateway/billing/usage_ledger.h"
#include "gateway/gateway_config.h"
#include "gateway/router_test_util.h"
#include "gateway/state/redis_client.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/redis_test_fixture.h"

namespace switchyard::gateway {
namespace {

using router_test::Constant;
using router_test::Node;
using router_test::Ready;
using ::switchyard::testing::RedisServer;
using ::switchyard::testing::TempDir;

std::string Png(uint8_t value) {
  media::RgbImage image;
  image.width = 4;
  image.height = 2;
  image.pixels.assign(3 * 4 * 2, value);
  auto png = media::EncodePng(image);
  EXPECT_TRUE(png.ok()) << png.status();
  return png.ok() ? *png : std::string();
}

SpotResult Result(const std::string& node, const std::string& image) {
  SpotResult r;
  r.node = node;
  r.images = {image};
  return r;
}

// A Redis of the test's own, a key prefix per test (support/redis_test_fixture.h).
class SharedVerdictsTest : public ::switchyard::testing::RedisTest {
 protected:
  std::unique_ptr<RedisSharedVerdicts> Store(size_t max_ejected = 4096) {
    RedisSharedVerdictsOptions o;
    o.redis = ClientOptions();
    o.key_prefix = prefix_;
    o.max_ejected = max_ejected;
    auto store = RedisSharedVerdicts::Create(std::move(o));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
};

TEST_F(SharedVerdictsTest, CountsAndEjectionsAreEveryGatewaysAndTheLaterEjectionStands) {
  auto a = Store();
  auto b = Store();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(*a->AddBlame("cheat"), 1);
  EXPECT_EQ(*b->AddBlame("cheat"), 2);
  EXPECT_EQ(*a->AddBlame("cheat"), 3);
  EXPECT_EQ(*b->AddBlame("other"), 1);
  // The counter expires a while after the last mismatch.
  auto ttl = raw_->Run({"PTTL", a->BlameKey("cheat")});
  ASSERT_TRUE(ttl.ok());
  EXPECT_GT(ttl->integer, 0);

  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  ASSERT_TRUE(a->Eject("cheat", now + absl::Seconds(600)).ok());
  ASSERT_TRUE(b->Eject("cheat", now + absl::Seconds(60)).ok());  // shorter: the longer stands
  ASSERT_TRUE(b->Eject("old", now - absl::Seconds(1)).ok());     // already over
  auto ejected = b->Ejected(now);
  ASSERT_TRUE(ejected.ok()) << ejected.status();
  ASSERT_EQ(ejected->size(), 1u);
  EXPECT_EQ((*ejected)[0].node, "cheat");
  EXPECT_EQ((*ejected)[0].until, now + absl::Seconds(600));
  // Ended ejections are removed as they are read.
  auto card = raw_->Run({"ZCARD", a->EjectedKey()});
  ASSERT_TRUE(card.ok());
  EXPECT_EQ(card->integer, 1);
  ejected = a->Ejected(now + absl::Seconds(601));
  ASSERT_TRUE(ejected.ok());
  EXPECT_TRUE(ejected->empty());

  EXPECT_FALSE(a->AddBlame("").ok());
  EXPECT_FALSE(a->Eject(std::string(300, 'n'), now).ok());
}

TEST_F(SharedVerdictsTest, HostileContentsUnderItsKeysAreSkippedOrRefused) {
  auto store = Store(/*max_ejected=*/3);
  ASSERT_NE(store, nullptr);
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  const std::string later = absl::StrCat(absl::ToUnixMillis(now + absl::Seconds(60)));
  // A member that is no node id of ours, and more ejections than are read at once.
  ASSERT_TRUE(raw_->Run({"ZADD", store->EjectedKey(), later, std::string(1000, 'x')}).ok());
  for (const char* node : {"n1", "n2", "n3", "n4"}) {
    ASSERT_TRUE(raw_->Run({"ZADD", store->EjectedKey(), later, node}).ok());
  }
  auto ejected = store->Ejected(now);
  ASSERT_TRUE(ejected.ok()) << ejected.status();
  EXPECT_LE(ejected->size(), 3u);
  for (const auto& e : *ejected) EXPECT_LE(e.node.size(), RedisSharedVerdicts::kMaxNodeIdBytes);

  // Keys of another type: Redis's errors come back as errors, not crashes or counts.
  ASSERT_TRUE(raw_->Run({"DEL", store->EjectedKey()}).ok());
  ASSERT_TRUE(raw_->Run({"SET", store->EjectedKey(), "not a sorted set"}).ok());
  EXPECT_FALSE(store->Ejected(now).ok());
  EXPECT_FALSE(store->Eject("n1", now).ok());
  ASSERT_TRUE(raw_->Run({"HSET", store->BlameKey("n1"), "f", "v"}).ok());
  EXPECT_FALSE(store->AddBlame("n1").ok());
  ASSERT_TRUE(raw_->Run({"SET", store->BlameKey("n2"), "99999999999999999999"}).ok());
  EXPECT_FALSE(store->AddBlame("n2").ok());  // INCR overflows: an error reply

  // Redis gone: errors at once, then answers again after a restart.
  redis_->Stop();
  EXPECT_FALSE(store->AddBlame("n3").ok());
  EXPECT_FALSE(store->Ejected(now).ok());
  ASSERT_TRUE(redis_->Restart().ok());
  bool back = false;
  for (int i = 0; i < 50 && !back; ++i) {
    back = store->AddBlame("n3").ok();
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(back);
}

// A clock tests move while a gateway's poll thread reads it.
struct SharedClock {
  std::atomic<int64_t> unix_ms{1'000'000'000};
  std::function<absl::Time()> Fn() {
    return [this] { return absl::FromUnixMillis(unix_ms.load()); };
  }
  void Advance(absl::Duration d) { unix_ms += absl::ToInt64Milliseconds(d); }
};

// A "gateway": its own router, clock, ledger and spot checker on the shared Redis.
struct GatewayUnderTest {
  SharedClock clock;
  Router router{RouterOptions{}, Constant(0), clock.Fn()};
  std::unique_ptr<SqliteUsageLedger> ledger;
  std::unique_ptr<RedisSharedVerdicts> shared;
  std::unique_ptr<SpotChecker> checker;
  std::map<std::string, std::string> results;  // what each node answers a re-run with

  void Record(const std::string& job_id, const std::string& node) {
    const std::string key = "k", pipeline = "upscale", model = "esrgan", unit = "pixel";
    UsageRecord r;
    r.job_id = job_id;
    r.api_key_id = key;
    r.pipeline = pipeline;
    r.model_id = model;
    r.orchestrator = node;
    r.unit = unit;
    r.units = 10;
    r.reported_units = 10;
    r.price_per_unit = 1;
    r.amount = 10;
    r.completed = absl::Now();
    ASSERT_TRUE(ledger->Record(r).ok());
  }

  bool Disputed(const std::string& job_id) {
    UsageQuery all;
    all.all_keys = true;
    auto rows = ledger->Rows(all);
    EXPECT_TRUE(rows.ok());
    for (const auto& r : *rows) {
      if (r.job_id == job_id) return r.disputed && r.dispute == "verification";
    }
    ADD_FAILURE() << "no row " << job_id;
    return false;
  }

  // `cheat` answered a client with `bad`; the re-runs go to the others, which answer `good`.
  void CheckACheat(const std::string& cheat, const std::string& bad) {
    SpotChecker::Job job;
    job.pipeline = "upscale";
    job.model_id = "esrgan";
    job.request_id = "req";
    job.first = Result(cheat, bad);
    job.run = [this](const NodeView& node, grpc::ClientContext*, SpotChecker::Done done) {
      done(Result("", results[node.id]));
    };
    checker->Start(std::move(job));
    ASSERT_TRUE(checker->WaitIdle(absl::Seconds(5)));
  }
};

// A gateway whose nodes a and b answer re-runs with `good` and c with `bad`, on `shared`;
// `poll`: its poll interval (0: only when the test calls ApplySharedEjections). Null on failure.
std::unique_ptr<GatewayUnderTest> MakeGateway(const VerificationConfig& config,
                                              const std::filesystem::path& ledger_path,
                                              std::unique_ptr<RedisSharedVerdicts> shared,
                                              absl::Duration poll, const std::string& good,
                                              const std::string& bad) {
  auto g = std::make_unique<GatewayUnderTest>();
  auto ledger = SqliteUsageLedger::Open(ledger_path);
  EXPECT_TRUE(ledger.ok()) << ledger.status();
  if (!ledger.ok() || shared == nullptr) return nullptr;
  g->ledger = *std::move(ledger);
  g->shared = std::move(shared);
  g->results = {{"a", good}, {"b", good}, {"c", bad}};
  // Each gateway has its own view of the nodes (and their routing records), as it would.
  SnapshotPtr snapshot = std::make_shared<Snapshot>(router_test::Snap(
      {Node("a", {Ready(2, 0)}), Node("b", {Ready(2, 0)}), Node("c", {Ready(2, 0)})}));
  SpotChecker::Deps deps;
  deps.router = &g->router;
  deps.snapshot = [snapshot] { return snapshot; };
  deps.ledger = g->ledger.get();
  deps.random = Constant(0);
  deps.now = g->clock.Fn();
  deps.shared = g->shared.get();
  deps.shared_poll = poll;
  auto checker = SpotChecker::Create(config, std::move(deps));
  EXPECT_TRUE(checker.ok()) << checker.status();
  if (!checker.ok()) return nullptr;
  g->checker = *std::move(checker);
  return g;
}

TEST_F(SharedVerdictsTest, TwoGatewaysCountACheaterTogetherAndBothEjectIt) {
  VerificationConfig config;
  config.sample_rate = 1;
  config.eject_after = 2;
  config.eject_seconds = 3600;
  const std::string good = Png(100), bad = Png(155);

  std::vector<std::unique_ptr<GatewayUnderTest>> gateways;
  for (int i = 0; i < 2; ++i) {
    // Gateway 0 applies others' ejections only when the test says; gateway 1 polls on its own.
    auto g = MakeGateway(config, tmp_.path() / absl::StrCat("usage-", i, ".db"), Store(),
                         i == 0 ? absl::ZeroDuration() : absl::Milliseconds(50), good, bad);
    ASSERT_NE(g, nullptr);
    g->Record(absl::StrCat("job-c-", i), "c");
    g->Record(absl::StrCat("job-a-", i), "a");
    gateways.push_back(std::move(g));
  }
  GatewayUnderTest& g0 = *gateways[0];
  GatewayUnderTest& g1 = *gateways[1];

  // One mismatch on each gateway: alone neither would eject c (eject_after 2); together they do,
  // on the gateway whose mismatch was the second.
  g0.CheckACheat("c", bad);
  EXPECT_EQ(g0.checker->Blamed("c"), 1);
  EXPECT_FALSE(g0.router.IsEjected("c"));
  g1.CheckACheat("c", bad);
  EXPECT_EQ(g1.checker->Blamed("c"), 1);  // its own count; the shared one is 2
  EXPECT_TRUE(g1.checker->Ejected("c"));
  EXPECT_TRUE(g1.router.IsEjected("c"));
  EXPECT_TRUE(g1.Disputed("job-c-1"));
  EXPECT_FALSE(g1.Disputed("job-a-1"));

  // Gateway 0 learns of it at its next poll: c banned for the rest of the hour, its rows there
  // disputed, once.
  EXPECT_FALSE(g0.router.IsEjected("c"));
  EXPECT_EQ(g0.checker->ApplySharedEjections(), 1);
  EXPECT_TRUE(g0.router.IsEjected("c"));
  EXPECT_TRUE(g0.checker->Ejected("c"));
  EXPECT_TRUE(g0.Disputed("job-c-0"));
  EXPECT_FALSE(g0.Disputed("job-a-0"));
  EXPECT_EQ(g0.checker->ApplySharedEjections(), 0);
  g0.clock.Advance(absl::Seconds(3599));
  EXPECT_TRUE(g0.router.IsEjected("c"));
  g0.clock.Advance(absl::Seconds(2));
  EXPECT_FALSE(g0.router.IsEjected("c"));
  // Honest nodes were never blamed anywhere.
  for (auto* g : {&g0, &g1}) {
    EXPECT_EQ(g->checker->Blamed("a") + g->checker->Blamed("b"), 0);
    EXPECT_FALSE(g->router.IsEjected("a"));
    EXPECT_FALSE(g->router.IsEjected("b"));
  }

  // The other way round, through gateway 1's own poll thread: two more mismatches on gateway 0
  // (shared count 4) eject c again from there, and gateway 1, whose ban would end sooner than
  // the new one, bans it again (bounded wait).
  g1.clock.Advance(absl::Seconds(1800));
  g0.CheckACheat("c", bad);
  g0.CheckACheat("c", bad);
  EXPECT_TRUE(g0.router.IsEjected("c"));
  g1.clock.Advance(absl::Seconds(1801));  // gateway 1's first ban is over
  bool banned_again = false;
  for (int i = 0; i < 100 && !banned_again; ++i) {
    banned_again = g1.router.IsEjected("c");
    if (!banned_again) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(banned_again);
  // ... until the new ejection ends, an hour after gateway 0's second one.
  g1.clock.Advance(absl::Seconds(3500));
  EXPECT_TRUE(g1.router.IsEjected("c"));
}

TEST_F(SharedVerdictsTest, WithRedisDownEachGatewayCountsItsOwn) {
  VerificationConfig config;
  config.sample_rate = 1;
  config.eject_after = 2;
  config.eject_seconds = 60;
  const std::string good = Png(100), bad = Png(155);
  auto gateway =
      MakeGateway(config, tmp_.path() / "usage.db", Store(), absl::ZeroDuration(), good, bad);
  ASSERT_NE(gateway, nullptr);
  GatewayUnderTest& g = *gateway;

  redis_->Stop();
  g.CheckACheat("c", bad);
  EXPECT_FALSE(g.router.IsEjected("c"));
  g.CheckACheat("c", bad);
  EXPECT_TRUE(g.router.IsEjected("c"));  // its own two mismatches
  EXPECT_EQ(g.checker->ApplySharedEjections(), 0);
}

}  // namespace
}  // namespace switchyard::gateway
