// Unit tests for WaitQueue (gateway/routing/wait_queue.h): bounded parking, signals, polls, deadlines.
#include "gateway/routing/wait_queue.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "absl/time/clock.h"

namespace switchyard::gateway {
namespace {

// Waits (bounded) until `pred` holds.
template <typename Pred>
bool Eventually(Pred pred, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

TEST(WaitQueueTest, IsBoundedAndSignalWakesTheOldestFirst) {
  WaitQueue queue(2, /*poll=*/absl::Hours(1));  // no polls during the test
  std::atomic<int> woken_first{0}, woken_second{0};
  const absl::Time far = absl::Now() + absl::Hours(1);
  ASSERT_TRUE(queue.Park(far, [&](bool expired) { woken_first = expired ? -1 : 1; }));
  ASSERT_TRUE(queue.Park(far, [&](bool expired) { woken_second = expired ? -1 : 1; }));
  EXPECT_FALSE(queue.Park(far, [](bool) { FAIL() << "a refused job must never be woken"; }));
  EXPECT_EQ(queue.size(), 2);
  queue.Signal();
  ASSERT_TRUE(Eventually([&] { return woken_first.load() != 0; }));
  EXPECT_EQ(woken_first.load(), 1);
  EXPECT_EQ(woken_second.load(), 0);
  EXPECT_EQ(queue.size(), 1);
}

TEST(WaitQueueTest, DeadlineExpiresAWaiter) {
  WaitQueue queue(4, absl::Hours(1));
  // Parked while the queue's thread already waits for its next poll (an hour away): the
  // waiter's deadline still ends the wait.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::atomic<int> result{0};
  const absl::Time start = absl::Now();
  ASSERT_TRUE(
      queue.Park(start + absl::Milliseconds(50), [&](bool expired) { result = expired ? -1 : 1; }));
  ASSERT_TRUE(Eventually([&] { return result.load() != 0; }));
  EXPECT_EQ(result.load(), -1);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
}

TEST(WaitQueueTest, PollWakesEveryoneWithoutASignal) {
  WaitQueue queue(4, absl::Milliseconds(20));
  std::atomic<int> woken{0};
  const absl::Time far = absl::Now() + absl::Hours(1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(queue.Park(far, [&](bool expired) {
      if (!expired) ++woken;
    }));
  }
  ASSERT_TRUE(Eventually([&] { return woken.load() == 3; }));
  EXPECT_EQ(queue.size(), 0);
}

TEST(WaitQueueTest, DestructionExpiresWaitersAndAWokenJobMayParkAgain) {
  std::atomic<int> expired_count{0};
  std::atomic<int> parks{0};
  {
    WaitQueue queue(4, absl::Milliseconds(10));
    const absl::Time far = absl::Now() + absl::Hours(1);
    std::function<void(bool)> wake = [&](bool expired) {
      if (expired) {
        ++expired_count;
        return;
      }
      if (++parks < 5) queue.Park(far, wake);  // not yet: wait again
    };
    ASSERT_TRUE(queue.Park(far, wake));
    ASSERT_TRUE(Eventually([&] { return parks.load() >= 5; }));
    ASSERT_TRUE(queue.Park(far, [&](bool expired) {
      if (expired) ++expired_count;
    }));
  }
  EXPECT_EQ(expired_count.load(), 1);
}

}  // namespace
}  // namespace switchyard::gateway
