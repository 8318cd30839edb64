// Unit tests for JobDispatch (gateway/api/job_dispatch.h): a fake clock, a fake wait queue and fake
// attempts (a transport that records what it was asked and ends attempts when told), with the
// real router on hand-built snapshots. No network.
#include "gateway/api/job_dispatch.h"

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/thread_pool.h"
#include "gateway/api/client_cancelled.h"
#include "gateway/routing/route_index.h"

namespace switchyard::gateway {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::shared_ptr<const NodeView> Node(const std::string& id, const std::string& pipeline = "upscale",
                                     const std::string& model = "esrgan") {
  auto view = std::make_shared<NodeView>();
  view->id = id;
  view->status.set_node_id(id);
  auto* cap = view->status.add_capabilities();
  cap->set_pipeline(pipeline);
  cap->set_model_id(model);
  cap->set_state(node::v1::MODEL_STATE_READY);
  cap->set_capacity(4);
  cap->set_price_per_unit(2);
  view->stats = std::make_shared<NodeStats>();
  view->connection = std::make_shared<NodeConnection>("127.0.0.1:1", 1 << 20);
  return view;
}

SnapshotPtr Snap(std::vector<std::shared_ptr<const NodeView>> nodes) {
  auto s = std::make_shared<Snapshot>();
  s->version = 1;
  s->nodes = std::move(nodes);
  IndexSnapshot(*s, nullptr);
  return s;
}

// Records the attempts it is asked to run; the test ends them.
class FakeTransport final : public DispatchTransport {
 public:
  struct Started {
    AttemptPlan plan;
    Done done;
  };
  void StartAttempt(const AttemptPlan& plan, Done done) override {
    started.push_back({plan, std::move(done)});
  }
  void Finish(grpc::Status status, const FinishInfo& info) override {
    finished_on = std::this_thread::get_id();
    finished.push_back(std::move(status));
    orchestrator = info.orchestrator;
    attempts = info.attempts;
  }
  bool ClientCancelled() const override { return cancelled; }

  // Ends the latest attempt.
  void End(grpc::Status status, std::optional<SettleUnits> units = std::nullopt,
           bool tenant_limited = false) {
    ASSERT_FALSE(started.empty());
    Done done = std::move(started.back().done);
    ASSERT_TRUE(done) << "the latest attempt has already ended";
    AttemptResult result;
    result.status = std::move(status);
    result.units = std::move(units);
    result.tenant_limited = tenant_limited;
    done(std::move(result));
  }
  const std::string& node_of(size_t attempt) const { return started.at(attempt).plan.node->id; }

  std::vector<Started> started;
  std::vector<grpc::Status> finished;
  std::thread::id finished_on;
  std::string orchestrator;
  int attempts = 0;
  bool cancelled = false;
};

class FakeRoom final : public RoomWaiter {
 public:
  bool Park(absl::Time deadline, WaitQueue::Wake wake) override {
    if (full) return false;
    parked.push_back({deadline, std::move(wake)});
    return true;
  }
  void Signal() override { ++signals; }
  int capacity() const override { return 7; }

  // Wakes the latest parked job.
  void Wake(bool expired) {
    auto wake = std::move(parked.back().second);
    parked.pop_back();
    wake(expired);
  }

  bool full = false;
  int signals = 0;
  std::vector<std::pair<absl::Time, WaitQueue::Wake>> parked;
};

grpc::Status Unavailable() { return grpc::Status(grpc::StatusCode::UNAVAILABLE, "node down"); }
grpc::Status Refused() {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "all slots busy");
}

class JobDispatchTest : public ::testing::Test {
 protected:
  JobDispatchTest() {
    config_.max_attempts = 3;
    config_.default_timeout_ms = 60000;
    config_.attempt_timeout_ms = {{"default", 10000}};
    env_.config = &config_;
    env_.snapshot = [this] { return snapshot_; };
    env_.room = &room_;
    env_.job_log = &job_log_;
    env_.now = [this] { return now_; };
    SetRouter(RouterOptions());
  }

  void SetRouter(RouterOptions options) {
    router_ = std::make_unique<Router>(
        options, [] { return uint64_t{0}; }, [this] { return now_; });
    env_.router = router_.get();
  }
  // No retries allowed by the budget.
  static RouterOptions NoBudget() {
    RouterOptions options;
    options.retry_budget_ratio = 0;
    options.retry_budget_min_per_second = 0;
    return options;
  }

  JobDispatchPtr Start(DispatchPolicy policy = DispatchPolicy::Unary(),
                       absl::Time client_deadline = absl::InfiniteFuture()) {
    CallIdentity identity{"req-1", "req-1~x", "key-1"};
    RouteRequest route{"upscale", "esrgan", {}, 0, ""};
    auto job = JobDispatch::Create(env_, policy, route, identity, client_deadline, &transport_);
    job->Start();
    return job;
  }

  // Opens a ledger for settlement checks.
  void UseLedger() {
    auto dir = std::filesystem::path(::testing::TempDir()) /
               ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir);
    auto ledger = SqliteUsageLedger::Open(dir / "usage.db");
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = *std::move(ledger);
    billing_ = std::make_unique<JobBilling>(ledger_.get(), nullptr);
    env_.billing = billing_.get();
  }
  std::vector<UsageRecord> Rows() {
    UsageQuery query;
    query.all_keys = true;
    auto rows = ledger_->Rows(query);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? *rows : std::vector<UsageRecord>{};
  }

  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  GatewayConfig config_;
  std::unique_ptr<Router> router_;
  FakeRoom room_;
  JobLog job_log_;
  std::unique_ptr<UsageLedger> ledger_;
  std::unique_ptr<JobBilling> billing_;
  DispatchEnv env_;
  SnapshotPtr snapshot_ = Snap({Node("a"), Node("b"), Node("c")});
  FakeTransport transport_;
};

TEST_F(JobDispatchTest, SuccessOnTheFirstAttempt) {
  auto job = Start();
  ASSERT_EQ(transport_.started.size(), 1u);
  const AttemptPlan& plan = transport_.started[0].plan;
  EXPECT_EQ(plan.attempt, 1);
  EXPECT_EQ(plan.identity->request_id, "req-1");
  EXPECT_EQ(plan.node->connection->in_flight().load(), 1);
  transport_.End(grpc::Status::OK);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_TRUE(transport_.finished[0].ok());
  EXPECT_EQ(transport_.orchestrator, plan.node->id);
  EXPECT_EQ(transport_.attempts, 1);
  EXPECT_EQ(plan.node->connection->in_flight().load(), 0);
  EXPECT_EQ(room_.signals, 1);  // a slot freed on that node
  EXPECT_EQ(job_log_.jobs_total(), 1u);
  EXPECT_EQ(job_log_.failures_total(), 0u);
}

TEST_F(JobDispatchTest, NodeFailureIsRetriedOnAnotherNode) {
  auto job = Start();
  transport_.End(Unavailable());
  ASSERT_EQ(transport_.started.size(), 2u);
  EXPECT_NE(transport_.node_of(1), transport_.node_of(0));
  EXPECT_EQ(transport_.started[1].plan.attempt, 2);
  EXPECT_EQ(job->route().excluded.count(transport_.node_of(0)), 1u);
  transport_.End(grpc::Status::OK);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_TRUE(transport_.finished[0].ok());
  EXPECT_EQ(transport_.attempts, 2);
  EXPECT_EQ(transport_.orchestrator, transport_.node_of(1));
}

TEST_F(JobDispatchTest, ClientErrorIsFinalAndLeavesNodeHealthAlone) {
  RouterOptions options;
  options.eject_after_failures = 1;
  options.max_ejected_fraction = 1;
  SetRouter(options);
  auto job = Start();
  transport_.End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad image"));
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(transport_.finished[0].error_message(), "bad image");
  EXPECT_EQ(transport_.started.size(), 1u);
  EXPECT_FALSE(router_->IsEjected(transport_.node_of(0)));
  EXPECT_EQ(job_log_.failures_total(), 1u);
  EXPECT_EQ(job_log_.errors().Newest().at(0).orchestrator, transport_.node_of(0));
}

TEST_F(JobDispatchTest, NodeFailuresEjectTheNode) {
  RouterOptions options;
  options.eject_after_failures = 1;
  options.max_ejected_fraction = 1;
  SetRouter(options);
  auto job = Start();
  transport_.End(Unavailable());
  EXPECT_TRUE(router_->IsEjected(transport_.node_of(0)));
  transport_.End(grpc::Status::OK);
  EXPECT_FALSE(router_->IsEjected(transport_.node_of(1)));
}

TEST_F(JobDispatchTest, NodeFailuresAreBoundedByMaxAttempts) {
  config_.max_attempts = 2;
  auto job = Start();
  transport_.End(Unavailable());
  transport_.End(Unavailable());
  EXPECT_EQ(transport_.started.size(), 2u);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(transport_.finished[0].error_message(), "node down");
}

TEST_F(JobDispatchTest, EveryNodeFailedReportsTheLastError) {
  config_.max_attempts = 5;
  auto job = Start();
  for (int i = 0; i < 3; ++i) transport_.End(Unavailable());
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(transport_.finished[0].error_message(),
            "node down (after 3 attempts; no other orchestrator available)");
}

TEST_F(JobDispatchTest, SpentRetryBudgetEndsTheJob) {
  SetRouter(NoBudget());
  auto job = Start();
  transport_.End(Unavailable());
  EXPECT_EQ(transport_.started.size(), 1u);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_message(),
            "node down (not retried: the gateway's retry budget is spent)");
}

TEST_F(JobDispatchTest, AttemptTimeoutIsANodeFailure) {
  auto job = Start();
  // The attempt's deadline is the per-try timeout, well inside the job's.
  EXPECT_EQ(transport_.started[0].plan.deadline, now_ + absl::Seconds(10));
  EXPECT_EQ(job->deadline(), now_ + absl::Seconds(60));
  now_ += absl::Seconds(10);
  transport_.End(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"));
  ASSERT_EQ(transport_.started.size(), 2u);
  EXPECT_EQ(transport_.started[1].plan.deadline, now_ + absl::Seconds(10));
  config_.max_attempts = 2;
  transport_.End(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"));
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_message(),
            "attempt timed out after 10000 ms on " + transport_.node_of(1));
}

TEST_F(JobDispatchTest, WithoutAPerTryTimeoutDeadlineExceededIsFinal) {
  auto job = Start(DispatchPolicy::KserveInfer());
  transport_.End(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"));
  EXPECT_EQ(transport_.started.size(), 1u);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_message(), "Deadline Exceeded");
}

TEST_F(JobDispatchTest, PerTryTimeoutNeverOutlastsTheJob) {
  auto job = Start(DispatchPolicy::Unary(), now_ + absl::Seconds(3));
  EXPECT_EQ(transport_.started[0].plan.deadline, now_ + absl::Seconds(3));
}

TEST_F(JobDispatchTest, StreamsHaveNoPerTryTimeout) {
  auto job = Start(DispatchPolicy::LlmStream());
  EXPECT_EQ(transport_.started[0].plan.deadline, now_ + absl::Seconds(60));
}

TEST_F(JobDispatchTest, TheJobsDeadlineEndsIt) {
  auto job = Start(DispatchPolicy::Unary(), now_ + absl::Seconds(5));
  now_ += absl::Seconds(5);
  transport_.End(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"));
  EXPECT_EQ(transport_.started.size(), 1u);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(transport_.finished[0].error_message(), "Deadline Exceeded");
}

TEST_F(JobDispatchTest, ADeadlineAlreadyPassedStartsNoAttempt) {
  auto job = Start(DispatchPolicy::Unary(), now_ - absl::Milliseconds(1));
  EXPECT_THAT(transport_.started, IsEmpty());
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(transport_.finished[0].error_message(), "deadline exceeded");
}

TEST_F(JobDispatchTest, NoNodeOffersTheModel) {
  snapshot_ = Snap({Node("a", "upscale", "other")});
  auto job = Start();
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(transport_.orchestrator, "");
  EXPECT_EQ(transport_.attempts, 0);
}

TEST_F(JobDispatchTest, RefusedEverywhereWaitsForRoomThenSucceeds) {
  snapshot_ = Snap({Node("a"), Node("b")});
  auto job = Start();
  transport_.End(Refused());
  transport_.End(Refused());
  // Both refused for capacity: the job waits, and a refusal wakes no one.
  ASSERT_EQ(room_.parked.size(), 1u);
  EXPECT_EQ(room_.parked[0].first, now_ + absl::Seconds(60));
  EXPECT_EQ(room_.signals, 0);
  EXPECT_THAT(transport_.finished, IsEmpty());
  now_ += absl::Milliseconds(250);
  room_.Wake(false);
  // The refusing nodes are tried again.
  ASSERT_EQ(transport_.started.size(), 3u);
  EXPECT_THAT(job->route().excluded, IsEmpty());
  transport_.End(grpc::Status::OK);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_TRUE(transport_.finished[0].ok());
}

TEST_F(JobDispatchTest, RefusedWithoutBudgetWaitsAtOnce) {
  SetRouter(NoBudget());
  auto job = Start();
  transport_.End(Refused());
  EXPECT_EQ(transport_.started.size(), 1u);
  EXPECT_EQ(room_.parked.size(), 1u);
}

TEST_F(JobDispatchTest, WaitingForRoomUntilTheDeadline) {
  snapshot_ = Snap({Node("a")});
  auto job = Start();
  transport_.End(Refused());
  ASSERT_EQ(room_.parked.size(), 1u);
  now_ += absl::Milliseconds(1500);
  room_.Wake(true);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(transport_.finished[0].error_message(),
            "deadline exceeded while waiting 1500 ms at the gateway for an orchestrator with room "
            "(last attempt: all slots busy)");
}

TEST_F(JobDispatchTest, AWaitingJobGoesOnWaitingWhileNoNodeIsRoutable) {
  snapshot_ = Snap({Node("a")});
  auto job = Start();
  transport_.End(Refused());
  snapshot_ = Snap({});  // its node dropped for a late heartbeat
  room_.Wake(false);
  EXPECT_EQ(room_.parked.size(), 1u);
  EXPECT_THAT(transport_.finished, IsEmpty());
  snapshot_ = Snap({Node("a")});
  room_.Wake(false);
  ASSERT_EQ(transport_.started.size(), 2u);
}

TEST_F(JobDispatchTest, AFullQueueRefusesTheJob) {
  snapshot_ = Snap({Node("a")});
  room_.full = true;
  auto job = Start();
  transport_.End(Refused());
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(transport_.finished[0].error_message(),
            "every orchestrator for upscale 'esrgan' is busy and the gateway's queue is full (7 "
            "jobs waiting)");
}

TEST_F(JobDispatchTest, StreamsDoNotWaitForRoom) {
  snapshot_ = Snap({Node("a"), Node("b")});
  auto job = Start(DispatchPolicy::LlmStream());
  transport_.End(Refused());
  transport_.End(Refused());
  EXPECT_THAT(room_.parked, IsEmpty());
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(transport_.finished[0].error_message(),
            "all slots busy (after 2 attempts; no other orchestrator available)");
}

TEST_F(JobDispatchTest, RefusalsDoNotSpendMaxAttempts) {
  config_.max_attempts = 1;
  auto job = Start(DispatchPolicy::LlmStream());
  transport_.End(Refused());
  transport_.End(Refused());
  EXPECT_EQ(transport_.started.size(), 3u);
  transport_.End(grpc::Status::OK);
  EXPECT_TRUE(transport_.finished.at(0).ok());
}

TEST_F(JobDispatchTest, TenantLimitTriesAnotherNodeButNeverWaits) {
  snapshot_ = Snap({Node("a"), Node("b")});
  auto job = Start();
  transport_.End(Refused(), std::nullopt, /*tenant_limited=*/true);
  ASSERT_EQ(transport_.started.size(), 2u);
  transport_.End(Refused(), std::nullopt, /*tenant_limited=*/true);
  EXPECT_THAT(room_.parked, IsEmpty());
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(JobDispatchTest, CancelledBeforeAnAttempt) {
  transport_.cancelled = true;
  auto job = Start();
  EXPECT_THAT(transport_.started, IsEmpty());
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(transport_.finished[0].error_message(), ClientCancelled().error_message());
  EXPECT_EQ(job_log_.failures_total(), 0u);  // not a failure of the gateway's
}

TEST_F(JobDispatchTest, CancelledDuringAnAttempt) {
  RouterOptions options;
  options.eject_after_failures = 1;
  options.max_ejected_fraction = 1;
  SetRouter(options);
  auto job = Start();
  transport_.cancelled = true;
  transport_.End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "cancelled upstream"));
  EXPECT_EQ(transport_.started.size(), 1u);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_message(), ClientCancelled().error_message());
  // The node is not blamed for a call the client ended.
  EXPECT_FALSE(router_->IsEjected(transport_.node_of(0)));
}

// CANCELLED the client did not ask for comes from the node (its server shutting down under the
// call, grpc/grpc#41785): the job moves on, and is not reported as the client's cancel.
TEST_F(JobDispatchTest, ANodeSideCancelIsRetriedOnAnotherNode) {
  auto job = Start();
  transport_.End(grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED"));
  ASSERT_EQ(transport_.started.size(), 2u);
  EXPECT_NE(transport_.node_of(1), transport_.node_of(0));
  transport_.End(grpc::Status::OK);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_TRUE(transport_.finished[0].ok());
}

TEST_F(JobDispatchTest, ANodeSideCancelOnTheLastNodeIsUnavailable) {
  snapshot_ = Snap({Node("a")});
  auto job = Start();
  transport_.End(grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED"));
  EXPECT_EQ(transport_.started.size(), 1u);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(transport_.finished[0].error_message(), HasSubstr("cancelled on a"));
  EXPECT_EQ(job_log_.failures_total(), 1u);  // a failure, unlike a client's cancel
}

TEST_F(JobDispatchTest, CancelledWhileWaitingForRoom) {
  snapshot_ = Snap({Node("a")});
  auto job = Start();
  transport_.End(Refused());
  transport_.cancelled = true;
  room_.Wake(false);
  EXPECT_EQ(transport_.started.size(), 1u);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(JobDispatchTest, ACommittedStreamIsNotRetried) {
  auto job = Start(DispatchPolicy::LlmStream());
  job->Commit();  // a token reached the client
  transport_.End(Unavailable());
  EXPECT_EQ(transport_.started.size(), 1u);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_EQ(transport_.finished[0].error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(JobDispatchTest, SettledExactlyOnce) {
  UseLedger();
  auto job = Start();
  SettleUnits units{100, 2, int64_t{100}};
  job->Settle(units);  // a stream settles on its last message...
  job->Settle(units);
  transport_.End(grpc::Status::OK, units);  // ...and a unary job at its end: still one record
  ASSERT_TRUE(transport_.finished.at(0).ok());
  auto rows = Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].job_id, "req-1~x");
  EXPECT_EQ(rows[0].api_key_id, "key-1");
  EXPECT_EQ(rows[0].units, 100);
  EXPECT_FALSE(rows[0].disputed);
}

// With settle threads (the gateway's: JobBilling::settle_threads) a successful job is settled and
// answered there, not on the thread its attempt ended on (gRPC's callback thread, which must not
// wait for the ledger's commit); the row is committed before the client is answered.
TEST_F(JobDispatchTest, SettledAndAnsweredOnTheSettleThreads) {
  UseLedger();
  auto threads = ThreadPool::Create("settle-test", 1);
  ASSERT_TRUE(threads.ok()) << threads.status();
  env_.settle_threads = threads->get();
  auto job = Start();
  transport_.End(grpc::Status::OK, SettleUnits{10, 2, int64_t{10}});
  // One thread runs tasks in order: once this one ran, the settlement has.
  std::promise<void> drained;
  (*threads)->Post([&] { drained.set_value(); });
  ASSERT_EQ(drained.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  ASSERT_EQ(transport_.finished.size(), 1u);
  EXPECT_TRUE(transport_.finished[0].ok());
  EXPECT_NE(transport_.finished_on, std::this_thread::get_id());
  EXPECT_EQ(Rows().size(), 1u);
  // A failed attempt is not settled and is answered where it ended.
  auto failed = Start();
  transport_.End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad image"));
  ASSERT_EQ(transport_.finished.size(), 2u);
  EXPECT_EQ(transport_.finished_on, std::this_thread::get_id());
  EXPECT_EQ(Rows().size(), 1u);
}

TEST_F(JobDispatchTest, FailedAttemptsAreNotSettled) {
  UseLedger();
  auto job = Start();
  transport_.End(Unavailable());
  transport_.End(grpc::Status::OK, SettleUnits{10, 2, int64_t{10}});
  auto rows = Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].orchestrator, transport_.node_of(1));
}

TEST_F(JobDispatchTest, MisreportedUnitsPenaliseTheNodeButAnswerTheClient) {
  UseLedger();
  RouterOptions options;
  options.eject_after_failures = 1;
  options.max_ejected_fraction = 1;
  SetRouter(options);
  auto job = Start();
  transport_.End(grpc::Status::OK, SettleUnits{999, 2, int64_t{100}});
  ASSERT_TRUE(transport_.finished.at(0).ok());
  EXPECT_TRUE(router_->IsEjected(transport_.node_of(0)));
  auto rows = Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_TRUE(rows[0].disputed);
}

TEST_F(JobDispatchTest, LookupsAreNotJobs) {
  SetRouter(NoBudget());
  snapshot_ = Snap({Node("a", "text-to-image", "sd"), Node("b", "upscale", "sd")});
  CallIdentity identity{"req-2", "req-2", ""};
  RouteRequest route{"kserve", "sd", {}, 0, ""};
  auto job = JobDispatch::Create(env_, DispatchPolicy::KserveLookup("ModelReady"), route, identity,
                                 absl::InfiniteFuture(), &transport_);
  job->Start();
  ASSERT_EQ(transport_.started.size(), 1u);
  EXPECT_EQ(transport_.started[0].plan.node->connection->in_flight().load(), 0);
  // Retried without the budget (which allows none here), under any pipeline.
  transport_.End(Unavailable());
  ASSERT_EQ(transport_.started.size(), 2u);
  transport_.End(grpc::Status::OK);
  EXPECT_TRUE(transport_.finished.at(0).ok());
  EXPECT_EQ(room_.signals, 0);
  EXPECT_EQ(job_log_.jobs_total(), 0u);
}

TEST(CallIdentityTest, TheClientsRequestIdGetsAUniqueLedgerKey) {
  std::multimap<grpc::string_ref, grpc::string_ref> md;
  md.emplace("x-request-id", "mine");
  uint64_t n = 0;
  auto id = CallIdentity::Of(md, "key", [&n] { return ++n; });
  EXPECT_EQ(id.request_id, "mine");
  EXPECT_EQ(id.job_id, "mine~00000000000000010000000000000002");
  EXPECT_EQ(id.api_key_id, "key");
}

TEST(CallIdentityTest, WithoutOneTheGatewayMakesIt) {
  std::multimap<grpc::string_ref, grpc::string_ref> md;
  const std::string too_long(129, 'x');
  md.emplace("x-request-id", too_long);
  uint64_t n = 0;
  auto id = CallIdentity::Of(md, "", [&n] { return ++n; });
  EXPECT_EQ(id.request_id, "00000000000000010000000000000002");
  EXPECT_EQ(id.job_id, id.request_id);
}

// Demand-driven warm-up (routing/warm_demand.h): a job that finds no warm node with room counts
// as demand on its route, once per reason; a job served warm with room does not.
TEST(JobDispatchDemandTest, JobsThatFindNoWarmRoomAreDemandForWarmCapacity) {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  GatewayConfig config;
  config.max_attempts = 3;
  config.default_timeout_ms = 60000;
  config.attempt_timeout_ms = {{"default", 10000}};
  Router router(
      RouterOptions(), [] { return uint64_t{0}; }, [&now] { return now; });
  FakeRoom room;
  WarmDemandTracker demand(absl::Seconds(10), [&now] { return now; });
  SnapshotPtr snapshot;
  DispatchEnv env;
  env.config = &config;
  env.snapshot = [&snapshot] { return snapshot; };
  env.router = &router;
  env.room = &room;
  env.now = [&now] { return now; };
  env.demand = &demand;
  auto with_cap = [](const std::string& id, node::v1::ModelState state, int in_use) {
    auto view = std::make_shared<NodeView>(*Node(id));
    view->status.mutable_capabilities(0)->set_state(state);
    view->status.mutable_capabilities(0)->set_in_use(in_use);
    return std::shared_ptr<const NodeView>(view);
  };
  auto run = [&](DispatchPolicy policy, auto&& drive) {
    FakeTransport transport;
    CallIdentity identity{"req-1", "req-1~x", "key-1"};
    RouteRequest route{"upscale", "esrgan", {}, 0, ""};
    auto job =
        JobDispatch::Create(env, policy, route, identity, absl::InfiniteFuture(), &transport);
    job->Start();
    drive(transport);
  };
  using Kind = WarmDemandTracker::Kind;
  auto count = [&](Kind k) { return demand.Of("upscale", "esrgan").counts[static_cast<int>(k)]; };

  // Warm with room: served as it should be, no demand.
  snapshot = Snap({Node("a")});
  run(DispatchPolicy::Unary(), [](FakeTransport& t) { t.End(grpc::Status::OK); });
  EXPECT_EQ(demand.Of("upscale", "esrgan").total(), 0);

  // Warm but every slot busy: queued there.
  snapshot = Snap({with_cap("a", node::v1::MODEL_STATE_READY, 4)});
  run(DispatchPolicy::Unary(), [](FakeTransport& t) { t.End(grpc::Status::OK); });
  EXPECT_EQ(count(Kind::kQueued), 1);

  // Only a cold node: a cold start.
  snapshot = Snap({with_cap("c", node::v1::MODEL_STATE_COLD, 0)});
  run(DispatchPolicy::Unary(), [](FakeTransport& t) { t.End(grpc::Status::OK); });
  EXPECT_EQ(count(Kind::kColdStart), 1);

  // Refused by both nodes, then waits at the gateway (counted once), then served.
  snapshot = Snap({Node("a"), Node("b")});
  run(DispatchPolicy::Unary(), [&](FakeTransport& t) {
    t.End(Refused());
    t.End(Refused());
    ASSERT_EQ(room.parked.size(), 1u);
    room.Wake(false);
    t.End(grpc::Status::OK);
  });
  EXPECT_EQ(count(Kind::kRefused), 2);
  EXPECT_EQ(count(Kind::kWaited), 1);

  // The gateway's queue is full: refused.
  snapshot = Snap({Node("a")});
  room.full = true;
  run(DispatchPolicy::Unary(), [](FakeTransport& t) { t.End(Refused()); });
  EXPECT_EQ(count(Kind::kRefused), 4);

  // KServe lookups are not jobs, and KServe calls name no pipeline: not counted.
  room.full = false;
  snapshot = Snap({with_cap("c", node::v1::MODEL_STATE_COLD, 0)});
  run(DispatchPolicy::KserveInfer(), [](FakeTransport& t) { t.End(grpc::Status::OK); });
  EXPECT_EQ(count(Kind::kColdStart), 1);

  // The window is 10 s.
  now += absl::Seconds(11);
  EXPECT_EQ(demand.Of("upscale", "esrgan").total(), 0);
}

}  // namespace
}  // namespace switchyard::gateway
