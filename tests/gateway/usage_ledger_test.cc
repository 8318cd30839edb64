#include "gateway/usage_ledger.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
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
  auto ledger = UsageLedger::Open(dir.path() / "state" / "usage.db");
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
  auto ledger = UsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(
        (*ledger)->Record(Row(absl::StrCat("j", i), "k", "upscale", 1, 1, t0 + absl::Seconds(i)))
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
    auto ledger = UsageLedger::Open(path);
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

  auto again = UsageLedger::Open(path);
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
    auto ledger = UsageLedger::Open(path);
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

  auto ledger = UsageLedger::Open(path);
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
  auto ledger = UsageLedger::Open(path);
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(ledger.status().message(), HasSubstr(path.string()));
}

TEST(JobBillingTest, PaysMatchingUnitsAndDisputesTheRest) {
  TempDir dir;
  auto ledger = UsageLedger::Open(dir.path() / "usage.db");
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
  job.price_per_unit = 0.25;
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
  job.counted = 10;
  EXPECT_TRUE(billing.Settle(job));
  job.counted = 9;
  EXPECT_FALSE(billing.Settle(job));
}

}  // namespace
}  // namespace switchyard::gateway
