// PostgresUsageLedger against a real PostgreSQL each test starts (tests/support/postgres_server.h):
// exactly once per job id, batching, the same answers as the SQLite ledger, and the local journal
// while PostgreSQL is down (replayed once it is back, also by a new instance). Every wait is
// bounded.
#include "gateway/billing/postgres_usage_ledger.h"

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "support/media_fixtures.h"
#include "support/postgres_server.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::PostgresServer;
using ::switchyard::testing::PostgresServerOptions;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

UsageRecord Row(const std::string& job_id, const std::string& key, const std::string& pipeline,
                const std::string& model, int64_t units, double price, absl::Time when) {
  UsageRecord r;
  r.job_id = job_id;
  r.api_key_id = key;
  r.pipeline = pipeline;
  r.model_id = model;
  r.orchestrator = "orch-a";
  r.unit = "pixel";
  r.units = units;
  r.reported_units = units;
  r.price_per_unit = price;
  r.reported_price_per_unit = price;
  r.amount = static_cast<double>(units) * price;
  r.completed = when;
  return r;
}

// Waits (bounded) until `done` holds.
template <typename F>
bool Eventually(F done, std::chrono::milliseconds bound = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

class PostgresLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartPostgres({}); }

  void StartPostgres(PostgresServerOptions options) {
    pg_.reset();
    auto pg = PostgresServer::Start(dir_.path() / absl::StrCat("pg", ++servers_), options);
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
  }

  PostgresLedgerOptions Options() const {
    PostgresLedgerOptions o;
    o.dsn = pg_->dsn();
    o.journal = dir_.path() / "journal" / "usage-journal.db";
    o.connect_timeout = absl::Milliseconds(500);
    o.statement_timeout = absl::Milliseconds(2000);
    o.retry_interval = absl::Milliseconds(100);
    return o;
  }

  std::unique_ptr<PostgresUsageLedger> Create(PostgresLedgerOptions o) {
    auto ledger = PostgresUsageLedger::Create(std::move(o));
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    return ledger.ok() ? *std::move(ledger) : nullptr;
  }

  int64_t CountInPostgres(const std::string& where = "TRUE") {
    auto n = pg_->Query(absl::StrCat("SELECT COUNT(*) FROM switchyard_usage WHERE ", where));
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? std::stoll(*n) : -1;
  }

  TempDir dir_;
  int servers_ = 0;
  std::unique_ptr<PostgresServer> pg_;
};

UsageQuery AllKeys() {
  UsageQuery q;
  q.all_keys = true;
  return q;
}

void ExpectSameRows(const std::vector<UsageRecord>& a, const std::vector<UsageRecord>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(a[i].job_id);
    EXPECT_EQ(a[i].job_id, b[i].job_id);
    EXPECT_EQ(a[i].api_key_id, b[i].api_key_id);
    EXPECT_EQ(a[i].pipeline, b[i].pipeline);
    EXPECT_EQ(a[i].model_id, b[i].model_id);
    EXPECT_EQ(a[i].orchestrator, b[i].orchestrator);
    EXPECT_EQ(a[i].unit, b[i].unit);
    EXPECT_EQ(a[i].units, b[i].units);
    EXPECT_EQ(a[i].reported_units, b[i].reported_units);
    EXPECT_EQ(a[i].price_per_unit, b[i].price_per_unit);  // exact: stored as 17 digits
    EXPECT_EQ(a[i].amount, b[i].amount);
    EXPECT_EQ(std::isnan(a[i].reported_price_per_unit), std::isnan(b[i].reported_price_per_unit));
    if (!std::isnan(a[i].reported_price_per_unit)) {
      EXPECT_EQ(a[i].reported_price_per_unit, b[i].reported_price_per_unit);
    }
    EXPECT_EQ(a[i].disputed, b[i].disputed);
    EXPECT_EQ(a[i].dispute, b[i].dispute);
    EXPECT_EQ(a[i].completed, b[i].completed);
    EXPECT_EQ(a[i].receipt, b[i].receipt);
    EXPECT_EQ(a[i].receipt_status, b[i].receipt_status);
  }
}

void ExpectSameTotals(const std::vector<UsageTotals>& a, const std::vector<UsageTotals>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(absl::StrCat(a[i].api_key_id, "/", a[i].pipeline, "/", a[i].model_id));
    EXPECT_EQ(a[i].api_key_id, b[i].api_key_id);
    EXPECT_EQ(a[i].pipeline, b[i].pipeline);
    EXPECT_EQ(a[i].model_id, b[i].model_id);
    EXPECT_EQ(a[i].unit, b[i].unit);
    EXPECT_EQ(a[i].jobs, b[i].jobs);
    EXPECT_EQ(a[i].units, b[i].units);
    EXPECT_EQ(a[i].amount, b[i].amount);  // amounts below are exact in binary
    EXPECT_EQ(a[i].disputed_jobs, b[i].disputed_jobs);
  }
}

TEST_F(PostgresLedgerTest, RecordsOncePerJobIdAndAnswersAsTheSqliteLedger) {
  auto pg = Create(Options());
  ASSERT_NE(pg, nullptr);
  EXPECT_FALSE(pg->journaling());
  EXPECT_THAT(pg->Describe(), HasSubstr(pg_->dsn()));
  auto sqlite = SqliteUsageLedger::Open(dir_.path() / "usage.db");
  ASSERT_TRUE(sqlite.ok()) << sqlite.status();

  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  std::vector<UsageRecord> rows;
  // Keys whose byte order differs from a locale's ("B" < "a"), several pipelines and models.
  rows.push_back(Row("j1", "alice", "upscale", "m1", 100, 0.25, t0));
  rows.push_back(Row("j2", "alice", "upscale", "m1", 50, 0.25, t0 + absl::Seconds(1)));
  rows.push_back(Row("j3", "alice", "upscale", "m2", 8, 0.5, t0 + absl::Seconds(2)));
  rows.push_back(Row("j4", "Bob", "transcode", "", 1000, 0.125, t0 + absl::Seconds(3)));
  rows.push_back(Row("j5", "bob", "llm", "tiny", 7, 2, t0 + absl::Seconds(4)));
  UsageRecord disputed = Row("j6", "alice", "upscale", "m1", 10, 0.25, t0 + absl::Seconds(5));
  disputed.units = -1;
  disputed.amount = 0;
  disputed.disputed = true;
  disputed.dispute = "units,price";
  disputed.reported_price_per_unit = std::numeric_limits<double>::quiet_NaN();
  rows.push_back(disputed);
  UsageRecord odd = Row("j7", "bob", "llm", "tiny", 3, 0.1, t0 + absl::Seconds(5));
  odd.reported_price_per_unit = std::numeric_limits<double>::infinity();
  odd.model_id = "modèle-ü";  // UTF-8
  rows.push_back(odd);
  for (const auto& r : rows) {
    auto a = pg->Record(r);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_TRUE(*a) << r.job_id;
    auto b = (*sqlite)->Record(r);
    ASSERT_TRUE(b.ok()) << b.status();
  }
  // The same job again, even with other values: not written, not counted.
  UsageRecord again = rows[0];
  again.units = 999;
  auto twice = pg->Record(again);
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_FALSE(*twice);
  EXPECT_EQ(CountInPostgres(), static_cast<int64_t>(rows.size()));
  EXPECT_EQ(CountInPostgres("job_id = 'j1' AND units = 100"), 1);

  std::vector<UsageQuery> queries;
  queries.push_back(AllKeys());
  UsageQuery alice;
  alice.api_key_id = "alice";
  queries.push_back(alice);
  UsageQuery window = AllKeys();
  window.since = t0 + absl::Seconds(1);
  window.until = t0 + absl::Seconds(5);
  queries.push_back(window);
  UsageQuery nobody;
  nobody.api_key_id = "nobody";
  queries.push_back(nobody);
  for (const auto& q : queries) {
    auto a = pg->Totals(q);
    auto b = (*sqlite)->Totals(q);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    ExpectSameTotals(*a, *b);
    auto ra = pg->Rows(q);
    auto rb = (*sqlite)->Rows(q);
    ASSERT_TRUE(ra.ok()) << ra.status();
    ASSERT_TRUE(rb.ok()) << rb.status();
    ExpectSameRows(*ra, *rb);
  }
  auto all = pg->Totals(AllKeys());
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].api_key_id, "Bob");  // byte order
  EXPECT_EQ((*all)[1].model_id, "m1");
  EXPECT_EQ((*all)[1].jobs, 3);
  EXPECT_EQ((*all)[1].units, 150);  // the disputed job's -1 counts as 0
  EXPECT_EQ((*all)[1].amount, 37.5);
  EXPECT_EQ((*all)[1].disputed_jobs, 1);
  EXPECT_EQ(pg->journaled(), 0u);
}

TEST_F(PostgresLedgerTest, ConcurrentCallersShareBatchesAndEachJobCountsOnce) {
  auto pg = Create(Options());
  ASSERT_NE(pg, nullptr);
  constexpr int kThreads = 32, kJobs = 40;
  // Thread t records jobs t*kJobs.. and its neighbour's too: every id twice, at the same time.
  std::atomic<int> written{0}, already{0}, failed{0};
  std::vector<std::thread> threads;
  const absl::Time t0 = absl::Now();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJobs; ++i) {
        for (int owner : {t, (t + 1) % kThreads}) {
          auto r = pg->Record(Row(absl::StrCat("job-", owner, "-", i), "k", "upscale", "m1", 4, 0.5,
                                  t0 + absl::Milliseconds(i)));
          if (!r.ok()) {
            failed++;
          } else if (*r) {
            written++;
          } else {
            already++;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(written.load(), kThreads * kJobs);
  EXPECT_EQ(already.load(), kThreads * kJobs);
  EXPECT_EQ(CountInPostgres(), kThreads * kJobs);
  // Group commit: far fewer statements than rows.
  std::printf("LEDGER-PG: %d rows (each recorded twice, concurrently) in %llu statements\n",
              2 * kThreads * kJobs, static_cast<unsigned long long>(pg->batches()));
  EXPECT_LT(pg->batches(), static_cast<uint64_t>(2 * kThreads * kJobs));
  auto totals = pg->Totals(AllKeys());
  ASSERT_TRUE(totals.ok()) << totals.status();
  ASSERT_EQ(totals->size(), 1u);
  EXPECT_EQ((*totals)[0].jobs, kThreads * kJobs);
  EXPECT_EQ((*totals)[0].units, 4 * kThreads * kJobs);
  EXPECT_EQ((*totals)[0].amount, 2.0 * kThreads * kJobs);
}

TEST_F(PostgresLedgerTest, RefusesInvalidRowsAndWritesNone) {
  auto pg = Create(Options());
  ASSERT_NE(pg, nullptr);
  const absl::Time t0 = absl::Now();
  std::vector<UsageRecord> bad;
  bad.push_back(Row("", "k", "upscale", "m1", 1, 1, t0));
  UsageRecord nan_price = Row("nan", "k", "upscale", "m1", 1, 1, t0);
  nan_price.price_per_unit = std::numeric_limits<double>::quiet_NaN();
  bad.push_back(nan_price);
  UsageRecord negative = Row("neg", "k", "upscale", "m1", 1, 1, t0);
  negative.amount = -1;
  bad.push_back(negative);
  UsageRecord inf_amount = Row("inf", "k", "upscale", "m1", 1, 1, t0);
  inf_amount.amount = std::numeric_limits<double>::infinity();
  bad.push_back(inf_amount);
  bad.push_back(Row("nul", "k", "upscale", std::string("m\0x", 3), 1, 1, t0));
  bad.push_back(Row("utf8", "k", "upscale", "m\xff\xfe", 1, 1, t0));
  bad.push_back(Row("surrogate", "k", "upscale", "m\xed\xa0\x80", 1, 1, t0));
  bad.push_back(Row("cut", "k", "upscale", "m\xc3", 1, 1, t0));
  for (const auto& r : bad) {
    auto st = pg->Record(r);
    EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument) << r.job_id;
  }
  EXPECT_EQ(CountInPostgres(), 0);
  EXPECT_EQ(pg->journaled(), 0u);
  auto journal = pg->JournalRows();
  ASSERT_TRUE(journal.ok());
  EXPECT_EQ(*journal, 0);
  // A good row still goes in.
  auto ok = pg->Record(Row("good", "k", "upscale", "m1", 1, 1, t0));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(*ok);
}

TEST_F(PostgresLedgerTest, PostgresDownRecordsGoToTheJournalAndAreReplayedOnce) {
  auto pg = Create(Options());
  ASSERT_NE(pg, nullptr);
  const absl::Time t0 = absl::Now();
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    const std::string id = absl::StrCat("before-", i);
    ASSERT_TRUE(pg->Record(Row(id, "k", "upscale", "m1", 2, 0.5, t0)).ok());
    ids.insert(id);
  }
  pg_->Stop(/*immediate=*/true);
  // Concurrent callers while it is down: none fails; some jobs again (a retried one from before
  // the outage, one twice in the outage).
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        auto r = pg->Record(Row(absl::StrCat("during-", t, "-", i), "k", "upscale", "m1", 2, 0.5,
                                t0 + absl::Seconds(1)));
        if (!r.ok()) failed++;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) {
    for (int i = 0; i < 10; ++i) ids.insert(absl::StrCat("during-", t, "-", i));
  }
  EXPECT_EQ(failed.load(), 0);
  auto retried = pg->Record(Row("before-3", "k", "upscale", "m1", 2, 0.5, t0));
  ASSERT_TRUE(retried.ok()) << retried.status();  // the journal does not know it: true
  auto dup = pg->Record(Row("during-0-0", "k", "upscale", "m1", 2, 0.5, t0 + absl::Seconds(1)));
  ASSERT_TRUE(dup.ok()) << dup.status();
  EXPECT_FALSE(*dup);
  EXPECT_TRUE(pg->journaling());
  auto waiting = pg->JournalRows();
  ASSERT_TRUE(waiting.ok());
  EXPECT_EQ(*waiting, 81);  // 80 during, plus before-3 again
  // Totals cannot answer for all gateways now: UNAVAILABLE, saying why.
  auto down = pg->Totals(AllKeys());
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(down.status().message()), HasSubstr("journal"));

  ASSERT_TRUE(pg_->Restart().ok()) << pg_->Log();
  ASSERT_TRUE(Eventually([&] {
    auto left = pg->JournalRows();
    return left.ok() && *left == 0 && !pg->journaling();
  })) << "journal not replayed";
  EXPECT_EQ(CountInPostgres(), static_cast<int64_t>(ids.size()));
  EXPECT_EQ(CountInPostgres("job_id = 'before-3'"), 1);
  EXPECT_EQ(pg->replayed(), 81u);
  auto totals = pg->Totals(AllKeys());
  ASSERT_TRUE(totals.ok()) << totals.status();
  ASSERT_EQ(totals->size(), 1u);
  EXPECT_EQ((*totals)[0].jobs, 100);
  EXPECT_EQ((*totals)[0].units, 200);
  // Back to PostgreSQL directly.
  auto after = pg->Record(Row("after", "k", "upscale", "m1", 2, 0.5, t0 + absl::Seconds(2)));
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(*after);
  EXPECT_EQ(CountInPostgres("job_id = 'after'"), 1);
  auto left = pg->JournalRows();
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(*left, 0);
}

// Commit::kLocal: Record answers once the journal has the row; the replay thread copies it into
// PostgreSQL, each job once, and this ledger's own reads wait for the copy (read your writes).
TEST_F(PostgresLedgerTest, LocalCommitCopiesEachJobOnceAndReadsItsOwnWrites) {
  PostgresLedgerOptions o = Options();
  o.commit = PostgresLedgerOptions::Commit::kLocal;
  auto pg = Create(o);
  ASSERT_NE(pg, nullptr);
  const absl::Time t0 = absl::Now();
  constexpr int kThreads = 8, kJobs = 40;
  std::atomic<int> failed{0}, written{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJobs; ++i) {
        // Every job twice, from two threads: one of the two writes it.
        auto r = pg->Record(
            Row(absl::StrCat("job-", (t / 2) * kJobs + i), "k", "upscale", "m1", 3, 0.25, t0));
        if (!r.ok()) {
          failed++;
        } else if (*r) {
          written++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(written.load(), kThreads / 2 * kJobs);
  // No wait here: Totals itself waits for the copy.
  auto totals = pg->Totals(AllKeys());
  ASSERT_TRUE(totals.ok()) << totals.status();
  ASSERT_EQ(totals->size(), 1u);
  EXPECT_EQ((*totals)[0].jobs, kThreads / 2 * kJobs);
  EXPECT_EQ((*totals)[0].units, 3 * kThreads / 2 * kJobs);
  EXPECT_EQ(CountInPostgres(), kThreads / 2 * kJobs);
  EXPECT_FALSE(pg->journaling());
  EXPECT_EQ(pg->journaled(), 0u);  // counts outage rows only
  EXPECT_EQ(pg->batches(), 0u);    // no direct writers in this mode
  // Another ledger's (another gateway's) view agrees once copied.
  auto other = Create(Options());
  ASSERT_NE(other, nullptr);
  auto rows = other->Rows(AllKeys());
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->size(), static_cast<size_t>(kThreads / 2 * kJobs));
}

// Commit::kLocal while PostgreSQL is down: Record never fails or waits for it; the rows reach it
// once it is back, each once, also those a new instance finds in the journal.
TEST_F(PostgresLedgerTest, LocalCommitRidesOutAnOutageAndLosesNothing) {
  PostgresLedgerOptions o = Options();
  o.commit = PostgresLedgerOptions::Commit::kLocal;
  const absl::Time t0 = absl::Now();
  {
    auto pg = Create(o);
    ASSERT_NE(pg, nullptr);
    for (int i = 0; i < 30; ++i) {
      ASSERT_TRUE(pg->Record(Row(absl::StrCat("a-", i), "k", "upscale", "m1", 1, 1, t0)).ok());
    }
    ASSERT_TRUE(Eventually([&] { return CountInPostgres() == 30; }));
    pg_->Stop(/*immediate=*/true);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 50; ++i) {
      auto r = pg->Record(Row(absl::StrCat("b-", i), "k", "upscale", "m1", 1, 1, t0));
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_TRUE(*r);
    }
    // Journal writes only: far below one connect timeout (500 ms) per job.
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
    ASSERT_TRUE(Eventually([&] { return pg->journaling(); }));
    auto down = pg->Totals(AllKeys());
    EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
    ASSERT_TRUE(pg_->Restart().ok()) << pg_->Log();
    ASSERT_TRUE(Eventually([&] { return CountInPostgres() == 80 && !pg->journaling(); }))
        << CountInPostgres();
    // Rows recorded after the outage are copied too; the ledger then closes with PostgreSQL
    // down again, its last rows in the journal.
    ASSERT_TRUE(pg->Record(Row("c-0", "k", "upscale", "m1", 1, 1, t0)).ok());
    auto totals = pg->Totals(AllKeys());
    ASSERT_TRUE(totals.ok()) << totals.status();
    EXPECT_EQ((*totals)[0].jobs, 81);
    pg_->Stop(/*immediate=*/true);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(pg->Record(Row(absl::StrCat("d-", i), "k", "upscale", "m1", 1, 1, t0)).ok());
    }
  }
  ASSERT_TRUE(pg_->Restart().ok()) << pg_->Log();
  auto again = Create(o);  // copies the whole journal again: what PostgreSQL has counts once
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(Eventually([&] { return CountInPostgres() == 86; })) << CountInPostgres();
  EXPECT_EQ(CountInPostgres("job_id = 'a-0'"), 1);
  EXPECT_EQ(CountInPostgres("job_id LIKE 'd-%'"), 5);
}

TEST_F(PostgresLedgerTest, JournalLeftOnDiskIsReplayedByANewInstance) {
  const absl::Time t0 = absl::Now();
  {
    auto pg = Create(Options());
    ASSERT_NE(pg, nullptr);
    ASSERT_TRUE(pg->Record(Row("in-pg", "k", "upscale", "m1", 1, 1, t0)).ok());
    pg_->Stop();
    for (int i = 0; i < 25; ++i) {
      auto r = pg->Record(Row(absl::StrCat("left-", i), "k", "upscale", "m1", 1, 1, t0));
      ASSERT_TRUE(r.ok()) << r.status();
    }
    EXPECT_EQ(pg->journaled(), 25u);
  }  // the gateway stops with 25 rows in its journal
  {
    // A commit whose answer was lost: the row is in PostgreSQL and in the journal.
    auto journal = SqliteUsageLedger::Open(Options().journal);
    ASSERT_TRUE(journal.ok());
    ASSERT_TRUE((*journal)->Record(Row("in-pg", "k", "upscale", "m1", 1, 1, t0)).ok());
    auto n = (*journal)->Count();
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 26);
  }
  ASSERT_TRUE(pg_->Restart().ok()) << pg_->Log();
  auto again = Create(Options());
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(Eventually([&] {
    auto left = again->JournalRows();
    return left.ok() && *left == 0;
  })) << "journal left on disk not replayed";
  EXPECT_EQ(CountInPostgres(), 26);
  EXPECT_EQ(CountInPostgres("job_id = 'in-pg'"), 1);
}

TEST_F(PostgresLedgerTest, StartsWithPostgresDownAndCatchesUpWhenItComes) {
  pg_->Stop();
  auto pg = Create(Options());
  ASSERT_NE(pg, nullptr);
  EXPECT_TRUE(pg->journaling());
  const absl::Time t0 = absl::Now();
  for (int i = 0; i < 5; ++i) {
    auto r = pg->Record(Row(absl::StrCat("early-", i), "k", "upscale", "m1", 1, 1, t0));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(*r);
  }
  ASSERT_TRUE(pg_->Restart().ok()) << pg_->Log();
  ASSERT_TRUE(Eventually([&] { return !pg->journaling(); }));
  EXPECT_EQ(CountInPostgres(), 5);  // the table was created on the way
}

// Receipts (docs/security.md, "Receipts"): kept with the row as in the SQLite ledger; a table
// from before receipts gains the columns (its rows "none"); Rows pages like the SQLite ledger's.
TEST_F(PostgresLedgerTest, ReceiptColumnsAndPagingMatchTheSqliteLedger) {
  ASSERT_TRUE(pg_->Query(R"sql(CREATE TABLE switchyard_usage (
      job_id TEXT PRIMARY KEY NOT NULL, api_key_id TEXT NOT NULL, pipeline TEXT NOT NULL,
      model_id TEXT NOT NULL, orchestrator TEXT NOT NULL, unit TEXT NOT NULL,
      units BIGINT NOT NULL, reported_units BIGINT NOT NULL,
      price_per_unit DOUBLE PRECISION NOT NULL, amount DOUBLE PRECISION NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('paid', 'disputed')),
      completed_unix_ms BIGINT NOT NULL, reported_price_per_unit DOUBLE PRECISION,
      dispute TEXT NOT NULL DEFAULT ''))sql")
                  .ok());
  ASSERT_TRUE(pg_->Query("INSERT INTO switchyard_usage VALUES ('old', 'k', 'upscale', 'm1', "
                         "'orch-a', 'pixel', 1, 1, 0.5, 0.5, 'paid', 1000, 0.5, '')")
                  .ok());
  auto pg = Create(Options());
  ASSERT_NE(pg, nullptr);
  TempDir sqlite_dir;
  auto sqlite = SqliteUsageLedger::Open(sqlite_dir.path() / "usage.db");
  ASSERT_TRUE(sqlite.ok());
  ASSERT_TRUE(
      (*sqlite)->Record(Row("old", "k", "upscale", "m1", 1, 0.5, absl::FromUnixMillis(1000))).ok());
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  for (int i = 0; i < 5; ++i) {
    UsageRecord r = Row(absl::StrCat("r", i), "k", "upscale", "m1", 2, 0.5,
                        t0 + absl::Milliseconds(i / 2));  // pairs share a time
    r.receipt = absl::StrCat("{\"job_id\":\"r", i, "\"}");
    r.receipt_status = i == 3 ? "bad_signature" : "verified";
    ASSERT_TRUE(pg->Record(r).ok());
    ASSERT_TRUE((*sqlite)->Record(r).ok());
  }
  auto a = pg->Rows(AllKeys());
  auto b = (*sqlite)->Rows(AllKeys());
  ASSERT_TRUE(a.ok() && b.ok());
  ExpectSameRows(*a, *b);
  ASSERT_EQ(a->size(), 6u);
  EXPECT_EQ((*a)[0].receipt_status, "none");  // from before receipts
  // Two rows a page, the same pages from both.
  for (UsageLedger* ledger :
       {static_cast<UsageLedger*>(pg.get()), static_cast<UsageLedger*>(sqlite->get())}) {
    UsageQuery q = AllKeys();
    q.limit = 2;
    std::vector<std::string> seen;
    for (int page = 0; page < 10; ++page) {
      auto rows = ledger->Rows(q);
      ASSERT_TRUE(rows.ok()) << rows.status();
      for (const auto& r : *rows) seen.push_back(r.job_id);
      if (rows->size() < q.limit) break;
      q.after = std::make_pair(absl::ToUnixMillis(rows->back().completed), rows->back().job_id);
    }
    EXPECT_EQ(seen, (std::vector<std::string>{"old", "r0", "r1", "r2", "r3", "r4"}))
        << ledger->Describe();
  }
}

TEST(PostgresDsnTest, MalformedOrPasswordCarryingDsnsAreRefusedClearly) {
  EXPECT_TRUE(ValidatePostgresDsn("postgresql://sy@127.0.0.1:5432/usage").ok());
  EXPECT_TRUE(ValidatePostgresDsn("postgres://sy@db.internal/usage?sslmode=verify-full").ok());
  auto mysql = ValidatePostgresDsn("mysql://sy@127.0.0.1/usage");
  EXPECT_EQ(mysql.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(mysql.message()), HasSubstr("postgresql://"));
  auto keyvalue = ValidatePostgresDsn("host=127.0.0.1 dbname=usage");
  EXPECT_EQ(keyvalue.code(), absl::StatusCode::kInvalidArgument);
  auto secret = ValidatePostgresDsn("postgresql://sy:hunter2-secret@127.0.0.1/usage");
  EXPECT_EQ(secret.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(secret.message()), HasSubstr("password_file"));
  EXPECT_THAT(std::string(secret.message()), Not(HasSubstr("hunter2")));
  auto query = ValidatePostgresDsn("postgresql://sy@127.0.0.1/usage?password=hunter2-secret");
  EXPECT_EQ(query.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(query.message()), Not(HasSubstr("hunter2")));
  auto bad_option = ValidatePostgresDsn("postgresql://sy@127.0.0.1/usage?no_such_option=1");
  EXPECT_EQ(bad_option.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_option.message()), HasSubstr("no_such_option"));

  TempDir dir;
  PostgresLedgerOptions o;
  o.dsn = "postgresql://sy:hunter2-secret@127.0.0.1/usage";
  o.journal = dir.path() / "j.db";
  auto created = PostgresUsageLedger::Create(o);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(created.status().message()), Not(HasSubstr("hunter2")));
  o.dsn = "postgresql://sy@127.0.0.1/usage";
  o.journal.clear();
  EXPECT_EQ(PostgresUsageLedger::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PostgresLedgerTest, PasswordIsSentAndRefusalsAreClearWithoutIt) {
  const std::string password = "pw-Zq81-not-in-logs";
  StartPostgres({.password = password});
  PostgresLedgerOptions o = Options();
  // No password: the server's refusal is a config error, not an outage.
  auto none = PostgresUsageLedger::Create(o);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kPermissionDenied) << none.status();
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("password"));
  o.password = "wrong-password-Xy";
  auto wrong = PostgresUsageLedger::Create(o);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kPermissionDenied) << wrong.status();
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("authentication failed"));
  EXPECT_THAT(std::string(wrong.status().message()), Not(HasSubstr("wrong-password-Xy")));
  o.password = password;
  auto right = PostgresUsageLedger::Create(o);
  ASSERT_TRUE(right.ok()) << right.status();
  EXPECT_FALSE((*right)->journaling());
  EXPECT_THAT((*right)->Describe(), Not(HasSubstr(password)));
  auto r = (*right)->Record(Row("j", "k", "upscale", "m1", 1, 1, absl::Now()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(*r);
  // A database that does not exist: also refused at once.
  o.dsn = absl::StrCat("postgresql://postgres@127.0.0.1:", pg_->port(), "/no_such_db");
  auto missing = PostgresUsageLedger::Create(o);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
}

// DisputeOrchestrator as the SQLite ledger's, in PostgreSQL and in rows still in the journal (they
// reach PostgreSQL disputed when it answers again).
TEST_F(PostgresLedgerTest, DisputeOrchestratorDisputesThatNodesPaidRowsAndJournaledOnes) {
  auto pg = Create(Options());
  ASSERT_NE(pg, nullptr);
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  UsageRecord honest = Row("a-1", "k", "upscale", "m1", 10, 0.5, t0);
  honest.orchestrator = "honest";
  ASSERT_TRUE(pg->Record(honest).ok());
  for (int i = 0; i < 3; ++i) {
    UsageRecord r = Row(absl::StrCat("c-", i), "k", "upscale", "m1", 10, 0.5, t0);
    r.orchestrator = "cheat";
    if (i == 2) {
      r.disputed = true;
      r.dispute = "units";
      r.amount = 0;
    }
    ASSERT_TRUE(pg->Record(r).ok());
  }
  auto n = pg->DisputeOrchestrator("cheat", "verification", absl::InfinitePast());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  EXPECT_EQ(CountInPostgres("orchestrator = 'cheat' AND status = 'disputed' AND amount = 0"), 3);
  EXPECT_EQ(CountInPostgres("dispute = 'verification'"), 2);
  EXPECT_EQ(CountInPostgres("orchestrator = 'honest' AND status = 'paid'"), 1);

  // PostgreSQL down: a row goes to the journal; the dispute reaches it there (UNAVAILABLE for
  // PostgreSQL's part) and the replay brings it in disputed.
  pg_->Stop(/*immediate=*/true);
  UsageRecord late = Row("c-late", "k", "upscale", "m1", 10, 0.5, t0 + absl::Seconds(1));
  late.orchestrator = "cheat";
  ASSERT_TRUE(pg->Record(late).ok());
  ASSERT_TRUE(pg->journaling());
  auto down = pg->DisputeOrchestrator("cheat", "verification", absl::InfinitePast());
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  EXPECT_THAT(std::string(down.status().message()), HasSubstr("1 rows in the journal"));
  ASSERT_TRUE(pg_->Restart().ok()) << pg_->Log();
  ASSERT_TRUE(Eventually([&] {
    auto left = pg->JournalRows();
    return left.ok() && *left == 0 && !pg->journaling();
  })) << "journal not replayed";
  EXPECT_EQ(CountInPostgres("job_id = 'c-late' AND status = 'disputed' AND "
                            "dispute = 'verification'"),
            1);
  auto all = pg->Rows(AllKeys());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 5u);
  EXPECT_EQ(pg->DisputeOrchestrator("", "verification", t0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::gateway
