// The Batcher (runner/batcher.h) on its own, and dynamic batching through ModelExecutor: same-shape
// single-item jobs share one forward pass, results are split back per job, and everything else
// runs alone.
#include "runner/batcher.h"

#include <deque>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/script.h>

#include "runner/model_executor.h"
#include "support/media_fixtures.h"
#include "support/tiny_torch_models.h"

namespace switchyard::runner {
namespace {

using ::switchyard::testing::SubmitForFuture;
using ::switchyard::testing::TempDir;

constexpr auto kWait = std::chrono::seconds(20);

// Saves a module whose forward is `body` (TorchScript source of the method) and loads it.
TorchModelPtr SaveAndLoad(const TempDir& dir, const std::string& name, const std::string& body) {
  torch::jit::Module m(name);
  m.define(body);
  auto path = dir.path() / (name + ".pt");
  m.save(path.string());
  auto model = TorchModel::Load(path, "cpu");
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

// forward(x) = x * 2 + (batch size seen by the model) * 1000, so each result tells both that the
// job's own data came back to it and how large the batch it rode in was.
constexpr char kDoubleWithBatchMark[] = R"(
def forward(self, x):
    return x * 2.0 + float(x.size(0)) * 1000.0
)";

std::unique_ptr<ModelExecutor> MakeExecutor(TorchModelPtr model, int max_batch,
                                            absl::Duration delay, int queue = 16) {
  auto e = ModelExecutor::Create(
      std::move(model),
      {.instances = 1, .queue_size = queue, .max_batch_size = max_batch, .max_queue_delay = delay});
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

// ---------------------------------------------------------------------------------------------
// Batcher

struct FakeJob {
  std::vector<c10::IValue> inputs;
  bool batchable = true;
};

FakeJob Job(at::Tensor t, bool batchable = true) { return FakeJob{{c10::IValue(t)}, batchable}; }

TEST(BatcherTest, OnlyASingleItemTensorIsBatchableAndOnlyWhenBatchingIsOn) {
  const Batcher on(4, absl::Milliseconds(2));
  EXPECT_TRUE(on.Batchable(torch::ones({1, 3})));
  EXPECT_FALSE(on.Batchable(torch::ones({2, 3})));
  EXPECT_FALSE(on.Batchable(torch::tensor(1.0f)));  // no batch dimension
  const Batcher off(1, absl::Milliseconds(2));
  EXPECT_FALSE(off.Batchable(torch::ones({1, 3})));
}

TEST(BatcherTest, GatherTakesCompatibleJobsOldestFirstUpToTheMaximum) {
  const Batcher batcher(3, absl::ZeroDuration());
  std::deque<FakeJob> queue;
  queue.push_back(Job(torch::full({1, 2}, 1.0f)));
  queue.push_back(Job(torch::ones({1, 3})));               // other shape
  queue.push_back(Job(torch::ones({1, 2}, at::kDouble)));  // other dtype
  queue.push_back(Job(torch::ones({1, 2}), /*batchable=*/false));
  queue.push_back(Job(torch::full({1, 2}, 2.0f)));
  queue.push_back(Job(torch::full({1, 2}, 3.0f)));  // batch already full
  std::vector<FakeJob> batch{Job(torch::zeros({1, 2}))};
  batcher.Gather(queue, batch);
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_FLOAT_EQ(batch[1].inputs[0].toTensor()[0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(batch[2].inputs[0].toTensor()[0][0].item<float>(), 2.0f);
  EXPECT_EQ(queue.size(), 4u);  // the rest stays queued, in order
  EXPECT_TRUE(batcher.Full(batch.size()));
}

TEST(BatcherTest, FillUntilNeverPassesTheFirstJobsDeadline) {
  const Batcher batcher(8, absl::Milliseconds(5));
  const absl::Time now = absl::Now();
  EXPECT_EQ(batcher.FillUntil(now, now + absl::Seconds(1)), now + absl::Milliseconds(5));
  EXPECT_EQ(batcher.FillUntil(now, now + absl::Milliseconds(1)), now + absl::Milliseconds(1));
}

TEST(BatcherTest, StackAndSplitRoundTripAndAWrongRowCountFailsEveryJob) {
  const at::Tensor stacked = Batcher::Stack({torch::full({1, 2}, 1.0f), torch::full({1, 2}, 2.0f)});
  ASSERT_EQ(stacked.sizes(), (std::vector<int64_t>{2, 2}));
  auto parts = Batcher::Split(stacked * 10, 2, "m.pt");
  ASSERT_EQ(parts.size(), 2u);
  ASSERT_TRUE(parts[0].ok() && parts[1].ok());
  EXPECT_TRUE(torch::equal(*parts[0], torch::full({1, 2}, 10.0f)));
  EXPECT_TRUE(torch::equal(*parts[1], torch::full({1, 2}, 20.0f)));

  auto wrong = Batcher::Split(torch::ones({1, 2}), 2, "m.pt");
  for (const auto& r : wrong) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(r.status().message()).find("m.pt: batched forward returned 1 results"),
              std::string::npos)
        << r.status();
  }
  auto failed = Batcher::Split(absl::InternalError("boom"), 3, "m.pt");
  ASSERT_EQ(failed.size(), 3u);
  for (const auto& r : failed) EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
}

// ---------------------------------------------------------------------------------------------
// Dynamic batching through the executor

TEST(DynamicBatchingTest, SameShapeJobsShareOneForwardPass) {
  TempDir dir;
  auto executor =
      MakeExecutor(SaveAndLoad(dir, "double", kDoubleWithBatchMark), 4, absl::Seconds(5));
  ASSERT_NE(executor, nullptr);
  std::vector<std::future<ModelExecutor::Result>> futures;
  for (int i = 0; i < 4; ++i) {
    auto f = SubmitForFuture(*executor, torch::full({1, 1, 2, 2}, static_cast<float>(i)),
                             absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(f.ok()) << f.status();
    futures.push_back(std::move(*f));
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(futures[i].wait_for(kWait), std::future_status::ready);
    auto r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->sizes(), (std::vector<int64_t>{1, 1, 2, 2}));
    // Own data doubled, in a batch of 4.
    EXPECT_FLOAT_EQ(r->flatten()[0].item<float>(), i * 2.0f + 4000.0f);
  }
  EXPECT_EQ(executor->passes(), 1);
  EXPECT_EQ(executor->jobs_run(), 4);
  EXPECT_EQ(executor->in_use(), 0);
}

TEST(DynamicBatchingTest, DifferentShapesAreNotMixed) {
  TempDir dir;
  auto executor =
      MakeExecutor(SaveAndLoad(dir, "double", kDoubleWithBatchMark), 4, absl::Milliseconds(300));
  ASSERT_NE(executor, nullptr);
  std::vector<std::future<ModelExecutor::Result>> futures;
  for (int i = 0; i < 4; ++i) {
    int side = i % 2 == 0 ? 2 : 3;
    auto f = SubmitForFuture(*executor, torch::ones({1, 1, side, side}),
                             absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(f.ok());
    futures.push_back(std::move(*f));
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(futures[i].wait_for(kWait), std::future_status::ready);
    auto r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    int side = i % 2 == 0 ? 2 : 3;
    EXPECT_EQ(r->size(2), side);
    EXPECT_FLOAT_EQ(r->flatten()[0].item<float>(), 2.0f + 2000.0f);  // batches of two
  }
  EXPECT_EQ(executor->passes(), 2);
  EXPECT_EQ(executor->jobs_run(), 4);
}

TEST(DynamicBatchingTest, BatchingOffRunsEachJobAlone) {
  TempDir dir;
  auto executor =
      MakeExecutor(SaveAndLoad(dir, "double", kDoubleWithBatchMark), 1, absl::Seconds(5));
  ASSERT_NE(executor, nullptr);
  std::vector<std::future<ModelExecutor::Result>> futures;
  for (int i = 0; i < 3; ++i) {
    auto f = SubmitForFuture(*executor, torch::ones({1, 2}), absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(f.ok());
    futures.push_back(std::move(*f));
  }
  for (auto& f : futures) {
    ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
    auto r = f.get();
    ASSERT_TRUE(r.ok());
    EXPECT_FLOAT_EQ(r->flatten()[0].item<float>(), 2.0f + 1000.0f);
  }
  EXPECT_EQ(executor->passes(), 3);
}

TEST(DynamicBatchingTest, InputsWithBatchDimensionAboveOneRunAlone) {
  TempDir dir;
  auto executor =
      MakeExecutor(SaveAndLoad(dir, "double", kDoubleWithBatchMark), 4, absl::Milliseconds(200));
  ASSERT_NE(executor, nullptr);
  auto f = SubmitForFuture(*executor, torch::ones({3, 2}), absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(f.ok());
  ASSERT_EQ(f->wait_for(kWait), std::future_status::ready);
  auto r = f->get();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(0), 3);
  EXPECT_FLOAT_EQ(r->flatten()[0].item<float>(), 2.0f + 3000.0f);
}

TEST(DynamicBatchingTest, ModelThatBreaksTheBatchFailsEveryJobClearly) {
  TempDir dir;
  // Returns one row whatever the batch: cannot be split back.
  auto model = SaveAndLoad(dir, "first", R"(
def forward(self, x):
    return x[:1]
)");
  auto executor = MakeExecutor(model, 2, absl::Seconds(5));
  ASSERT_NE(executor, nullptr);
  auto a = SubmitForFuture(*executor, torch::ones({1, 2}), absl::Now() + absl::Seconds(30));
  auto b = SubmitForFuture(*executor, torch::ones({1, 2}), absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(a.ok() && b.ok());
  for (auto* f : {&*a, &*b}) {
    ASSERT_EQ(f->wait_for(kWait), std::future_status::ready);
    auto r = f->get();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(std::string(r.status().message()).find("1 results for 2 inputs"), std::string::npos)
        << r.status();
  }
}

TEST(DynamicBatchingTest, BatchWaitNeverOutlastsTheFirstJobsDeadline) {
  TempDir dir;
  auto executor =
      MakeExecutor(SaveAndLoad(dir, "double", kDoubleWithBatchMark), 8, absl::Seconds(30));
  ASSERT_NE(executor, nullptr);
  auto start = absl::Now();
  auto f = SubmitForFuture(*executor, torch::ones({1, 2}), absl::Now() + absl::Milliseconds(300));
  ASSERT_TRUE(f.ok());
  ASSERT_EQ(f->wait_for(kWait), std::future_status::ready);
  auto r = f->get();
  // It ran alone (or was dropped as expired) well before the 30 s batching window.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  if (r.ok()) {
    EXPECT_FLOAT_EQ(r->flatten()[0].item<float>(), 2.0f + 1000.0f);
  } else {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  }
}

TEST(DynamicBatchingTest, RunWithAnyArgumentsRunsAlone) {
  TempDir dir;
  auto model = SaveAndLoad(dir, "pair", R"(
def forward(self, x, k: int):
    return (x + k, x * k)
)");
  auto executor = MakeExecutor(model, 4, absl::Milliseconds(100));
  ASSERT_NE(executor, nullptr);
  CancelToken cancel;
  auto r = executor->Run({torch::ones({1, 2}), c10::IValue(int64_t{3})},
                         absl::Now() + absl::Seconds(30), cancel);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->isTuple());
  auto elems = r->toTupleRef().elements();
  EXPECT_FLOAT_EQ(elems[0].toTensor().flatten()[0].item<float>(), 4.0f);
  EXPECT_FLOAT_EQ(elems[1].toTensor().flatten()[0].item<float>(), 3.0f);
}

}  // namespace
}  // namespace switchyard::runner
