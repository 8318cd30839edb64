// Shared state's cost per job (issue 22): the same small no-op job (an 8x8 PNG through an
// identity "upscale" model) sent with an API key through one gateway whose state is
//   embedded: the key's quotas in memory and the usage ledger in SQLite (one gateway's
//             defaults: nothing but its binary),
//   shared:   the quotas in Redis and the ledger in PostgreSQL (several gateways acting as one;
//             both servers started here on loopback from Debian's packages),
// plus "bare" (no keys, no ledger) for reference, at concurrency 1 and 64, cells alternating
// over rounds in one run. Reports jobs/s, p50/p99 per job, what the shared state adds per job
// over the embedded one, and throughput at 64 relative to the embedded setup. Targets: under
// 0.5 ms p50 added per job; throughput at concurrency 64 at least 0.9x.
//
//   build/bin/shared_state_bench [--seconds 3] [--rounds 3] [--pin-servers]
//
// --pin-servers (a labelled variant, not the baseline): Redis and PostgreSQL on CPU 1 and
// everything else on CPU 0, so the servers' own CPU is not taken from the gateway, as when they
// run on machines of their own.
#include <sched.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "bench_stats.h"
#include "common/media/image_codec.h"
#include "gateway/billing/api_keys.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_server.h"
#include "orchestrator/orchestrator_server.h"
#include "runner/torch_model.h"
#include "support/postgres_server.h"
#include "support/redis_server.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace sy = switchyard;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr const char* kModel = "noop";
constexpr const char* kApiKey = "sk-bench-shared-state";

double Median(std::vector<double> v) { return sy::bench::Percentile(std::move(v), 0.5); }

// CPU seconds so far: this process's (gateways, orchestrator, load generator: all in it) and
// the whole machine's busy time (/proc/stat), whose difference over a cell is the other
// processes': on an otherwise quiet host, Redis's and PostgreSQL's servers.
struct CpuSample {
  double self_s = 0;
  double machine_s = 0;
};
CpuSample SampleCpu() {
  CpuSample sample;
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    sample.self_s = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                    (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  }
  std::ifstream stat("/proc/stat");
  std::string cpu;
  // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
  unsigned long long f[8] = {};
  if (stat >> cpu && cpu == "cpu" &&
      (stat >> f[0] >> f[1] >> f[2] >> f[3] >> f[4] >> f[5] >> f[6] >> f[7])) {
    const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    sample.machine_s = static_cast<double>(f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / hz;
  }
  return sample;
}

// CPU milliseconds per job in one cell.
struct CpuPerJob {
  double self_ms = 0;
  double others_ms = 0;
};

std::shared_ptr<grpc::Channel> Channel(int port) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

// A gateway from a JSON config (the operators' format, so the bench runs what they run).
absl::StatusOr<std::unique_ptr<sy::gateway::GatewayServer>> StartGateway(const Json& config,
                                                                         const fs::path& file) {
  std::ofstream(file) << config.dump(2);
  auto parsed = sy::gateway::ParseGatewayConfig(config.dump(), file);
  if (!parsed.ok()) return parsed.status();
  return sy::gateway::GatewayServer::Create(*std::move(parsed));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Switchyard: shared state's cost per job (Redis quotas, PostgreSQL ledger)"};
  double seconds = 3;
  int rounds = 3;
  app.add_option("--seconds", seconds, "Measuring time per cell")->check(CLI::Range(0.5, 600.0));
  app.add_option("--rounds", rounds, "Rounds; each runs every setup once per concurrency")
      ->check(CLI::Range(1, 50));
  bool pin_servers = false;
  app.add_flag("--pin-servers", pin_servers,
               "Labelled variant: Redis and PostgreSQL on CPU 1, everything else (gateways, "
               "orchestrator, load) on CPU 0, as if the servers ran on machines of their own");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);  // per-job log lines would dominate a no-op job

  // sched_setaffinity(0) sets the calling thread's CPUs, which the processes and threads it
  // starts inherit: the servers are started while this (then only) thread is on CPU 1.
  auto pin_to = [](int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0;
  };
  if (pin_servers && (std::thread::hardware_concurrency() < 2 || !pin_to(1))) {
    std::cerr << "--pin-servers needs two CPUs this process may use\n";
    return 1;
  }
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("shared_state_bench.", getpid());
  fs::create_directories(dir / "redis");
  auto redis = sy::testing::RedisServer::Start(dir / "redis");
  if (!redis.ok()) {
    std::cerr << "redis-server: " << redis.status() << "\n";
    return 1;
  }
  sy::testing::PostgresServerOptions pg_options;
  pg_options.fsync = true;  // as an operator runs it
  auto postgres = sy::testing::PostgresServer::Start(dir / "postgres", pg_options);
  if (!postgres.ok()) {
    std::cerr << "PostgreSQL: " << postgres.status() << "\n";
    return 1;
  }
  if (pin_servers && !pin_to(0)) {
    std::cerr << "--pin-servers: cannot move to CPU 0\n";
    return 1;
  }
  {
    torch::jit::Module m("noop");
    m.define("def forward(self, x):\n    return x\n");
    m.save((dir / "noop.pt").string());
  }
  // One key with quotas far above what the bench sends: every call is checked and admitted.
  const Json keys = {{"keys",
                      {{{"id", "bench"},
                        {"sha256", sy::gateway::Sha256Hex(kApiKey)},
                        {"rate_per_second", 1000000},
                        {"burst", 1000000},
                        {"max_concurrent", 10000}}}}};
  std::ofstream(dir / "keys.json") << keys.dump();

  const Json base = {{"listen", "127.0.0.1:0"},
                     {"http_listen", ""},
                     {"admin_listen", ""},
                     {"log", {{"level", "warn"}}}};
  Json embedded = base;
  embedded["gateway_id"] = "embedded";
  embedded["api_keys_file"] = "keys.json";
  embedded["usage_ledger"] = "embedded-ledger.db";
  Json shared = base;
  shared["gateway_id"] = "shared";
  shared["api_keys_file"] = "keys.json";
  shared["usage_ledger"] = {
      {"backend", "postgres"}, {"dsn", (*postgres)->dsn()}, {"journal", "shared-journal.db"}};
  shared["state"] = {{"redis", {{"address", (*redis)->address()}}}, {"on_unavailable", "deny"}};
  // The shared setup with the ledger's default commit ("postgres": a job's row is committed in
  // PostgreSQL before its client is answered) and with "commit": "local" (committed in the
  // gateway's SQLite journal first, as the embedded ledger, and copied into PostgreSQL right
  // after); and each shared part alone, to tell their costs apart.
  Json shared_local = shared;
  shared_local["gateway_id"] = "shared-local";
  shared_local["usage_ledger"]["commit"] = "local";
  shared_local["usage_ledger"]["journal"] = "shared-local-journal.db";
  Json redis_quotas = embedded;
  redis_quotas["gateway_id"] = "redis-quotas";
  redis_quotas["usage_ledger"] = "redis-quotas-ledger.db";
  redis_quotas["state"] = shared["state"];
  Json pg_ledger = shared;
  pg_ledger["gateway_id"] = "pg-ledger";
  pg_ledger["usage_ledger"]["journal"] = "pg-ledger-journal.db";
  pg_ledger.erase("state");
  Json bare = base;
  bare["gateway_id"] = "bare";

  const std::vector<std::pair<std::string, Json>> setups = {
      {"bare", bare},           {"embedded", embedded}, {"redis-quotas", redis_quotas},
      {"pg-ledger", pg_ledger}, {"shared", shared},     {"shared-local", shared_local}};
  std::map<std::string, std::unique_ptr<sy::gateway::GatewayServer>> gateways;
  std::vector<std::string> addresses;
  for (const auto& [name, config] : setups) {
    auto gw = StartGateway(config, dir / (name + ".json"));
    if (!gw.ok()) {
      std::cerr << name << " gateway: " << gw.status() << "\n";
      return 1;
    }
    addresses.push_back(absl::StrCat("127.0.0.1:", (*gw)->port()));
    gateways[name] = *std::move(gw);
  }

  // One orchestrator registered with the three gateways (only one is measured at a time).
  sy::orchestrator::OrchestratorConfig cfg;
  cfg.node_id = "bench";
  cfg.listen = "127.0.0.1:0";
  cfg.http_listen = "";
  cfg.gateways = addresses;
  sy::orchestrator::ModelConfig model;
  model.id = kModel;
  model.pipeline = "upscale";
  model.path = dir / "noop.pt";
  model.warm = true;
  model.device = "cpu";
  model.instances = 2;
  model.queue_size = 256;
  cfg.models.push_back(model);
  cfg.transcode.enabled = false;
  cfg.intra_op_threads = 1;
  cfg.inter_op_threads = 1;
  auto orch = sy::orchestrator::OrchestratorServer::Create(cfg);
  if (!orch.ok()) {
    std::cerr << orch.status() << "\n";
    return 1;
  }
  (*orch)->Start();

  sy::media::RgbImage img{8, 8, std::vector<uint8_t>(8 * 8 * 3, 128)};
  const std::string png = *sy::media::EncodePng(img);
  std::map<std::string, std::unique_ptr<sy::v1::Gateway::Stub>> stubs;
  for (const auto& [name, gw] : gateways)
    stubs[name] = sy::v1::Gateway::NewStub(Channel(gw->port()));
  auto upscale = [&](const std::string& name) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (name != "bare") ctx.AddMetadata("authorization", absl::StrCat("Bearer ", kApiKey));
    sy::v1::UpscaleRequest req;
    req.set_model_id(kModel);
    req.set_image(png);
    sy::v1::ImageResponse resp;
    return stubs[name]->Upscale(&ctx, req, &resp).ok();
  };
  for (const auto& [name, config] : setups) {
    bool ready = false;
    for (int i = 0; i < 200 && !ready; ++i) {  // bounded: 10 s
      ready = upscale(name);
      if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!ready) {
      std::cerr << "the " << name << " gateway does not route jobs\n";
      return 1;
    }
  }

  // cell -> per-round results.
  std::map<std::pair<std::string, int>, std::vector<sy::bench::LoadResult>> cells;
  std::map<std::pair<std::string, int>, std::vector<CpuPerJob>> cpu;
  for (int round = 0; round < rounds; ++round) {
    for (int concurrency : {1, 64}) {
      for (const auto& [name, config] : setups) {
        const CpuSample before = SampleCpu();
        const auto result = sy::bench::MeasureClosedLoop(concurrency, seconds, 20,
                                                         [&, n = name] { return upscale(n); });
        const CpuSample after = SampleCpu();
        // Jobs in the cell (the 20 warm-up calls too: their CPU is in the samples).
        const double jobs = result.jobs_per_s * seconds + 20;
        const double self_s = after.self_s - before.self_s;
        const double machine_s = after.machine_s - before.machine_s;
        cpu[{name, concurrency}].push_back(
            CpuPerJob{1000 * self_s / jobs, std::max(0.0, 1000 * (machine_s - self_s) / jobs)});
        cells[{name, concurrency}].push_back(result);
      }
    }
  }

  std::printf(
      "## Shared state's cost per job: 8x8 PNG through an identity model, one gateway, %.1f s "
      "per cell, %d rounds (medians of the rounds)%s\n\n"
      "| concurrency | state | jobs/s | vs embedded | p50 ms | p99 ms | added p50 ms | added p99 "
      "ms | CPU ms/job, bench process | CPU ms/job, other processes |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n",
      seconds, rounds,
      pin_servers ? "; pinned: Redis and PostgreSQL on CPU 1, the rest on CPU 0" : "");
  std::map<std::pair<std::string, int>, sy::bench::LoadResult> med;
  for (auto& [cell, results] : cells) {
    std::vector<double> tput, p50, p99;
    int failures = 0;
    for (const sy::bench::LoadResult& r : results) {
      tput.push_back(r.jobs_per_s);
      p50.push_back(r.p50);
      p99.push_back(r.p99);
      failures += r.failures;
    }
    med[cell] = sy::bench::LoadResult{Median(tput), Median(p50), Median(p99), failures};
  }
  for (int concurrency : {1, 64}) {
    const sy::bench::LoadResult& e = med[{"embedded", concurrency}];
    for (const auto& [name, config] : setups) {
      const sy::bench::LoadResult& r = med[{name, concurrency}];
      std::vector<double> self_ms, others_ms;
      for (const CpuPerJob& c : cpu[{name, concurrency}]) {
        self_ms.push_back(c.self_ms);
        others_ms.push_back(c.others_ms);
      }
      std::printf("| %d | %s | %.0f | %.3f | %.3f | %.3f | %+.3f | %+.3f | %.3f | %.3f |%s\n",
                  concurrency, name.c_str(), r.jobs_per_s, r.jobs_per_s / e.jobs_per_s, r.p50,
                  r.p99, r.p50 - e.p50, r.p99 - e.p99, Median(self_ms), Median(others_ms),
                  r.failures ? absl::StrCat(" (", r.failures, " failures!)").c_str() : "");
    }
  }
  std::printf(
      "\nredis-quotas: quotas in Redis, ledger in SQLite; pg-ledger: quotas in memory, "
      "ledger in PostgreSQL (commit \"postgres\"); shared: both; shared-local: both, "
      "the ledger with \"commit\": \"local\". CPU per job: the bench process's (gateways, "
      "orchestrator and load generator are all in it) and every other process's on the host "
      "(/proc/stat; on a quiet host Redis's and PostgreSQL's servers), medians of the rounds.\n");
  for (const char* name : {"shared", "shared-local"}) {
    const double added_p50 = med[{name, 1}].p50 - med[{"embedded", 1}].p50;
    const double ratio_64 = med[{name, 64}].jobs_per_s / med[{"embedded", 64}].jobs_per_s;
    std::printf(
        "Targets, %s: p50 added per job at concurrency 1 %.3f ms (target < 0.5): %s; "
        "throughput at concurrency 64 %.3fx the embedded setup (target >= 0.9): %s\n",
        name, added_p50, added_p50 < 0.5 ? "met" : "NOT met", ratio_64,
        ratio_64 >= 0.9 ? "met" : "NOT met");
  }

  (*orch)->Shutdown(std::chrono::milliseconds(1000));
  for (auto& [name, gw] : gateways) gw->Shutdown(std::chrono::milliseconds(1000));
  gateways.clear();
  postgres->reset();
  redis->reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
