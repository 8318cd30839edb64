// The usage ledger in PostgreSQL (config `usage_ledger: {"backend": "postgres", ...}`), one
// ledger for several gateways (docs/operations.md "Several gateways"). Client: libpq (Debian's
// libpq-dev).
//
// One row per completed job in table switchyard_usage, job_id its primary key: each row is
// written with INSERT ... ON CONFLICT (job_id) DO NOTHING, so a job recorded twice (by a retry,
// by the journal's replay, by two gateways) is counted once. Rows are written by one writer
// threads, each taking the rows queued meanwhile into one statement (one commit, one round trip),
// like SqliteUsageLedger's group commit.
//
// When PostgreSQL cannot be reached (or a write fails or times out), Record does not fail: the row
// goes to a local SQLite journal (a SqliteUsageLedger, durable before Record returns), and a
// background thread replays the journal into PostgreSQL once it answers, deleting journal rows
// only after PostgreSQL committed them. A gateway restarted with journal rows on disk replays
// them too. A row both in PostgreSQL and in the journal (a commit whose answer was lost) is
// counted once: the replay's insert does nothing for it.
//
// Totals and Rows answer from PostgreSQL (every gateway's jobs); while it cannot be reached they
// answer UNAVAILABLE saying so (the journal holds this gateway's rows only, so it cannot answer
// for all gateways). Rows still in a journal are not in the answers until replayed.
//
// Commit::kLocal (config "commit": "local") writes every row to the journal first: Record costs
// what the embedded ledger's does (one SQLite group commit on the gateway's disk) instead of a
// round trip and a WAL flush on the PostgreSQL server, and the replay thread, woken by each
// Record, copies the rows into PostgreSQL within milliseconds (the same replay, so the same
// exactly-once argument). What it gives up: until copied, a row lives on this gateway's disk
// only (a gateway whose disk is lost loses those milliseconds of rows), and another gateway's
// Totals do not see it yet; this gateway's Totals and Rows first wait (bounded) for the journal
// to be copied, so a caller reads its own jobs.
#pragma once

#include <atomic>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/counter.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "gateway/billing/usage_ledger.h"

struct pg_conn;

namespace switchyard::gateway {

struct PostgresLedgerOptions {
  // A libpq connection URI, postgresql://USER@HOST:PORT/DB (query parameters such as
  // ?sslmode=verify-full&sslrootcert=... allowed). Never a password: see `password`.
  std::string dsn;
  std::string password;  // from the config's password_file; empty: none sent
  // The local SQLite journal for rows written while PostgreSQL cannot be reached.
  std::filesystem::path journal;
  absl::Duration connect_timeout = absl::Milliseconds(2000);
  // Each statement, on the server (statement_timeout) and on this side (a server that stopped
  // answering, e.g. a hung host, does not hold the writer longer than this).
  absl::Duration statement_timeout = absl::Milliseconds(5000);
  // How often the journal is checked and, when it holds rows or PostgreSQL is down, replayed.
  absl::Duration retry_interval = absl::Milliseconds(1000);
  enum class Commit {
    kPostgres,  // Record returns once PostgreSQL committed the row (or, while down, the journal)
    kLocal,     // Record returns once the journal committed it; copied to PostgreSQL right after
  };
  Commit commit = Commit::kPostgres;
  // Writer threads (Commit::kPostgres), each with its connection: while one batch commits (a WAL
  // flush on the server), the next is already on its way; PostgreSQL orders concurrent inserts of
  // one job id.
  int writers = 4;
};

// OK, or INVALID_ARGUMENT saying what is wrong: not a postgresql:// (or postgres://) URI libpq
// accepts, or one that carries a password (it belongs in password_file, never in a config).
absl::Status ValidatePostgresDsn(const std::string& dsn);

class PostgresUsageLedger final : public UsageLedger {
 public:
  // Validates the options and opens the journal; tries PostgreSQL once (creating the table if it
  // is missing) but starts without it (recording in the journal until it answers). A server that
  // answers but refuses the connection for good (authentication failed, no such role or
  // database) fails Create: a config error, not an outage. `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<PostgresUsageLedger>> Create(PostgresLedgerOptions options,
                                                                     Metrics* metrics = nullptr);
  // Writes what is queued (into the journal if PostgreSQL is down), answers every waiting Record
  // call, stops the replay, then closes.
  ~PostgresUsageLedger() override;
  PostgresUsageLedger(const PostgresUsageLedger&) = delete;
  PostgresUsageLedger& operator=(const PostgresUsageLedger&) = delete;

  // True when PostgreSQL (or, while it cannot be reached, the journal) has the row and false when
  // a row with that job id was already there. While PostgreSQL is down, "already there" is only
  // known for rows in the journal; the replay still counts such a job once. INVALID_ARGUMENT for a
  // row ValidateUsageRecord refuses or with text PostgreSQL cannot store (a NUL byte, invalid
  // UTF-8); UNAVAILABLE only when the journal cannot be written either, or when closing.
  absl::StatusOr<bool> Record(const UsageRecord& record) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::vector<UsageTotals>> Totals(const UsageQuery& query) override
      ABSL_LOCKS_EXCLUDED(read_mu_);
  absl::StatusOr<std::vector<UsageRecord>> Rows(const UsageQuery& query) override
      ABSL_LOCKS_EXCLUDED(read_mu_);
  std::string Describe() const override;
  // In PostgreSQL and in the journal (rows not replayed yet keep the dispute when they are). The
  // count is PostgreSQL's plus the journal's; UNAVAILABLE while PostgreSQL cannot be reached (the
  // journal's rows are disputed all the same).
  absl::StatusOr<int64_t> DisputeOrchestrator(const std::string& orchestrator,
                                              const std::string& reason, absl::Time since) override
      ABSL_LOCKS_EXCLUDED(read_mu_);

  // Whether new rows go to the journal now (PostgreSQL was found unreachable and the journal has
  // not been replayed since).
  bool journaling() const ABSL_LOCKS_EXCLUDED(mu_);
  // Rows in the journal (Commit::kLocal: also copied ones not deleted yet).
  absl::StatusOr<int64_t> JournalRows() { return journal_->Count(); }
  // Rows written to the journal because PostgreSQL could not be reached.
  uint64_t journaled() const { return journaled_.load(); }
  uint64_t replayed() const { return replayed_.load(); }  // journal rows committed in PostgreSQL
  uint64_t batches() const { return batches_.load(); }    // statements the writer committed

  // Commit::kLocal: how long the replay thread lets rows gather after the first one (no reader
  // waiting), so that one insert and one commit on the server carry many jobs.
  static constexpr absl::Duration kCopyDelay = absl::Milliseconds(20);

  // Most rows in one statement.
  static constexpr size_t kMaxBatch = 1024;

  static constexpr const char* kTable = "switchyard_usage";

 private:
  struct Pending {
    const UsageRecord* record;
    bool done = false;     // guarded by mu_ (a caller's stack entry: not annotatable)
    bool journal = false;  // PostgreSQL did not take it: the caller writes it to the journal
    bool written = false;
  };
  struct ConnDeleter {
    void operator()(pg_conn* conn) const;
  };
  using Conn = std::unique_ptr<pg_conn, ConnDeleter>;

  PostgresUsageLedger(PostgresLedgerOptions options, std::unique_ptr<SqliteUsageLedger> journal,
                      Metrics* metrics);
  absl::StatusOr<Conn> Connect() const;
  void WriterLoop(Conn pg) ABSL_LOCKS_EXCLUDED(mu_);
  void ReplayLoop() ABSL_LOCKS_EXCLUDED(flush_mu_, mu_);
  // Commit::kLocal: wakes the replay thread (a row was journaled); with `wait`, also waits
  // (bounded by statement_timeout) until a replay round that began after this call has ended.
  void RequestReplay(bool wait) ABSL_LOCKS_EXCLUDED(flush_mu_);
  absl::StatusOr<bool> RecordLocally(const UsageRecord& record) ABSL_LOCKS_EXCLUDED(mu_);
  // Replays the journal while PostgreSQL takes it; ends the outage once the journal is empty.
  void ReplayOnce() ABSL_LOCKS_EXCLUDED(mu_);
  // Commit::kLocal's replay: copies the journal's rows written since the last copy into
  // PostgreSQL (ends an outage when it answers) and now and then deletes the copied ones.
  void CopyOnce() ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<bool> Journal(const UsageRecord& record);
  void EnterOutage(const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);
  template <typename Row, typename ReadRow>
  // `extra`: parameters after the query's four ($5...).
  absl::StatusOr<std::vector<Row>> Select(const std::string& what, const std::string& sql,
                                          const UsageQuery& q, const ReadRow& read,
                                          const std::vector<std::string>& extra = {})
      ABSL_LOCKS_EXCLUDED(read_mu_);

  const PostgresLedgerOptions options_;
  std::unique_ptr<SqliteUsageLedger> journal_;
  prometheus::Counter* journaled_metric_ = nullptr;
  prometheus::Counter* replayed_metric_ = nullptr;
  prometheus::Counter* outages_metric_ = nullptr;
  std::atomic<uint64_t> journaled_{0};
  std::atomic<uint64_t> replayed_{0};
  std::atomic<uint64_t> batches_{0};

  Conn first_conn_;   // Create's connection, handed to the first writer
  Conn replay_conn_;  // the replay thread's
  // Commit::kLocal, the replay thread's: the journal's rows up to this number are in PostgreSQL
  // (0 at start: a journal left on disk is copied again, counted once); those below
  // `trimmed_below_` are deleted from the journal, last at `last_trim_`.
  int64_t copied_through_ = 0;
  int64_t trimmed_below_ = 0;
  absl::Time last_trim_ = absl::InfinitePast();

  Mutex read_mu_;
  Conn read_conn_ ABSL_GUARDED_BY(read_mu_);

  mutable Mutex mu_;
  CondVar queue_cv_;  // writer: rows queued, or closing
  CondVar done_cv_;   // callers: a batch was written (or given back for the journal)
  std::deque<Pending*> queue_ ABSL_GUARDED_BY(mu_);
  bool outage_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  int callers_ ABSL_GUARDED_BY(mu_) = 0;  // inside Record: the destructor waits for them
  // The replay thread's wake-ups: each Record (Commit::kLocal) and reader bumps `replay_wanted_`;
  // the thread sets `replay_done_` to the value it saw when its last round began.
  Mutex flush_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  CondVar flush_cv_;
  uint64_t replay_wanted_ ABSL_GUARDED_BY(flush_mu_) = 0;
  uint64_t replay_done_ ABSL_GUARDED_BY(flush_mu_) = 0;
  bool stop_replay_ ABSL_GUARDED_BY(flush_mu_) = false;
  int readers_waiting_ ABSL_GUARDED_BY(flush_mu_) = 0;
  std::vector<std::thread> writers_;
  std::thread replayer_;
};

}  // namespace switchyard::gateway
