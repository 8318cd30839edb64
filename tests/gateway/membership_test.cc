// Unit tests for Membership (gateway/membership/membership.h): registration tokens, immutable snapshots and
// shared connections. NodeConnection dials lazily, so no orchestrator needs to run.
#include "gateway/membership/membership.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace switchyard::gateway {
namespace {

node::v1::NodeStatus Status(const std::string& id, const std::string& address, int in_use = 0,
                            bool draining = false) {
  node::v1::NodeStatus s;
  s.set_node_id(id);
  s.set_address(address);
  s.set_draining(draining);
  auto* cap = s.add_capabilities();
  cap->set_pipeline("upscale");
  cap->set_model_id("esrgan");
  cap->set_state(node::v1::MODEL_STATE_READY);
  cap->set_capacity(2);
  cap->set_in_use(in_use);
  return s;
}

// The node with `id` in the snapshot, or null.
std::shared_ptr<const NodeView> Find(const SnapshotPtr& snap, const std::string& id) {
  for (const auto& n : snap->nodes) {
    if (n->id == id) return n;
  }
  return nullptr;
}

TEST(MembershipTest, StartsEmpty) {
  Membership m;
  SnapshotPtr snap = m.snapshot();
  ASSERT_NE(snap, nullptr);
  EXPECT_TRUE(snap->nodes.empty());
  EXPECT_EQ(snap->version, 0u);
}

TEST(MembershipTest, RegisterPublishesNode) {
  Membership m;
  const uint64_t token = m.Register(Status("a", "127.0.0.1:1", 1), NodeSource::kRegistered);
  EXPECT_NE(token, 0u);
  SnapshotPtr snap = m.snapshot();
  EXPECT_GT(snap->version, 0u);
  ASSERT_EQ(snap->nodes.size(), 1u);
  const auto& n = snap->nodes[0];
  EXPECT_EQ(n->id, "a");
  EXPECT_EQ(n->source, NodeSource::kRegistered);
  EXPECT_EQ(n->status.address(), "127.0.0.1:1");
  ASSERT_EQ(n->status.capabilities_size(), 1);
  EXPECT_EQ(n->status.capabilities(0).in_use(), 1);
  ASSERT_NE(n->connection, nullptr);
  EXPECT_EQ(n->connection->address(), "127.0.0.1:1");
  EXPECT_NE(n->connection->stub(), nullptr);
  EXPECT_EQ(n->connection->in_flight().load(), 0);
}

TEST(MembershipTest, StaticSourceIsKept) {
  Membership m;
  m.Register(Status("s", "127.0.0.1:2"), NodeSource::kStatic);
  ASSERT_EQ(m.snapshot()->nodes.size(), 1u);
  EXPECT_EQ(m.snapshot()->nodes[0]->source, NodeSource::kStatic);
}

TEST(MembershipTest, SeveralNodes) {
  Membership m;
  m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  m.Register(Status("b", "127.0.0.1:2"), NodeSource::kRegistered);
  m.Register(Status("c", "127.0.0.1:3"), NodeSource::kStatic);
  SnapshotPtr snap = m.snapshot();
  ASSERT_EQ(snap->nodes.size(), 3u);
  EXPECT_NE(Find(snap, "a"), nullptr);
  EXPECT_NE(Find(snap, "b"), nullptr);
  EXPECT_NE(Find(snap, "c"), nullptr);
  EXPECT_NE(Find(snap, "a")->connection, Find(snap, "b")->connection);
}

TEST(MembershipTest, UpdateWithCurrentTokenChangesNode) {
  Membership m;
  const uint64_t token = m.Register(Status("a", "127.0.0.1:1", 0), NodeSource::kRegistered);
  const SnapshotPtr before = m.snapshot();
  m.Update(Status("a", "127.0.0.1:1", 2, /*draining=*/true), token);
  const SnapshotPtr after = m.snapshot();
  EXPECT_GT(after->version, before->version);
  ASSERT_EQ(after->nodes.size(), 1u);
  EXPECT_EQ(after->nodes[0]->status.capabilities(0).in_use(), 2);
  EXPECT_TRUE(after->nodes[0]->status.draining());
  // Same address: the connection (and its in-flight count) is kept.
  EXPECT_EQ(after->nodes[0]->connection, before->nodes[0]->connection);
  EXPECT_EQ(after->nodes[0]->source, NodeSource::kRegistered);
}

TEST(MembershipTest, UpdateWithNewAddressGetsNewConnection) {
  Membership m;
  const uint64_t token = m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  m.Update(Status("a", "127.0.0.1:9"), token);
  SnapshotPtr snap = m.snapshot();
  ASSERT_EQ(snap->nodes.size(), 1u);
  EXPECT_EQ(snap->nodes[0]->connection->address(), "127.0.0.1:9");
}

TEST(MembershipTest, UpdateWithStaleTokenIsIgnored) {
  Membership m;
  const uint64_t old_token = m.Register(Status("a", "127.0.0.1:1", 0), NodeSource::kRegistered);
  const uint64_t new_token = m.Register(Status("a", "127.0.0.1:1", 1), NodeSource::kRegistered);
  EXPECT_NE(old_token, new_token);
  const SnapshotPtr before = m.snapshot();
  m.Update(Status("a", "127.0.0.1:1", 2), old_token);
  const SnapshotPtr after = m.snapshot();
  EXPECT_EQ(after, before);  // nothing published
  ASSERT_EQ(after->nodes.size(), 1u);
  EXPECT_EQ(after->nodes[0]->status.capabilities(0).in_use(), 1);
  // A made-up token is ignored too.
  m.Update(Status("a", "127.0.0.1:1", 2), new_token + 1000);
  EXPECT_EQ(m.snapshot(), before);
  // The current token still works.
  m.Update(Status("a", "127.0.0.1:1", 2), new_token);
  EXPECT_EQ(m.snapshot()->nodes[0]->status.capabilities(0).in_use(), 2);
}

TEST(MembershipTest, UpdateOfUnknownNodeIsIgnored) {
  Membership m;
  const uint64_t token = m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  const SnapshotPtr before = m.snapshot();
  m.Update(Status("b", "127.0.0.1:2"), token);  // a's token, b's id
  EXPECT_EQ(m.snapshot(), before);
  EXPECT_EQ(Find(m.snapshot(), "b"), nullptr);
}

TEST(MembershipTest, RemoveWithStaleTokenIsIgnored) {
  Membership m;
  const uint64_t old_token = m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  const uint64_t new_token = m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  const SnapshotPtr before = m.snapshot();
  m.Remove("a", old_token);  // e.g. the old stream closing after the node re-registered
  EXPECT_EQ(m.snapshot(), before);
  ASSERT_EQ(m.snapshot()->nodes.size(), 1u);
  m.Remove("a", new_token);
  EXPECT_TRUE(m.snapshot()->nodes.empty());
  EXPECT_GT(m.snapshot()->version, before->version);
}

TEST(MembershipTest, RemoveUnknownNodeIsIgnored) {
  Membership m;
  const uint64_t token = m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  const SnapshotPtr before = m.snapshot();
  m.Remove("b", token);
  EXPECT_EQ(m.snapshot(), before);
}

TEST(MembershipTest, RemoveOnlyThatNode) {
  Membership m;
  const uint64_t a = m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  m.Register(Status("b", "127.0.0.1:2"), NodeSource::kRegistered);
  m.Remove("a", a);
  SnapshotPtr snap = m.snapshot();
  ASSERT_EQ(snap->nodes.size(), 1u);
  EXPECT_EQ(snap->nodes[0]->id, "b");
}

TEST(MembershipTest, ReRegisterAfterRemove) {
  Membership m;
  const uint64_t t1 = m.Register(Status("a", "127.0.0.1:1", 0), NodeSource::kRegistered);
  m.Remove("a", t1);
  ASSERT_TRUE(m.snapshot()->nodes.empty());
  const uint64_t t2 = m.Register(Status("a", "127.0.0.1:1", 1), NodeSource::kRegistered);
  EXPECT_NE(t2, t1);
  ASSERT_EQ(m.snapshot()->nodes.size(), 1u);
  EXPECT_EQ(m.snapshot()->nodes[0]->status.capabilities(0).in_use(), 1);
  // The old token stays dead; the new one works.
  m.Update(Status("a", "127.0.0.1:1", 2), t1);
  EXPECT_EQ(m.snapshot()->nodes[0]->status.capabilities(0).in_use(), 1);
  m.Remove("a", t1);
  EXPECT_EQ(m.snapshot()->nodes.size(), 1u);
  m.Update(Status("a", "127.0.0.1:1", 2), t2);
  EXPECT_EQ(m.snapshot()->nodes[0]->status.capabilities(0).in_use(), 2);
}

TEST(MembershipTest, ReRegisterWithSameAddressKeepsConnection) {
  Membership m;
  m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  NodeConnectionPtr first = m.snapshot()->nodes[0]->connection;
  first->in_flight() = 3;
  m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  EXPECT_EQ(m.snapshot()->nodes[0]->connection, first);
  EXPECT_EQ(m.snapshot()->nodes[0]->connection->in_flight().load(), 3);
}

TEST(MembershipTest, SnapshotsAreImmutable) {
  Membership m;
  const uint64_t token = m.Register(Status("a", "127.0.0.1:1", 0), NodeSource::kRegistered);
  const SnapshotPtr held = m.snapshot();
  const uint64_t held_version = held->version;
  const std::shared_ptr<const NodeView> held_node = held->nodes[0];

  m.Update(Status("a", "127.0.0.1:1", 2, /*draining=*/true), token);
  m.Register(Status("b", "127.0.0.1:2"), NodeSource::kRegistered);
  m.Remove("a", token);

  // The reader's snapshot and node view are exactly as they were.
  EXPECT_EQ(held->version, held_version);
  ASSERT_EQ(held->nodes.size(), 1u);
  EXPECT_EQ(held->nodes[0], held_node);
  EXPECT_EQ(held_node->id, "a");
  EXPECT_EQ(held_node->status.capabilities(0).in_use(), 0);
  EXPECT_FALSE(held_node->status.draining());
  EXPECT_EQ(held_node->connection->address(), "127.0.0.1:1");

  SnapshotPtr now = m.snapshot();
  EXPECT_NE(now, held);
  ASSERT_EQ(now->nodes.size(), 1u);
  EXPECT_EQ(now->nodes[0]->id, "b");
}

TEST(MembershipTest, VersionsIncreaseOnEveryChange) {
  Membership m;
  std::vector<uint64_t> versions{m.snapshot()->version};
  const uint64_t ta = m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  versions.push_back(m.snapshot()->version);
  const uint64_t tb = m.Register(Status("b", "127.0.0.1:2"), NodeSource::kStatic);
  versions.push_back(m.snapshot()->version);
  m.Update(Status("a", "127.0.0.1:1", 1), ta);
  versions.push_back(m.snapshot()->version);
  m.Update(Status("b", "127.0.0.1:2", 1), tb);
  versions.push_back(m.snapshot()->version);
  m.Remove("a", ta);
  versions.push_back(m.snapshot()->version);
  m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  versions.push_back(m.snapshot()->version);
  for (size_t i = 1; i < versions.size(); ++i) {
    EXPECT_GT(versions[i], versions[i - 1]) << "change " << i;
  }
}

TEST(MembershipTest, ConcurrentReadersSeeConsistentSnapshots) {
  Membership m;
  const uint64_t token = m.Register(Status("a", "127.0.0.1:1", 0), NodeSource::kRegistered);
  std::atomic<bool> done{false};
  std::atomic<int> errors{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      uint64_t last = 0;
      while (!done.load()) {
        SnapshotPtr s = m.snapshot();
        if (s->version < last) ++errors;
        last = s->version;
        // Invariants of every snapshot the writer below publishes.
        if (s->nodes.size() != 1 || s->nodes[0]->id != "a" ||
            s->nodes[0]->status.capabilities(0).capacity() != 2) {
          ++errors;
        }
      }
    });
  }
  for (int i = 1; i <= 2000; ++i) m.Update(Status("a", "127.0.0.1:1", i % 3), token);
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(m.snapshot()->nodes[0]->status.capabilities(0).in_use(), 2000 % 3);
}

TEST(MembershipTest, SilentRegisteredNodesExpireAndStaticOnesDoNot) {
  Membership m;
  const uint64_t token = m.Register(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  m.Register(Status("b", "127.0.0.1:2"), NodeSource::kRegistered);
  m.Register(Status("s", "127.0.0.1:3"), NodeSource::kStatic);
  const absl::Time t0 = absl::Now();
  // Nobody is silent yet.
  EXPECT_TRUE(m.ExpireSilent(t0, absl::Seconds(1)).empty());
  // "a" keeps heartbeating; "b" stays silent.
  EXPECT_TRUE(m.Update(Status("a", "127.0.0.1:1", 1), token));
  auto expired = m.ExpireSilent(absl::Now() + absl::Milliseconds(900), absl::Seconds(1));
  EXPECT_TRUE(expired.empty());
  expired = m.ExpireSilent(absl::Now() + absl::Seconds(5), absl::Seconds(1));
  EXPECT_THAT(expired, ::testing::UnorderedElementsAre("a", "b"));
  // Static nodes are the poller's business.
  SnapshotPtr snap = m.snapshot();
  ASSERT_EQ(snap->nodes.size(), 1u);
  EXPECT_EQ(snap->nodes[0]->id, "s");
  // An update on the expired registration is refused; the stream re-registers if nobody else did.
  EXPECT_FALSE(m.Update(Status("a", "127.0.0.1:1", 1), token));
  const uint64_t again = m.RegisterIfAbsent(Status("a", "127.0.0.1:1"), NodeSource::kRegistered);
  EXPECT_NE(again, 0u);
  EXPECT_NE(Find(m.snapshot(), "a"), nullptr);
  EXPECT_EQ(m.RegisterIfAbsent(Status("a", "127.0.0.1:9"), NodeSource::kRegistered), 0u);
  EXPECT_EQ(Find(m.snapshot(), "a")->status.address(), "127.0.0.1:1");
}

// Issue 18, "Node id takeover": a live registration keeps its id. Before, a second hello with the
// same node_id replaced the first (Register), and the impostor got the victim's routes.
TEST(MembershipTest, TryRegisterKeepsALiveIdAndNamesItsHolder) {
  Membership m;
  const uint64_t victim = m.TryRegister(Status("a", "127.0.0.1:1", 1), NodeSource::kRegistered,
                                        Registrant{"ipv4:127.0.0.1:1001", "s1"});
  ASSERT_NE(victim, 0u);
  const SnapshotPtr before = m.snapshot();
  std::string holder;
  EXPECT_EQ(m.TryRegister(Status("a", "127.0.0.1:9"), NodeSource::kRegistered,
                          Registrant{"ipv4:127.0.0.1:2002", "s2"}, &holder),
            0u);
  EXPECT_EQ(holder, "ipv4:127.0.0.1:1001");
  EXPECT_EQ(m.snapshot(), before);  // nothing published: the victim keeps its routes
  ASSERT_EQ(m.snapshot()->nodes.size(), 1u);
  EXPECT_EQ(m.snapshot()->nodes[0]->status.address(), "127.0.0.1:1");
  EXPECT_EQ(m.snapshot()->nodes[0]->credential, "s1");
  // The victim's stream still works; an update keeps its credential.
  EXPECT_TRUE(m.Update(Status("a", "127.0.0.1:1", 2), victim));
  EXPECT_EQ(m.snapshot()->nodes[0]->credential, "s1");
  // A static node's id is held the same way.
  m.Register(Status("s", "127.0.0.1:3"), NodeSource::kStatic);
  EXPECT_EQ(
      m.TryRegister(Status("s", "127.0.0.1:9"), NodeSource::kRegistered, Registrant{}, &holder),
      0u);
  EXPECT_EQ(holder, "static orchestrator 127.0.0.1:3");
  EXPECT_EQ(m.RegisterIfAbsent(Status("a", "127.0.0.1:9"), NodeSource::kRegistered), 0u);
}

// A restarted node waits for its old registration to end (its stream closes) or to go silent.
TEST(MembershipTest, TryRegisterGetsInOnceTheHolderLeavesOrIsSilent) {
  Membership m;
  const uint64_t first =
      m.TryRegister(Status("a", "127.0.0.1:1"), NodeSource::kRegistered, Registrant{"p1", ""});
  ASSERT_NE(first, 0u);
  EXPECT_EQ(
      m.TryRegister(Status("a", "127.0.0.1:2"), NodeSource::kRegistered, Registrant{"p2", ""}), 0u);
  m.Remove("a", first);  // the old stream ended
  const uint64_t second =
      m.TryRegister(Status("a", "127.0.0.1:2"), NodeSource::kRegistered, Registrant{"p2", "x"});
  ASSERT_NE(second, 0u);
  EXPECT_EQ(Find(m.snapshot(), "a")->status.address(), "127.0.0.1:2");
  EXPECT_EQ(Find(m.snapshot(), "a")->credential, "x");
  // Silent past the timeout: expired, and the id is free again.
  EXPECT_THAT(m.ExpireSilent(absl::Now() + absl::Seconds(5), absl::Seconds(1)),
              ::testing::ElementsAre("a"));
  EXPECT_NE(
      m.TryRegister(Status("a", "127.0.0.1:3"), NodeSource::kRegistered, Registrant{"p3", ""}), 0u);
  EXPECT_FALSE(m.Update(Status("a", "127.0.0.1:2"), second));  // the old one's token is dead
}

}  // namespace
}  // namespace switchyard::gateway
