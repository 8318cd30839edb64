// Unit tests for ModelExecutor (runner/model_executor.h): the queue, the threads, the blocking Run
// with its deadline and cancellation, and waiting for a slot. Models are tiny TorchScript modules
// saved into a temporary directory; the gated one holds an executor thread for as long as a test
// needs (support/tiny_torch_models.h).
#include "runner/model_executor.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include "absl/strings/match.h"
#include "support/media_fixtures.h"
#include "support/tiny_torch_models.h"

namespace switchyard::runner {
namespace {

using ::switchyard::testing::Far;
using ::switchyard::testing::Gate;
using ::switchyard::testing::SubmitForFuture;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WaitInUse;
using ::testing::HasSubstr;

constexpr auto kWait = ::switchyard::testing::kTorchTestWait;
constexpr const char* kDouble = ::switchyard::testing::kDoubleSource;
constexpr const char* kGated = ::switchyard::testing::kGatedSource;

class ModelExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override { Gate::Get().Reset(/*open=*/true); }
  void TearDown() override { Gate::Get().Open(); }

  TorchModelPtr Build(const std::string& name, const std::string& source) {
    return ::switchyard::testing::SaveAndLoadTestModule(dir_.path(), name, source);
  }

  // A gated executor whose only instance is busy (the gate is closed) with the job returned.
  std::future<ModelExecutor::Result> Occupy(ModelExecutor& ex) {
    Gate::Get().Reset(/*open=*/false);
    auto running = SubmitForFuture(ex, torch::tensor({1.0f}), Far());
    EXPECT_TRUE(running.ok()) << running.status();
    EXPECT_TRUE(Gate::Get().WaitEntered(1));
    return running.ok() ? std::move(*running) : std::future<ModelExecutor::Result>();
  }

  TempDir dir_;
};

TEST(ExecutorStreamTest, CpuHasNoStreamAndCudaGetsItsOwnPoolStream) {
  auto cpu = ExecutorStream(c10::Device(c10::kCPU));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_FALSE(cpu->has_value());

  const c10::Device cuda(c10::kCUDA, 0);
  auto first = ExecutorStream(cuda);
  if (!torch::cuda::is_available()) {
    // A CPU-only libtorch has no CUDA implementation to ask: a clear error, not a crash.
    EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_TRUE(absl::StrContains(first.status().message(), "cuda:0")) << first.status();
    return;
  }
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->has_value());
  EXPECT_EQ((*first)->device(), cuda);
  auto second = ExecutorStream(cuda);
  ASSERT_TRUE(second.ok() && second->has_value());
  // Two executor threads get different streams from the pool, not the default stream.
  EXPECT_NE((*first)->id(), (*second)->id());
}

TEST_F(ModelExecutorTest, CreateValidatesOptions) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(ModelExecutor::Create(nullptr, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelExecutor::Create(model, {.instances = 0, .queue_size = 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelExecutor::Create(model, {.instances = 1, .queue_size = -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = ModelExecutor::Create(model, {.instances = 3, .queue_size = 0});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->capacity(), 3);
  EXPECT_EQ((*ok)->in_use(), 0);
  EXPECT_EQ((*ok)->model(), model);
}

TEST_F(ModelExecutorTest, RunsJobs) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok()) << executor.status();
  auto future = SubmitForFuture(**executor, torch::tensor({1.5f}), Far());
  ASSERT_TRUE(future.ok()) << future.status();
  ASSERT_EQ(future->wait_for(kWait), std::future_status::ready);
  auto result = future->get();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(torch::equal(*result, torch::tensor({3.0f})));
}

TEST_F(ModelExecutorTest, ReportsQueueAndComputeTimeOfEveryJobThatRan) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  std::mutex mu;
  std::vector<std::pair<absl::Duration, absl::Duration>> seen;
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 4},
                                        [&](absl::Duration queued, absl::Duration compute) {
                                          std::lock_guard<std::mutex> lock(mu);
                                          seen.emplace_back(queued, compute);
                                        });
  ASSERT_TRUE(executor.ok()) << executor.status();
  for (int i = 0; i < 3; ++i) {
    auto future = SubmitForFuture(**executor, torch::tensor({1.0f * i}), Far());
    ASSERT_TRUE(future.ok()) << future.status();
    ASSERT_EQ(future->wait_for(kWait), std::future_status::ready);
    ASSERT_TRUE(future->get().ok());
  }
  // A job cancelled before it ran never ran: not reported.
  CancelToken cancelled;
  cancelled.Cancel();
  EXPECT_EQ((*executor)->RunBatchable(torch::tensor({9.0f}), Far(), cancelled).status().code(),
            absl::StatusCode::kCancelled);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(seen.size(), 3u);
  for (const auto& [queued, compute] : seen) {
    EXPECT_GE(queued, absl::ZeroDuration());
    EXPECT_GT(compute, absl::ZeroDuration());
  }
}

TEST_F(ModelExecutorTest, ForwardErrorsComeBackAsStatus) {
  auto model = Build("mm", R"(
def forward(self, x):
    return torch.mm(x, x)
)");
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  auto future = SubmitForFuture(**executor, torch::ones({3}), Far());
  ASSERT_TRUE(future.ok());
  ASSERT_EQ(future->wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(future->get().status().code(), absl::StatusCode::kInternal);
}

TEST_F(ModelExecutorTest, ConcurrentSubmittersGetTheirOwnResults) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 3, .queue_size = 16});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  constexpr int kThreads = 8;
  constexpr int kJobs = 25;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJobs; ++i) {
        const float v = static_cast<float>(t * 1000 + i);
        auto future = SubmitForFuture(*ex, torch::full({1, 3, 8, 8}, v), Far());
        if (!future.ok() || future->wait_for(kWait) != std::future_status::ready) {
          ++wrong;
          continue;
        }
        auto out = future->get();
        if (!out.ok() || !torch::equal(*out, torch::full({1, 3, 8, 8}, 2 * v))) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_TRUE(WaitInUse(*ex, 0)) << ex->in_use();
}

TEST_F(ModelExecutorTest, QueueFullIsResourceExhausted) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  Gate::Get().Reset(/*open=*/false);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 1});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();

  auto running = SubmitForFuture(*ex, torch::tensor({1.0f}), Far());
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(Gate::Get().WaitEntered(1));  // the only instance is busy now
  auto queued = SubmitForFuture(*ex, torch::tensor({2.0f}), Far());
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(ex->in_use(), 2);

  auto refused = SubmitForFuture(*ex, torch::tensor({3.0f}), Far());
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("full"));
  EXPECT_EQ(ex->in_use(), 2);

  Gate::Get().Open();
  ASSERT_EQ(running->wait_for(kWait), std::future_status::ready);
  ASSERT_EQ(queued->wait_for(kWait), std::future_status::ready);
  auto r1 = running->get();
  auto r2 = queued->get();
  ASSERT_TRUE(r1.ok()) << r1.status();
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_TRUE(torch::equal(*r1, torch::tensor({2.0f})));
  EXPECT_TRUE(torch::equal(*r2, torch::tensor({4.0f})));
  EXPECT_EQ(Gate::Get().entered(), 2);
  EXPECT_TRUE(WaitInUse(*ex, 0)) << ex->in_use();

  // Room again once the jobs are done.
  auto again = SubmitForFuture(*ex, torch::tensor({5.0f}), Far());
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(again->get().ok());
}

TEST_F(ModelExecutorTest, ZeroQueueRefusesWhileAllInstancesBusy) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  Gate::Get().Reset(/*open=*/false);
  auto executor = ModelExecutor::Create(model, {.instances = 2, .queue_size = 0});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  auto a = SubmitForFuture(*ex, torch::tensor({1.0f}), Far());
  auto b = SubmitForFuture(*ex, torch::tensor({1.0f}), Far());
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(2));  // both instances run at once
  EXPECT_EQ(SubmitForFuture(*ex, torch::tensor({1.0f}), Far()).status().code(),
            absl::StatusCode::kResourceExhausted);
  Gate::Get().Open();
  ASSERT_EQ(a->wait_for(kWait), std::future_status::ready);
  ASSERT_EQ(b->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(a->get().ok());
  EXPECT_TRUE(b->get().ok());
}

TEST_F(ModelExecutorTest, PastDeadlineIsDeadlineExceededWithoutRunning) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  auto future = SubmitForFuture(**executor, torch::tensor({1.0f}), absl::Now() - absl::Seconds(1));
  ASSERT_TRUE(future.ok()) << future.status();
  ASSERT_EQ(future->wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(future->get().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Gate::Get().entered(), 0);
  EXPECT_TRUE(WaitInUse(**executor, 0)) << (*executor)->in_use();
}

TEST_F(ModelExecutorTest, DeadlinePassingWhileQueuedDropsTheJob) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  Gate::Get().Reset(/*open=*/false);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  auto running = SubmitForFuture(*ex, torch::tensor({1.0f}), Far());
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  const absl::Time deadline = absl::Now() + absl::Milliseconds(20);
  auto late = SubmitForFuture(*ex, torch::tensor({2.0f}), deadline);
  ASSERT_TRUE(late.ok());
  // Keep the instance busy until the queued job's deadline has certainly passed.
  while (absl::Now() <= deadline + absl::Milliseconds(5)) absl::SleepFor(absl::Milliseconds(5));
  Gate::Get().Open();
  ASSERT_EQ(late->wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(late->get().status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_EQ(running->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(running->get().ok());
  EXPECT_EQ(Gate::Get().entered(), 1);
}

TEST_F(ModelExecutorTest, CancelledBeforeRunIsCancelledWithoutRunning) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  CancelToken cancelled;
  cancelled.Cancel();
  auto result = (*executor)->RunBatchable(torch::tensor({1.0f}), Far(), cancelled);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(result.status().message(), HasSubstr("the job was cancelled"));
  EXPECT_EQ(Gate::Get().entered(), 0);
  EXPECT_EQ((*executor)->in_use(), 0);

  // A token that is not cancelled runs normally.
  CancelToken unset;
  auto ran = (*executor)->RunBatchable(torch::tensor({1.0f}), Far(), unset);
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_EQ(Gate::Get().entered(), 1);
}

TEST_F(ModelExecutorTest, CancelledWhileQueuedIsCancelled) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  Gate::Get().Reset(/*open=*/false);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  auto running = SubmitForFuture(*ex, torch::tensor({1.0f}), Far());
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  CancelToken cancel;
  auto queued = std::async(std::launch::async,
                           [&] { return ex->RunBatchable(torch::tensor({2.0f}), Far(), cancel); });
  ASSERT_TRUE(WaitInUse(*ex, 2));
  cancel.Cancel();
  ASSERT_EQ(queued.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(queued.get().status().code(), absl::StatusCode::kCancelled);
  Gate::Get().Open();
  ASSERT_EQ(running->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(running->get().ok());
  EXPECT_EQ(Gate::Get().entered(), 1);
}

TEST_F(ModelExecutorTest, AGivenUpQueuedJobFreesItsSlotAtOnce) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  Gate::Get().Reset(/*open=*/false);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  auto running = SubmitForFuture(*ex, torch::tensor({1.0f}), Far());
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  CancelToken cancel;
  auto queued = std::async(std::launch::async,
                           [&] { return ex->RunBatchable(torch::tensor({2.0f}), Far(), cancel); });
  ASSERT_TRUE(WaitInUse(*ex, 2));

  // The caller is cancelled while the only instance is still busy: its slot comes back now, not
  // when the instance would have reached it.
  cancel.Cancel();
  ASSERT_EQ(queued.wait_for(kWait), std::future_status::ready);
  auto r = queued.get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(r.status().message(), HasSubstr("the job was cancelled"));
  EXPECT_EQ(ex->in_use(), 1);
  // So another job fits in the queue again: 1 running + 2 queued.
  auto a = SubmitForFuture(*ex, torch::tensor({3.0f}), Far());
  auto b = SubmitForFuture(*ex, torch::tensor({4.0f}), Far());
  EXPECT_TRUE(a.ok());
  EXPECT_TRUE(b.ok());
  EXPECT_EQ(SubmitForFuture(*ex, torch::tensor({5.0f}), Far()).status().code(),
            absl::StatusCode::kResourceExhausted);
  // Cancelling again a job that is no longer queued changes nothing.
  cancel.Cancel();
  EXPECT_EQ(ex->in_use(), 3);

  Gate::Get().Open();
  ASSERT_EQ(running->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(running->get().ok());
  ASSERT_EQ(a->wait_for(kWait), std::future_status::ready);
  ASSERT_EQ(b->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(WaitInUse(*ex, 0)) << ex->in_use();
  EXPECT_EQ(Gate::Get().entered(), 3);  // the withdrawn job never ran
}

TEST_F(ModelExecutorTest, DestructorFailsQueuedJobsAndJoins) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  Gate::Get().Reset(/*open=*/false);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 4});
  ASSERT_TRUE(executor.ok());
  std::unique_ptr<ModelExecutor> ex = std::move(*executor);
  auto running = SubmitForFuture(*ex, torch::tensor({1.0f}), Far());
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  std::vector<std::future<ModelExecutor::Result>> queued;
  for (int i = 0; i < 3; ++i) {
    auto f = SubmitForFuture(*ex, torch::tensor({2.0f}), Far());
    ASSERT_TRUE(f.ok()) << f.status();
    queued.push_back(std::move(*f));
  }

  // The destructor must fail the queued jobs at once, then wait for the running one.
  std::atomic<bool> destroyed{false};
  std::thread destroyer([&] {
    ex.reset();
    destroyed = true;
  });
  for (auto& f : queued) {
    ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
    auto r = f.get();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  }
  EXPECT_FALSE(destroyed.load());  // still joining the busy thread
  EXPECT_EQ(running->wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  Gate::Get().Open();
  destroyer.join();
  EXPECT_TRUE(destroyed.load());
  ASSERT_EQ(running->wait_for(kWait), std::future_status::ready);
  auto r = running->get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(torch::equal(*r, torch::tensor({2.0f})));
  EXPECT_EQ(Gate::Get().entered(), 1);
}

// Was a bug (ModelExecutor::Loop): the job's promise was fulfilled before in_use_ was
// decremented. A caller that already holds its result can therefore still find the
// slot taken: on an idle executor with queue_size 0, submitting the next job right after the
// previous result arrived is refused with RESOURCE_EXHAUSTED now and then, and in_use() (which
// the orchestrator reports as load) over-counts. Racy: fails on some runs of the loop, not all.
TEST_F(ModelExecutorTest, SlotIsFreeOnceTheResultIsDelivered) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 0});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  int refused = 0;
  int stale = 0;
  for (int i = 0; i < 2000; ++i) {
    auto future = SubmitForFuture(*ex, torch::tensor({1.0f}), Far());
    if (!future.ok()) {
      ++refused;
      ASSERT_TRUE(WaitInUse(*ex, 0));
      continue;
    }
    ASSERT_EQ(future->wait_for(kWait), std::future_status::ready);
    ASSERT_TRUE(future->get().ok());
    if (ex->in_use() != 0) ++stale;
  }
  EXPECT_EQ(refused, 0) << "sequential jobs refused although the executor was idle";
  EXPECT_EQ(stale, 0) << "in_use() still counted a job whose result was delivered";
}

TEST_F(ModelExecutorTest, DestructorWithIdleThreadsReturns) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 4, .queue_size = 4});
  ASSERT_TRUE(executor.ok());
  executor->reset();  // joins four idle threads; a hang here fails the test by timeout
  SUCCEED();
}

// ---------------------------------------------------------------------------------------------
// Run: the blocking call

TEST_F(ModelExecutorTest, RunReturnsAnyResultAndRunBatchableATensor) {
  auto model = Build("pair", R"(
def forward(self, x, k: int):
    return (x * float(k), k + 1)
)");
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  CancelToken cancel;
  auto out = (*executor)->Run({torch::tensor({2.0f}), c10::IValue(int64_t{3})}, Far(), cancel);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->isTuple());
  const auto& items = out->toTupleRef().elements();
  EXPECT_TRUE(torch::equal(items[0].toTensor(), torch::tensor({6.0f})));
  EXPECT_EQ(items[1].toInt(), 4);
  // The tensor variant insists on a tensor result.
  auto bad = Build("tuple", R"(
def forward(self, x):
    return (x, x)
)");
  auto tuple_executor = ModelExecutor::Create(bad, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(tuple_executor.ok());
  auto not_tensor = (*tuple_executor)->RunBatchable(torch::ones({1}), Far(), cancel);
  EXPECT_EQ(not_tensor.status().code(), absl::StatusCode::kInvalidArgument) << not_tensor.status();
  EXPECT_THAT(not_tensor.status().message(), HasSubstr("not a tensor"));
  EXPECT_EQ((*executor)->in_use(), 0);
  EXPECT_EQ((*tuple_executor)->in_use(), 0);
}

// RunOptions::method runs another method of the module through the same queue (an OCR bundle's
// detect/recognize); the default stays forward, and a missing method is NOT_FOUND.
TEST_F(ModelExecutorTest, RunCallsTheMethodOfTheOptionsDefaultForward) {
  auto model = Build("methods", R"(
def forward(self, x):
    return x * 2.0
def triple(self, x, k: int):
    return x * 3.0 + float(k)
)");
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  CancelToken cancel;
  auto forward = (*executor)->Run({torch::tensor({2.0f})}, Far(), cancel);
  ASSERT_TRUE(forward.ok()) << forward.status();
  EXPECT_TRUE(torch::equal(forward->toTensor(), torch::tensor({4.0f})));
  RunOptions triple;
  triple.method = "triple";
  auto out =
      (*executor)->Run({torch::tensor({2.0f}), c10::IValue(int64_t{1})}, Far(), cancel, triple);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(torch::equal(out->toTensor(), torch::tensor({7.0f})));
  RunOptions missing;
  missing.method = "detect";
  auto none = (*executor)->Run({torch::tensor({2.0f})}, Far(), cancel, missing);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound) << none.status();
  EXPECT_THAT(none.status().message(), HasSubstr("'detect'"));
  EXPECT_EQ((*executor)->in_use(), 0);
}

TEST_F(ModelExecutorTest, RunDeadlineWakesTheWaiterAndFreesTheQueuedSlot) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 1});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  auto running = Occupy(*ex);
  CancelToken cancel;
  const absl::Time start = absl::Now();
  auto r = ex->RunBatchable(torch::tensor({2.0f}), start + absl::Milliseconds(100), cancel);
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("deadline passed before the model finished"));
  EXPECT_GE(waited, absl::Milliseconds(100));
  EXPECT_LT(waited, absl::Seconds(5));
  // Its slot came back with it: only the running job is in use.
  EXPECT_EQ(ex->in_use(), 1);
  Gate::Get().Open();
  ASSERT_EQ(running.wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(running.get().ok());
  EXPECT_EQ(Gate::Get().entered(), 1);  // the expired job never ran
}

TEST_F(ModelExecutorTest, RunCancellationWakesTheWaiterPromptlyEvenWhileTheJobRuns) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 1});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  Gate::Get().Reset(/*open=*/false);
  CancelToken cancel;
  std::atomic<int64_t> returned_at_ns{0};
  auto waiter = std::async(std::launch::async, [&] {
    auto r = ex->RunBatchable(torch::tensor({1.0f}), Far(), cancel);
    returned_at_ns = absl::ToUnixNanos(absl::Now());
    return r;
  });
  ASSERT_TRUE(Gate::Get().WaitEntered(1));  // the job runs, held in the gate
  const absl::Time cancelled_at = absl::Now();
  cancel.Cancel();
  ASSERT_EQ(waiter.wait_for(kWait), std::future_status::ready);
  auto r = waiter.get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("the job was cancelled"));
  // Woken by the cancellation itself, not by a poll: well under a second even on a loaded machine.
  EXPECT_LT(absl::FromUnixNanos(returned_at_ns.load()) - cancelled_at, absl::Seconds(1));
  // The running job finishes; its result is dropped and its slot freed then.
  EXPECT_EQ(ex->in_use(), 1);
  Gate::Get().Open();
  EXPECT_TRUE(WaitInUse(*ex, 0)) << ex->in_use();
}

TEST_F(ModelExecutorTest, RunOnAFullQueueIsRefusedOrWaitsForASlot) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 0});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  auto running = Occupy(*ex);
  CancelToken cancel;
  auto refused = ex->Run({torch::tensor({2.0f})}, Far(), cancel);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("full"));

  RunOptions wait;
  wait.when_full = WhenFull::kWait;
  auto waiting = std::async(std::launch::async,
                            [&] { return ex->Run({torch::tensor({2.0f})}, Far(), cancel, wait); });
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  EXPECT_EQ(ex->in_use(), 1);  // waiting for a slot, not queued
  Gate::Get().Open();          // the running job ends: its slot goes to the waiter
  ASSERT_EQ(waiting.wait_for(kWait), std::future_status::ready);
  auto r = waiting.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(torch::equal(r->toTensor(), torch::tensor({4.0f})));
  ASSERT_EQ(running.wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(running.get().ok());
  EXPECT_EQ(Gate::Get().entered(), 2);
}

TEST_F(ModelExecutorTest, WaitingForASlotEndsAtTheDeadlineOrOnCancellation) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 0});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  auto running = Occupy(*ex);
  RunOptions wait;
  wait.when_full = WhenFull::kWait;

  CancelToken never;
  auto late = ex->Run({torch::tensor({2.0f})}, absl::Now() + absl::Milliseconds(50), never, wait);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  EXPECT_THAT(late.status().message(), HasSubstr("deadline passed waiting for the model"));

  CancelToken cancel;
  auto waiting = std::async(std::launch::async,
                            [&] { return ex->Run({torch::tensor({2.0f})}, Far(), cancel, wait); });
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  const absl::Time cancelled_at = absl::Now();
  cancel.Cancel();
  ASSERT_EQ(waiting.wait_for(kWait), std::future_status::ready);
  EXPECT_LT(absl::Now() - cancelled_at, absl::Seconds(1));
  auto r = waiting.get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("the job was cancelled"));

  EXPECT_EQ(ex->in_use(), 1);
  Gate::Get().Open();
  ASSERT_EQ(running.wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(running.get().ok());
  EXPECT_EQ(Gate::Get().entered(), 1);
}

TEST_F(ModelExecutorTest, RunTellsWhenTheJobIsQueued) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 0});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  Gate::Get().Reset(/*open=*/false);
  std::atomic<int> calls{0};
  std::atomic<int> in_use_then{-1};
  RunOptions options;
  options.on_queued = [&] {
    in_use_then = ex->in_use();
    ++calls;
  };
  CancelToken cancel;
  auto run = std::async(std::launch::async,
                        [&] { return ex->Run({torch::tensor({1.0f})}, Far(), cancel, options); });
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (calls.load() == 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(in_use_then.load(), 1);  // told while its job holds the slot (the gate is closed)
  Gate::Get().Open();
  ASSERT_EQ(run.wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(run.get().ok());
  // Not queued (cancelled before), not told.
  CancelToken cancelled;
  cancelled.Cancel();
  EXPECT_FALSE(ex->Run({torch::tensor({1.0f})}, Far(), cancelled, options).ok());
  EXPECT_EQ(calls.load(), 1);
}

TEST(ModelExecutorPayloadTest, CarriesThePayloadRefusesJobsAndCountsUses) {
  EXPECT_FALSE(ModelExecutor::CreateForPayload(nullptr, ModelExecutor::Options{}).ok());
  auto payload = std::make_shared<int>(42);
  auto executor = ModelExecutor::CreateForPayload(payload, ModelExecutor::Options{});
  ASSERT_TRUE(executor.ok()) << executor.status();
  EXPECT_EQ((*executor)->model(), nullptr);
  EXPECT_EQ(*std::static_pointer_cast<int>((*executor)->payload()), 42);
  // No threads run jobs here: they are refused at once instead of waiting for their deadline.
  CancelToken cancel;
  auto run = (*executor)->Run({c10::IValue(torch::tensor({1.0f}))}, Far(), cancel);
  EXPECT_EQ(run.status().code(), absl::StatusCode::kFailedPrecondition) << run.status();
  auto batchable = (*executor)->RunBatchable(torch::tensor({1.0f}), Far(), cancel);
  EXPECT_EQ(batchable.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*executor)->Submit({}, Far(), [](ModelExecutor::ValueResult) {}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*executor)->in_use(), 0);
  {
    ModelExecutor::Use a(executor->get());
    ModelExecutor::Use b(executor->get());
    EXPECT_EQ((*executor)->in_use(), 2);
  }
  EXPECT_EQ((*executor)->in_use(), 0);
}

}  // namespace
}  // namespace switchyard::runner
