// Unit tests for TorchModel, ModelExecutor, ResolveDevice and ConfigureTorchThreads
// (runner/torch_model.h). Every model is a tiny TorchScript module built here with libtorch's C++
// API and saved into a temporary directory.
#include "runner/torch_model.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/cuda.h>
#include <torch/library.h>
#include <torch/script.h>

#include "absl/strings/match.h"

#include "support/media_fixtures.h"

namespace switchyard::runner {
namespace {

namespace fs = std::filesystem;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;
using ::testing::HasSubstr;

constexpr auto kWait = std::chrono::seconds(20);  // upper bound for every wait in this file

// A gate that TorchScript forwards pass through via the custom op sy_runner_test::gate(x): each
// call counts itself, then blocks until the test opens the gate (bounded), then returns x * 2.
// It lets the tests hold an executor thread busy for exactly as long as they need.
class Gate {
 public:
  static Gate& Get() {
    static Gate gate;
    return gate;
  }
  void Reset(bool open) {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = open;
    entered_ = 0;
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  // Waits until at least `n` forwards have entered the gate.
  bool WaitEntered(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return entered_ >= n; });
  }
  int entered() {
    std::lock_guard<std::mutex> lock(mu_);
    return entered_;
  }
  void Pass() {
    std::unique_lock<std::mutex> lock(mu_);
    ++entered_;
    cv_.notify_all();
    cv_.wait_for(lock, kWait, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int entered_ = 0;
};

at::Tensor GateOp(at::Tensor x) {
  Gate::Get().Pass();
  return x * 2;
}

TORCH_LIBRARY(sy_runner_test, m) { m.def("gate(Tensor x) -> Tensor", &GateOp); }

// Module::define's default resolver only knows `torch`. This one adds `sy_ops` (the test's custom
// operators, sy_runner_test::*) and the `Exception` builtin.
struct TestResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(
      const std::string& name, torch::jit::GraphFunction& /*m*/,
      const torch::jit::SourceRange& /*loc*/) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "sy_ops") return std::make_shared<torch::jit::BuiltinModule>("sy_runner_test");
    if (name == "Exception") return std::make_shared<torch::jit::ExceptionValue>("Exception");
    return nullptr;
  }
};

// Builds a module with the given TorchScript source, an int attribute "scale" and a float
// attribute "ratio", and saves it to `path`.
void SaveModule(const fs::path& path, const std::string& source) {
  torch::jit::Module m("m");
  m.register_attribute("training", c10::BoolType::get(), true);
  m.register_attribute("scale", c10::IntType::get(), int64_t{4});
  m.register_attribute("ratio", c10::FloatType::get(), 0.5);
  m.register_parameter("weight", torch::ones({1}), /*is_buffer=*/false);
  m.define(source, std::make_shared<TestResolver>());
  m.save(path.string());
}

constexpr const char* kDouble = R"(
def forward(self, x):
    return x * 2.0
)";

constexpr const char* kGated = R"(
def forward(self, x):
    return sy_ops.gate(x)
)";

absl::Time Far() { return absl::Now() + absl::Seconds(60); }

// Waits (bounded) until the executor reports `n` jobs in use.
bool WaitInUse(const ModelExecutor& executor, int n) {
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (executor.in_use() != n) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

class TorchModelTest : public ::testing::Test {
 protected:
  void SetUp() override { Gate::Get().Reset(/*open=*/true); }
  void TearDown() override { Gate::Get().Open(); }

  // Saves `source` as <name>.pt and loads it on the CPU.
  TorchModelPtr Build(const std::string& name, const std::string& source) {
    const fs::path path = dir_.path() / (name + ".pt");
    SaveModule(path, source);
    auto model = TorchModel::Load(path, "cpu");
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? *model : nullptr;
  }

  TempDir dir_;
};

// ---------------------------------------------------------------------------------------------
// Load

TEST_F(TorchModelTest, LoadMissingFileIsNotFound) {
  auto model = TorchModel::Load(dir_.path() / "missing.pt", "cpu");
  ASSERT_EQ(model.status().code(), absl::StatusCode::kNotFound) << model.status();
  EXPECT_THAT(model.status().message(), HasSubstr("missing.pt"));
}

TEST_F(TorchModelTest, LoadDirectoryIsNotFound) {
  auto model = TorchModel::Load(dir_.path(), "cpu");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound) << model.status();
}

TEST_F(TorchModelTest, LoadGarbageIsInvalidArgument) {
  WriteFile(dir_.path() / "garbage.pt", "this is not a zip archive at all");
  auto model = TorchModel::Load(dir_.path() / "garbage.pt", "cpu");
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_THAT(model.status().message(), HasSubstr("garbage.pt"));

  WriteFile(dir_.path() / "empty.pt", "");
  EXPECT_EQ(TorchModel::Load(dir_.path() / "empty.pt", "cpu").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TorchModelTest, LoadModuleWithoutForwardIsInvalidArgument) {
  SaveModule(dir_.path() / "noforward.pt", R"(
def helper(self, x):
    return x
)");
  auto model = TorchModel::Load(dir_.path() / "noforward.pt", "cpu");
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_THAT(model.status().message(), HasSubstr("forward"));
}

TEST_F(TorchModelTest, LoadWithBadDeviceFails) {
  SaveModule(dir_.path() / "double.pt", kDouble);
  EXPECT_EQ(TorchModel::Load(dir_.path() / "double.pt", "tpu").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TorchModelTest, LoadKeepsPathAndDevice) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->path(), dir_.path() / "double.pt");
  EXPECT_TRUE(model->device().is_cpu());
}

// ---------------------------------------------------------------------------------------------
// Forward

TEST_F(TorchModelTest, ForwardComputesValues) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::tensor({1.0f, -2.5f, 3.0f}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->device().is_cpu());
  EXPECT_TRUE(torch::equal(*out, torch::tensor({2.0f, -5.0f, 6.0f}))) << *out;
}

TEST_F(TorchModelTest, ForwardUsesParametersAndAttributes) {
  auto model = Build("affine", R"(
def forward(self, x):
    return x * self.scale + self.weight * self.ratio
)");
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::full({1, 3, 2, 2}, 2.0f));
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), (std::vector<int64_t>{1, 3, 2, 2}));
  EXPECT_TRUE(torch::allclose(*out, torch::full({1, 3, 2, 2}, 8.5f))) << *out;
}

TEST_F(TorchModelTest, ForwardReturningTupleIsInvalidArgument) {
  auto model = Build("tuple", R"(
def forward(self, x):
    return (x, x)
)");
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::ones({2}));
  ASSERT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  EXPECT_THAT(out.status().message(), HasSubstr("not a tensor"));
}

TEST_F(TorchModelTest, ForwardReturningIntIsInvalidArgument) {
  auto model = Build("int", R"(
def forward(self, x):
    return 3
)");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->Forward(torch::ones({2})).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TorchModelTest, ForwardShapeErrorIsAnErrorNotACrash) {
  auto model = Build("mm", R"(
def forward(self, x):
    return torch.mm(x, x)
)");
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::ones({3}));  // mm needs 2-D
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal) << out.status();
  EXPECT_THAT(out.status().message(), HasSubstr("mm.pt"));
  // The model still works for a valid input afterwards.
  auto ok = model->Forward(torch::eye(2));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(torch::equal(*ok, torch::eye(2)));
}

TEST_F(TorchModelTest, ForwardThatRaisesIsAnErrorNotACrash) {
  auto model = Build("raise", R"(
def forward(self, x):
    if bool(x.sum() > 0.0):
        raise Exception("boom")
    return x
)");
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::ones({2}));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal) << out.status();
  EXPECT_THAT(out.status().message(), HasSubstr("boom"));
  EXPECT_TRUE(model->Forward(torch::zeros({2})).ok());
}

TEST_F(TorchModelTest, ForwardFromSeveralThreads) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const float v = static_cast<float>(t * 100 + i);
        auto out = model->Forward(torch::full({1, 3, 4, 4}, v));
        if (!out.ok() || !torch::equal(*out, torch::full({1, 3, 4, 4}, 2 * v))) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

// ---------------------------------------------------------------------------------------------
// IntAttribute

TEST_F(TorchModelTest, IntAttribute) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->IntAttribute("scale"), std::optional<int64_t>(4));
  EXPECT_EQ(model->IntAttribute("missing"), std::nullopt);
  EXPECT_EQ(model->IntAttribute("ratio"), std::nullopt);     // float
  EXPECT_EQ(model->IntAttribute("weight"), std::nullopt);    // tensor parameter
  EXPECT_EQ(model->IntAttribute("training"), std::nullopt);  // bool
}

// ---------------------------------------------------------------------------------------------
// ResolveDevice and ConfigureTorchThreads

TEST(ResolveDeviceTest, Cpu) {
  auto d = ResolveDevice("cpu");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_cpu());
}

TEST(ResolveDeviceTest, AutoPicksCudaOnlyWhenAvailable) {
  auto d = ResolveDevice("auto");
  ASSERT_TRUE(d.ok()) << d.status();
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(d->is_cuda());
    EXPECT_EQ(d->index(), 0);
  } else {
    EXPECT_TRUE(d->is_cpu());
  }
}

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

TEST(ResolveDeviceTest, MalformedSpecsAreInvalidArgument) {
  for (const char* spec :
       {"bogus", "", "CPU", "gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:1x", "cuda0", " cpu"}) {
    auto d = ResolveDevice(spec);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << "'" << spec << "'";
    EXPECT_THAT(d.status().message(), HasSubstr(spec)) << "'" << spec << "'";
  }
}

TEST(ResolveDeviceTest, CudaWithoutCudaIsUnavailable) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has CUDA";
  for (const char* spec : {"cuda", "cuda:0", "cuda:3"}) {
    auto d = ResolveDevice(spec);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable) << spec << ": " << d.status();
  }
}

TEST(ResolveDeviceTest, CudaIndexBeyondDeviceCountIsUnavailable) {
  EXPECT_EQ(ResolveDevice("cuda:4096").status().code(), absl::StatusCode::kUnavailable);
}

// Process-global: the first call uses 0/0 (keep libtorch's defaults) so nothing else in this
// binary is affected; every later call with other sizes must be refused.
TEST(ConfigureTorchThreadsTest, SameValuesAgainOkDifferentValuesRefused) {
  ASSERT_TRUE(ConfigureTorchThreads(0, 0).ok());
  EXPECT_TRUE(ConfigureTorchThreads(0, 0).ok());
  EXPECT_EQ(ConfigureTorchThreads(2, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ConfigureTorchThreads(0, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ConfigureTorchThreads(1, 0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ConfigureTorchThreads(0, 0).ok());
}

// ---------------------------------------------------------------------------------------------
// ModelExecutor

class ModelExecutorTest : public TorchModelTest {};

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
  auto future = (*executor)->Submit(torch::tensor({1.5f}), Far(), nullptr);
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
  auto executor = ModelExecutor::Create(
      model, {.instances = 1, .queue_size = 4}, [&](absl::Duration queued, absl::Duration compute) {
        std::lock_guard<std::mutex> lock(mu);
        seen.emplace_back(queued, compute);
      });
  ASSERT_TRUE(executor.ok()) << executor.status();
  for (int i = 0; i < 3; ++i) {
    auto future = (*executor)->Submit(torch::tensor({1.0f * i}), Far(), nullptr);
    ASSERT_TRUE(future.ok()) << future.status();
    ASSERT_EQ(future->wait_for(kWait), std::future_status::ready);
    ASSERT_TRUE(future->get().ok());
  }
  // A job cancelled while queued never ran: not reported.
  auto cancelled = std::make_shared<std::atomic<bool>>(true);
  auto dropped = (*executor)->Submit(torch::tensor({9.0f}), Far(), cancelled);
  ASSERT_TRUE(dropped.ok());
  ASSERT_EQ(dropped->wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(dropped->get().status().code(), absl::StatusCode::kCancelled);
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
  auto future = (*executor)->Submit(torch::ones({3}), Far(), nullptr);
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
        auto future = ex->Submit(torch::full({1, 3, 8, 8}, v), Far(), nullptr);
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

  auto running = ex->Submit(torch::tensor({1.0f}), Far(), nullptr);
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(Gate::Get().WaitEntered(1));  // the only instance is busy now
  auto queued = ex->Submit(torch::tensor({2.0f}), Far(), nullptr);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(ex->in_use(), 2);

  auto refused = ex->Submit(torch::tensor({3.0f}), Far(), nullptr);
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
  auto again = ex->Submit(torch::tensor({5.0f}), Far(), nullptr);
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
  auto a = ex->Submit(torch::tensor({1.0f}), Far(), nullptr);
  auto b = ex->Submit(torch::tensor({1.0f}), Far(), nullptr);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(2));  // both instances run at once
  EXPECT_EQ(ex->Submit(torch::tensor({1.0f}), Far(), nullptr).status().code(),
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
  auto future = (*executor)->Submit(torch::tensor({1.0f}), absl::Now() - absl::Seconds(1), nullptr);
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
  auto running = ex->Submit(torch::tensor({1.0f}), Far(), nullptr);
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  const absl::Time deadline = absl::Now() + absl::Milliseconds(20);
  auto late = ex->Submit(torch::tensor({2.0f}), deadline, nullptr);
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
  auto flag = std::make_shared<std::atomic<bool>>(true);
  auto future = (*executor)->Submit(torch::tensor({1.0f}), Far(), flag);
  ASSERT_TRUE(future.ok());
  ASSERT_EQ(future->wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(future->get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Gate::Get().entered(), 0);

  // An unset flag runs normally.
  auto unset = std::make_shared<std::atomic<bool>>(false);
  auto ran = (*executor)->Submit(torch::tensor({1.0f}), Far(), unset);
  ASSERT_TRUE(ran.ok());
  ASSERT_EQ(ran->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(ran->get().ok());
  EXPECT_EQ(Gate::Get().entered(), 1);
}

TEST_F(ModelExecutorTest, CancelledWhileQueuedIsCancelled) {
  auto model = Build("gated", kGated);
  ASSERT_NE(model, nullptr);
  Gate::Get().Reset(/*open=*/false);
  auto executor = ModelExecutor::Create(model, {.instances = 1, .queue_size = 2});
  ASSERT_TRUE(executor.ok());
  ModelExecutor* ex = executor->get();
  auto running = ex->Submit(torch::tensor({1.0f}), Far(), nullptr);
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  auto flag = std::make_shared<std::atomic<bool>>(false);
  auto queued = ex->Submit(torch::tensor({2.0f}), Far(), flag);
  ASSERT_TRUE(queued.ok());
  flag->store(true);
  Gate::Get().Open();
  ASSERT_EQ(queued->wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(queued->get().status().code(), absl::StatusCode::kCancelled);
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
  auto running = ex->Submit(torch::tensor({1.0f}), Far(), nullptr);
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  auto flag = std::make_shared<std::atomic<bool>>(false);
  auto queued = ex->Submit(torch::tensor({2.0f}), Far(), flag);
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(ex->in_use(), 2);

  // The caller is cancelled while the only instance is still busy: its slot comes back now, not
  // when the instance would have reached it.
  auto r = AwaitResult(
      *ex, *queued, Far(), [] { return true; }, flag);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(flag->load());
  EXPECT_EQ(ex->in_use(), 1);
  // So another job fits in the queue again: 1 running + 2 queued.
  auto a = ex->Submit(torch::tensor({3.0f}), Far(), nullptr);
  auto b = ex->Submit(torch::tensor({4.0f}), Far(), nullptr);
  EXPECT_TRUE(a.ok());
  EXPECT_TRUE(b.ok());
  EXPECT_EQ(ex->Submit(torch::tensor({5.0f}), Far(), nullptr).status().code(),
            absl::StatusCode::kResourceExhausted);
  // Withdrawing a job that is not queued (already done) changes nothing.
  ex->Withdraw(flag, absl::CancelledError("again"));
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
  auto running = ex->Submit(torch::tensor({1.0f}), Far(), nullptr);
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  std::vector<std::future<ModelExecutor::Result>> queued;
  for (int i = 0; i < 3; ++i) {
    auto f = ex->Submit(torch::tensor({2.0f}), Far(), nullptr);
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

// BUG (src/runner/torch_model.cc, ModelExecutor::Loop): the job's promise is fulfilled before
// in_use_ is decremented. A caller that already holds its result can therefore still find the
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
    auto future = ex->Submit(torch::tensor({1.0f}), Far(), nullptr);
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

}  // namespace
}  // namespace switchyard::runner
