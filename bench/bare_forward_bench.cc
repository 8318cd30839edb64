// A bare TorchScript forward loop alone in its process (issue 20): what a user of libtorch gets
// with its defaults, against the same loop once other threads own OpenMP teams, as in the
// orchestrator (a team per executor thread) and in serving_bench (whose raw loop shares the
// process with the orchestrator). libgomp spins up to ~300,000 iterations at a barrier while a
// process has no more OpenMP threads than CPUs, and ~100 once it has more ("throttled"), then
// sleeps on a futex; which mode a forward runs in depends on the process, not on the model.
// Run it once per setting (the mode is process-wide and a team, once made, stays):
//
//   build/bin/bare_forward_bench --model models/esrgan-slim-x4.pt --size 128 --idle-teams 0
//   build/bin/bare_forward_bench --model models/esrgan-slim-x4.pt --size 128 --idle-teams 1
//
// --idle-teams N starts N threads that each run one parallel region (making their own team) and
// then sleep until the end. Reported per window: forwards/s, cores busy (process CPU / wall) and
// CPU ms per forward. The orchestrator's allocator setting (KeepFreedMemoryForReuse) applies, as
// in serving_bench.
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>

#include "common/daemon.h"
#include "runner/torch_model.h"

namespace {

using Clock = std::chrono::steady_clock;

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A bare TorchScript forward loop, optionally with idle OpenMP teams beside it"};
  std::string model_path;
  int size = 128, threads = 2, idle_teams = 0, rounds = 3;
  double seconds = 4;
  app.add_option("--model", model_path, "TorchScript file taking [1, 3, H, W]")->required();
  app.add_option("--size", size, "input height and width")->check(CLI::Range(8, 4096));
  app.add_option("--threads", threads, "libtorch intra-op threads")->check(CLI::Range(1, 256));
  app.add_option("--idle-teams", idle_teams, "threads that make an OpenMP team and then sleep")
      ->check(CLI::Range(0, 64));
  app.add_option("--seconds", seconds, "length of each window")->check(CLI::Range(0.5, 600.0));
  app.add_option("--rounds", rounds, "windows")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  switchyard::KeepFreedMemoryForReuse();
  if (auto st = switchyard::runner::ConfigureTorchThreads(threads, 1); !st.ok()) {
    std::cerr << st << "\n";
    return 1;
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> idle;
  for (int i = 0; i < idle_teams; ++i) {
    idle.emplace_back([&stop] {
      // A sum over 2^20 floats is above ATen's grain size: one parallel region, one team.
      (void)at::ones({1 << 20}).sum().item<float>();
      while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    });
  }
  auto model = switchyard::runner::TorchModel::Load(model_path, "cpu");
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    stop = true;
    for (auto& t : idle) t.join();
    return 1;
  }
  const at::Tensor input = at::rand({1, 3, size, size}) * 255;
  bool ok = true;
  for (int i = 0; i < 3 && ok; ++i) ok = (*model)->Forward(input).ok();  // warm-up
  std::printf(
      "| idle teams | window | forwards/s | cores busy | CPU ms/forward "
      "|\n|---|---|---|---|---|\n");
  for (int r = 0; r < rounds && ok; ++r) {
    const double cpu0 = ProcessCpuSeconds();
    const auto t0 = Clock::now();
    const auto end =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    int n = 0;
    while (ok && Clock::now() < end) {
      ok = (*model)->Forward(input).ok();
      ++n;
    }
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    const double cpu = ProcessCpuSeconds() - cpu0;
    std::printf("| %d | %d | %.2f | %.2f | %.1f |\n", idle_teams, r + 1, n / wall, cpu / wall,
                1000 * cpu / n);
    std::fflush(stdout);
  }
  stop = true;
  for (auto& t : idle) t.join();
  if (!ok) std::cerr << "a forward failed\n";
  return ok ? 0 : 1;
}
