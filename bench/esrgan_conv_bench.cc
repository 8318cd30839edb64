// ESRGAN conv throughput (issue 20): each converted ESRGAN model's whole forward in GFLOP/s of
// its convolutions, against a plain 3x3 convolution (64 -> 64 channels by default, the ESRGAN
// models' feature width) on the same input size, measured in the same run and alternated with
// the model round by round; plus where the forward's time goes (convolutions, the upsampling /
// depth-to-space tail's layout copies, the rest).
//
//   build/bin/esrgan_conv_bench [--model-dir models] [--models id,...] [--before DIR]
//                               [--size 128] [--seconds 3] [--rounds 3] [--threads 2]
//                               [--channels 64] [--channels-last]
//
// FLOPs: every aten::conv2d the TorchScript interpreter runs in one forward is seen through a
// libtorch RecordFunction callback; from its input and weight shapes, stride, padding and
// dilation, 2 * N * Cout * (Cin / groups) * kh * kw * Hout * Wout (a multiply-add is 2 FLOPs;
// bias and activations are not counted). The plain conv counts the same way. --before DIR runs
// the same model ids from DIR too (e.g. files converted by an older converter), interleaved, so
// before/after ratios come from one run.
#include <ATen/record_function.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/script.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runner/torch_model.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// What one profiled forward saw: top-level operator times and the convolutions' FLOPs.
struct Profile {
  std::map<std::string, double> ms_by_op;
  double conv_flops = 0;
  int convs = 0;
};

// RecordFunction callbacks are plain function pointers: the state is thread-local (the
// interpreter runs the top-level operators on the calling thread).
thread_local Profile* g_profile = nullptr;
thread_local int g_depth = 0;
thread_local Clock::time_point g_op_start;
bool g_verbose = false;  // --verbose: each conv's shapes and FLOPs on stderr

// aten::conv2d's 7 arguments. A boxed call (the TorchScript interpreter's) hands the callbacks
// its whole stack, whose last entries are the arguments.
c10::ArrayRef<const c10::IValue> ConvArgs(const at::RecordFunction& fn) {
  auto all = fn.inputs();
  return all.size() < 7 ? all : all.slice(all.size() - 7);
}

double ConvFlops(const at::RecordFunction& fn) {
  auto in = ConvArgs(fn);
  if (in.size() < 7 || !in[0].isTensor() || !in[1].isTensor()) return 0;
  const at::Tensor& x = in[0].toTensor();
  const at::Tensor& w = in[1].toTensor();
  if (x.dim() != 4 || w.dim() != 4) return 0;
  std::vector<int64_t> stride{1, 1}, pad{0, 0}, dil{1, 1};
  if (in[3].isIntList()) stride = in[3].toIntVector();
  if (in[5].isIntList()) dil = in[5].toIntVector();
  int64_t out_h = x.size(2), out_w = x.size(3);  // padding "same" (string overload)
  if (in[4].isIntList()) {
    pad = in[4].toIntVector();
    out_h = (x.size(2) + 2 * pad[0] - dil[0] * (w.size(2) - 1) - 1) / stride[0] + 1;
    out_w = (x.size(3) + 2 * pad[1] - dil[1] * (w.size(3) - 1) - 1) / stride[1] + 1;
  }
  return 2.0 * static_cast<double>(x.size(0) * w.size(0) * w.size(1) * w.size(2) * w.size(3)) *
         static_cast<double>(out_h * out_w);
}

std::unique_ptr<at::ObserverContext> OnOpStart(const at::RecordFunction& fn) {
  if (g_depth++ == 0 && g_profile != nullptr) {
    if (std::string(fn.name()) == "aten::conv2d") {
      const double flops = ConvFlops(fn);
      g_profile->conv_flops += flops;
      ++g_profile->convs;
      if (g_verbose) {
        auto in = ConvArgs(fn);
        std::cerr << "  conv2d input " << in[0].toTensor().sizes() << " weight "
                  << in[1].toTensor().sizes() << ": " << flops / 1e9 << " GFLOP\n";
      }
    }
    g_op_start = Clock::now();
  }
  return nullptr;
}

void OnOpEnd(const at::RecordFunction& fn, at::ObserverContext*) {
  if (--g_depth == 0 && g_profile != nullptr) {
    g_profile->ms_by_op[fn.name()] +=
        std::chrono::duration<double, std::milli>(Clock::now() - g_op_start).count();
  }
}

// Runs `forward` once with the callbacks installed.
template <typename Fn>
Profile ProfileOnce(Fn forward) {
  Profile profile;
  g_profile = &profile;
  g_depth = 0;
  at::CallbackHandle handle =
      at::addThreadLocalCallback(at::RecordFunctionCallback(&OnOpStart, &OnOpEnd)
                                     .needsInputs(true)
                                     .scopes({at::RecordScope::FUNCTION}));
  forward();
  at::removeCallback(handle);
  g_profile = nullptr;
  return profile;
}

// The upsampling / depth-to-space tail's operators as the converters emit them (a repeat by
// expand + reshape, TF's depth_to_space by reshape + permute + reshape, or pixel_shuffle):
// the ESRGAN graphs have no other reshapes.
bool IsLayoutOp(const std::string& name) {
  for (const char* op :
       {"aten::reshape", "aten::permute", "aten::expand", "aten::unsqueeze", "aten::pixel_shuffle",
        "aten::upsample_nearest2d", "aten::contiguous", "aten::view", "aten::clone"}) {
    if (name == op) return true;
  }
  return false;
}

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Calls per wall second and per CPU second (the process's user + system time: on a machine
// shared with other work, wall time swings with their load, CPU time much less).
struct Rate {
  double per_wall_s = 0;
  double per_cpu_s = 0;
};

// Runs `fn` for at least `seconds` (and at least two calls).
template <typename Fn>
Rate Measure(Fn fn, double seconds) {
  const double cpu0 = ProcessCpuSeconds();
  const auto start = Clock::now();
  int calls = 0;
  double elapsed = 0;
  while (calls < 2 || elapsed < seconds) {
    fn();
    ++calls;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  }
  const double cpu = ProcessCpuSeconds() - cpu0;
  return {calls / elapsed, cpu > 0 ? calls / cpu : 0};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Entry {
  std::string label;  // model id, with " (before)" for --before
  fs::path path;
  torch::jit::Module module;
  Profile profile;
  std::vector<double> rates;       // forwards per wall second, per round
  std::vector<double> ratios;      // GFLOP/s against the plain conv measured just before
  std::vector<double> cpu_ratios;  // the same per CPU second
  std::vector<double> plain_gflops;
};

std::string Fmt(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ESRGAN conv throughput against a plain 3x3 convolution (docs/performance.md)"};
  std::string model_dir = "models";
  std::string models =
      "esrgan-slim-x2,esrgan-slim-x4,esrgan-medium-x2,esrgan-medium-x4,esrgan-thick-x2,"
      "esrgan-thick-x4";
  std::string before_dir;
  int size = 128;
  double seconds = 3;
  int rounds = 3;
  int threads = 2;
  int channels = 64;
  app.add_option("--model-dir", model_dir, "Where scripts/prepare-models put the models");
  app.add_option("--models", models,
                 "Model ids (<id>.pt in the model dir), comma-separated; "
                 "absent ones are skipped");
  app.add_option("--before", before_dir,
                 "Also run the same ids from this directory (e.g. an older converter's output)");
  app.add_option("--size", size, "Input height and width (the plain conv's too)");
  app.add_option("--seconds", seconds, "Measuring time per model and round (at least 2 calls)");
  app.add_option("--rounds", rounds, "Rounds; each measures the plain conv and every model");
  app.add_option("--threads", threads, "libtorch intra-op threads");
  app.add_option("--channels", channels, "The plain 3x3 conv's input and output channels");
  app.add_flag("--verbose", g_verbose, "Print each convolution's shapes and FLOPs (stderr)");
  bool channels_last = false;
  app.add_flag("--channels-last", channels_last,
               "Give the model and the plain conv channels-last (NHWC-strided) inputs; libtorch's "
               "operators keep that layout through the graph");
  CLI11_PARSE(app, argc, argv);
  if (size < 8 || size > 4096 || rounds < 1 || channels < 1 || channels > 4096) {
    std::cerr << "--size must be 8..4096, --rounds >= 1, --channels 1..4096\n";
    return 1;
  }
  if (auto st = switchyard::runner::ConfigureTorchThreads(threads, 1); !st.ok()) {
    std::cerr << st << "\n";
    return 1;
  }
  c10::InferenceMode inference;

  std::vector<Entry> entries;
  for (absl::string_view id : absl::StrSplit(models, ',', absl::SkipEmpty())) {
    std::vector<std::pair<std::string, fs::path>> files = {
        {std::string(id), fs::path(model_dir) / absl::StrCat(id, ".pt")}};
    if (!before_dir.empty()) {
      files.push_back(
          {absl::StrCat(id, " (before)"), fs::path(before_dir) / absl::StrCat(id, ".pt")});
    }
    for (auto& [label, path] : files) {
      if (!fs::exists(path)) {
        std::cerr << path << " missing: skipped\n";
        continue;
      }
      try {
        Entry e;
        e.label = label;
        e.path = path;
        e.module = torch::jit::load(path.string());
        e.module.eval();
        entries.push_back(std::move(e));
      } catch (const c10::Error& err) {
        std::cerr << path << ": " << err.what_without_backtrace() << "\n";
        return 1;
      }
    }
  }
  if (entries.empty()) {
    std::cerr << "no model found in " << model_dir << "\n";
    return 1;
  }

  const auto layout = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor input = (at::rand({1, 3, size, size}) * 255).contiguous(layout);
  const at::Tensor plain_in = at::rand({1, channels, size, size}).contiguous(layout);
  const at::Tensor plain_w = at::rand({channels, channels, 3, 3}) * 0.05;
  const at::Tensor plain_b = at::rand({channels});
  auto plain = [&] { return at::conv2d(plain_in, plain_w, plain_b, {1, 1}, {1, 1}); };
  const double plain_flops = 2.0 * channels * channels * 9 * static_cast<double>(size) * size;

  std::cout << "# ESRGAN conv throughput, input " << size << "x" << size << ", " << threads
            << " intra-op thread(s), plain conv " << channels << " -> " << channels << " 3x3, "
            << rounds << " round(s) of " << seconds << " s"
            << (channels_last ? ", channels-last inputs" : "") << "\n\n";
  // Warm-up (the profiling executor specialises the graph in its first runs), then one counted
  // and timed forward per model.
  for (Entry& e : entries) {
    for (int i = 0; i < 3; ++i) e.module.forward({input});
    if (g_verbose) std::cerr << e.label << ":\n";
    e.profile = ProfileOnce([&] { e.module.forward({input}); });
  }
  for (int i = 0; i < 3; ++i) plain();
  // The plain conv runs just before every model, so each ratio compares two measurements
  // seconds apart; models with a --before twin follow it directly.
  for (int r = 0; r < rounds; ++r) {
    for (Entry& e : entries) {
      const Rate base = Measure(plain, seconds);
      const Rate rate = Measure([&] { e.module.forward({input}); }, seconds);
      e.plain_gflops.push_back(base.per_wall_s * plain_flops / 1e9);
      e.rates.push_back(rate.per_wall_s);
      e.ratios.push_back(rate.per_wall_s * e.profile.conv_flops / (base.per_wall_s * plain_flops));
      e.cpu_ratios.push_back(rate.per_cpu_s * e.profile.conv_flops /
                             (base.per_cpu_s * plain_flops));
    }
    std::cerr << "round " << r + 1 << " of " << rounds << " done\n";
  }

  std::cout << "| model | convs | conv GFLOP/forward | forward ms | GFLOP/s | plain 3x3 GFLOP/s | "
               "ratio (median) | ratio per round | CPU-time ratio (median) | conv time | "
               "upsample/depth-to-space time | other |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Entry& e : entries) {
    double total = 0, conv = 0, layout = 0;
    for (const auto& [op, ms] : e.profile.ms_by_op) {
      total += ms;
      if (op == "aten::conv2d") conv += ms;
      if (IsLayoutOp(op)) layout += ms;
    }
    const double rate = Median(e.rates);
    std::vector<std::string> per_round;
    for (double v : e.ratios) per_round.push_back(Fmt(v, 3));
    std::cout << "| " << e.label << " | " << e.profile.convs << " | "
              << Fmt(e.profile.conv_flops / 1e9, 2) << " | " << Fmt(1000.0 / rate, 1) << " | "
              << Fmt(rate * e.profile.conv_flops / 1e9, 1) << " | "
              << Fmt(Median(e.plain_gflops), 1) << " | **" << Fmt(Median(e.ratios), 3) << "** | "
              << absl::StrJoin(per_round, ", ") << " | " << Fmt(Median(e.cpu_ratios), 3) << " | "
              << Fmt(100 * conv / total, 1) << "% | " << Fmt(100 * layout / total, 1) << "% | "
              << Fmt(100 * (total - conv - layout) / total, 1) << "% |\n";
  }
  // After / before: forward rates of the adjacent twins, round by round.
  bool header = false;
  for (size_t i = 0; i + 1 < entries.size(); ++i) {
    const Entry& after = entries[i];
    const Entry& before = entries[i + 1];
    if (before.label != after.label + " (before)") continue;
    if (!header) {
      std::cout
          << "\n| model | forward rate after / before (median) | per round |\n|---|---|---|\n";
      header = true;
    }
    std::vector<double> speedups;
    std::vector<std::string> per_round;
    for (size_t r = 0; r < after.rates.size(); ++r) {
      speedups.push_back(after.rates[r] / before.rates[r]);
      per_round.push_back(Fmt(speedups.back(), 3));
    }
    std::cout << "| " << after.label << " | **" << Fmt(Median(speedups), 3) << "** | "
              << absl::StrJoin(per_round, ", ") << " |\n";
  }
  std::cout << "\nTime shares: one forward with a RecordFunction callback on every top-level "
               "operator.\nLargest operators per model (ms in that forward):\n";
  for (const Entry& e : entries) {
    std::vector<std::pair<double, std::string>> ops;
    for (const auto& [op, ms] : e.profile.ms_by_op) ops.push_back({ms, op});
    std::sort(ops.rbegin(), ops.rend());
    std::vector<std::string> top;
    for (size_t i = 0; i < ops.size() && i < 6; ++i) {
      top.push_back(absl::StrCat(ops[i].second, " ", Fmt(ops[i].first, 1)));
    }
    std::cout << "- " << e.label << ": " << absl::StrJoin(top, ", ") << "\n";
  }
  return 0;
}
