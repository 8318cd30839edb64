// Test-only TorchScript helpers shared by the runner's and the model manager's tests: a gate
// operator that holds a forward pass for as long as a test needs, modules saved with it, and a
// future over the executor's asynchronous Submit.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <future>
#include <mutex>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runner/model_executor.h"

namespace switchyard::testing {

inline constexpr auto kTorchTestWait = std::chrono::seconds(20);  // bound of every wait here

// A gate that TorchScript forwards pass through via the operator sy_ops.gate(x): each call counts
// itself, then blocks until the test opens the gate (bounded), then returns x * 2.
class Gate {
 public:
  static Gate& Get();
  void Reset(bool open);
  void Open();
  // Waits (bounded) until at least `n` forwards have entered the gate.
  bool WaitEntered(int n);
  int entered();
  void Pass();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int entered_ = 0;
};

// forward(x) = x * 2.0.
inline constexpr char kDoubleSource[] = R"(
def forward(self, x):
    return x * 2.0
)";
// forward(x) = x * 2 after passing the gate.
inline constexpr char kGatedSource[] = R"(
def forward(self, x):
    return sy_ops.gate(x)
)";

struct TestModuleOptions {
  int64_t scale = 4;  // the int attribute "scale"
  // A float attribute "ratio" (0.5) and a one-element parameter "weight" (1.0).
  bool ratio_and_weight = true;
};
// Saves a module with these TorchScript methods (which may call sy_ops.gate and raise Exception)
// and the attributes of `options` at `path`. Throws c10::Error if the source does not compile.
void SaveTestModule(const std::filesystem::path& path, std::string_view source,
                    TestModuleOptions options = {});

// Saves `source` (as SaveTestModule) as <dir>/<name>.pt and loads it on the CPU; nullptr, with a
// test failure, when it does not load.
runner::TorchModelPtr SaveAndLoadTestModule(const std::filesystem::path& dir, std::string_view name,
                                            std::string_view source);

// 60 s from now: a deadline no test reaches.
inline absl::Time Far() { return absl::Now() + absl::Seconds(60); }

// The executor's asynchronous SubmitBatchable as a future (the status when it is refused).
absl::StatusOr<std::future<runner::ModelExecutor::Result>> SubmitForFuture(
    runner::ModelExecutor& executor, at::Tensor input, absl::Time deadline);

// Waits (bounded) until the executor reports `n` jobs in use.
bool WaitInUse(const runner::ModelExecutor& executor, int n);

}  // namespace switchyard::testing
