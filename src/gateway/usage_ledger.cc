#include "gateway/usage_ledger.h"

#include <sqlite3.h>
#include <spdlog/spdlog.h>

#include <limits>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/metering.h"

namespace switchyard::gateway {
namespace {

constexpr int kSchemaVersion = 1;

// The ledger's schema; `usage` holds one row per completed job.
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
  completed_unix_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_key_time ON usage (api_key_id, completed_unix_ms);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (completed_unix_ms);
)sql";

// A prepared statement, finalized when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
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

absl::Status SqlError(sqlite3* db, const std::filesystem::path& path, absl::string_view what) {
  return absl::UnavailableError(
      absl::StrCat("usage ledger ", path.string(), ": ", what, ": ", sqlite3_errmsg(db)));
}

int64_t UnixMs(absl::Time t) {
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  if (t == absl::InfiniteFuture()) return std::numeric_limits<int64_t>::max();
  return absl::ToUnixMillis(t);
}

// Runs `select` (columns and FROM), filtered to the query's time window and, unless all_keys,
// its API key, then `order_by`; `read` turns each result row into a Row.
template <typename Row, typename ReadRow>
absl::StatusOr<std::vector<Row>> Select(sqlite3* db, const std::filesystem::path& path,
                                        absl::string_view select, const UsageQuery& q,
                                        absl::string_view order_by, const ReadRow& read) {
  const std::string sql = absl::StrCat(
      select, " WHERE completed_unix_ms >= ? AND completed_unix_ms < ? AND (? OR api_key_id = ?) ",
      order_by);
  Statement st(db, sql.c_str());
  if (!st.ok()) return SqlError(db, path, "cannot prepare the query");
  st.Int(1, UnixMs(q.since));
  st.Int(2, UnixMs(q.until));
  st.Int(3, q.all_keys ? 1 : 0);
  st.Text(4, q.api_key_id);
  std::vector<Row> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) out.push_back(read(st));
  if (rc != SQLITE_DONE) return SqlError(db, path, "cannot read the query's rows");
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UsageLedger>> UsageLedger::Open(const std::filesystem::path& path) {
  if (path.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("usage ledger ", path.string(),
                                                 ": cannot create its directory: ", ec.message()));
    }
  }
  std::unique_ptr<UsageLedger> ledger(new UsageLedger(path));
  std::lock_guard<std::mutex> lock(ledger->mu_);
  sqlite3*& db = ledger->db_;
  // FULLMUTEX: one connection, used under mu_ anyway.
  if (sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    return SqlError(db, path, "cannot open");
  }
  sqlite3_busy_timeout(db, 5000);
  // WAL: a commit is one append and fsync of the log; synchronous=FULL: the fsync happens before
  // each commit returns, so a committed row survives a crash (and power loss).
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"}) {
    Statement st(db, pragma);
    if (!st.ok()) return SqlError(db, path, pragma);
    int rc = sqlite3_step(st.get());
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqlError(db, path, pragma);
    if (rc == SQLITE_ROW && std::string(pragma) == "PRAGMA journal_mode=WAL" &&
        st.ColumnText(0) != "wal") {
      return absl::UnavailableError(absl::StrCat("usage ledger ", path.string(),
                                                 ": cannot use WAL mode (got '", st.ColumnText(0),
                                                 "'); is it on a network filesystem?"));
    }
  }
  {
    Statement version(db, "PRAGMA user_version");
    if (!version.ok() || sqlite3_step(version.get()) != SQLITE_ROW) {
      return SqlError(db, path, "not a database");
    }
    const int64_t v = sqlite3_column_int64(version.get(), 0);
    if (v != 0 && v != kSchemaVersion) {
      return absl::UnavailableError(absl::StrCat("usage ledger ", path.string(),
                                                 ": schema version ", v, ", this gateway knows ",
                                                 kSchemaVersion));
    }
  }
  char* error = nullptr;
  if (sqlite3_exec(db, kSchema, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error != nullptr ? error : "unknown error";
    sqlite3_free(error);
    return absl::UnavailableError(
        absl::StrCat("usage ledger ", path.string(), ": cannot create the schema: ", message));
  }
  if (sqlite3_exec(db, absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str(), nullptr,
                   nullptr, nullptr) != SQLITE_OK) {
    return SqlError(db, path, "cannot set the schema version");
  }
  return ledger;
}

UsageLedger::~UsageLedger() {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_close_v2(db_);
}

absl::StatusOr<bool> UsageLedger::Record(const UsageRecord& r) {
  if (r.job_id.empty()) return absl::InvalidArgumentError("usage record without a job id");
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_,
               "INSERT OR IGNORE INTO usage (job_id, api_key_id, pipeline, model_id, orchestrator, "
               "unit, units, reported_units, price_per_unit, amount, status, completed_unix_ms) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!st.ok()) return SqlError(db_, path_, "cannot prepare the insert");
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
  if (sqlite3_step(st.get()) != SQLITE_DONE) return SqlError(db_, path_, "cannot write a row");
  return sqlite3_changes(db_) == 1;
}

absl::StatusOr<std::vector<UsageTotals>> UsageLedger::Totals(const UsageQuery& q) {
  std::lock_guard<std::mutex> lock(mu_);
  return Select<UsageTotals>(
      db_, path_,
      "SELECT api_key_id, pipeline, model_id, MAX(unit), COUNT(*), SUM(MAX(units, 0)), "
      "SUM(amount), SUM(status = 'disputed') FROM usage",
      q, "GROUP BY api_key_id, pipeline, model_id ORDER BY api_key_id, pipeline, model_id",
      [](const Statement& st) {
        UsageTotals t;
        t.api_key_id = st.ColumnText(0);
        t.pipeline = st.ColumnText(1);
        t.model_id = st.ColumnText(2);
        t.unit = st.ColumnText(3);
        t.jobs = sqlite3_column_int64(st.get(), 4);
        t.units = sqlite3_column_int64(st.get(), 5);
        t.amount = sqlite3_column_double(st.get(), 6);
        t.disputed_jobs = sqlite3_column_int64(st.get(), 7);
        return t;
      });
}

absl::StatusOr<std::vector<UsageRecord>> UsageLedger::Rows(const UsageQuery& q) {
  std::lock_guard<std::mutex> lock(mu_);
  return Select<UsageRecord>(
      db_, path_,
      "SELECT job_id, api_key_id, pipeline, model_id, orchestrator, unit, units, "
      "reported_units, price_per_unit, amount, status, completed_unix_ms FROM usage",
      q, "ORDER BY completed_unix_ms, job_id", [](const Statement& st) {
        UsageRecord r;
        r.job_id = st.ColumnText(0);
        r.api_key_id = st.ColumnText(1);
        r.pipeline = st.ColumnText(2);
        r.model_id = st.ColumnText(3);
        r.orchestrator = st.ColumnText(4);
        r.unit = st.ColumnText(5);
        r.units = sqlite3_column_int64(st.get(), 6);
        r.reported_units = sqlite3_column_int64(st.get(), 7);
        r.price_per_unit = sqlite3_column_double(st.get(), 8);
        r.amount = sqlite3_column_double(st.get(), 9);
        r.disputed = st.ColumnText(10) == "disputed";
        r.completed = absl::FromUnixMillis(sqlite3_column_int64(st.get(), 11));
        return r;
      });
}

JobBilling::JobBilling(UsageLedger* ledger, Metrics* metrics) : ledger_(ledger) {
  if (metrics != nullptr) {
    mismatches_ = &prometheus::BuildCounter()
                       .Name(metrics->prefix() + "billing_mismatches_total")
                       .Help("Completed jobs whose orchestrator reported other units than the "
                             "gateway counted (not paid), by orchestrator and pipeline.")
                       .Register(metrics->registry());
  }
}

bool JobBilling::Settle(const Job& job) {
  const bool paid = job.counted.ok() && *job.counted == job.reported_units;
  if (!paid) {
    spdlog::warn("[{}] billing mismatch: {} '{}' on {} reported {} units, the gateway counted {}; "
                 "not paid",
                 job.request_id, job.pipeline, job.model_id, job.orchestrator, job.reported_units,
                 job.counted.ok() ? absl::StrCat(*job.counted)
                                  : absl::StrCat("none (", job.counted.status().message(), ")"));
    if (mismatches_ != nullptr) {
      mismatches_->Add({{"orchestrator", job.orchestrator}, {"pipeline", job.pipeline}})
          .Increment();
    }
  }
  if (ledger_ == nullptr) return paid;
  UsageRecord r;
  r.job_id = job.job_id;
  r.api_key_id = job.api_key_id;
  r.pipeline = job.pipeline;
  r.model_id = job.model_id;
  r.orchestrator = job.orchestrator;
  r.unit = metering::UnitOf(job.pipeline);
  r.units = job.counted.ok() ? *job.counted : -1;
  r.reported_units = job.reported_units;
  r.price_per_unit = job.price_per_unit;
  r.amount = paid ? static_cast<double>(r.units) * job.price_per_unit : 0.0;
  r.disputed = !paid;
  r.completed = absl::Now();
  auto written = ledger_->Record(r);
  if (!written.ok()) {
    spdlog::error("[{}] {} '{}' on {}: not recorded: {}", job.request_id, job.pipeline,
                  job.model_id, job.orchestrator, written.status().ToString());
  } else if (!*written) {
    spdlog::warn("[{}] job {} was already in the usage ledger; not counted again", job.request_id,
                 job.job_id);
  }
  return paid;
}

}  // namespace switchyard::gateway
