// ThreadPool (common/thread_pool.h): tasks run on the pool's threads, several at once, and the
// destructor runs what is still queued before it joins. Every wait is bounded.
#include "common/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "common/mutex.h"

namespace switchyard {
namespace {

TEST(ThreadPoolTest, CreateValidates) {
  EXPECT_FALSE(ThreadPool::Create("pool", 0).ok());
  EXPECT_FALSE(ThreadPool::Create("pool", 257).ok());
  EXPECT_FALSE(ThreadPool::Create("", 1).ok());
  EXPECT_FALSE(ThreadPool::Create("a-name-too-long-for-linux", 1).ok());
  auto pool = ThreadPool::Create("pool", 3);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->threads(), 3);
}

// Tasks that wait run side by side: as many at once as the pool has threads, not more.
TEST(ThreadPoolTest, RunsAsManyTasksAtOnceAsItHasThreads) {
  auto pool = ThreadPool::Create("pool", 4);
  ASSERT_TRUE(pool.ok());
  Mutex mu;
  CondVar changed;
  int running = 0, most = 0, finished = 0;
  bool open = false;
  for (int i = 0; i < 10; ++i) {
    (*pool)->Post([&] {
      MutexLock lock(&mu);
      running++;
      most = std::max(most, running);
      changed.SignalAll();
      changed.WaitFor(&mu, std::chrono::seconds(10), [&] { return open; });
      running--;
      finished++;
      changed.SignalAll();
    });
  }
  {
    MutexLock lock(&mu);
    EXPECT_TRUE(changed.WaitFor(&mu, std::chrono::seconds(10), [&] { return running == 4; }));
  }
  EXPECT_EQ((*pool)->queued(), 6u);
  {
    MutexLock lock(&mu);
    open = true;
    changed.SignalAll();
    EXPECT_TRUE(changed.WaitFor(&mu, std::chrono::seconds(10), [&] { return finished == 10; }));
    EXPECT_EQ(most, 4);
  }
}

// What is queued when the pool goes still runs: a posted task may be what lets a caller go on.
TEST(ThreadPoolTest, DestructorRunsWhatIsQueued) {
  std::atomic<int> ran{0};
  {
    auto pool = ThreadPool::Create("pool", 1);
    ASSERT_TRUE(pool.ok());
    for (int i = 0; i < 50; ++i) {
      (*pool)->Post([&] {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        ran++;
      });
    }
  }
  EXPECT_EQ(ran.load(), 50);
}

}  // namespace
}  // namespace switchyard
