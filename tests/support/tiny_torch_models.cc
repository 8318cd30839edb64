#include "support/tiny_torch_models.h"

#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/library.h>
#include <torch/script.h>

namespace switchyard::testing {
namespace {

at::Tensor GateOp(at::Tensor x) {
  Gate::Get().Pass();
  return x * 2;
}

// Module::define's default resolver only knows `torch`. This one adds `sy_ops` (the test
// operators, sy_test_ops::*) and the `Exception` builtin.
struct TestResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(
      const std::string& name, torch::jit::GraphFunction& /*m*/,
      const torch::jit::SourceRange& /*loc*/) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "sy_ops") return std::make_shared<torch::jit::BuiltinModule>("sy_test_ops");
    if (name == "Exception") return std::make_shared<torch::jit::ExceptionValue>("Exception");
    return nullptr;
  }
};

}  // namespace

TORCH_LIBRARY(sy_test_ops, m) { m.def("gate(Tensor x) -> Tensor", &GateOp); }

Gate& Gate::Get() {
  static Gate gate;
  return gate;
}

void Gate::Reset(bool open) {
  std::lock_guard<std::mutex> lock(mu_);
  open_ = open;
  entered_ = 0;
}

void Gate::Open() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
  }
  cv_.notify_all();
}

bool Gate::WaitEntered(int n) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, kTorchTestWait, [&] { return entered_ >= n; });
}

int Gate::entered() {
  std::lock_guard<std::mutex> lock(mu_);
  return entered_;
}

void Gate::Pass() {
  std::unique_lock<std::mutex> lock(mu_);
  ++entered_;
  cv_.notify_all();
  cv_.wait_for(lock, kTorchTestWait, [&] { return open_; });
}

void SaveTestModule(const std::filesystem::path& path, std::string_view source,
                    TestModuleOptions options) {
  torch::jit::Module m("m");
  m.register_attribute("training", c10::BoolType::get(), true);
  m.register_attribute("scale", c10::IntType::get(), options.scale);
  if (options.ratio_and_weight) {
    m.register_attribute("ratio", c10::FloatType::get(), 0.5);
    m.register_parameter("weight", torch::ones({1}), /*is_buffer=*/false);
  }
  m.define(std::string(source), std::make_shared<TestResolver>());
  m.save(path.string());
}

runner::TorchModelPtr SaveAndLoadTestModule(const std::filesystem::path& dir, std::string_view name,
                                            std::string_view source) {
  const std::filesystem::path path = dir / (std::string(name) + ".pt");
  SaveTestModule(path, source);
  auto model = runner::TorchModel::Load(path, "cpu");
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

absl::StatusOr<std::future<runner::ModelExecutor::Result>> SubmitForFuture(
    runner::ModelExecutor& executor, at::Tensor input, absl::Time deadline) {
  auto promise = std::make_shared<std::promise<runner::ModelExecutor::Result>>();
  auto future = promise->get_future();
  absl::Status queued = executor.SubmitBatchable(
      std::move(input), deadline,
      [promise](runner::ModelExecutor::Result r) { promise->set_value(std::move(r)); });
  if (!queued.ok()) return queued;
  return future;
}

bool WaitInUse(const runner::ModelExecutor& executor, int n) {
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (executor.in_use() != n) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

}  // namespace switchyard::testing
