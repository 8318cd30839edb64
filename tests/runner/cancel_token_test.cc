// Unit tests for CancelToken and CancelWatcher (runner/cancel_token.h).
#include "runner/cancel_token.h"

#include <atomic>

#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace switchyard::runner {
namespace {

TEST(CancelTokenTest, CancelRunsEveryWakeUpOnceAndLateRegistrationsAtOnce) {
  CancelToken token;
  int a = 0, b = 0;
  auto ra = token.OnCancel([&] { ++a; });
  auto rb = token.OnCancel([&] { ++b; });
  EXPECT_FALSE(token.cancelled());
  EXPECT_EQ(a + b, 0);
  token.Cancel();
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 1);
  token.Cancel();  // once only
  EXPECT_EQ(a, 1);
  int late = 0;
  auto rl = token.OnCancel([&] { ++late; });
  EXPECT_EQ(late, 1);
}

TEST(CancelTokenTest, AResetRegistrationIsNotWoken) {
  CancelToken token;
  int woken = 0;
  auto kept = token.OnCancel([&] { ++woken; });
  {
    auto dropped = token.OnCancel([&] { woken += 10; });
  }
  CancelToken::Registration moved = token.OnCancel([&] { woken += 100; });
  CancelToken::Registration target = std::move(moved);
  target.Reset();
  token.Cancel();
  EXPECT_EQ(woken, 1);
}

TEST(CancelWatcherTest, CancelsTheTokenOnceTheProbeSaysSo) {
  CancelWatcher watcher(absl::Milliseconds(2));
  std::atomic<bool> gone{false};
  CancelToken token;
  absl::Notification woken;
  auto wake = token.OnCancel([&] { woken.Notify(); });
  auto watch = watcher.Start([&] { return gone.load(); }, token);
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(token.cancelled());
  gone = true;
  EXPECT_TRUE(woken.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(token.cancelled());
}

TEST(CancelWatcherTest, AResetWatchIsNoLongerProbed) {
  CancelWatcher watcher(absl::Milliseconds(1));
  std::atomic<int> probes{0};
  CancelToken token;
  auto watch = watcher.Start(
      [&] {
        ++probes;
        return false;
      },
      token);
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (probes.load() < 3 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_GE(probes.load(), 3);
  watch.Reset();  // waits for a probe in progress
  const int after = probes.load();
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(probes.load(), after);
  EXPECT_FALSE(token.cancelled());
}

TEST(CancelWatcherTest, AnEmptyProbeWatchesNothingAndTheDefaultWatcherWorks) {
  CancelToken token;
  auto none = WatchForCancel(nullptr, token);
  auto now = WatchForCancel([] { return true; }, token);
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (!token.cancelled() && absl::Now() < end) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(token.cancelled());
}

}  // namespace
}  // namespace switchyard::runner
