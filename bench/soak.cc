// A bounded soak (issue 7): a local cluster (one gateway, two orchestrators: the real daemon
// binaries from build/bin on 127.0.0.1, as the integration tests start them) under a steady mixed
// load (upscale with ESRGAN-slim x4, LLM streams with a tiny TorchScript LLM, transcode
// segments; tests/support/load_generator.h) for --minutes. Reports throughput, errors by status,
// latency, and every daemon's resident memory (VmRSS) after the warm-up and at the end. Exits 1
// when any job failed or any daemon's memory grew by 5% or more (--max-growth-percent).
//
//   build/bin/soak [--minutes 10] [--clients 3] [--warmup-seconds 60]   (or scripts/soak)
#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/str_format.h"
#include "support/cluster.h"
#include "support/load_generator.h"
#include "support/media_fixtures.h"

namespace sy = switchyard::testing;
using Clock = std::chrono::steady_clock;

namespace {

// VmRSS of a process in KiB (0 when it cannot be read).
int64_t RssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return 0;
}

struct Proc {
  std::string name;
  pid_t pid;
};

std::map<std::string, int64_t> Sample(const std::vector<Proc>& procs) {
  std::map<std::string, int64_t> out;
  for (const auto& p : procs) out[p.name] = RssKb(p.pid);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Switchyard soak: a local cluster under a steady mixed load"};
  double minutes = 10;
  int clients = 3;
  int warmup_seconds = 60;
  int report_seconds = 60;
  double max_growth = 5.0;
  app.add_option("--minutes", minutes, "How long the measured load runs (after the warm-up)")
      ->check(CLI::PositiveNumber);
  app.add_option("--clients", clients, "Client threads sending jobs one after another")
      ->check(CLI::Range(1, 64));
  app.add_option("--warmup-seconds", warmup_seconds,
                 "Load before the first memory sample (allocators and caches settle)")
      ->check(CLI::Range(0, 3600));
  app.add_option("--report-seconds", report_seconds, "Interval of the progress lines")
      ->check(CLI::Range(1, 3600));
  app.add_option("--max-growth-percent", max_growth,
                 "Fail when a daemon's memory grows by this much or more");
  CLI11_PARSE(app, argc, argv);

  if (!std::filesystem::exists(sy::ModelDir() / "esrgan-slim-x4.pt")) {
    std::cerr << "soak: no " << (sy::ModelDir() / "esrgan-slim-x4.pt")
              << "; run scripts/prepare-models (after scripts/build)\n";
    return 2;
  }
  sy::TempDir dir;
  const sy::LoadInputs inputs = sy::MakeLoadInputs(dir);
  if (inputs.png.empty() || inputs.segment.empty()) {
    std::cerr << "soak: could not generate the inputs with ffmpeg\n";
    return 2;
  }
  sy::ClusterOptions options;
  options.orchestrators = 2;
  options.models = {"esrgan-slim-x4"};
  options.extra_models = sy::SaveLoadModels(dir.path());
  options.model_queue_size = 8;
  options.transcode_capacity = 2;
  // Info, not the tests' debug: ten minutes of per-job debug lines are not what is measured.
  options.gateway_config = {{"log", {{"level", "info"}}}};
  options.orchestrator_config = {{"log", {{"level", "info"}}}};
  sy::LocalCluster cluster;
  if (auto st = cluster.Start(options); !st.ok()) {
    std::cerr << "soak: the cluster did not start: " << st << "\n";
    return 2;
  }
  std::vector<Proc> procs{{"gateway", cluster.gateway().pid()}};
  for (size_t i = 0; i < cluster.orchestrator_count(); ++i) {
    procs.push_back({cluster.orchestrator(i).name(), cluster.orchestrator(i).pid()});
  }

  sy::LoadOptions load;
  load.clients = clients;
  load.deadline = std::chrono::milliseconds(20000);
  load.pause = std::chrono::milliseconds(20);
  load.request_id_prefix = "soak";
  const auto warmup = std::chrono::seconds(warmup_seconds);
  const auto measured = std::chrono::milliseconds(static_cast<int64_t>(minutes * 60000));
  sy::LoadGenerator gen(cluster.gateway_address(), inputs, load);
  std::printf("soak: gateway %s, %zu orchestrators, %d clients, warm-up %d s, then %.1f min\n",
              cluster.gateway_address().c_str(), cluster.orchestrator_count(), clients,
              warmup_seconds, minutes);
  std::fflush(stdout);
  gen.Start(std::chrono::duration_cast<std::chrono::milliseconds>(warmup + measured));
  std::this_thread::sleep_for(warmup);
  const auto start = Clock::now();
  const auto rss_start = Sample(procs);
  const int warmup_jobs = gen.sent();

  // Progress, bounded by the measured time (and the daemons being alive).
  bool died = false;
  while (Clock::now() - start < measured && !died) {
    const auto left = measured - (Clock::now() - start);
    std::this_thread::sleep_for(
        std::min<Clock::duration>(left, std::chrono::seconds(report_seconds)));
    const auto now_rss = Sample(procs);
    const auto so_far = sy::Summarize(gen.outcomes_since(start));
    std::printf("  %6.0f s: %d jobs, %d failed;",
                std::chrono::duration<double>(Clock::now() - start).count(), so_far.sent,
                so_far.failed);
    for (const auto& [name, kb] : now_rss) {
      std::printf(" %s %.1f MiB", name.c_str(), kb / 1024.0);
      died = died || kb == 0;
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  // A daemon that died ends the run at once (its jobs would only fail from here on).
  if (died) {
    std::printf("soak: a daemon exited (VmRSS 0): stopping the load\n");
    gen.Stop();
    // What it said last (the temporary directory with its log is gone when the soak ends).
    for (const auto& [name, kb] : Sample(procs)) {
      if (kb != 0) continue;
      const std::string log = name == "gateway" ? cluster.gateway().Log() : [&] {
        for (size_t i = 0; i < cluster.orchestrator_count(); ++i) {
          if (cluster.orchestrator(i).name() == name) return cluster.orchestrator(i).Log();
        }
        return std::string();
      }();
      constexpr size_t kTail = 8000;
      std::printf("---- %s log (last %zu bytes) ----\n%s\n", name.c_str(), kTail,
                  log.substr(log.size() > kTail ? log.size() - kTail : 0).c_str());
    }
  }
  gen.Join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const auto rss_end = Sample(procs);
  const auto outcomes = gen.outcomes_since(start);
  const auto s = sy::Summarize(outcomes);

  std::map<std::string, int> by_kind;
  for (const auto& o : outcomes) by_kind[sy::JobKindName(o.kind)]++;
  std::printf("\nsoak: %.0f s measured (after %d warm-up jobs)\n", seconds, warmup_jobs);
  std::printf("jobs: %d sent, %d completed, %d failed, %d invalid results, %d retried\n", s.sent,
              s.completed, s.failed, s.invalid, s.retried);
  std::printf("throughput: %.2f jobs/s (", s.completed / seconds);
  for (const auto& [kind, n] : by_kind) std::printf(" %s %.2f/s", kind.c_str(), n / seconds);
  std::printf(" )\n");
  std::printf("latency: p50 %lld ms, p99 %lld ms, max %lld ms\n",
              static_cast<long long>(s.p50.count()), static_cast<long long>(s.p99.count()),
              static_cast<long long>(s.max_latency.count()));
  std::printf("errors by status: %s\n", s.FailedByStatus().c_str());
  int shown = 0;
  for (const auto& o : outcomes) {
    if ((o.code != grpc::StatusCode::OK || !o.valid) && shown++ < 10) {
      std::printf("  %s %s: %d %s%s\n", o.request_id.c_str(), sy::JobKindName(o.kind),
                  static_cast<int>(o.code), o.message.c_str(), o.invalid_why.c_str());
    }
  }
  bool grew = false;
  std::printf("memory (VmRSS):\n");
  for (const auto& [name, before] : rss_start) {
    const int64_t after = rss_end.at(name);
    const double growth = before > 0 ? 100.0 * static_cast<double>(after - before) / before : 0;
    const bool bad = after == 0 || growth >= max_growth;
    grew = grew || bad;
    std::printf("  %-10s start %8.1f MiB  end %8.1f MiB  growth %+6.2f%%%s\n", name.c_str(),
                before / 1024.0, after / 1024.0, growth,
                after == 0 ? "  (exited)" : (bad ? "  (over the limit)" : ""));
  }
  // Errors count over the whole run, warm-up included.
  const auto all = sy::Summarize(gen.outcomes());
  const int error_count = all.failed + all.invalid;
  if (all.failed != s.failed || all.invalid != s.invalid) {
    std::printf("warm-up errors: %d failed (%s), %d invalid\n", all.failed - s.failed,
                all.FailedByStatus().c_str(), all.invalid - s.invalid);
  }
  const bool errors = error_count > 0 || s.sent == 0;
  std::printf("result: %s (errors %d, target 0; memory growth target < %.1f%%)\n",
              errors || grew ? "FAIL" : "PASS", error_count, max_growth);
  return errors || grew ? 1 : 0;
}
