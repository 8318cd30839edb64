// Hardware-check findings shared by several gateways through Redis
// (gateway/membership/shared_hardware_findings.h), against a real redis-server started by the
// test on a free loopback port (tests/support/redis_server.h): the store itself (record, read,
// expiry, clear, bounds), hostile contents under its keys, Redis stopped; and two hardware
// checkers (two "gateways") over fake nodes on loopback: a finding of one caps the node on the
// other, whose own check passed, until the finder itself finds the node ok. Every loop is bounded
// in count and time.
#include "gateway/membership/shared_hardware_findings.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/hardware_challenge.h"
#include "common/metrics.h"
#include "gateway/membership/hardware_checker.h"
#include "gateway/routing/node_health.h"
#include "gateway/state/redis_client.h"
#include "support/redis_server.h"
#include "support/redis_test_fixture.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::RedisServer;
using ::switchyard::testing::TempDir;

constexpr char kA[] = "00000000000000aa";  // instance ids
constexpr char kB[] = "00000000000000bb";

HardwareFinding Finding(const std::string& node, const std::string& instance, absl::Time checked,
                        absl::Duration ttl) {
  HardwareFinding f;
  f.node = node;
  f.instance = instance;
  f.gateway = absl::StrCat("gw-", instance.size() == 16 ? instance.substr(14) : instance);
  f.verdict = "too_slow";
  f.claim_key = "cuda";
  f.node_key = "abcdef";
  f.detail = "claims cuda but answered slowly";
  f.checked = checked;
  f.until = checked + ttl;
  return f;
}

// A Redis of the test's own, a key prefix per test (support/redis_test_fixture.h).
class SharedHardwareFindingsTest : public ::switchyard::testing::RedisTest {
 protected:
  std::unique_ptr<RedisHardwareFindings> Store(size_t max_entries = 10000, size_t max_read = 4096) {
    RedisHardwareFindingsOptions o;
    o.redis = ClientOptions();
    o.key_prefix = prefix_;
    o.max_entries = max_entries;
    o.max_read = max_read;
    auto store = RedisHardwareFindings::Create(std::move(o));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
};

TEST_F(SharedHardwareFindingsTest, RecordReadClearAndExpiry) {
  auto a = Store();
  auto b = Store();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const absl::Time now = absl::Now();
  ASSERT_TRUE(a->Record(Finding("liar", kA, now, absl::Seconds(60)), now).ok());
  ASSERT_TRUE(b->Record(Finding("liar", kB, now, absl::Seconds(30)), now).ok());
  ASSERT_TRUE(b->Record(Finding("other", kB, now, absl::Seconds(10)), now).ok());
  // Renewed: one entry per gateway and node, the later finding's.
  ASSERT_TRUE(a->Record(Finding("liar", kA, now + absl::Seconds(1), absl::Seconds(60)), now).ok());

  auto read = b->Read(now);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 3u);
  // Those that end last first, every field back as recorded.
  const HardwareFinding& first = (*read)[0];
  EXPECT_EQ(first.node, "liar");
  EXPECT_EQ(first.instance, kA);
  EXPECT_EQ(first.gateway, "gw-aa");
  EXPECT_EQ(first.verdict, "too_slow");
  EXPECT_EQ(first.claim_key, "cuda");
  EXPECT_EQ(first.node_key, "abcdef");
  EXPECT_EQ(first.detail, "claims cuda but answered slowly");
  EXPECT_EQ(absl::ToUnixMillis(first.checked), absl::ToUnixMillis(now + absl::Seconds(1)));
  EXPECT_EQ(absl::ToUnixMillis(first.until), absl::ToUnixMillis(now + absl::Seconds(61)));
  EXPECT_EQ((*read)[1].instance, kB);
  EXPECT_EQ((*read)[2].node, "other");

  // Both keys expire by themselves once every finding has ended (plus a minute's margin).
  for (const std::string& key : {a->FailedKey(), a->FindingsKey()}) {
    auto ttl = raw_->Run({"PTTL", key});
    ASSERT_TRUE(ttl.ok());
    EXPECT_GT(ttl->integer, 61000) << key;
    EXPECT_LE(ttl->integer, 121000) << key;
  }

  // A gateway removes only its own finding.
  ASSERT_TRUE(b->Clear("liar", kB).ok());
  read = a->Read(now);
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 2u);
  EXPECT_EQ((*read)[0].instance, kA);

  // Ended findings are not read and are removed as they are read.
  read = a->Read(now + absl::Seconds(20));
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ((*read)[0].node, "liar");
  auto card = raw_->Run({"ZCARD", a->FailedKey()});
  ASSERT_TRUE(card.ok());
  EXPECT_EQ(card->integer, 1);
  auto fields = raw_->Run({"HLEN", a->FindingsKey()});
  ASSERT_TRUE(fields.ok());
  EXPECT_EQ(fields->integer, 1);
  read = a->Read(now + absl::Seconds(62));
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(read->empty());

  // Not findings: refused before Redis.
  HardwareFinding bad = Finding(std::string(300, 'n'), kA, now, absl::Seconds(60));
  EXPECT_FALSE(a->Record(bad, now).ok());
  bad = Finding("n", "not-hex", now, absl::Seconds(60));
  EXPECT_FALSE(a->Record(bad, now).ok());
  bad = Finding("n", kA, now, absl::Seconds(60));
  bad.verdict = "ok";
  EXPECT_FALSE(a->Record(bad, now).ok());
  // A long detail is cut to fit, not refused.
  HardwareFinding longer = Finding("verbose", kA, now, absl::Seconds(60));
  longer.detail = std::string(5000, 'd');
  ASSERT_TRUE(a->Record(longer, now).ok());
  read = a->Read(now);
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 1u);
  EXPECT_EQ((*read)[0].detail.size(), RedisHardwareFindings::kMaxDetailBytes);
}

TEST_F(SharedHardwareFindingsTest, StoredFindingsAndReadsAreBounded) {
  auto store = Store(/*max_entries=*/5, /*max_read=*/3);
  ASSERT_NE(store, nullptr);
  const absl::Time now = absl::Now();
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(
        store->Record(Finding(absl::StrCat("n", i), kA, now, absl::Seconds(100 + i)), now).ok());
  }
  auto card = raw_->Run({"ZCARD", store->FailedKey()});
  ASSERT_TRUE(card.ok());
  EXPECT_EQ(card->integer, 5);  // those that end first were dropped
  auto fields = raw_->Run({"HLEN", store->FindingsKey()});
  ASSERT_TRUE(fields.ok());
  EXPECT_EQ(fields->integer, 5);
  auto read = store->Read(now);
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 3u);
  EXPECT_EQ((*read)[0].node, "n7");
  RedisHardwareFindingsOptions options;
  options.redis.address = redis_->address();
  options.max_entries = 0;
  EXPECT_FALSE(RedisHardwareFindings::Create(options).ok());
  options.max_entries = 10;
  options.max_read = 11;
  EXPECT_FALSE(RedisHardwareFindings::Create(options).ok());
}

TEST_F(SharedHardwareFindingsTest, HostileContentsUnderItsKeysAreSkippedOrRefused) {
  auto store = Store();
  ASSERT_NE(store, nullptr);
  const absl::Time now = absl::Now();
  ASSERT_TRUE(store->Record(Finding("good", kA, now, absl::Seconds(60)), now).ok());
  const std::string later = absl::StrCat(absl::ToUnixMillis(now + absl::Seconds(60)));
  const std::string zset = store->FailedKey(), hash = store->FindingsKey();
  auto add = [&](const std::string& entry, const std::string& value) {
    ASSERT_TRUE(raw_->Run({"ZADD", zset, later, entry}).ok());
    if (!value.empty()) {
      ASSERT_TRUE(raw_->Run({"HSET", hash, entry, value}).ok());
    }
  };
  const std::string valid =
      R"({"gateway":"g","verdict":"wrong","claim":"cuda","key":"","detail":"d","checked_ms":1})";
  add(std::string(2000, 'x'), valid);                        // member too long
  add("no-instance", valid);                                 // no instance id
  add(absl::StrCat("ZZZZZZZZZZZZZZZZ:n1"), valid);           // not hex
  add(absl::StrCat(kB, ":", std::string(300, 'n')), valid);  // node id too long
  add(absl::StrCat(kB, ":no-value"), "");                    // no JSON
  add(absl::StrCat(kB, ":bad-json"), "{not json");           // not JSON
  add(absl::StrCat(kB, ":array"), "[1,2]");                  // not an object
  add(absl::StrCat(kB, ":verdict"), R"({"gateway":"g","verdict":"ok","claim":"cuda","key":"",)"
                                    R"("detail":"d","checked_ms":1})");  // not a failed one
  add(absl::StrCat(kB, ":types"), R"({"gateway":1,"verdict":"wrong","claim":"cuda","key":"",)"
                                  R"("detail":"d","checked_ms":1})");  // a field's type
  add(absl::StrCat(kB, ":key"), R"({"gateway":"g","verdict":"wrong","claim":"cuda","key":"K!",)"
                                R"("detail":"d","checked_ms":1})");  // key not hex
  add(absl::StrCat(kB, ":checked"), R"({"gateway":"g","verdict":"wrong","claim":"cuda",)"
                                    R"("key":"","detail":"d","checked_ms":-5})");  // a time
  add(absl::StrCat(kB, ":huge"), std::string(100000, ' ') + valid);                // over the limit
  ASSERT_TRUE(raw_->Run({"ZADD", zset, "1e300", absl::StrCat(kB, ":far")}).ok());  // a score
  ASSERT_TRUE(raw_->Run({"HSET", hash, absl::StrCat(kB, ":far"), valid}).ok());
  add(absl::StrCat(kB, ":fine"), valid);  // a finding written by hand is one

  auto read = store->Read(now);
  ASSERT_TRUE(read.ok()) << read.status();
  std::vector<std::string> nodes;
  for (const auto& f : *read) nodes.push_back(f.node);
  EXPECT_EQ(nodes.size(), 2u);
  EXPECT_TRUE(std::find(nodes.begin(), nodes.end(), "good") != nodes.end());
  EXPECT_TRUE(std::find(nodes.begin(), nodes.end(), "fine") != nodes.end());

  // Keys of another type: Redis's errors come back as errors, not crashes or findings.
  ASSERT_TRUE(raw_->Run({"DEL", zset}).ok());
  ASSERT_TRUE(raw_->Run({"SET", zset, "not a sorted set"}).ok());
  EXPECT_FALSE(store->Read(now).ok());
  EXPECT_FALSE(store->Record(Finding("n", kA, now, absl::Seconds(60)), now).ok());
  EXPECT_FALSE(store->Clear("n", kA).ok());
  ASSERT_TRUE(raw_->Run({"DEL", zset}).ok());
  ASSERT_TRUE(raw_->Run({"DEL", hash}).ok());
  ASSERT_TRUE(raw_->Run({"SET", hash, "not a hash"}).ok());
  EXPECT_FALSE(store->Record(Finding("n", kA, now, absl::Seconds(60)), now).ok());
  ASSERT_TRUE(raw_->Run({"DEL", hash}).ok());

  // Redis gone: errors at once, then answers again after a restart.
  redis_->Stop();
  EXPECT_FALSE(store->Record(Finding("n", kA, now, absl::Seconds(60)), now).ok());
  EXPECT_FALSE(store->Read(now).ok());
  ASSERT_TRUE(redis_->Restart().ok());
  bool back = false;
  for (int i = 0; i < 50 && !back; ++i) {
    back = store->Read(now).ok();
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(back);
}

// A node answering challenges right, after `delay_ms`; or, while `busy`, refusing them as a node
// running another challenge does; while `oversized`, answering more than the gateways' channel
// takes (1 MiB).
class FakeNode final : public node::v1::Orchestrator::Service {
 public:
  grpc::Status HardwareChallenge(grpc::ServerContext*,
                                 const node::v1::HardwareChallengeRequest* request,
                                 node::v1::HardwareChallengeResponse* response) override {
    if (busy) return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, kChallengeBusyMessage);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
    for (int m = 0; m < request->matrices(); ++m) {
      response->add_digests(ReferenceChallengeDigest(*request, m));
    }
    response->set_device(oversized ? std::string(2 << 20, 'x') : "fake");
    return grpc::Status::OK;
  }
  std::atomic<int> delay_ms{0};
  std::atomic<bool> busy{false};
  std::atomic<bool> oversized{false};
};

// One gateway's view of the node (each gateway has its own NodeStats), its checker and metrics.
struct Gateway {
  std::shared_ptr<NodeView> view;
  std::unique_ptr<RedisHardwareFindings> shared;
  Metrics metrics{"gateway"};
  HardwareCheckerPtr checker;
  std::string key = "key-1";  // the identity key this gateway binds to the node
  absl::Duration later;       // how far this gateway's clock runs ahead (a retry made due)

  int cap() const { return view->stats->capacity_cap(); }
  // The value of switchyard_gateway_shared_hardware_findings_<event>_total for the node "liar"
  // and `verdict` on this gateway's /metrics (0 while it has none), -1 for a malformed line.
  double SharedFindings(const std::string& event, const std::string& verdict = "too_slow") {
    const std::string series =
        absl::StrCat("switchyard_gateway_shared_hardware_findings_", event,
                     "_total{orchestrator=\"liar\",verdict=\"", verdict, "\"} ");
    for (absl::string_view line : absl::StrSplit(metrics.Render(), '\n')) {
      if (!absl::ConsumePrefix(&line, series)) continue;
      double v = 0;
      return absl::SimpleAtod(line, &v) ? v : -1;
    }
    return 0;
  }
  HardwareVerdict verdict() const {
    auto r = checker->Lookup(view->id);
    return r ? r->verdict : HardwareVerdict::kUnchecked;
  }
  // Checks until the node is judged (a first slow GPU answer is checked again at once).
  void CheckNow() {
    for (int i = 0; i < 3; ++i) {
      checker->CheckDue();
      auto r = checker->Lookup(view->id);
      if (r && r->next_check > r->checked) return;
    }
  }
};

class TwoHardwareCheckersTest : public SharedHardwareFindingsTest {
 protected:
  void SetUp() override {
    SharedHardwareFindingsTest::SetUp();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&node_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // A gateway judging the node "liar" (claiming cuda) with `gpu_max_ms`; `poll`: its poll
  // interval (0: only when the test calls SyncShared).
  std::unique_ptr<Gateway> MakeGateway(const std::string& id, int gpu_max_ms,
                                       absl::Duration poll = absl::ZeroDuration()) {
    auto g = std::make_unique<Gateway>();
    g->view = std::make_shared<NodeView>();
    g->view->id = "liar";
    g->view->status.set_node_id("liar");
    g->view->status.add_hardware("cuda");
    g->view->connection =
        std::make_shared<NodeConnection>(absl::StrCat("127.0.0.1:", port_), 1 << 20);
    g->view->stats = std::make_shared<NodeStats>();
    g->shared = Store();
    if (g->shared == nullptr) return nullptr;
    HardwareChecker::Deps deps;
    deps.snapshot = [gw = g.get()] {
      auto s = std::make_shared<Snapshot>();
      s->nodes = {std::make_shared<const NodeView>(*gw->view)};
      return SnapshotPtr(s);
    };
    deps.random = [] { return uint64_t{5}; };
    deps.now = [gw = g.get()] { return absl::Now() + gw->later; };
    deps.gpu_matrices = 3;
    deps.gpu_size = 16;
    deps.cpu_matrices = 2;
    deps.cpu_size = 8;
    deps.shared = g->shared.get();
    deps.shared_poll = poll;
    deps.gateway_id = id;
    deps.node_key = [gw = g.get()](const std::string&) { return gw->key; };
    deps.metrics = &g->metrics;
    VerificationConfig::Hardware options;
    options.gpu_max_ms = gpu_max_ms;
    options.failed_capacity = 1;
    auto checker = HardwareChecker::Create(options, std::move(deps), /*start_thread=*/false);
    EXPECT_TRUE(checker.ok()) << checker.status();
    if (!checker.ok()) return nullptr;
    g->checker = *std::move(checker);
    return g;
  }

  FakeNode node_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(TwoHardwareCheckersTest, AFindingOfOneGatewayCapsTheNodeOnTheOtherUntilTheFinderFindsItOk) {
  // Gateway 1 wants a GPU's answer in 40 ms; gateway 2 takes up to 10 s (the node passes there).
  auto g1 = MakeGateway("gw-1", 40);
  auto g2 = MakeGateway("gw-2", 10000);
  ASSERT_NE(g1, nullptr);
  ASSERT_NE(g2, nullptr);
  ASSERT_NE(g1->checker->instance(), g2->checker->instance());
  node_.delay_ms = 100;
  g1->CheckNow();
  g2->CheckNow();
  EXPECT_EQ(g1->verdict(), HardwareVerdict::kTooSlow);
  EXPECT_EQ(g1->cap(), 1);
  EXPECT_EQ(g2->verdict(), HardwareVerdict::kOk);
  EXPECT_EQ(g2->cap(), 0);

  // Gateway 1 shares its finding; gateway 2 caps the node with it, and says whose it is. Only
  // gateway 2 counts it as applied: gateway 1's own finding is not another gateway's.
  EXPECT_EQ(g1->checker->SyncShared(), 0);  // nothing of another gateway's for it
  EXPECT_EQ(g1->SharedFindings("applied"), 0);
  EXPECT_EQ(g2->SharedFindings("applied"), 0);
  EXPECT_EQ(g2->checker->SyncShared(), 1);
  EXPECT_EQ(g2->cap(), 1);
  EXPECT_EQ(g2->SharedFindings("applied"), 1);
  EXPECT_EQ(g2->SharedFindings("cleared"), 0);
  EXPECT_EQ(g1->checker->SyncShared(), 0);  // its own finding, read back: still not counted
  EXPECT_EQ(g1->SharedFindings("applied"), 0);
  auto record = g2->checker->Lookup("liar");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kTooSlow);
  EXPECT_EQ(record->shared_by, "gw-1");
  EXPECT_FALSE(record->capped);  // not gateway 2's own finding
  EXPECT_TRUE(absl::StrContains(record->detail, "another gateway (gw-1) found it too_slow"))
      << record->detail;
  EXPECT_TRUE(absl::StrContains(record->detail, "at most 1 job(s) at once per model"))
      << record->detail;

  // Gateway 2's own later ok (the node registered again there: a new routing record, checked
  // anew) neither lifts the cap here nor removes gateway 1's finding.
  g2->view->stats = std::make_shared<NodeStats>();
  g2->CheckNow();
  EXPECT_EQ(g2->cap(), 1);
  EXPECT_EQ(g2->verdict(), HardwareVerdict::kTooSlow);
  EXPECT_EQ(g2->checker->SyncShared(), 1);
  EXPECT_EQ(g2->cap(), 1);
  EXPECT_EQ(g2->SharedFindings("applied"), 1);  // the same finding, still applied: no new count

  // Another claim than the one judged: the finding does not apply (cleared), and again.
  g2->view->status.clear_hardware();
  g2->view->status.add_hardware("cuda");
  g2->view->status.add_hardware("nvenc");
  EXPECT_EQ(g2->checker->SyncShared(), 0);
  EXPECT_EQ(g2->cap(), 0);
  EXPECT_EQ(g2->SharedFindings("cleared"), 1);
  g2->view->status.clear_hardware();
  g2->view->status.add_hardware("cuda");
  EXPECT_EQ(g2->checker->SyncShared(), 1);
  EXPECT_EQ(g2->cap(), 1);
  EXPECT_EQ(g2->SharedFindings("applied"), 2);
  // Nor to a node bound to another key here (the finder checked someone else under that id).
  g2->key = "key-2";
  EXPECT_EQ(g2->checker->SyncShared(), 0);
  EXPECT_EQ(g2->cap(), 0);
  EXPECT_EQ(g2->SharedFindings("cleared"), 2);
  g2->key = "key-1";
  EXPECT_EQ(g2->checker->SyncShared(), 1);
  EXPECT_EQ(g2->SharedFindings("applied"), 3);

  // The node got its GPU: gateway 1's next check finds it ok and removes its finding; gateway 2
  // lifts the cap at its next poll.
  node_.delay_ms = 0;
  // Make gateway 1's check due now: a re-registration (new routing record) is checked anew.
  g1->view->stats = std::make_shared<NodeStats>();
  g1->CheckNow();
  EXPECT_EQ(g1->verdict(), HardwareVerdict::kOk);
  EXPECT_EQ(g1->cap(), 0);
  EXPECT_EQ(g1->checker->SyncShared(), 0);
  EXPECT_EQ(g2->checker->SyncShared(), 0);
  EXPECT_EQ(g2->cap(), 0);
  EXPECT_EQ(g2->verdict(), HardwareVerdict::kOk);
  EXPECT_EQ(g2->SharedFindings("applied"), 3);
  EXPECT_EQ(g2->SharedFindings("cleared"), 3);
  // Gateway 1 never applied or cleared another gateway's finding: only its own came and went.
  EXPECT_EQ(g1->SharedFindings("applied"), 0);
  EXPECT_EQ(g1->SharedFindings("cleared"), 0);
  EXPECT_FALSE(absl::StrContains(g1->metrics.Render(), "shared_hardware_findings_applied_total{"));
  auto card = raw_->Run({"ZCARD", g1->shared->FailedKey()});
  ASSERT_TRUE(card.ok());
  EXPECT_EQ(card->integer, 0);
}

// Gateways that check a node at once find it busy with each other's challenge: that is not shared
// (each asks again in 30 s). A gateway whose own challenge went unanswered shows another's
// measured finding.
TEST_F(TwoHardwareCheckersTest, ABusyAnswerIsNotSharedAndAMeasuredFindingShowsOverIt) {
  auto g1 = MakeGateway("gw-1", 40);
  auto g2 = MakeGateway("gw-2", 40);
  ASSERT_NE(g1, nullptr);
  ASSERT_NE(g2, nullptr);
  node_.busy = true;
  g1->CheckNow();
  EXPECT_EQ(g1->verdict(), HardwareVerdict::kUnanswered);
  EXPECT_EQ(g1->cap(), 1);  // its own finding, as before
  EXPECT_EQ(g1->checker->SyncShared(), 0);
  EXPECT_EQ(g2->checker->SyncShared(), 0);  // nothing shared
  EXPECT_EQ(g2->cap(), 0);
  auto card = raw_->Run({"ZCARD", g1->shared->FailedKey()});
  ASSERT_TRUE(card.ok());
  EXPECT_EQ(card->integer, 0);

  node_.busy = false;
  node_.delay_ms = 100;
  g2->CheckNow();
  EXPECT_EQ(g2->verdict(), HardwareVerdict::kTooSlow);
  EXPECT_EQ(g2->checker->SyncShared(), 0);
  EXPECT_EQ(g1->checker->SyncShared(), 1);
  auto record = g1->checker->Lookup("liar");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kTooSlow);
  EXPECT_EQ(record->shared_by, "gw-2");
  EXPECT_EQ(g1->cap(), 1);
}

// gRPC refuses an answer over the channel's limit as RESOURCE_EXHAUSTED, like a busy node's
// refusal; it is a wrong answer, shared at once.
TEST_F(TwoHardwareCheckersTest, AnAnswerOverTheChannelsLimitIsSharedAsWrong) {
  auto g1 = MakeGateway("gw-1", 10000);
  auto g2 = MakeGateway("gw-2", 10000);
  ASSERT_NE(g1, nullptr);
  ASSERT_NE(g2, nullptr);
  node_.oversized = true;
  g1->CheckNow();
  EXPECT_EQ(g1->verdict(), HardwareVerdict::kWrong);
  EXPECT_EQ(g1->cap(), 1);
  EXPECT_EQ(g1->checker->SyncShared(), 0);
  EXPECT_EQ(g2->checker->SyncShared(), 1);
  EXPECT_EQ(g2->cap(), 1);
  EXPECT_EQ(g2->SharedFindings("applied", "wrong"), 1);
  auto record = g2->checker->Lookup("liar");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kWrong);
  EXPECT_EQ(record->shared_by, "gw-1");
  EXPECT_TRUE(absl::StrContains(record->detail,
                                "another gateway (gw-1) found it wrong: answered more than 1048576 "
                                "bytes to a challenge of 3 products of 16x16"))
      << record->detail;
}

// A node that refuses one gateway's challenges as busy, check after check, is shared as
// unanswered after kBusyChecksShared of them in a row (an answer between starts the count
// again), until that gateway finds it ok.
TEST_F(TwoHardwareCheckersTest, BusyRefusalsInARowAreSharedUntilTheFinderFindsTheNodeOk) {
  ASSERT_EQ(kBusyChecksShared, 3);
  auto g1 = MakeGateway("gw-1", 10000);
  auto g2 = MakeGateway("gw-2", 10000);
  ASSERT_NE(g1, nullptr);
  ASSERT_NE(g2, nullptr);
  // Gateway 1 checks again (its clock moved past the next check, drawn within 45 s after a busy
  // refusal, 12.5 min after an ok) and both poll.
  const auto check = [&](bool busy) {
    node_.busy = busy;
    g1->later += absl::Minutes(15);
    g1->CheckNow();
    EXPECT_GE(g1->checker->SyncShared(), 0);
    return g2->checker->SyncShared();
  };
  EXPECT_EQ(check(true), 0);
  EXPECT_EQ(check(true), 0);
  EXPECT_EQ(check(false), 0);  // answered: the count starts again
  EXPECT_EQ(g1->verdict(), HardwareVerdict::kOk);
  EXPECT_EQ(check(true), 0);
  EXPECT_EQ(check(true), 0);
  EXPECT_EQ(g1->cap(), 1);  // capped by gateway 1 alone
  EXPECT_EQ(g2->cap(), 0);
  EXPECT_EQ(check(true), 1);
  EXPECT_EQ(g2->cap(), 1);
  EXPECT_EQ(g2->SharedFindings("applied", "unanswered"), 1);
  auto record = g2->checker->Lookup("liar");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kUnanswered);
  EXPECT_EQ(record->shared_by, "gw-1");
  EXPECT_TRUE(absl::StrContains(record->detail,
                                "another gateway (gw-1) found it unanswered: refused 3 challenges "
                                "in a row as busy (RESOURCE_EXHAUSTED)"))
      << record->detail;
  EXPECT_EQ(check(true), 1);  // renewed, not applied again
  EXPECT_EQ(g2->SharedFindings("applied", "unanswered"), 1);
  EXPECT_EQ(check(false), 0);
  EXPECT_EQ(g2->cap(), 0);
  EXPECT_EQ(g2->SharedFindings("cleared", "unanswered"), 1);
}

TEST_F(TwoHardwareCheckersTest, WithRedisDownEachGatewayKeepsItsOwnFindingsAndSharesThemLater) {
  auto g1 = MakeGateway("gw-1", 40);
  // Gateway 2 polls on its own thread, every 50 ms.
  auto g2 = MakeGateway("gw-2", 10000, absl::Milliseconds(50));
  ASSERT_NE(g1, nullptr);
  ASSERT_NE(g2, nullptr);
  node_.delay_ms = 100;
  redis_->Stop();
  g1->CheckNow();
  g2->CheckNow();
  EXPECT_EQ(g1->checker->SyncShared(), -1);  // not shared: Redis is down
  EXPECT_EQ(g1->verdict(), HardwareVerdict::kTooSlow);
  EXPECT_EQ(g1->cap(), 1);  // its own finding stands
  EXPECT_EQ(g2->verdict(), HardwareVerdict::kOk);
  EXPECT_EQ(g2->cap(), 0);

  // Redis back: gateway 1's pending finding is recorded at its next poll, and gateway 2's poll
  // thread applies it (bounded wait).
  ASSERT_TRUE(redis_->Restart().ok());
  int synced = -1;
  for (int i = 0; i < 50 && synced < 0; ++i) {
    synced = g1->checker->SyncShared();
    if (synced < 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(synced, 0);
  bool capped = false;
  for (int i = 0; i < 100 && !capped; ++i) {
    capped = g2->cap() == 1;
    if (!capped) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(capped);
  EXPECT_EQ(g2->verdict(), HardwareVerdict::kTooSlow);

  // Redis down again: gateway 2 keeps the finding it read (an outage lifts no cap).
  redis_->Stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a few of its polls
  EXPECT_EQ(g2->cap(), 1);
  EXPECT_EQ(g2->verdict(), HardwareVerdict::kTooSlow);
  EXPECT_EQ(g2->SharedFindings("applied"), 1);  // applied once, across the outages
  EXPECT_EQ(g2->SharedFindings("cleared"), 0);
}

}  // namespace
}  // namespace switchyard::gateway
