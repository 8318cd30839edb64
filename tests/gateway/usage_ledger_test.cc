#include "gateway/billing/usage_ledger.h"

#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gateway/api/inference_proxy.h"
#include "gateway/routing/route_index.h"
#include "gateway/routing/router.h"
#include "support/media_fixtures.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;

UsageRecord Row(const std::string& job_id, const std::string& key, const std::string& pipeline,
                int64_t units, double price, absl::Time when) {
  UsageRecord r;
  r.job_id = job_id;
  r.api_key_id = key;
  r.pipeline = pipeline;
  r.model_id = "m1";
  r.orchestrator = "orch-a";
  r.unit = "pixel";
  r.units = units;
  r.reported_units = units;
  r.price_per_unit = price;
  r.amount = static_cast<double>(units) * price;
  r.completed = when;
  return r;
}

TEST(UsageLedgerTest, RecordsOnceAndTotalsPerKeyPipelineAndModel) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "state" / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  auto written = (*ledger)->Record(Row("job-1", "alice", "upscale", 100, 0.5, t0));
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_TRUE(*written);
  // The same job again (a retried write) is not counted twice.
  written = (*ledger)->Record(Row("job-1", "alice", "upscale", 100, 0.5, t0));
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_FALSE(*written);
  ASSERT_TRUE((*ledger)->Record(Row("job-2", "alice", "upscale", 300, 0.5, t0)).ok());
  UsageRecord disputed = Row("job-3", "alice", "upscale", 50, 0.5, t0);
  disputed.reported_units = 5000;
  disputed.amount = 0;
  disputed.disputed = true;
  ASSERT_TRUE((*ledger)->Record(disputed).ok());
  ASSERT_TRUE((*ledger)->Record(Row("job-4", "bob", "llm", 7, 2, t0)).ok());

  UsageQuery alice;
  alice.api_key_id = "alice";
  auto totals = (*ledger)->Totals(alice);
  ASSERT_TRUE(totals.ok()) << totals.status();
  ASSERT_EQ(totals->size(), 1u);
  const UsageTotals& t = (*totals)[0];
  EXPECT_EQ(t.api_key_id, "alice");
  EXPECT_EQ(t.pipeline, "upscale");
  EXPECT_EQ(t.model_id, "m1");
  EXPECT_EQ(t.unit, "pixel");
  EXPECT_EQ(t.jobs, 3);
  EXPECT_EQ(t.units, 450);
  EXPECT_DOUBLE_EQ(t.amount, 200.0);  // the disputed job is not paid
  EXPECT_EQ(t.disputed_jobs, 1);

  UsageQuery all;
  all.all_keys = true;
  totals = (*ledger)->Totals(all);
  ASSERT_TRUE(totals.ok()) << totals.status();
  ASSERT_EQ(totals->size(), 2u);
  EXPECT_EQ((*totals)[1].api_key_id, "bob");
  EXPECT_EQ((*totals)[1].units, 7);
  EXPECT_DOUBLE_EQ((*totals)[1].amount, 14.0);

  auto rows = (*ledger)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[2].job_id, "job-3");
  EXPECT_TRUE((*rows)[2].disputed);
  EXPECT_EQ((*rows)[2].reported_units, 5000);
  EXPECT_EQ((*rows)[2].completed, t0);
}

TEST(UsageLedgerTest, TimeRangeSelectsJobsCompletedInIt) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE((*ledger)
                    ->Record(Row(absl::StrCat("j", i), "k", "upscale", 1, 1, t0 + absl::Seconds(i)))
                    .ok());
  }
  UsageQuery q;
  q.api_key_id = "k";
  q.since = t0 + absl::Seconds(3);
  q.until = t0 + absl::Seconds(7);
  auto totals = (*ledger)->Totals(q);
  ASSERT_TRUE(totals.ok()) << totals.status();
  ASSERT_EQ(totals->size(), 1u);
  EXPECT_EQ((*totals)[0].jobs, 4);  // 3, 4, 5, 6: since is inclusive, until exclusive
  q.api_key_id = "someone-else";
  totals = (*ledger)->Totals(q);
  ASSERT_TRUE(totals.ok()) << totals.status();
  EXPECT_TRUE(totals->empty());
}

TEST(UsageLedgerTest, UsesWalWithFullSyncAndSurvivesReopen) {
  TempDir dir;
  const auto path = dir.path() / "usage.db";
  {
    auto ledger = SqliteUsageLedger::Open(path);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ASSERT_TRUE((*ledger)->Record(Row("a", "k", "upscale", 5, 1, absl::Now())).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);

  auto again = SqliteUsageLedger::Open(path);
  ASSERT_TRUE(again.ok()) << again.status();
  UsageQuery all;
  all.all_keys = true;
  auto rows = (*again)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].units, 5);
}

TEST(UsageLedgerTest, RowsRecordedBeforeAKill9AreAllThere) {
  TempDir dir;
  const auto path = dir.path() / "usage.db";
  constexpr int kRows = 40;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The writer: records every row, says so, then waits to be killed mid-flight (no close).
    auto ledger = SqliteUsageLedger::Open(path);
    if (!ledger.ok()) _exit(2);
    for (int i = 0; i < kRows; ++i) {
      auto ok = (*ledger)->Record(Row(absl::StrCat("job-", i), "k", "upscale", i, 1, absl::Now()));
      if (!ok.ok() || !*ok) _exit(3);
    }
    const char byte = 'x';
    if (write(ready[1], &byte, 1) != 1) _exit(4);
    for (int i = 0; i < 600; ++i) sleep(1);  // bounded: the parent kills it long before
    _exit(5);
  }
  close(ready[1]);
  char byte = 0;
  const ssize_t n = read(ready[0], &byte, 1);
  close(ready[0]);
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_EQ(n, 1) << "the writer failed, exit status " << WEXITSTATUS(status);
  ASSERT_TRUE(WIFSIGNALED(status));

  auto ledger = SqliteUsageLedger::Open(path);
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  UsageQuery all;
  all.all_keys = true;
  auto totals = (*ledger)->Totals(all);
  ASSERT_TRUE(totals.ok()) << totals.status();
  ASSERT_EQ(totals->size(), 1u);
  EXPECT_EQ((*totals)[0].jobs, kRows);
  EXPECT_EQ((*totals)[0].units, kRows * (kRows - 1) / 2);
}

TEST(UsageLedgerTest, OpenFailsWithAClearError) {
  TempDir dir;
  const auto path = dir.path() / "not-a-db";
  testing::WriteFile(path, std::string(4096, 'z'));
  auto ledger = SqliteUsageLedger::Open(path);
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(ledger.status().message(), HasSubstr(path.string()));
}

TEST(JobBillingTest, PaysMatchingUnitsAndDisputesTheRest) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  Metrics metrics("gateway");
  JobBilling billing(ledger->get(), &metrics);

  JobBilling::Job job;
  job.job_id = "ok-1";
  job.request_id = "ok-1";
  job.api_key_id = "k";
  job.pipeline = "upscale";
  job.model_id = "m";
  job.orchestrator = "honest";
  job.reported_units = 1000;
  job.reported_price_per_unit = 0.25;
  job.advertised_price_per_unit = 0.25;
  job.counted = 1000;
  EXPECT_TRUE(billing.Settle(job));

  job.job_id = "bad-1";
  job.orchestrator = "greedy";
  job.reported_units = 2000;
  EXPECT_FALSE(billing.Settle(job));
  job.job_id = "bad-2";
  job.reported_units = 1000;
  job.counted = absl::InvalidArgumentError("images[0]: corrupt");
  EXPECT_FALSE(billing.Settle(job));

  UsageQuery all;
  all.all_keys = true;
  auto rows = (*ledger)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  for (const auto& r : *rows) {
    if (r.job_id == "ok-1") {
      EXPECT_FALSE(r.disputed);
      EXPECT_DOUBLE_EQ(r.amount, 250.0);
      EXPECT_EQ(r.unit, "pixel");
    } else {
      EXPECT_TRUE(r.disputed) << r.job_id;
      EXPECT_DOUBLE_EQ(r.amount, 0.0) << r.job_id;
      EXPECT_EQ(r.dispute, "units") << r.job_id;
    }
  }
  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("switchyard_gateway_billing_mismatches_total{orchestrator=\"greedy\","
                              "pipeline=\"upscale\"} 2"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("orchestrator=\"honest\"")));
}

TEST(JobBillingTest, ChecksWithoutALedger) {
  JobBilling billing(nullptr, nullptr);
  JobBilling::Job job;
  job.job_id = "x";
  job.pipeline = "llm";
  job.reported_units = 10;
  job.advertised_price_per_unit = 0;
  job.counted = 10;
  EXPECT_TRUE(billing.Settle(job));
  job.counted = 9;
  EXPECT_FALSE(billing.Settle(job));
}

// A VFS over the default one that counts fsyncs (xSync) of every file SQLite opens through it and
// makes each take `delay`, as a disk would. Installed as the default VFS for its lifetime, so the
// ledger uses it without knowing (this measures fsyncs, whatever the ledger's implementation).
class CountingVfs {
 public:
  explicit CountingVfs(std::chrono::microseconds delay) {
    root_ = sqlite3_vfs_find(nullptr);
    instance_ = this;
    delay_ = delay;
    vfs_ = *root_;
    vfs_.zName = "counting";
    vfs_.szOsFile = static_cast<int>(sizeof(File)) + root_->szOsFile;
    vfs_.xOpen = &Open;
    vfs_.pNext = nullptr;
    methods_.iVersion = 3;  // the unix VFS's files are version 3 (WAL's shm, mmap fetch)
    IoMethods(&methods_);
    sqlite3_vfs_register(&vfs_, 1);
  }
  ~CountingVfs() {
    sqlite3_vfs_unregister(&vfs_);
    sqlite3_vfs_register(root_, 1);
    instance_ = nullptr;
  }
  int64_t syncs() const { return syncs_.load(); }

 private:
  // Our file: the methods pointer SQLite sees, then the real file's storage.
  struct File {
    sqlite3_file base;
    sqlite3_file* real;
  };
  static sqlite3_file* Real(sqlite3_file* f) { return reinterpret_cast<File*>(f)->real; }

  static int Open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out) {
    auto* f = reinterpret_cast<File*>(file);
    f->real = reinterpret_cast<sqlite3_file*>(f + 1);
    f->base.pMethods = nullptr;
    const int rc = instance_->root_->xOpen(instance_->root_, name, f->real, flags, out);
    if (f->real->pMethods != nullptr) f->base.pMethods = &instance_->methods_;
    return rc;
  }

  // Forwards every method to the real file; xSync is counted and delayed, xClose unwraps.
  static void IoMethods(sqlite3_io_methods* m) {
    m->xClose = [](sqlite3_file* f) {
      sqlite3_file* real = Real(f);
      return real->pMethods != nullptr ? real->pMethods->xClose(real) : SQLITE_OK;
    };
    m->xRead = [](sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
      return Real(f)->pMethods->xRead(Real(f), buf, n, off);
    };
    m->xWrite = [](sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
      return Real(f)->pMethods->xWrite(Real(f), buf, n, off);
    };
    m->xTruncate = [](sqlite3_file* f, sqlite3_int64 size) {
      return Real(f)->pMethods->xTruncate(Real(f), size);
    };
    m->xSync = [](sqlite3_file* f, int flags) {
      instance_->syncs_.fetch_add(1);
      std::this_thread::sleep_for(instance_->delay_);
      return Real(f)->pMethods->xSync(Real(f), flags);
    };
    m->xFileSize = [](sqlite3_file* f, sqlite3_int64* size) {
      return Real(f)->pMethods->xFileSize(Real(f), size);
    };
    m->xLock = [](sqlite3_file* f, int l) { return Real(f)->pMethods->xLock(Real(f), l); };
    m->xUnlock = [](sqlite3_file* f, int l) { return Real(f)->pMethods->xUnlock(Real(f), l); };
    m->xCheckReservedLock = [](sqlite3_file* f, int* out) {
      return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
    };
    m->xFileControl = [](sqlite3_file* f, int op, void* arg) {
      return Real(f)->pMethods->xFileControl(Real(f), op, arg);
    };
    m->xSectorSize = [](sqlite3_file* f) { return Real(f)->pMethods->xSectorSize(Real(f)); };
    m->xDeviceCharacteristics = [](sqlite3_file* f) {
      return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
    };
    m->xShmMap = [](sqlite3_file* f, int pg, int sz, int extend, void volatile** p) {
      return Real(f)->pMethods->xShmMap(Real(f), pg, sz, extend, p);
    };
    m->xShmLock = [](sqlite3_file* f, int off, int n, int flags) {
      return Real(f)->pMethods->xShmLock(Real(f), off, n, flags);
    };
    m->xShmBarrier = [](sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); };
    m->xShmUnmap = [](sqlite3_file* f, int del) {
      return Real(f)->pMethods->xShmUnmap(Real(f), del);
    };
    m->xFetch = [](sqlite3_file* f, sqlite3_int64 off, int n, void** p) {
      return Real(f)->pMethods->xFetch(Real(f), off, n, p);
    };
    m->xUnfetch = [](sqlite3_file* f, sqlite3_int64 off, void* p) {
      return Real(f)->pMethods->xUnfetch(Real(f), off, p);
    };
  }

  static inline CountingVfs* instance_ = nullptr;
  sqlite3_vfs* root_ = nullptr;
  sqlite3_vfs vfs_{};
  sqlite3_io_methods methods_{};
  std::chrono::microseconds delay_{0};
  std::atomic<int64_t> syncs_{0};
};

// Issue 18: Record used to insert and fsync under one mutex, one transaction per row, on the
// caller's thread, so N concurrent jobs paid N fsyncs one after another. With group commit the
// rows that queue while one batch commits share the next fsync.
TEST(UsageLedgerTest, ConcurrentWritersShareFsyncsAndEveryRowSurvivesReopen) {
  TempDir dir;
  const auto path = dir.path() / "usage.db";
  constexpr int kThreads = 16;
  constexpr int kRowsPerThread = 40;
  constexpr int kRows = kThreads * kRowsPerThread;
  int64_t syncs = 0;
  {
    // 5 ms per fsync, like a disk: without sharing, 640 rows take 640 fsyncs (3.2 s). Long
    // enough that writers woken by one commit queue again before the next batch is taken.
    CountingVfs vfs(std::chrono::milliseconds(5));
    auto ledger = SqliteUsageLedger::Open(path);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    const int64_t before = vfs.syncs();
    std::atomic<int> written{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kRowsPerThread; ++i) {
          auto ok = (*ledger)->Record(
              Row(absl::StrCat("job-", t, "-", i), "k", "upscale", 1, 0.5, absl::Now()));
          if (ok.ok() && *ok) written.fetch_add(1);
        }
      });
    }
    for (auto& th : threads) th.join();
    syncs = vfs.syncs() - before;
    EXPECT_EQ(written.load(), kRows);
    ledger->reset();  // closes (the close's checkpoint may fsync too; not counted above)
  }
  // The old ledger: one commit, so at least one fsync, per row.
  EXPECT_LT(syncs, kRows / 4) << syncs << " fsyncs for " << kRows << " rows";
  std::printf("%d rows from %d threads: %lld fsyncs\n", kRows, kThreads,
              static_cast<long long>(syncs));

  auto again = SqliteUsageLedger::Open(path);
  ASSERT_TRUE(again.ok()) << again.status();
  UsageQuery all;
  all.all_keys = true;
  auto rows = (*again)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::set<std::string> ids;
  for (const auto& r : *rows) ids.insert(r.job_id);
  EXPECT_EQ(ids.size(), static_cast<size_t>(kRows));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kRowsPerThread; ++i) {
      EXPECT_EQ(ids.count(absl::StrCat("job-", t, "-", i)), 1u) << t << "-" << i;
    }
  }
}

// A crash while many writers are mid-flight: every row whose Record had returned (and which the
// writer reported, as the gateway would answer its client) is in the ledger afterwards, once.
TEST(UsageLedgerTest, EveryReportedRowOfConcurrentWritersSurvivesAKill9) {
  TempDir dir;
  const auto path = dir.path() / "usage.db";
  constexpr int kThreads = 8;
  constexpr size_t kReportedBeforeKill = 300;
  int reported[2];
  ASSERT_EQ(pipe(reported), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(reported[0]);
    auto ledger = SqliteUsageLedger::Open(path);
    if (!ledger.ok()) _exit(2);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 100000; ++i) {  // bounded: the parent kills it long before
          const std::string id = absl::StrCat("job-", t, "-", i);
          auto ok = (*ledger)->Record(Row(id, "k", "upscale", 1, 1, absl::Now()));
          if (!ok.ok() || !*ok) _exit(3);
          // One short line per write: atomic on a pipe.
          const std::string line = id + "\n";
          if (write(reported[1], line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            _exit(4);
          }
        }
      });
    }
    for (int i = 0; i < 600; ++i) sleep(1);
    _exit(5);
  }
  close(reported[1]);
  std::string text;
  std::set<std::string> ids;
  char buf[4096];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool killed = false;
  while (true) {
    if (!killed && std::chrono::steady_clock::now() > deadline) {
      kill(child, SIGKILL);
      killed = true;
    }
    pollfd pfd{reported[0], POLLIN, 0};
    if (poll(&pfd, 1, 1000) == 0) continue;  // bounded by the deadline above
    const ssize_t n = read(reported[0], buf, sizeof(buf));
    if (n <= 0) break;  // the writer is gone (killed, or failed) and everything it wrote is read
    text.append(buf, static_cast<size_t>(n));
    if (!killed &&
        static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) >= kReportedBeforeKill) {
      kill(child, SIGKILL);  // mid-flight: other rows are queued or committing
      killed = true;
    }
  }
  close(reported[0]);
  if (!killed) kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the writer failed, exit status " << WEXITSTATUS(status);
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ids.insert(std::string(line));
  }
  ASSERT_GE(ids.size(), kReportedBeforeKill);

  auto ledger = SqliteUsageLedger::Open(path);
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  UsageQuery all;
  all.all_keys = true;
  auto rows = (*ledger)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::set<std::string> stored;
  for (const auto& r : *rows) stored.insert(r.job_id);
  EXPECT_EQ(stored.size(), rows->size());  // no job twice
  size_t missing = 0;
  for (const auto& id : ids) missing += stored.count(id) == 0;
  EXPECT_EQ(missing, 0u) << "of " << ids.size() << " reported rows";
}

TEST(UsageLedgerTest, MigratesAVersion1Ledger) {
  TempDir dir;
  const auto path = dir.path() / "usage.db";
  {
    // The version 1 schema and two rows as the gateway wrote them then (the reported price).
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, R"sql(
      PRAGMA journal_mode=WAL;
      CREATE TABLE usage (job_id TEXT PRIMARY KEY NOT NULL, api_key_id TEXT NOT NULL,
        pipeline TEXT NOT NULL, model_id TEXT NOT NULL, orchestrator TEXT NOT NULL,
        unit TEXT NOT NULL, units INTEGER NOT NULL, reported_units INTEGER NOT NULL,
        price_per_unit REAL NOT NULL, amount REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('paid', 'disputed')),
        completed_unix_ms INTEGER NOT NULL);
      INSERT INTO usage VALUES ('old-1', 'k', 'upscale', 'm', 'o', 'pixel', 10, 10, 0.5, 5,
        'paid', 1700000000000);
      INSERT INTO usage VALUES ('old-2', 'k', 'upscale', 'm', 'o', 'pixel', 10, 99, 0.5, 0,
        'disputed', 1700000001000);
      PRAGMA user_version=1;)sql",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  auto ledger = SqliteUsageLedger::Open(path);
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  ASSERT_TRUE((*ledger)->Record(Row("new-1", "k", "upscale", 4, 0.25, absl::Now())).ok());
  UsageQuery all;
  all.all_keys = true;
  auto rows = (*ledger)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].job_id, "old-1");
  EXPECT_DOUBLE_EQ((*rows)[0].reported_price_per_unit, 0.5);
  EXPECT_EQ((*rows)[0].dispute, "");
  EXPECT_EQ((*rows)[1].dispute, "units");
  EXPECT_EQ((*rows)[2].job_id, "new-1");
  ledger->reset();
  // Opened again: already version 2, nothing to do.
  auto again = SqliteUsageLedger::Open(path);
  ASSERT_TRUE(again.ok()) << again.status();
}

TEST(UsageLedgerTest, RefusesRowsWithAPriceOrAmountThatIsNotAFiniteNumber) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity(), -1.0}) {
    UsageRecord r = Row(absl::StrCat("p", bad), "k", "upscale", 1, bad, absl::Now());
    auto written = (*ledger)->Record(r);
    EXPECT_EQ(written.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

JobBilling::Job PricedJob(const std::string& id, double advertised, double reported) {
  JobBilling::Job job;
  job.job_id = id;
  job.request_id = id;
  // Constructed, not assigned from literals: GCC 12 at -O3 warns falsely (-Wrestrict) on those.
  job.api_key_id = std::string("k");
  job.pipeline = std::string("upscale");
  job.model_id = std::string("m");
  job.orchestrator = std::string("node-x");
  job.reported_units = 1000;
  job.counted = 1000;
  job.advertised_price_per_unit = advertised;
  job.reported_price_per_unit = reported;
  return job;
}

std::map<std::string, UsageRecord> RowsById(UsageLedger& ledger) {
  UsageQuery all;
  all.all_keys = true;
  std::map<std::string, UsageRecord> out;
  auto rows = ledger.Rows(all);
  EXPECT_TRUE(rows.ok()) << rows.status();
  if (rows.ok()) {
    for (auto& r : *rows) out[r.job_id] = r;
  }
  return out;
}

// Issue 18: the ledger multiplied the units by the price the orchestrator reported in its
// response. It now pays the price the node advertised when it was picked; another reported price
// is a dispute (not paid, logged, counted, recorded with its reason).
TEST(JobBillingTest, PaysTheAdvertisedPriceAndDisputesAnotherReportedOne) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  Metrics metrics("gateway");
  JobBilling billing(ledger->get(), &metrics);

  EXPECT_TRUE(billing.Settle(PricedJob("honest", 0.25, 0.25)));
  EXPECT_FALSE(billing.Settle(PricedJob("greedy", 0.25, 2.5)));
  // Under the advertised price is a dispute too: the report is not what was agreed.
  EXPECT_FALSE(billing.Settle(PricedJob("cheap", 0.25, 0.125)));
  // Capped: the client's cap is what it agreed to at most.
  JobBilling::Job capped = PricedJob("capped", 2, 2);
  capped.max_price_per_unit = 1;
  EXPECT_TRUE(billing.Settle(capped));

  auto rows = RowsById(**ledger);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_FALSE(rows["honest"].disputed);
  EXPECT_DOUBLE_EQ(rows["honest"].amount, 250.0);
  EXPECT_TRUE(rows["greedy"].disputed);
  EXPECT_DOUBLE_EQ(rows["greedy"].amount, 0.0);
  EXPECT_DOUBLE_EQ(rows["greedy"].price_per_unit, 0.25);  // never the reported 2.5
  EXPECT_DOUBLE_EQ(rows["greedy"].reported_price_per_unit, 2.5);
  EXPECT_EQ(rows["greedy"].dispute, "price");
  EXPECT_TRUE(rows["cheap"].disputed);
  EXPECT_EQ(rows["cheap"].dispute, "price");
  EXPECT_FALSE(rows["capped"].disputed);
  EXPECT_DOUBLE_EQ(rows["capped"].price_per_unit, 1.0);
  EXPECT_DOUBLE_EQ(rows["capped"].amount, 1000.0);

  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("switchyard_gateway_billing_price_disputes_total{orchestrator="
                              "\"node-x\",pipeline=\"upscale\"} 2"));
  EXPECT_THAT(text, HasSubstr("switchyard_gateway_billing_mismatches_total{orchestrator="
                              "\"node-x\",pipeline=\"upscale\"} 2"));
}

// Issue 18: NaN, infinite and negative prices. A reported NaN used to lose the job's row (bound
// as NULL, dropped by INSERT OR IGNORE as if already recorded); infinity was paid an infinite
// amount and a negative price a negative one. Advertised ones are never paid either.
TEST(JobBillingTest, NanInfiniteAndNegativePricesAreDisputedNeverPaid) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  Metrics metrics("gateway");
  JobBilling billing(ledger->get(), &metrics);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();

  EXPECT_FALSE(billing.Settle(PricedJob("reported-nan", 0.25, nan)));
  EXPECT_FALSE(billing.Settle(PricedJob("reported-inf", 0.25, inf)));
  EXPECT_FALSE(billing.Settle(PricedJob("reported-neg", 0.25, -0.25)));
  EXPECT_FALSE(billing.Settle(PricedJob("advertised-nan", nan, nan)));
  EXPECT_FALSE(billing.Settle(PricedJob("advertised-inf", inf, inf)));
  EXPECT_FALSE(billing.Settle(PricedJob("advertised-neg", -1, -1)));
  JobBilling::Job none = PricedJob("advertised-none", 0, 0);
  none.advertised_price_per_unit.reset();
  EXPECT_FALSE(billing.Settle(none));
  // A finite price whose amount is not: not paid either.
  JobBilling::Job huge = PricedJob("huge", 1e308, 1e308);
  EXPECT_FALSE(billing.Settle(huge));

  auto rows = RowsById(**ledger);
  ASSERT_EQ(rows.size(), 8u) << "every job keeps its row";
  for (const auto& [id, r] : rows) {
    EXPECT_TRUE(r.disputed) << id;
    EXPECT_EQ(r.amount, 0.0) << id;
    EXPECT_TRUE(std::isfinite(r.price_per_unit) && r.price_per_unit >= 0) << id;
  }
  EXPECT_DOUBLE_EQ(rows["reported-nan"].price_per_unit, 0.25);
  EXPECT_TRUE(std::isnan(rows["reported-nan"].reported_price_per_unit));
  EXPECT_EQ(rows["reported-nan"].dispute, "price");
  EXPECT_EQ(rows["advertised-nan"].dispute, "advertised_price");
  EXPECT_EQ(rows["advertised-none"].dispute, "advertised_price");
  EXPECT_EQ(rows["huge"].dispute, "amount");
}

std::shared_ptr<const NodeView> PricedNode(const std::string& id, double price,
                                           const std::string& pipeline = "upscale") {
  auto view = std::make_shared<NodeView>();
  view->id = id;
  view->status.set_node_id(id);
  auto* cap = view->status.add_capabilities();
  cap->set_pipeline(pipeline);
  cap->set_model_id("m");
  cap->set_state(node::v1::MODEL_STATE_READY);
  cap->set_capacity(4);
  cap->set_price_per_unit(price);
  view->stats = std::make_shared<NodeStats>();
  view->connection = std::make_shared<NodeConnection>("127.0.0.1:1", 1 << 20);
  return view;
}

// Issue 18: a capability advertising NaN passed the price cap (NaN > cap is false) and a negative
// one always looked cheapest; neither is routed to now, by the router or the KServe pick.
TEST(AdvertisedPriceTest, NanInfiniteAndNegativeAdvertisedPricesAreNotRouted) {
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(), -0.5}) {
    Snapshot snap;
    snap.nodes = {PricedNode("bad", bad)};
    IndexSnapshot(snap, nullptr);
    Router router([] { return uint64_t{0}; });
    RouteRequest req;
    req.pipeline = std::string("upscale");
    req.model_id = std::string("m");
    auto choice = router.Pick(snap, req);
    EXPECT_FALSE(choice.ok()) << bad;
    EXPECT_THAT(choice.status().message(), HasSubstr("price per unit")) << bad;
    req.max_price_per_unit = 1;  // a cap must not let NaN through either
    EXPECT_FALSE(router.Pick(snap, req).ok()) << bad;
    EXPECT_FALSE(PickInferenceNode(snap, "m").ok()) << bad;

    // With an honest node beside it, the honest one gets every job.
    snap.nodes = {PricedNode("bad", bad), PricedNode("good", 0.5)};
    IndexSnapshot(snap, nullptr);
    req.max_price_per_unit = 0;
    for (int i = 0; i < 20; ++i) {
      auto c = router.Pick(snap, req);
      ASSERT_TRUE(c.ok()) << c.status();
      EXPECT_EQ(c->node->id, "good");
    }
    auto k = PickInferenceNode(snap, "m");
    ASSERT_TRUE(k.ok()) << k.status();
    EXPECT_EQ((*k)->id, "good");
  }
}

TEST(AdvertisedPriceTest, IsTheOfferOfThePickedView) {
  auto node = PricedNode("n", 0.75, "image-to-image");
  EXPECT_EQ(AdvertisedPrice(*node, "image-to-image", "m"), 0.75);
  EXPECT_EQ(AdvertisedPrice(*node, "upscale", "m"), std::nullopt);
  EXPECT_EQ(AdvertisedPrice(*node, "", "m"), 0.75);  // KServe: any pipeline
  EXPECT_EQ(AdvertisedPrice(*node, "", "other"), std::nullopt);
  auto transcode = PricedNode("t", 0.1, "transcode");
  EXPECT_EQ(AdvertisedPrice(*transcode, "", "m"), std::nullopt);
}

// A spot check proved a node's results wrong (gateway/api/spot_check.h): its paid rows since a
// time become disputed with "verification" (amount 0), its rows already disputed keep their
// reason with this one added, and other nodes' rows are untouched.
TEST(UsageLedgerTest, DisputeOrchestratorDisputesOnlyThatNodesPaidRows) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  ASSERT_TRUE((*ledger)->Record(Row("a-1", "alice", "upscale", 10, 0.5, t0)).ok());
  UsageRecord cheat1 = Row("c-1", "alice", "upscale", 10, 0.5, t0);
  cheat1.orchestrator = "cheat";
  UsageRecord cheat2 = Row("c-2", "bob", "upscale", 20, 0.5, t0 + absl::Seconds(10));
  cheat2.orchestrator = "cheat";
  UsageRecord cheat_disputed = Row("c-3", "bob", "upscale", 20, 0.5, t0 + absl::Seconds(20));
  cheat_disputed.orchestrator = "cheat";
  cheat_disputed.disputed = true;
  cheat_disputed.dispute = "units";
  cheat_disputed.amount = 0;
  UsageRecord early = Row("c-0", "bob", "upscale", 20, 0.5, t0 - absl::Seconds(10));
  early.orchestrator = "cheat";
  for (const auto& r : {cheat1, cheat2, cheat_disputed, early}) {
    ASSERT_TRUE((*ledger)->Record(r).ok());
  }
  auto n = (*ledger)->DisputeOrchestrator("cheat", "verification", t0);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);  // c-1 and c-2: c-3 was disputed already, c-0 is before t0
  UsageQuery all;
  all.all_keys = true;
  auto rows = (*ledger)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::map<std::string, UsageRecord> by_id;
  for (const auto& r : *rows) by_id[r.job_id] = r;
  ASSERT_EQ(by_id.size(), 5u);
  EXPECT_FALSE(by_id["a-1"].disputed);
  EXPECT_EQ(by_id["a-1"].amount, 5);
  for (const char* id : {"c-1", "c-2"}) {
    EXPECT_TRUE(by_id[id].disputed) << id;
    EXPECT_EQ(by_id[id].dispute, "verification") << id;
    EXPECT_EQ(by_id[id].amount, 0) << id;
  }
  EXPECT_EQ(by_id["c-3"].dispute, "units");
  EXPECT_FALSE(by_id["c-0"].disputed);
  auto totals = (*ledger)->Totals(all);
  ASSERT_TRUE(totals.ok());
  int64_t disputed = 0;
  for (const auto& t : *totals) disputed += t.disputed_jobs;
  EXPECT_EQ(disputed, 3);
  // Again: nothing left to dispute; all of them (InfinitePast) takes c-0 too.
  EXPECT_EQ(*(*ledger)->DisputeOrchestrator("cheat", "verification", t0), 0);
  EXPECT_EQ(*(*ledger)->DisputeOrchestrator("cheat", "verification", absl::InfinitePast()), 1);
  EXPECT_EQ((*ledger)->DisputeOrchestrator("", "verification", t0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*ledger)->DisputeOrchestrator("cheat", "", t0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::gateway
