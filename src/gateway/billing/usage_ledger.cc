#include "gateway/billing/usage_ledger.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <cmath>
#include <limits>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/node_identity.h"
#include "common/quote_units.h"
#include "common/receipt.h"
#include "common/status.h"

namespace switchyard::gateway {
namespace {

// 2: the price billed is the advertised one; the reported price and the dispute's reasons are kept.
// 3: each row keeps the node's receipt and what the gateway found checking it.
constexpr int kSchemaVersion = 3;

// The ledger's schema; `usage` holds one row per completed job. Columns added since version 1 come
// last, so a migrated table and a new one have the same layout.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS usage (
  job_id TEXT PRIMARY KEY NOT NULL,
  api_key_id TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  model_id TEXT NOT NULL,
  orchestrator TEXT NOT NULL,
  unit TEXT NOT NULL,
  units INTEGER NOT NULL,
  reported_units INTEGER NOT NULL,
  price_per_unit REAL NOT NULL,
  amount REAL NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('paid', 'disputed')),
  completed_unix_ms INTEGER NOT NULL,
  reported_price_per_unit REAL,
  dispute TEXT NOT NULL DEFAULT '',
  receipt TEXT NOT NULL DEFAULT '',
  receipt_status TEXT NOT NULL DEFAULT 'none'
);
CREATE INDEX IF NOT EXISTS usage_by_key_time ON usage (api_key_id, completed_unix_ms);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (completed_unix_ms);
)sql";

// A prepared statement, finalized when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  bool ok() const { return rc_ == SQLITE_OK && stmt_ != nullptr; }
  sqlite3_stmt* get() const { return stmt_; }
  void Text(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Int(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void Real(int i, double v) { sqlite3_bind_double(stmt_, i, v); }
  std::string ColumnText(int i) const {
    const auto* p = sqlite3_column_text(stmt_, i);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p),
                                      static_cast<size_t>(sqlite3_column_bytes(stmt_, i)));
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

// Reads a result row's columns left to right, so a SELECT's column list and the code reading it
// stay in the same order without column numbers.
class Columns {
 public:
  explicit Columns(const Statement& st) : st_(st) {}
  std::string Text() { return st_.ColumnText(i_++); }
  int64_t Int() { return sqlite3_column_int64(st_.get(), i_++); }
  double Real() { return sqlite3_column_double(st_.get(), i_++); }
  // A REAL column that may be NULL (NaN then).
  double RealOrNan() {
    if (sqlite3_column_type(st_.get(), i_) != SQLITE_NULL) return Real();
    ++i_;
    return std::numeric_limits<double>::quiet_NaN();
  }

 private:
  const Statement& st_;
  int i_ = 0;
};

absl::Status SqlError(sqlite3* db, const std::filesystem::path& path, absl::string_view what) {
  return absl::UnavailableError(
      absl::StrCat("usage ledger ", path.string(), ": ", what, ": ", sqlite3_errmsg(db)));
}

int64_t UnixMs(absl::Time t) {
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  if (t == absl::InfiniteFuture()) return std::numeric_limits<int64_t>::max();
  return absl::ToUnixMillis(t);
}

// Runs `select` (columns and FROM), filtered to the query's time window, unless all_keys its API
// key, and when set the query's paging cursor, then `order_by` (and the query's limit when
// `paged`); `read` turns each result row into a Row.
template <typename Row, typename ReadRow>
absl::StatusOr<std::vector<Row>> Select(sqlite3* db, const std::filesystem::path& path,
                                        absl::string_view select, const UsageQuery& q,
                                        absl::string_view order_by, const ReadRow& read,
                                        bool paged = false) {
  const bool after = paged && q.after.has_value();
  const std::string sql = absl::StrCat(
      select, " WHERE completed_unix_ms >= ? AND completed_unix_ms < ? AND (? OR api_key_id = ?) ",
      after ? "AND (completed_unix_ms > ? OR (completed_unix_ms = ? AND job_id > ?)) " : "",
      order_by, paged && q.limit > 0 ? absl::StrCat(" LIMIT ", q.limit) : "");
  Statement st(db, sql.c_str());
  if (!st.ok()) return SqlError(db, path, "cannot prepare the query");
  st.Int(1, UnixMs(q.since));
  st.Int(2, UnixMs(q.until));
  st.Int(3, q.all_keys ? 1 : 0);
  st.Text(4, q.api_key_id);
  if (after) {
    st.Int(5, q.after->first);
    st.Int(6, q.after->first);
    st.Text(7, q.after->second);
  }
  std::vector<Row> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) out.push_back(read(st));
  if (rc != SQLITE_DONE) return SqlError(db, path, "cannot read the query's rows");
  return out;
}

absl::Status Exec(sqlite3* db, const std::filesystem::path& path, const std::string& sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error) == SQLITE_OK) return absl::OkStatus();
  std::string message = error != nullptr ? error : sqlite3_errmsg(db);
  sqlite3_free(error);
  return absl::UnavailableError(
      absl::StrCat("usage ledger ", path.string(), ": ", sql.substr(0, 40), ": ", message));
}

// Opens a connection with the ledger's settings. WAL: a commit is one append and fsync of the
// log, and readers never wait for a writer; synchronous=FULL: the fsync happens before each
// commit returns, so a committed row survives a crash (and power loss).
absl::Status OpenConnection(const std::filesystem::path& path, sqlite3** db) {
  // FULLMUTEX: each connection is also used under the ledger's own locks.
  if (sqlite3_open_v2(path.c_str(), db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    return SqlError(*db, path, "cannot open");
  }
  sqlite3_busy_timeout(*db, 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"}) {
    Statement st(*db, pragma);
    if (!st.ok()) return SqlError(*db, path, pragma);
    int rc = sqlite3_step(st.get());
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqlError(*db, path, pragma);
    if (rc == SQLITE_ROW && std::string(pragma) == "PRAGMA journal_mode=WAL" &&
        st.ColumnText(0) != "wal") {
      return absl::UnavailableError(absl::StrCat("usage ledger ", path.string(),
                                                 ": cannot use WAL mode (got '", st.ColumnText(0),
                                                 "'); is it on a network filesystem?"));
    }
  }
  return absl::OkStatus();
}

// Creates the schema, or brings a version 1 ledger (or one whose creation was cut short) up to
// this version, in one transaction. Version 1 rows keep their price as the reported price too
// (it was the reported one then), and their disputes are unit disputes (the only kind then).
absl::Status CreateOrMigrate(sqlite3* db, const std::filesystem::path& path) {
  {
    Statement version(db, "PRAGMA user_version");
    if (!version.ok() || sqlite3_step(version.get()) != SQLITE_ROW) {
      return SqlError(db, path, "not a database");
    }
    const int64_t v = sqlite3_column_int64(version.get(), 0);
    if (v < 0 || v > kSchemaVersion) {
      return absl::UnavailableError(absl::StrCat("usage ledger ", path.string(),
                                                 ": schema version ", v, ", this gateway knows ",
                                                 kSchemaVersion));
    }
    if (v == kSchemaVersion) return Exec(db, path, kSchema);  // indexes, in case
  }
  SY_RETURN_IF_ERROR(Exec(db, path, "BEGIN IMMEDIATE"));
  absl::Status st = [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(Exec(db, path, kSchema));
    bool has_reported_price = false, has_dispute = false, has_receipt = false;
    {
      Statement info(db, "PRAGMA table_info(usage)");
      if (!info.ok()) return SqlError(db, path, "cannot read the table's columns");
      while (sqlite3_step(info.get()) == SQLITE_ROW) {
        const std::string column = info.ColumnText(1);
        has_reported_price |= column == "reported_price_per_unit";
        has_dispute |= column == "dispute";
        has_receipt |= column == "receipt";
      }
    }
    if (!has_reported_price) {
      SY_RETURN_IF_ERROR(
          Exec(db, path, "ALTER TABLE usage ADD COLUMN reported_price_per_unit REAL"));
      SY_RETURN_IF_ERROR(
          Exec(db, path, "UPDATE usage SET reported_price_per_unit = price_per_unit"));
    }
    if (!has_dispute) {
      SY_RETURN_IF_ERROR(
          Exec(db, path, "ALTER TABLE usage ADD COLUMN dispute TEXT NOT NULL DEFAULT ''"));
      SY_RETURN_IF_ERROR(
          Exec(db, path, "UPDATE usage SET dispute = 'units' WHERE status = 'disputed'"));
    }
    if (!has_receipt) {  // rows from before receipts: none kept, status "none"
      SY_RETURN_IF_ERROR(
          Exec(db, path, "ALTER TABLE usage ADD COLUMN receipt TEXT NOT NULL DEFAULT ''"));
      SY_RETURN_IF_ERROR(Exec(
          db, path, "ALTER TABLE usage ADD COLUMN receipt_status TEXT NOT NULL DEFAULT 'none'"));
    }
    SY_RETURN_IF_ERROR(Exec(db, path, absl::StrCat("PRAGMA user_version=", kSchemaVersion)));
    return Exec(db, path, "COMMIT");
  }();
  if (!st.ok()) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  return st;
}

// A price as stored: SQLite would store NaN as NULL anyway; infinities are kept.
void BindPrice(Statement& st, int i, double v) {
  if (std::isnan(v)) {
    sqlite3_bind_null(st.get(), i);
  } else {
    st.Real(i, v);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteUsageLedger>> SqliteUsageLedger::Open(
    const std::filesystem::path& path) {
  if (path.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("usage ledger ", path.string(),
                                                 ": cannot create its directory: ", ec.message()));
    }
  }
  std::unique_ptr<SqliteUsageLedger> ledger(new SqliteUsageLedger(path));
  SY_RETURN_IF_ERROR(OpenConnection(path, &ledger->write_db_));
  SY_RETURN_IF_ERROR(CreateOrMigrate(ledger->write_db_, path));
  {
    MutexLock lock(&ledger->read_mu_);
    SY_RETURN_IF_ERROR(OpenConnection(path, &ledger->read_db_));
  }
  ledger->writer_ = std::thread([l = ledger.get()] { l->WriterLoop(); });
  return ledger;
}

SqliteUsageLedger::~SqliteUsageLedger() {
  {
    MutexLock lock(&queue_mu_);
    closing_ = true;
  }
  queue_cv_.SignalAll();
  // The writer commits what is queued before it returns, and answers every waiting caller.
  if (writer_.joinable()) writer_.join();
  {
    // Waiting callers were answered; let them leave Record before its mutex goes.
    MutexLock lock(&queue_mu_);
    done_cv_.Wait(&queue_mu_,
                  [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) { return callers_ == 0; });
  }
  sqlite3_close_v2(write_db_);
  MutexLock lock(&read_mu_);
  sqlite3_close_v2(read_db_);
}

absl::Status ValidateUsageRecord(const UsageRecord& r) {
  if (r.job_id.empty()) return absl::InvalidArgumentError("usage record without a job id");
  // A NaN here would be stored as NULL and the row refused by NOT NULL; refused before queueing.
  if (r.receipt.size() > kMaxReceiptJsonBytes) {
    return absl::InvalidArgumentError(absl::StrCat("usage record ", r.job_id, ": its receipt is ",
                                                   r.receipt.size(), " bytes; at most ",
                                                   kMaxReceiptJsonBytes));
  }
  if (!metering::ValidPrice(r.price_per_unit) || !metering::ValidPrice(r.amount)) {
    return absl::InvalidArgumentError(absl::StrCat("usage record ", r.job_id, ": price per unit ",
                                                   r.price_per_unit, " and amount ", r.amount,
                                                   " must be finite numbers >= 0"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> SqliteUsageLedger::Record(const UsageRecord& r) {
  SY_RETURN_IF_ERROR(ValidateUsageRecord(r));
  Pending pending{&r};
  MutexLock lock(&queue_mu_);
  if (closing_) {
    return absl::UnavailableError(absl::StrCat("usage ledger ", path_.string(), " is closing"));
  }
  queue_.push_back(&pending);
  ++callers_;
  queue_cv_.Signal();
  done_cv_.Wait(&queue_mu_, [&pending] { return pending.done; });
  if (--callers_ == 0 && closing_) done_cv_.SignalAll();
  return pending.result;
}

void SqliteUsageLedger::WriterLoop() {
  queue_mu_.Lock();
  while (true) {
    queue_cv_.Wait(&queue_mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
      return closing_ || !queue_.empty();
    });
    if (queue_.empty()) break;  // closing, and everything queued is committed
    // Everything that queued while the previous batch committed goes in this one.
    std::vector<Pending*> batch;
    while (!queue_.empty() && batch.size() < kMaxBatch) {
      batch.push_back(queue_.front());
      queue_.pop_front();
    }
    queue_mu_.Unlock();
    WriteBatch(batch);
    queue_mu_.Lock();
    for (Pending* p : batch) p->done = true;
    done_cv_.SignalAll();
  }
  queue_mu_.Unlock();
}

void SqliteUsageLedger::WriteBatch(const std::vector<Pending*>& batch) {
  sqlite3* db = write_db_;
  auto fail_all = [&](const absl::Status& st) {
    for (Pending* p : batch) p->result = st;
  };
  if (absl::Status st = Exec(db, path_, "BEGIN IMMEDIATE"); !st.ok()) return fail_all(st);
  {
    // ON CONFLICT DO NOTHING, not INSERT OR IGNORE: OR IGNORE would also drop a row that breaks
    // NOT NULL or CHECK without an error, and the job would look already recorded.
    Statement st(
        db,
        "INSERT INTO usage (job_id, api_key_id, pipeline, model_id, orchestrator, unit, "
        "units, reported_units, price_per_unit, amount, status, completed_unix_ms, "
        "reported_price_per_unit, dispute, receipt, receipt_status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO NOTHING");
    if (!st.ok()) {
      fail_all(SqlError(db, path_, "cannot prepare the insert"));
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      return;
    }
    for (Pending* p : batch) {
      const UsageRecord& r = *p->record;
      sqlite3_reset(st.get());
      sqlite3_clear_bindings(st.get());
      st.Text(1, r.job_id);
      st.Text(2, r.api_key_id);
      st.Text(3, r.pipeline);
      st.Text(4, r.model_id);
      st.Text(5, r.orchestrator);
      st.Text(6, r.unit);
      st.Int(7, r.units);
      st.Int(8, r.reported_units);
      st.Real(9, r.price_per_unit);
      st.Real(10, r.amount);
      st.Text(11, r.disputed ? "disputed" : "paid");
      st.Int(12, absl::ToUnixMillis(r.completed));
      BindPrice(st, 13, r.reported_price_per_unit);
      st.Text(14, r.dispute);
      st.Text(15, r.receipt);
      st.Text(16, r.receipt_status);
      const int rc = sqlite3_step(st.get());
      if (rc == SQLITE_DONE) {
        p->result = sqlite3_changes(db) == 1;
      } else if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        // This row only: the statement is undone, the transaction goes on.
        p->result = SqlError(db, path_, "cannot write a row");
      } else {
        // I/O error, disk full...: the transaction may be gone; nothing of the batch is written.
        fail_all(SqlError(db, path_, "cannot write a row"));
        sqlite3_reset(st.get());
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        return;
      }
    }
  }
  // The fsync every row of the batch waits for.
  if (absl::Status st = Exec(db, path_, "COMMIT"); !st.ok()) {
    fail_all(st);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

absl::StatusOr<std::vector<UsageTotals>> SqliteUsageLedger::Totals(const UsageQuery& q) {
  MutexLock lock(&read_mu_);
  return Select<UsageTotals>(
      read_db_, path_,
      "SELECT api_key_id, pipeline, model_id, MAX(unit), COUNT(*), SUM(MAX(units, 0)), "
      "SUM(amount), SUM(status = 'disputed') FROM usage",
      q, "GROUP BY api_key_id, pipeline, model_id ORDER BY api_key_id, pipeline, model_id",
      [](const Statement& st) {
        UsageTotals t;
        Columns c(st);
        t.api_key_id = c.Text();
        t.pipeline = c.Text();
        t.model_id = c.Text();
        t.unit = c.Text();
        t.jobs = c.Int();
        t.units = c.Int();
        t.amount = c.Real();
        t.disputed_jobs = c.Int();
        return t;
      });
}

namespace {

constexpr const char* kSelectRows =
    "SELECT job_id, api_key_id, pipeline, model_id, orchestrator, unit, units, "
    "reported_units, price_per_unit, amount, status, completed_unix_ms, "
    "reported_price_per_unit, dispute, receipt, receipt_status FROM usage";

UsageRecord ReadRow(const Statement& st) {
  UsageRecord r;
  Columns c(st);
  r.job_id = c.Text();
  r.api_key_id = c.Text();
  r.pipeline = c.Text();
  r.model_id = c.Text();
  r.orchestrator = c.Text();
  r.unit = c.Text();
  r.units = c.Int();
  r.reported_units = c.Int();
  r.price_per_unit = c.Real();
  r.amount = c.Real();
  r.disputed = c.Text() == "disputed";
  r.completed = absl::FromUnixMillis(c.Int());
  r.reported_price_per_unit = c.RealOrNan();
  r.dispute = c.Text();
  r.receipt = c.Text();
  r.receipt_status = c.Text();
  return r;
}

}  // namespace

absl::StatusOr<std::vector<UsageRecord>> SqliteUsageLedger::Rows(const UsageQuery& q) {
  MutexLock lock(&read_mu_);
  return Select<UsageRecord>(read_db_, path_, kSelectRows, q, "ORDER BY completed_unix_ms, job_id",
                             ReadRow, /*paged=*/true);
}

absl::StatusOr<std::vector<UsageRecord>> SqliteUsageLedger::Oldest(size_t limit) {
  MutexLock lock(&read_mu_);
  UsageQuery all;
  all.all_keys = true;
  return Select<UsageRecord>(read_db_, path_, kSelectRows, all,
                             absl::StrCat("ORDER BY completed_unix_ms, job_id LIMIT ", limit),
                             ReadRow);
}

absl::StatusOr<int64_t> SqliteUsageLedger::Remove(const std::vector<std::string>& job_ids) {
  MutexLock lock(&read_mu_);
  // One transaction: one fsync for the whole replayed batch.
  SY_RETURN_IF_ERROR(Exec(read_db_, path_, "BEGIN IMMEDIATE"));
  int64_t removed = 0;
  // The lambda uses the connection through `db`: the analysis does not see read_mu_ held in it.
  sqlite3* const db = read_db_;
  absl::Status st = [&]() -> absl::Status {
    Statement del(db, "DELETE FROM usage WHERE job_id = ?");
    if (!del.ok()) return SqlError(db, path_, "cannot prepare the delete");
    for (const std::string& id : job_ids) {
      sqlite3_reset(del.get());
      del.Text(1, id);
      if (sqlite3_step(del.get()) != SQLITE_DONE) return SqlError(db, path_, "cannot delete");
      removed += sqlite3_changes(db);
    }
    return absl::OkStatus();
  }();
  if (st.ok()) st = Exec(read_db_, path_, "COMMIT");
  if (!st.ok()) {
    sqlite3_exec(read_db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return st;
  }
  return removed;
}

absl::StatusOr<int64_t> SqliteUsageLedger::DisputeOrchestrator(const std::string& orchestrator,
                                                               const std::string& reason,
                                                               absl::Time since) {
  if (orchestrator.empty() || reason.empty()) {
    return absl::InvalidArgumentError("disputing a node's rows needs its id and a reason");
  }
  MutexLock lock(&read_mu_);
  // One statement: SQLite's busy timeout orders it with the writer's transactions.
  Statement update(read_db_,
                   "UPDATE usage SET status = 'disputed', amount = 0, "
                   "dispute = CASE WHEN dispute = '' THEN ?1 ELSE dispute || ',' || ?1 END "
                   "WHERE orchestrator = ?2 AND status = 'paid' AND completed_unix_ms >= ?3");
  if (!update.ok()) return SqlError(read_db_, path_, "cannot prepare the dispute");
  update.Text(1, reason);
  update.Text(2, orchestrator);
  sqlite3_bind_int64(update.get(), 3,
                     since == absl::InfinitePast() ? std::numeric_limits<int64_t>::min()
                                                   : absl::ToUnixMillis(since));
  if (sqlite3_step(update.get()) != SQLITE_DONE) {
    return SqlError(read_db_, path_, "cannot dispute the node's rows");
  }
  return static_cast<int64_t>(sqlite3_changes(read_db_));
}

absl::StatusOr<int64_t> SqliteUsageLedger::Count() {
  MutexLock lock(&read_mu_);
  Statement st(read_db_, "SELECT COUNT(*) FROM usage");
  if (!st.ok() || sqlite3_step(st.get()) != SQLITE_ROW) {
    return SqlError(read_db_, path_, "cannot count the rows");
  }
  return static_cast<int64_t>(sqlite3_column_int64(st.get(), 0));
}

absl::StatusOr<std::vector<SqliteUsageLedger::NumberedRow>> SqliteUsageLedger::After(int64_t after,
                                                                                     size_t limit) {
  MutexLock lock(&read_mu_);
  // The row's columns as Rows reads them, then its rowid last.
  const std::string sql =
      absl::StrCat(absl::StrReplaceAll(kSelectRows, {{" FROM usage", ", rowid FROM usage"}}),
                   " WHERE rowid > ? ORDER BY rowid LIMIT ?");
  Statement st(read_db_, sql.c_str());
  if (!st.ok()) return SqlError(read_db_, path_, "cannot prepare the query");
  st.Int(1, after);
  st.Int(2, static_cast<int64_t>(limit));
  std::vector<NumberedRow> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    NumberedRow row;
    row.record = ReadRow(st);
    row.number = sqlite3_column_int64(st.get(), sqlite3_column_count(st.get()) - 1);
    out.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return SqlError(read_db_, path_, "cannot read the query's rows");
  return out;
}

absl::StatusOr<int64_t> SqliteUsageLedger::RemoveBelow(int64_t below) {
  MutexLock lock(&read_mu_);
  Statement del(read_db_, "DELETE FROM usage WHERE rowid < ?");
  if (!del.ok()) return SqlError(read_db_, path_, "cannot prepare the delete");
  del.Int(1, below);
  if (sqlite3_step(del.get()) != SQLITE_DONE) return SqlError(read_db_, path_, "cannot delete");
  return static_cast<int64_t>(sqlite3_changes(read_db_));
}

JobBilling::JobBilling(UsageLedger* ledger, Metrics* metrics) : ledger_(ledger) {
  if (ledger_ != nullptr) {
    auto threads = ThreadPool::Create("sy-settle", kSettleThreads);
    if (threads.ok()) settle_threads_ = *std::move(threads);  // valid arguments: cannot fail
  }
  if (metrics != nullptr) {
    receipts_ = &metrics->CounterFamily(
        "receipts_total",
        "Completed jobs by what the gateway found checking the orchestrator's signed receipt "
        "(verified, verified_unbound, unsigned, missing, bad_signature, mismatch), by "
        "orchestrator and status (docs/security.md, Receipts).");
    mismatches_ =
        &metrics->CounterFamily("billing_mismatches_total",
                                "Completed jobs not paid because their orchestrator reported other "
                                "units than the gateway counted or another price than it "
                                "advertised, by orchestrator and pipeline.");
    price_disputes_ =
        &metrics->CounterFamily("billing_price_disputes_total",
                                "Completed jobs not paid because their orchestrator reported "
                                "another price than it advertised when picked, or advertised "
                                "none valid, by orchestrator and pipeline.");
  }
}

JobBilling::ReceiptCheck JobBilling::CheckReceipt(const Job& job) const {
  ReceiptCheck out;
  if (!job.receipts) {
    out.status = "none";
    return out;
  }
  std::string key = bound_key_ ? bound_key_(job.orchestrator) : std::string();
  const bool bound = !key.empty();
  if (!bound) key = job.status_key;
  if (job.receipt == nullptr) {
    if (key.empty()) {
      out.status = "unsigned";  // an older node, or one without a key: nothing to hold it to
    } else {
      out.status = "missing";
      out.problem = "the node has an identity key but sent no receipt";
      out.disputed = true;
    }
    return out;
  }
  const v1::JobReceipt& r = *job.receipt;
  out.disputed = true;
  if (r.ByteSizeLong() > kMaxReceiptBytes) {
    out.status = "mismatch";
    out.problem = absl::StrCat("the receipt is ", r.ByteSizeLong(), " bytes; at most ",
                               kMaxReceiptBytes, " are kept");
    return out;
  }
  if (absl::Status st = VerifyReceiptSignature(r); !st.ok()) {
    out.status = "bad_signature";
    out.problem = std::string(st.message());
    return out;
  }
  if (!key.empty() && r.node_public_key() != key) {
    out.status = "bad_signature";
    out.problem = absl::StrCat("signed by key ", NodeKeyHex(r.node_public_key()).substr(0, 16),
                               ", not the node's ", NodeKeyHex(key).substr(0, 16));
    return out;
  }
  std::vector<std::string> wrong;
  auto same_price = [](double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); };
  if (r.job_id() != job.job_id) wrong.push_back("job_id");
  if (r.gateway_id() != job.gateway_id) wrong.push_back("gateway_id");
  if (r.node_id() != job.orchestrator) wrong.push_back("node_id");
  if (r.pipeline() != job.pipeline) wrong.push_back("pipeline");
  if (r.model_id() != job.reported_model_id) wrong.push_back("model_id");
  if (r.units() != job.reported_units) wrong.push_back("units");
  if (!same_price(r.price_per_unit(), job.reported_price_per_unit)) {
    wrong.push_back("price_per_unit");
  }
  if (r.request_sha256() != job.request_sha256) wrong.push_back("request_sha256");
  if (r.result_sha256() != job.result_sha256) wrong.push_back("result_sha256");
  if (r.end_unix_ms() < r.start_unix_ms()) wrong.push_back("end_unix_ms");
  if (!wrong.empty()) {
    out.status = "mismatch";
    out.problem = absl::StrCat("the receipt's ", absl::StrJoin(wrong, ", "),
                               " differ from what the gateway saw");
    return out;
  }
  out.disputed = false;
  out.status = bound ? "verified" : "verified_unbound";
  return out;
}

bool JobBilling::Settle(const Job& job) {
  std::vector<const char*> disputes;
  const bool units_agree = job.counted.ok() && *job.counted == job.reported_units;
  if (!units_agree) {
    disputes.push_back("units");
    spdlog::warn(
        "[{}] billing mismatch: {} '{}' on {} reported {} units, the gateway counted {}; "
        "not paid",
        job.request_id, job.pipeline, LogSafe(job.model_id), job.orchestrator, job.reported_units,
        job.counted.ok() ? absl::StrCat(*job.counted)
                         : absl::StrCat("none (", job.counted.status().message(), ")"));
  }
  // The price is the one the node advertised when it was picked: what the client agreed to (it
  // was within the cap). What the node reports afterwards is only checked against it.
  double price = 0;
  bool price_disputed = false;
  if (!job.advertised_price_per_unit.has_value() ||
      !metering::ValidPrice(*job.advertised_price_per_unit)) {
    price_disputed = true;
    disputes.push_back("advertised_price");
    spdlog::warn(
        "[{}] billing price dispute: {} '{}' on {} advertised {}; not paid", job.request_id,
        job.pipeline, LogSafe(job.model_id), job.orchestrator,
        job.advertised_price_per_unit.has_value()
            ? absl::StrCat("an invalid price per unit (", *job.advertised_price_per_unit, ")")
            : std::string("no price for it"));
  } else {
    price = *job.advertised_price_per_unit;
    if (job.max_price_per_unit > 0 && price > job.max_price_per_unit) {
      // Not routed to above the cap; a node whose advertised price rose meanwhile is paid the cap.
      price = job.max_price_per_unit;
    }
    // Exact comparison: both are the same double the node sent, unless it changed its report.
    if (!(job.reported_price_per_unit == *job.advertised_price_per_unit)) {
      price_disputed = true;
      disputes.push_back("price");
      spdlog::warn(
          "[{}] billing price dispute: {} '{}' on {} reported {} per unit, it advertised "
          "{} when picked; not paid",
          job.request_id, job.pipeline, LogSafe(job.model_id), job.orchestrator,
          job.reported_price_per_unit, *job.advertised_price_per_unit);
    }
  }
  const ReceiptCheck receipt = CheckReceipt(job);
  if (receipts_ != nullptr && receipt.status != "none") {
    receipts_->Add({{"orchestrator", job.orchestrator}, {"status", receipt.status}}).Increment();
  }
  if (receipt.disputed) {
    disputes.push_back("receipt");
    spdlog::warn("[{}] receipt {}: {} '{}' on {}: {}; not paid", job.request_id, receipt.status,
                 job.pipeline, LogSafe(job.model_id), job.orchestrator,
                 LogSafe(receipt.problem, kLogSafeMaxErrorBytes));
  }
  const int64_t units = job.counted.ok() ? *job.counted : -1;
  double amount = disputes.empty() ? static_cast<double>(units) * price : 0.0;
  if (disputes.empty() && job.max_total_price > 0 && units > 0 && amount > job.max_total_price) {
    // More units than the client was quoted (a quote that was an estimate): the client agreed to
    // pay max_total_price at most, so the node gets that, as a lower price per unit.
    const double within = metering::PriceWithinTotal(job.max_total_price, units);
    spdlog::warn(
        "[{}] billing: {} '{}' on {}: {} units x {} per unit is over the job's max total price "
        "{}; billed {} per unit",
        job.request_id, job.pipeline, LogSafe(job.model_id), job.orchestrator, units, price,
        job.max_total_price, within);
    price = within;
    amount = static_cast<double>(units) * price;
  }
  if (!std::isfinite(amount)) {
    disputes.push_back("amount");
    spdlog::warn(
        "[{}] billing: {} '{}' on {}: {} units x {} per unit is not a finite amount; "
        "not paid",
        job.request_id, job.pipeline, LogSafe(job.model_id), job.orchestrator, units, price);
    amount = 0;
  }
  const bool paid = disputes.empty();
  if (!paid && mismatches_ != nullptr) {
    mismatches_->Add({{"orchestrator", job.orchestrator}, {"pipeline", job.pipeline}}).Increment();
  }
  if (price_disputed && price_disputes_ != nullptr) {
    price_disputes_->Add({{"orchestrator", job.orchestrator}, {"pipeline", job.pipeline}})
        .Increment();
  }
  if (ledger_ == nullptr) return paid;
  UsageRecord r;
  r.job_id = job.job_id;
  r.api_key_id = job.api_key_id;
  r.pipeline = job.pipeline;
  r.model_id = job.model_id;
  r.orchestrator = job.orchestrator;
  r.unit = metering::UnitOf(job.pipeline);
  r.units = units;
  r.reported_units = job.reported_units;
  r.price_per_unit = price;
  r.reported_price_per_unit = job.reported_price_per_unit;
  r.amount = amount;
  r.disputed = !paid;
  r.dispute = absl::StrJoin(disputes, ",");
  r.completed = absl::Now();
  if (job.receipt != nullptr && job.receipt->ByteSizeLong() <= kMaxReceiptBytes) {
    r.receipt = ReceiptToJson(*job.receipt).dump();
  }
  r.receipt_status = receipt.status;
  auto written = ledger_->Record(r);
  if (!written.ok()) {
    spdlog::error("[{}] {} '{}' on {}: not recorded: {}", job.request_id, job.pipeline,
                  LogSafe(job.model_id), job.orchestrator, written.status().ToString());
  } else if (!*written) {
    spdlog::warn("[{}] job {} was already in the usage ledger; not counted again", job.request_id,
                 job.job_id);
  }
  return paid;
}

}  // namespace switchyard::gateway
