#include "gateway/routing/stream_affinity.h"

#include <gtest/gtest.h>

namespace switchyard::gateway {
namespace {

struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1000);
  std::function<absl::Time()> Fn() {
    return [this] { return now; };
  }
};

TEST(StreamAffinity, RemembersTheNodeUntilIdleOrForgotten) {
  FakeClock clock;
  StreamAffinity affinity(absl::Seconds(10), 100, clock.Fn());
  EXPECT_EQ(affinity.NodeOf("", "s1"), "");
  affinity.Set("", "s1", "orch-1");
  affinity.Set("", "s2", "orch-2");
  EXPECT_EQ(affinity.NodeOf("", "s1"), "orch-1");
  // A failover moves the stream.
  affinity.Set("", "s1", "orch-3");
  EXPECT_EQ(affinity.NodeOf("", "s1"), "orch-3");
  // Use keeps an entry alive; idleness ends it.
  clock.now += absl::Seconds(8);
  EXPECT_EQ(affinity.NodeOf("", "s1"), "orch-3");
  clock.now += absl::Seconds(8);
  EXPECT_EQ(affinity.NodeOf("", "s1"), "orch-3");
  EXPECT_EQ(affinity.NodeOf("", "s2"), "");  // idle 16 s
  EXPECT_EQ(affinity.Forget("", "s1"), "orch-3");
  EXPECT_EQ(affinity.Forget("", "s1"), std::nullopt);
  EXPECT_EQ(affinity.size(), 0u);
}

TEST(StreamAffinity, IsBoundedDroppingIdleThenLeastRecentlyUsed) {
  FakeClock clock;
  StreamAffinity affinity(absl::Seconds(10), 3, clock.Fn());
  affinity.Set("", "a", "n");
  clock.now += absl::Seconds(1);
  affinity.Set("", "b", "n");
  clock.now += absl::Seconds(1);
  affinity.Set("", "c", "n");
  clock.now += absl::Seconds(1);
  EXPECT_EQ(affinity.NodeOf("", "a"), "n");  // a is now the most recently used
  affinity.Set("", "d", "n");                // full: b (least recently used) goes
  EXPECT_EQ(affinity.size(), 3u);
  EXPECT_EQ(affinity.NodeOf("", "b"), "");
  EXPECT_EQ(affinity.NodeOf("", "a"), "n");
  EXPECT_EQ(affinity.NodeOf("", "c"), "n");
  EXPECT_EQ(affinity.NodeOf("", "d"), "n");
  // Idle entries go first, all of them.
  clock.now += absl::Seconds(20);
  affinity.Set("", "e", "n");
  EXPECT_EQ(affinity.size(), 1u);
}

// Regression (issue 18): the table was keyed by stream id alone, so a second API key reusing a
// stream id was routed to, moved and ended the first key's stream.
TEST(StreamAffinity, TheSameStreamIdUnderAnotherTenantIsAnotherStream) {
  FakeClock clock;
  StreamAffinity affinity(absl::Seconds(10), 100, clock.Fn());
  affinity.Set("key-a", "live", "orch-1");
  EXPECT_EQ(affinity.NodeOf("key-b", "live"), "");  // B does not learn or join A's node
  affinity.Set("key-b", "live", "orch-2");          // B's stream of that id lives elsewhere
  EXPECT_EQ(affinity.NodeOf("key-a", "live"), "orch-1");
  EXPECT_EQ(affinity.Forget("key-b", "live"), "orch-2");  // ending B's leaves A's
  EXPECT_EQ(affinity.NodeOf("key-a", "live"), "orch-1");
  EXPECT_EQ(affinity.Forget("key-b", "live"), std::nullopt);
  EXPECT_EQ(affinity.NodeOf("", "live"), "");  // no key is a tenant of its own
  EXPECT_EQ(affinity.size(), 1u);
}

}  // namespace
}  // namespace switchyard::gateway
