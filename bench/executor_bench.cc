// Executor round trip (issue 19): a tiny TorchScript model's jobs submitted through the model
// executor the way the orchestrator's handlers do (submit, then wait with the deadline and the
// call's cancellation), so the figure is the executor's own overhead: queueing, waking an
// executor thread, a forward pass of a few nanoseconds, waking the caller. Reports p50 and p99
// per call (microseconds; with several callers, the mean over callers of each one's percentile).
//
//   build/bin/executor_bench --benchmark_min_time=2
//
// Cases: one caller (the served p50 of a tiny model); four callers on one instance (callers wait
// while the others' jobs run); four callers on one instance with no queue and a ~1 ms model, where
// a caller whose job is refused waits for a free slot as the LLM's RunForward does.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>
#include <torch/script.h>

#include "absl/time/clock.h"
#include "runner/model_executor.h"

namespace sy = switchyard;
using Clock = std::chrono::steady_clock;

namespace {

// Nanoseconds of compute: the round trip is all executor overhead.
constexpr char kTinySource[] = R"(
def forward(self, x):
    return x * 2.0
)";
// About a millisecond of compute on one core, so that four callers on one instance with no queue
// really contend for the slot.
constexpr char kBusySource[] = R"(
def forward(self, x):
    y = torch.ones([96, 96])
    for _ in range(4):
        y = torch.mm(y, y) * 0.01
    return x * 2.0 + y[0, 0] * 0.0
)";

sy::runner::TorchModelPtr SavedModel(const char* name, const char* source) {
  torch::jit::Module m(name);
  m.define(source);
  const std::string path = (std::filesystem::temp_directory_path() /
                            (std::string("switchyard-executor-bench-") + name + ".pt"))
                               .string();
  m.save(path);
  auto loaded = sy::runner::TorchModel::Load(path, "cpu");
  std::filesystem::remove(path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
    std::abort();
  }
  return *loaded;
}

// One job the way the orchestrator runs it: a cancel token watched for the call's cancellation
// (gRPC's IsCancelled; never here), then the blocking Run bounded by the deadline. With
// `wait_for_slot`, a full queue is waited out (the LLM's token loop) instead of answered with
// RESOURCE_EXHAUSTED.
absl::StatusOr<c10::IValue> RunJob(sy::runner::ModelExecutor& executor, const at::Tensor& input,
                                   bool wait_for_slot) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  sy::runner::CancelToken cancel;
  auto watch = sy::runner::WatchForCancel([] { return false; }, cancel);
  sy::runner::RunOptions options;
  if (wait_for_slot) options.when_full = sy::runner::WhenFull::kWait;
  return executor.Run({input}, deadline, cancel, options);
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1,
                    static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

std::unique_ptr<sy::runner::ModelExecutor> shared_executor;

void RoundTrip(benchmark::State& state, const char* source, int queue_size, bool wait_for_slot) {
  if (state.thread_index() == 0) {
    auto executor = sy::runner::ModelExecutor::Create(SavedModel("model", source),
                                                      {.instances = 1, .queue_size = queue_size});
    if (!executor.ok()) {
      state.SkipWithError(executor.status().ToString().c_str());
      return;
    }
    shared_executor = std::move(*executor);
  }
  const at::Tensor input = at::ones({1, 4});
  std::vector<double> micros;
  micros.reserve(1 << 16);
  int64_t failures = 0;
  for (auto _ : state) {
    const auto start = Clock::now();
    auto result = RunJob(*shared_executor, input, wait_for_slot);
    micros.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    if (!result.ok()) ++failures;
    benchmark::DoNotOptimize(result);
  }
  state.counters["p50_us"] =
      benchmark::Counter(Percentile(micros, 0.50), benchmark::Counter::kAvgThreads);
  state.counters["p99_us"] =
      benchmark::Counter(Percentile(micros, 0.99), benchmark::Counter::kAvgThreads);
  state.counters["failures"] = benchmark::Counter(static_cast<double>(failures));
  if (state.thread_index() == 0) shared_executor.reset();
}

void BM_ExecutorRoundTrip(benchmark::State& state) {
  RoundTrip(state, kTinySource, /*queue_size=*/8, /*wait_for_slot=*/false);
}
BENCHMARK(BM_ExecutorRoundTrip)->Threads(1)->Threads(4)->UseRealTime();

void BM_ExecutorRoundTripWaitingForSlot(benchmark::State& state) {
  RoundTrip(state, kBusySource, /*queue_size=*/0, /*wait_for_slot=*/true);
}
BENCHMARK(BM_ExecutorRoundTripWaitingForSlot)->Threads(1)->Threads(4)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  // One intra-op thread: the figures are the executor's, not libtorch's pool scheduling.
  if (auto st = sy::runner::ConfigureTorchThreads(1, 1); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
