// The cost of recording one completed job in the usage ledger: PostgreSQL (PostgresUsageLedger,
// on loopback, a server this bench starts as the tests do, fsync on) against the embedded SQLite
// ledger (synchronous=FULL), in the same run, at concurrency 1 and 64. Each Record call is timed
// from the caller's side (queueing, the batch's commit and its durability included); p50/p99 per
// job and rows per second are printed as a table (docs/performance.md).
//
//   build/bin/ledger_bench [--jobs 3000] [--dir /tmp]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "gateway/billing/postgres_usage_ledger.h"
#include "gateway/billing/usage_ledger.h"
#include "support/media_fixtures.h"
#include "support/postgres_server.h"

namespace switchyard {
namespace {

using gateway::UsageLedger;
using gateway::UsageRecord;
using Clock = std::chrono::steady_clock;

struct Figures {
  double p50_ms = 0, p99_ms = 0, rows_per_s = 0;
  int failed = 0;
};

// `jobs` Record calls from `concurrency` threads, each a new job id.
Figures Run(UsageLedger& ledger, const std::string& prefix, int jobs, int concurrency) {
  std::vector<std::vector<double>> ms(concurrency);
  std::atomic<int> next{0}, failed{0};
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&, t] {
      for (int i = next++; i < jobs; i = next++) {
        UsageRecord r;
        r.job_id = absl::StrCat(prefix, "-", i);
        r.api_key_id = absl::StrCat("key-", i % 16);
        r.pipeline = "upscale";
        r.model_id = "esrgan-slim-x2";
        r.orchestrator = "orch-1";
        r.unit = "pixel";
        r.units = r.reported_units = 384;
        r.price_per_unit = r.reported_price_per_unit = 0.000001;
        r.amount = 384 * 0.000001;
        r.completed = absl::Now();
        const auto t0 = Clock::now();
        auto st = ledger.Record(r);
        ms[t].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (!st.ok() || !*st) failed++;
      }
    });
  }
  for (auto& th : threads) th.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& v : ms) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  Figures f;
  f.p50_ms = all[all.size() / 2];
  f.p99_ms = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  f.rows_per_s = static_cast<double>(all.size()) / seconds;
  f.failed = failed.load();
  return f;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  using namespace switchyard;
  CLI::App app{"Usage ledger write cost: PostgreSQL (loopback) vs the embedded SQLite"};
  int jobs = 3000;
  app.add_option("--jobs", jobs, "Record calls per backend and concurrency")
      ->check(CLI::Range(100, 1000000));
  int writers = gateway::PostgresLedgerOptions().writers;
  app.add_option("--writers", writers, "PostgreSQL writer connections")->check(CLI::Range(1, 16));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  testing::TempDir dir;
  // fsync on: a commit is durable on both sides, as in production.
  testing::PostgresServerOptions pg_options;
  pg_options.fsync = true;
  auto pg = testing::PostgresServer::Start(dir.path() / "pg", pg_options);
  if (!pg.ok()) {
    std::fprintf(stderr, "ledger_bench: %s\n", pg.status().ToString().c_str());
    return 1;
  }
  auto sqlite = gateway::SqliteUsageLedger::Open(dir.path() / "usage.db");
  gateway::PostgresLedgerOptions options;
  options.dsn = (*pg)->dsn();
  options.journal = dir.path() / "journal.db";
  options.writers = writers;
  auto postgres = gateway::PostgresUsageLedger::Create(options);
  if (!sqlite.ok() || !postgres.ok()) {
    std::fprintf(stderr, "ledger_bench: %s %s\n", sqlite.status().ToString().c_str(),
                 postgres.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "%d Record calls per row; PostgreSQL 15 on 127.0.0.1 (fsync on), SQLite WAL "
      "synchronous=FULL, same disk\n\n",
      jobs);
  std::printf("| ledger | concurrency | p50 ms/job | p99 ms/job | jobs/s | failed |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (int concurrency : {1, 64}) {
    // Warm both (connections, pages), then measure them back to back.
    Run(**sqlite, absl::StrCat("warm-s", concurrency), 100, concurrency);
    Run(**postgres, absl::StrCat("warm-p", concurrency), 100, concurrency);
    for (auto [name, ledger] :
         {std::pair<const char*, gateway::UsageLedger*>{"SQLite (embedded)", sqlite->get()},
          {"PostgreSQL (loopback)", postgres->get()}}) {
      const Figures f = Run(*ledger, absl::StrCat("c", concurrency), jobs, concurrency);
      std::printf("| %s | %d | %.3f | %.3f | %.0f | %d |\n", name, concurrency, f.p50_ms, f.p99_ms,
                  f.rows_per_s, f.failed);
    }
  }
  std::printf("\nPostgreSQL statements (batches): %llu; journaled: %llu\n",
              static_cast<unsigned long long>((*postgres)->batches()),
              static_cast<unsigned long long>((*postgres)->journaled()));
  return 0;
}
