// TorchScript image models on a GPU against the CPU (docs/gpu.md, scripts/gpu-check): each
// model loaded twice through the runner's TorchModel (the orchestrator's path: the input moved to
// the device, the result back on the CPU), timed in alternating rounds in one run, and the two
// outputs compared.
//
//   build/bin/device_bench [--model-dir models] [--models esrgan-slim-x4,...] [--device cuda]
//                          [--size 256] [--seconds 2] [--rounds 3] [--threads 0]
//
// On a machine or libtorch without CUDA it says so and exits with status 3 (scripts/gpu-check
// reports it); nothing in CI runs it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "runner/torch_model.h"

namespace fs = std::filesystem;
namespace runner = switchyard::runner;
using Clock = std::chrono::steady_clock;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string Fmt(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// Milliseconds per forward over at least `seconds` (and at least 3 calls); -1 on an error.
double MsPerForward(runner::TorchModel& model, const at::Tensor& input, double seconds,
                    std::string* error) {
  const auto start = Clock::now();
  int calls = 0;
  double elapsed = 0;
  while (calls < 3 || elapsed < seconds) {
    auto out = model.Forward(input);  // back on the CPU: the device's work is done
    if (!out.ok()) {
      *error = out.status().ToString();
      return -1;
    }
    ++calls;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  }
  return 1000.0 * elapsed / calls;
}

struct Entry {
  std::string id;
  runner::TorchModelPtr cpu, device;
  std::vector<double> cpu_ms, device_ms;
  double max_abs_diff = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"TorchScript image models on a GPU against the CPU (docs/gpu.md)"};
  std::string model_dir = "models";
  std::string models = "esrgan-slim-x4,esrgan-medium-x4,esrgan-thick-x4";
  std::string device_name = "cuda";
  int size = 256, rounds = 3, threads = 0;
  double seconds = 2;
  app.add_option("--model-dir", model_dir, "Where scripts/prepare-models put the models");
  app.add_option("--models", models, "Model ids (<id>.pt in the model dir); absent ones skipped");
  app.add_option("--device", device_name, "The device to compare with the CPU (cuda, cuda:N)");
  app.add_option("--size", size, "Input height and width")->check(CLI::Range(8, 4096));
  app.add_option("--seconds", seconds, "Measuring time per model, device and round")
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--rounds", rounds, "Rounds (CPU and device alternate)")->check(CLI::Range(1, 50));
  app.add_option("--threads", threads, "libtorch intra-op threads on the CPU (0: its default)")
      ->check(CLI::Range(0, 1024));
  CLI11_PARSE(app, argc, argv);

  auto device = runner::ResolveDevice(device_name);
  if (!device.ok() || !device->is_cuda()) {
    std::cerr << "device_bench: no CUDA device to compare with: "
              << (device.ok() ? "--device names the CPU" : device.status().ToString()) << "\n";
    return 3;
  }
  if (auto st = runner::ConfigureTorchThreads(threads, 1); !st.ok()) {
    std::cerr << st << "\n";
    return 1;
  }
  std::vector<Entry> entries;
  for (absl::string_view id : absl::StrSplit(models, ',', absl::SkipEmpty())) {
    const fs::path path = fs::path(model_dir) / absl::StrCat(id, ".pt");
    if (!fs::exists(path)) {
      std::cerr << path << " missing: skipped (scripts/prepare-models makes it)\n";
      continue;
    }
    Entry e;
    e.id = std::string(id);
    auto cpu = runner::TorchModel::Load(path, "cpu");
    auto gpu = runner::TorchModel::Load(path, device->str());
    if (!cpu.ok() || !gpu.ok()) {
      std::cerr << path << ": " << (cpu.ok() ? gpu.status() : cpu.status()) << "\n";
      return 1;
    }
    e.cpu = *std::move(cpu);
    e.device = *std::move(gpu);
    entries.push_back(std::move(e));
  }
  if (entries.empty()) {
    std::cerr << "device_bench: none of the models is in " << model_dir << "\n";
    return 1;
  }
  torch::manual_seed(1);
  const at::Tensor input = at::rand({1, 3, size, size}) * 255;
  std::printf(
      "# Image models: %s against the CPU (%d intra-op threads), input %dx%d, %d round(s)"
      " of %.1f s per side\n\n",
      device->str().c_str(), at::get_num_threads(), size, size, rounds, seconds);
  for (Entry& e : entries) {
    // Warm-up (the profiling executor specialises the graph in its first runs; cuDNN picks its
    // algorithms), and the two outputs compared.
    at::Tensor a, b;
    for (int i = 0; i < 3; ++i) {
      auto x = e.cpu->Forward(input);
      auto y = e.device->Forward(input);
      if (!x.ok() || !y.ok()) {
        std::cerr << e.id << ": " << (x.ok() ? y.status() : x.status()) << "\n";
        return 1;
      }
      a = *x;
      b = *y;
    }
    if (a.sizes() != b.sizes()) {
      std::cerr << e.id << ": the CPU and the device give different shapes\n";
      return 1;
    }
    e.max_abs_diff = (a - b).abs().max().item<double>();
  }
  for (int r = 0; r < rounds; ++r) {
    for (Entry& e : entries) {
      std::string error;
      const double c = MsPerForward(*e.cpu, input, seconds, &error);
      const double d = c < 0 ? -1 : MsPerForward(*e.device, input, seconds, &error);
      if (d < 0) {
        std::cerr << e.id << ": " << error << "\n";
        return 1;
      }
      e.cpu_ms.push_back(c);
      e.device_ms.push_back(d);
    }
    std::cerr << "round " << r + 1 << " of " << rounds << " done\n";
  }
  std::printf(
      "| model | CPU ms/forward | %s ms/forward | speed-up (median of rounds) | max abs "
      "difference (0..255) |\n|---|---|---|---|---|\n",
      device->str().c_str());
  for (const Entry& e : entries) {
    std::vector<double> ratios;
    for (size_t i = 0; i < e.cpu_ms.size(); ++i) ratios.push_back(e.cpu_ms[i] / e.device_ms[i]);
    std::printf("| %s | %s | %s | **%s** | %s |\n", e.id.c_str(), Fmt(Median(e.cpu_ms), 1).c_str(),
                Fmt(Median(e.device_ms), 2).c_str(), Fmt(Median(ratios), 1).c_str(),
                Fmt(e.max_abs_diff, 4).c_str());
  }
  return 0;
}
