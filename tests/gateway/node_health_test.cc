// Unit tests for the router's health and budget parts (gateway/routing/node_health.h), with an injected
// clock. Every loop is bounded.
#include "gateway/routing/node_health.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace switchyard::gateway {
namespace {

struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1000000);
  std::function<absl::Time()> Fn() {
    return [this] { return now; };
  }
};

TEST(SlidingCounterTest, CountsOverTheWindowOnly) {
  FakeClock clock;
  SlidingCounter c(absl::Seconds(10));  // 1 s buckets
  c.Add(clock.now, 5);
  clock.now += absl::Seconds(3);
  c.Add(clock.now);
  EXPECT_EQ(c.Sum(clock.now), 6);
  clock.now += absl::Seconds(7);  // the first bucket is 10 s old: out
  EXPECT_EQ(c.Sum(clock.now), 1);
  c.Add(clock.now, 2);  // reuses the first bucket's slot, resetting it
  EXPECT_EQ(c.Sum(clock.now), 3);
  clock.now += absl::Seconds(30);
  EXPECT_EQ(c.Sum(clock.now), 0);
}

TEST(SlidingCounterTest, ConcurrentAddsAreAllCounted) {
  const absl::Time t = absl::FromUnixSeconds(1000000);
  SlidingCounter c(absl::Seconds(10));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 10000; ++j) c.Add(t);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(c.Sum(t), 40000);
}

TEST(NodeStatsTest, EwmaPerModel) {
  const absl::Time t = absl::FromUnixSeconds(1000000);
  NodeStats s;
  const uint64_t a = ModelKey("a");
  const uint64_t b = ModelKey("b");
  EXPECT_EQ(s.LatencyOf(a).samples, 0u);
  s.RecordLatency(a, 100, 0.5, t);
  EXPECT_DOUBLE_EQ(s.LatencyOf(a).ewma_ms, 100);  // the first sample sets it
  s.RecordLatency(a, 200, 0.5, t);
  EXPECT_DOUBLE_EQ(s.LatencyOf(a).ewma_ms, 150);
  s.RecordLatency(a, 200, 0.5, t);
  EXPECT_DOUBLE_EQ(s.LatencyOf(a).ewma_ms, 175);
  EXPECT_EQ(s.LatencyOf(a).samples, 3u);
  EXPECT_EQ(s.LatencyOf(a).last_ns, absl::ToUnixNanos(t));
  EXPECT_EQ(s.LatencyOf(b).samples, 0u);
  s.RecordLatency(b, 7, 0.5, t);
  EXPECT_DOUBLE_EQ(s.LatencyOf(b).ewma_ms, 7);
  EXPECT_DOUBLE_EQ(s.LatencyOf(a).ewma_ms, 175);
}

TEST(NodeStatsTest, ModelsBeyondTheSlotsShareTheOverflowSlot) {
  const absl::Time t = absl::FromUnixSeconds(1000000);
  NodeStats s;
  for (int i = 0; i < NodeStats::kModelSlots; ++i) {
    s.RecordLatency(ModelKey(std::to_string(i)), 10.0 * (i + 1), 0.5, t);
  }
  s.RecordLatency(ModelKey("x"), 1000, 0.5, t);
  EXPECT_DOUBLE_EQ(s.LatencyOf(ModelKey("0")).ewma_ms, 10);
  EXPECT_DOUBLE_EQ(s.LatencyOf(ModelKey("7")).ewma_ms, 80);
  EXPECT_DOUBLE_EQ(s.LatencyOf(ModelKey("x")).ewma_ms, 1000);
  EXPECT_DOUBLE_EQ(s.LatencyOf(ModelKey("y")).ewma_ms, 1000);  // shares it
}

HealthOptions Options() {
  HealthOptions o;
  o.eject_after_failures = 3;
  o.eject_base = absl::Seconds(1);
  o.eject_max = absl::Seconds(30);
  o.max_ejected_fraction = 0.5;
  return o;
}

TEST(NodeHealthTest, EjectsAfterTheThresholdForTheBaseTime) {
  FakeClock clock;
  NodeHealth health(Options(), clock.Fn());
  auto s = std::make_shared<NodeStats>();
  EXPECT_FALSE(health.RecordFailure("a", s, 10));
  EXPECT_FALSE(health.RecordFailure("a", s, 10));
  EXPECT_TRUE(health.RecordFailure("a", s, 10));
  EXPECT_TRUE(health.IsEjected("a"));
  EXPECT_TRUE(s->EjectedAt(clock.now));
  EXPECT_FALSE(health.RecordFailure("a", s, 10));  // already out
  clock.now += absl::Milliseconds(999);
  EXPECT_TRUE(health.IsEjected("a"));
  clock.now += absl::Milliseconds(1);
  EXPECT_FALSE(health.IsEjected("a"));
  EXPECT_TRUE(s->on_probation());
  EXPECT_EQ(health.EjectedCount(), 0);
}

TEST(NodeHealthTest, EjectionTimesDoubleUpToTheCap) {
  NodeHealth health(Options(), [] { return absl::FromUnixSeconds(1); });
  EXPECT_EQ(health.EjectionTime(0), absl::Seconds(1));
  EXPECT_EQ(health.EjectionTime(1), absl::Seconds(2));
  EXPECT_EQ(health.EjectionTime(4), absl::Seconds(16));
  EXPECT_EQ(health.EjectionTime(5), absl::Seconds(30));
  EXPECT_EQ(health.EjectionTime(1000), absl::Seconds(30));
}

TEST(NodeHealthTest, LevelDecaysWithQuietTime) {
  FakeClock clock;
  NodeHealth health(Options(), clock.Fn());
  auto s = std::make_shared<NodeStats>();
  for (int round = 0; round < 4; ++round) {  // ejections of 1, 2, 4, 8 s back to back
    for (int i = 0; i < 3; ++i) health.RecordFailure("a", s, 10);
    clock.now += health.EjectionTime(round);
  }
  EXPECT_EQ(s->ejection_level(), 4);
  health.RecordSuccess("a", *s);
  EXPECT_FALSE(s->on_probation());
  // Two eject_max periods of good behaviour: the next ejection is two steps shorter (4 s).
  clock.now += absl::Seconds(60);
  for (int i = 0; i < 2; ++i) EXPECT_FALSE(health.RecordFailure("a", s, 10));
  EXPECT_TRUE(health.RecordFailure("a", s, 10));
  clock.now += absl::Milliseconds(3999);
  EXPECT_TRUE(health.IsEjected("a"));
  clock.now += absl::Milliseconds(1);
  EXPECT_FALSE(health.IsEjected("a"));
}

TEST(NodeHealthTest, SuccessResetsCountAndEndsEjection) {
  FakeClock clock;
  NodeHealth health(Options(), clock.Fn());
  auto s = std::make_shared<NodeStats>();
  health.RecordFailure("a", s, 10);
  health.RecordFailure("a", s, 10);
  health.RecordSuccess("a", *s);
  EXPECT_EQ(s->consecutive_failures(), 0);
  EXPECT_FALSE(health.RecordFailure("a", s, 10));
  EXPECT_FALSE(health.RecordFailure("a", s, 10));
  EXPECT_TRUE(health.RecordFailure("a", s, 10));
  health.RecordSuccess("a", *s);
  EXPECT_FALSE(health.IsEjected("a"));
  EXPECT_FALSE(s->EjectedAt(clock.now));
  EXPECT_FALSE(s->on_probation());
  EXPECT_EQ(health.EjectedCount(), 0);
}

TEST(NodeHealthTest, RespectsTheMaxEjectedFraction) {
  FakeClock clock;
  NodeHealth health(Options(), clock.Fn());
  std::vector<std::shared_ptr<NodeStats>> stats;
  int ejected = 0;
  for (int n = 0; n < 10; ++n) {
    stats.push_back(std::make_shared<NodeStats>());
    for (int i = 0; i < 3; ++i) {
      ejected += health.RecordFailure(std::to_string(n), stats.back(), 10) ? 1 : 0;
    }
  }
  EXPECT_EQ(ejected, 5);
  EXPECT_EQ(health.EjectedCount(), 5);
  // A single node of one is never ejected (floor(0.5 x 1) = 0): there is nowhere else to go.
  NodeHealth alone(Options(), clock.Fn());
  auto s = std::make_shared<NodeStats>();
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(alone.RecordFailure("a", s, 1));
}

TEST(RetryBudgetTest, AllowsThenRefusesThenRecovers) {
  FakeClock clock;
  RetryBudget budget(RetryBudgetOptions{0.2, 3, absl::Seconds(10)}, clock.Fn());
  // No jobs: only the floor, 3/s x 10 s.
  int allowed = 0;
  for (int i = 0; i < 100 && budget.TryRetry(); ++i) ++allowed;
  EXPECT_EQ(allowed, 30);
  EXPECT_FALSE(budget.TryRetry());
  // 50 jobs add 10 retries.
  for (int i = 0; i < 50; ++i) budget.RecordJob();
  allowed = 0;
  for (int i = 0; i < 100 && budget.TryRetry(); ++i) ++allowed;
  EXPECT_EQ(allowed, 10);
  // As the window slides past them, retries are allowed again.
  clock.now += absl::Seconds(5);
  EXPECT_FALSE(budget.TryRetry());
  clock.now += absl::Seconds(6);
  EXPECT_TRUE(budget.TryRetry());
}

TEST(RetryBudgetTest, ConcurrentRetriesNeverOvershoot) {
  FakeClock clock;
  RetryBudget budget(RetryBudgetOptions{0.2, 1, absl::Seconds(10)}, clock.Fn());
  for (int i = 0; i < 1000; ++i) budget.RecordJob();
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) allowed += budget.TryRetry() ? 1 : 0;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(allowed.load(), 210);  // 0.2 x 1000 + 1 x 10
}

}  // namespace
}  // namespace switchyard::gateway
