#include "common/mutex.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

namespace switchyard {
namespace {

using std::chrono::milliseconds;

struct Shared {
  Mutex mu;
  CondVar cv;
  int value ABSL_GUARDED_BY(mu) = 0;
};

TEST(MutexTest, MutexLockExcludesOtherThreads) {
  Shared s;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&s] {
      for (int i = 0; i < 10000; ++i) {
        MutexLock lock(&s.mu);
        ++s.value;
      }
    });
  }
  for (auto& t : threads) t.join();
  MutexLock lock(&s.mu);
  EXPECT_EQ(s.value, 40000);
}

TEST(MutexTest, WaitReturnsOnceThePredicateHoldsWithTheLockHeld) {
  Shared s;
  std::thread setter([&s] {
    std::this_thread::sleep_for(milliseconds(20));
    MutexLock lock(&s.mu);
    s.value = 1;
    s.cv.SignalAll();
  });
  {
    MutexLock lock(&s.mu);
    s.cv.Wait(&s.mu, [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) { return s.value == 1; });
    EXPECT_EQ(s.value, 1);
    s.value = 2;  // still held: the setter cannot have run in between
  }
  setter.join();
  MutexLock lock(&s.mu);
  EXPECT_EQ(s.value, 2);
}

TEST(MutexTest, WaitForGivesThePredicateAtTheTimeout) {
  Shared s;
  MutexLock lock(&s.mu);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(s.cv.WaitFor(&s.mu, milliseconds(30),
                            [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) { return s.value > 0; }));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(30));
  s.value = 1;
  EXPECT_TRUE(s.cv.WaitFor(&s.mu, milliseconds(30),
                           [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) { return s.value > 0; }));
}

TEST(MutexTest, WaitForWakesOnSignal) {
  Shared s;
  std::thread setter([&s] {
    std::this_thread::sleep_for(milliseconds(20));
    MutexLock lock(&s.mu);
    s.value = 1;
    s.cv.Signal();
  });
  {
    MutexLock lock(&s.mu);
    EXPECT_TRUE(s.cv.WaitFor(&s.mu, std::chrono::seconds(30),
                             [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) { return s.value == 1; }));
  }
  setter.join();
}

TEST(MutexTest, WaitForWithoutPredicateSaysWhetherItTimedOut) {
  Shared s;
  MutexLock lock(&s.mu);
  // Nobody signals: the timeout passes (a spurious wake-up would return true; retry on it).
  bool signalled = true;
  for (int i = 0; i < 10 && signalled; ++i) signalled = s.cv.WaitFor(&s.mu, milliseconds(5));
  EXPECT_FALSE(signalled);
}

TEST(MutexTest, WaitUntilGivesThePredicateAtTheDeadline) {
  Shared s;
  MutexLock lock(&s.mu);
  const auto deadline = std::chrono::steady_clock::now() + milliseconds(20);
  EXPECT_FALSE(s.cv.WaitUntil(&s.mu, deadline,
                              [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) { return s.value > 0; }));
  EXPECT_GE(std::chrono::steady_clock::now(), deadline);
}

}  // namespace
}  // namespace switchyard
