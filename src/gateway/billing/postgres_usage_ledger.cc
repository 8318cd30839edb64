#include "gateway/billing/postgres_usage_ledger.h"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/status.h"

namespace switchyard::gateway {
namespace {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// The columns of one row, in the order of kColumns.
constexpr int kColumnCount = 16;
constexpr const char* kColumns =
    "job_id, api_key_id, pipeline, model_id, orchestrator, unit, units, reported_units, "
    "price_per_unit, amount, status, completed_unix_ms, reported_price_per_unit, dispute, "
    "receipt, receipt_status";

// The same columns and constraints as the SQLite ledger's `usage` (usage_ledger.cc). The advisory
// lock serializes gateways that start at once: concurrent CREATE TABLE IF NOT EXISTS can fail on
// PostgreSQL's catalog. The number is arbitrary, fixed: "SwYd" in ASCII.
constexpr const char* kSchema = R"sql(
BEGIN;
SELECT pg_advisory_xact_lock(1400330596);
CREATE TABLE IF NOT EXISTS switchyard_usage (
  job_id TEXT PRIMARY KEY NOT NULL,
  api_key_id TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  model_id TEXT NOT NULL,
  orchestrator TEXT NOT NULL,
  unit TEXT NOT NULL,
  units BIGINT NOT NULL,
  reported_units BIGINT NOT NULL,
  price_per_unit DOUBLE PRECISION NOT NULL,
  amount DOUBLE PRECISION NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('paid', 'disputed')),
  completed_unix_ms BIGINT NOT NULL,
  reported_price_per_unit DOUBLE PRECISION,
  dispute TEXT NOT NULL DEFAULT '',
  receipt TEXT NOT NULL DEFAULT '',
  receipt_status TEXT NOT NULL DEFAULT 'none'
);
-- Tables from before receipts (rows kept, with receipt_status 'none').
ALTER TABLE switchyard_usage ADD COLUMN IF NOT EXISTS receipt TEXT NOT NULL DEFAULT '';
ALTER TABLE switchyard_usage ADD COLUMN IF NOT EXISTS receipt_status TEXT NOT NULL DEFAULT 'none';
CREATE INDEX IF NOT EXISTS switchyard_usage_by_key_time
  ON switchyard_usage (api_key_id, completed_unix_ms);
CREATE INDEX IF NOT EXISTS switchyard_usage_by_time ON switchyard_usage (completed_unix_ms);
COMMIT;
)sql";

// libpq's messages span lines ("...\n\tThis probably means..."): one line for the logs.
std::string OneLine(absl::string_view message) {
  std::string out(absl::StripAsciiWhitespace(message));
  for (char& c : out) {
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  }
  return out;
}

std::string ErrorOf(PGconn* conn) { return OneLine(PQerrorMessage(conn)); }

// A double as PostgreSQL's float8 input reads it back exactly.
std::string DoubleText(double v) {
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return absl::StrFormat("%.17g", v);
}

double ParseDouble(const char* text) {
  const absl::string_view t(text);
  if (t == "Infinity") return std::numeric_limits<double>::infinity();
  if (t == "-Infinity") return -std::numeric_limits<double>::infinity();
  double v = std::numeric_limits<double>::quiet_NaN();
  if (t != "NaN" && !absl::SimpleAtod(t, &v)) v = std::numeric_limits<double>::quiet_NaN();
  return v;
}

int64_t ParseInt(const char* text) {
  int64_t v = 0;
  return absl::SimpleAtoi(text, &v) ? v : 0;
}

int64_t UnixMs(absl::Time t) {
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  if (t == absl::InfiniteFuture()) return std::numeric_limits<int64_t>::max();
  return absl::ToUnixMillis(t);
}

// Whether `s` is UTF-8 PostgreSQL stores as text: well formed, no NUL byte (libpq passes text
// parameters as C strings), no surrogates or overlong forms.
bool StorableText(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    int n = 0;
    uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // cut short
    for (int k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// Waits until `conn`'s socket is ready for `events` or `deadline` passes.
absl::Status WaitSocket(PGconn* conn, short events, absl::Time deadline, absl::string_view what) {
  const int fd = PQsocket(conn);
  if (fd < 0) return absl::UnavailableError(absl::StrCat(what, ": no socket"));
  while (true) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": no answer in time"));
    }
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (rc > 0) return absl::OkStatus();
    if (rc < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat(what, ": poll: ", std::strerror(errno)));
    }
  }
}

// Runs `sql` (with `params` when not null: one statement, extended protocol) and returns its last
// result, or UNAVAILABLE / DEADLINE_EXCEEDED with PostgreSQL's message. Bounded by `deadline` on
// this side: a server that stopped answering does not hold the caller.
absl::StatusOr<Result> Run(PGconn* conn, const std::string& sql,
                           const std::vector<const char*>* params, absl::Time deadline) {
  const int sent = params == nullptr
                       ? PQsendQuery(conn, sql.c_str())
                       : PQsendQueryParams(conn, sql.c_str(), static_cast<int>(params->size()),
                                           nullptr, params->data(), nullptr, nullptr, 0);
  if (sent == 0) return absl::UnavailableError(ErrorOf(conn));
  Result last, error;
  while (true) {
    while (PQisBusy(conn) != 0) {
      SY_RETURN_IF_ERROR(WaitSocket(conn, POLLIN, deadline, "PostgreSQL"));
      if (PQconsumeInput(conn) == 0) return absl::UnavailableError(ErrorOf(conn));
    }
    Result r(PQgetResult(conn));
    if (r == nullptr) break;
    const ExecStatusType st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && error == nullptr) {
      error = std::move(r);
    } else {
      last = std::move(r);
    }
  }
  if (error != nullptr) {
    return absl::UnavailableError(OneLine(PQresultErrorMessage(error.get())));
  }
  if (last == nullptr) return absl::UnavailableError("PostgreSQL answered nothing");
  return last;
}

// Inserts `rows` in one statement (one commit). For each row, in order: true when written, false
// when its job id was already there (or earlier in `rows`).
absl::StatusOr<std::vector<bool>> InsertRows(PGconn* conn,
                                             const std::vector<const UsageRecord*>& rows,
                                             absl::Time deadline) {
  std::string sql =
      absl::StrCat("INSERT INTO ", PostgresUsageLedger::kTable, " (", kColumns, ") VALUES ");
  std::vector<std::string> text;
  text.reserve(rows.size() * kColumnCount);
  std::vector<bool> is_null;
  is_null.reserve(rows.size() * kColumnCount);
  // In job id order: concurrent batches that share ids then take the unique index's row locks in
  // the same order, so they wait for each other instead of deadlocking (seen with 4 writers).
  std::vector<size_t> order(rows.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return rows[a]->job_id < rows[b]->job_id; });
  for (size_t i = 0; i < rows.size(); ++i) {
    const UsageRecord& r = *rows[order[i]];
    absl::StrAppend(&sql, i == 0 ? "(" : ", (");
    for (int c = 0; c < kColumnCount; ++c) {
      absl::StrAppend(&sql, c == 0 ? "" : ", ", "$", i * kColumnCount + c + 1);
    }
    absl::StrAppend(&sql, ")");
    for (const std::string* s :
         {&r.job_id, &r.api_key_id, &r.pipeline, &r.model_id, &r.orchestrator, &r.unit}) {
      text.push_back(*s);
    }
    text.push_back(absl::StrCat(r.units));
    text.push_back(absl::StrCat(r.reported_units));
    text.push_back(DoubleText(r.price_per_unit));
    text.push_back(DoubleText(r.amount));
    text.push_back(r.disputed ? "disputed" : "paid");
    text.push_back(absl::StrCat(absl::ToUnixMillis(r.completed)));
    text.push_back(std::isnan(r.reported_price_per_unit) ? ""
                                                         : DoubleText(r.reported_price_per_unit));
    text.push_back(r.dispute);
    text.push_back(r.receipt);
    text.push_back(r.receipt_status);
    for (int c = 0; c < kColumnCount; ++c) is_null.push_back(false);
    is_null[is_null.size() - 4] = std::isnan(r.reported_price_per_unit);
  }
  absl::StrAppend(&sql, " ON CONFLICT (job_id) DO NOTHING RETURNING job_id");
  std::vector<const char*> params(text.size());
  for (size_t i = 0; i < text.size(); ++i) params[i] = is_null[i] ? nullptr : text[i].c_str();
  auto result = Run(conn, sql, &params, deadline);
  if (!result.ok()) return result.status();
  std::multiset<std::string> inserted;
  for (int i = 0; i < PQntuples(result->get()); ++i) {
    inserted.insert(PQgetvalue(result->get(), i, 0));
  }
  std::vector<bool> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    // The first row of a job id in the batch is the one written.
    auto it = inserted.find(rows[i]->job_id);
    out[i] = it != inserted.end();
    if (out[i]) inserted.erase(it);
  }
  return out;
}

UsageRecord ReadRecord(PGresult* r, int row) {
  int c = 0;
  auto text = [&] { return std::string(PQgetvalue(r, row, c++)); };
  UsageRecord u;
  u.job_id = text();
  u.api_key_id = text();
  u.pipeline = text();
  u.model_id = text();
  u.orchestrator = text();
  u.unit = text();
  u.units = ParseInt(PQgetvalue(r, row, c++));
  u.reported_units = ParseInt(PQgetvalue(r, row, c++));
  u.price_per_unit = ParseDouble(PQgetvalue(r, row, c++));
  u.amount = ParseDouble(PQgetvalue(r, row, c++));
  u.disputed = text() == "disputed";
  u.completed = absl::FromUnixMillis(ParseInt(PQgetvalue(r, row, c++)));
  u.reported_price_per_unit = PQgetisnull(r, row, c) != 0 ? std::numeric_limits<double>::quiet_NaN()
                                                          : ParseDouble(PQgetvalue(r, row, c));
  ++c;
  u.dispute = text();
  u.receipt = text();
  u.receipt_status = text();
  return u;
}

UsageTotals ReadTotals(PGresult* r, int row) {
  UsageTotals t;
  t.api_key_id = PQgetvalue(r, row, 0);
  t.pipeline = PQgetvalue(r, row, 1);
  t.model_id = PQgetvalue(r, row, 2);
  t.unit = PQgetvalue(r, row, 3);
  t.jobs = ParseInt(PQgetvalue(r, row, 4));
  t.units = ParseInt(PQgetvalue(r, row, 5));
  t.amount = ParseDouble(PQgetvalue(r, row, 6));
  t.disputed_jobs = ParseInt(PQgetvalue(r, row, 7));
  return t;
}

}  // namespace

absl::Status ValidatePostgresDsn(const std::string& dsn) {
  if (!absl::StartsWith(dsn, "postgresql://") && !absl::StartsWith(dsn, "postgres://")) {
    return absl::InvalidArgumentError("must be a postgresql://USER@HOST:PORT/DB connection URI");
  }
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error);
  if (options == nullptr) {
    std::string message = error != nullptr ? error : "out of memory";
    PQfreemem(error);
    return absl::InvalidArgumentError(absl::StrCat("is not a connection URI libpq accepts: ",
                                                   absl::StripTrailingAsciiWhitespace(message)));
  }
  absl::Status st;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0') continue;
    const absl::string_view key = o->keyword;
    if (key == "password" || key == "sslpassword") {
      st = absl::InvalidArgumentError(
          absl::StrCat("must not carry a password (", key, "): put it in password_file"));
    }
  }
  PQconninfoFree(options);
  return st;
}

void PostgresUsageLedger::ConnDeleter::operator()(pg_conn* conn) const { PQfinish(conn); }

absl::StatusOr<std::unique_ptr<PostgresUsageLedger>> PostgresUsageLedger::Create(
    PostgresLedgerOptions options, Metrics* metrics) {
  if (absl::Status st = ValidatePostgresDsn(options.dsn); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("usage ledger dsn ", st.message()));
  }
  if (options.journal.empty()) {
    return absl::InvalidArgumentError("usage ledger: PostgreSQL needs a journal path");
  }
  for (absl::Duration d :
       {options.connect_timeout, options.statement_timeout, options.retry_interval}) {
    if (d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("usage ledger: timeouts and intervals must be > 0");
    }
  }
  if (options.writers < 1 || options.writers > 16) {
    return absl::InvalidArgumentError("usage ledger: writers must be 1..16");
  }
  auto journal = SqliteUsageLedger::Open(options.journal);
  if (!journal.ok()) return journal.status();
  std::unique_ptr<PostgresUsageLedger> ledger(
      new PostgresUsageLedger(std::move(options), *std::move(journal), metrics));
  // One try now, for the start-up log and the table; the gateway starts without PostgreSQL too.
  auto conn = ledger->Connect();
  if (conn.ok()) {
    ledger->first_conn_ = *std::move(conn);
    spdlog::info("usage ledger: {}", ledger->Describe());
  } else if (absl::IsPermissionDenied(conn.status()) || absl::IsNotFound(conn.status())) {
    return absl::Status(conn.status().code(), absl::StrCat("usage ledger ", ledger->Describe(),
                                                           ": ", conn.status().message()));
  } else {
    ledger->EnterOutage(conn.status());
  }
  if (auto left = ledger->journal_->Count(); left.ok() && *left > 0) {
    spdlog::info("usage ledger: {} job(s) left in the journal {}; replaying them", *left,
                 ledger->options_.journal.string());
  }
  // Commit::kLocal: the replay thread is the only writer into PostgreSQL.
  const int writers = ledger->options_.commit == PostgresLedgerOptions::Commit::kLocal
                          ? 0
                          : ledger->options_.writers;
  if (writers == 0 && ledger->first_conn_ != nullptr) {
    ledger->replay_conn_ = std::move(ledger->first_conn_);
  }
  for (int i = 0; i < writers; ++i) {
    ledger->writers_.emplace_back(
        [l = ledger.get(), conn = i == 0 ? std::move(ledger->first_conn_) : Conn()]() mutable {
          l->WriterLoop(std::move(conn));
        });
  }
  ledger->replayer_ = std::thread([l = ledger.get()] { l->ReplayLoop(); });
  return ledger;
}

PostgresUsageLedger::PostgresUsageLedger(PostgresLedgerOptions options,
                                         std::unique_ptr<SqliteUsageLedger> journal,
                                         Metrics* metrics)
    : options_(std::move(options)), journal_(std::move(journal)) {
  if (metrics != nullptr) {
    journaled_metric_ =
        &metrics
             ->CounterFamily("usage_ledger_journaled_total",
                             "Completed jobs recorded in the gateway's local journal because "
                             "PostgreSQL (usage_ledger) could not be reached.")
             .Add({});
    replayed_metric_ = &metrics
                            ->CounterFamily("usage_ledger_replayed_total",
                                            "Journaled jobs replayed into PostgreSQL.")
                            .Add({});
    outages_metric_ =
        &metrics
             ->CounterFamily("usage_ledger_fallbacks_total",
                             "Switches of the usage ledger from PostgreSQL to the local journal "
                             "(PostgreSQL could not be reached or a write failed).")
             .Add({});
  }
}

PostgresUsageLedger::~PostgresUsageLedger() {
  {
    MutexLock lock(&mu_);
    closing_ = true;
  }
  queue_cv_.SignalAll();
  // The writer answers every queued row (written, or handed back for the journal) before it ends.
  for (auto& writer : writers_) writer.join();
  {
    MutexLock lock(&flush_mu_);
    stop_replay_ = true;
  }
  flush_cv_.SignalAll();
  if (replayer_.joinable()) replayer_.join();
  {
    // Callers writing to the journal finish before it closes.
    MutexLock lock(&mu_);
    done_cv_.Wait(&mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return callers_ == 0; });
  }
  journal_.reset();
}

std::string PostgresUsageLedger::Describe() const {
  // The DSN holds no password (ValidatePostgresDsn).
  return absl::StrCat("PostgreSQL ", options_.dsn, " (journal ", options_.journal.string(), ")");
}

absl::StatusOr<PostgresUsageLedger::Conn> PostgresUsageLedger::Connect() const {
  // client_min_messages: no NOTICE ("relation ... already exists") on libpq's stderr.
  const std::string options =
      absl::StrCat("-c statement_timeout=", absl::ToInt64Milliseconds(options_.statement_timeout),
                   " -c client_min_messages=warning");
  // A peer that vanished (no RST) is noticed after this long with data unacknowledged.
  const std::string tcp_user_timeout = absl::StrCat(
      absl::ToInt64Milliseconds(options_.statement_timeout + options_.connect_timeout));
  const char* keys[] = {
      "dbname",           "password", "application_name", "client_encoding", "options",
      "tcp_user_timeout", nullptr};
  const char* values[] = {options_.dsn.c_str(),
                          options_.password.empty() ? nullptr : options_.password.c_str(),
                          "switchyard-gateway",
                          "UTF8",
                          options.c_str(),
                          tcp_user_timeout.c_str(),
                          nullptr};
  // The asynchronous connect, for a timeout in milliseconds (libpq's connect_timeout has whole
  // seconds, at least 2).
  Conn conn(PQconnectStartParams(keys, values, /*expand_dbname=*/1));
  if (conn == nullptr) return absl::UnavailableError("PostgreSQL: out of memory");
  // The server's notices and warnings ("terminating connection due to ... shutdown") go to the
  // gateway's log, not to libpq's default stderr.
  PQsetNoticeProcessor(
      conn.get(),
      [](void*, const char* message) { spdlog::debug("PostgreSQL: {}", OneLine(message)); },
      nullptr);
  if (PQstatus(conn.get()) == CONNECTION_BAD) {
    return absl::UnavailableError(absl::StrCat("cannot connect: ", ErrorOf(conn.get())));
  }
  const absl::Time deadline = absl::Now() + options_.connect_timeout;
  PostgresPollingStatusType poll = PGRES_POLLING_WRITING;
  while (poll != PGRES_POLLING_OK) {
    if (poll == PGRES_POLLING_FAILED) {
      const std::string error = ErrorOf(conn.get());
      // Refusals a retry does not cure (Create fails on them; later they count as an outage).
      if (PQconnectionNeedsPassword(conn.get()) != 0) {
        return absl::PermissionDeniedError(absl::StrCat(
            "cannot connect: the server needs a password (set password_file): ", error));
      }
      if (absl::StrContains(error, "authentication failed")) {
        return absl::PermissionDeniedError(absl::StrCat("cannot connect: ", error));
      }
      if (absl::StrContains(error, "does not exist")) {
        return absl::NotFoundError(absl::StrCat("cannot connect: ", error));
      }
      return absl::UnavailableError(absl::StrCat("cannot connect: ", error));
    }
    if (absl::Status st = WaitSocket(conn.get(), poll == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                                     deadline, "cannot connect");
        !st.ok()) {
      return absl::UnavailableError(
          absl::StrCat(st.message(), " (connect_timeout_ms ",
                       absl::ToInt64Milliseconds(options_.connect_timeout), ")"));
    }
    poll = PQconnectPoll(conn.get());
  }
  auto schema = Run(conn.get(), kSchema, nullptr, absl::Now() + options_.statement_timeout);
  if (!schema.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot create table ", kTable, ": ", schema.status().message()));
  }
  return conn;
}

absl::StatusOr<bool> PostgresUsageLedger::Record(const UsageRecord& r) {
  SY_RETURN_IF_ERROR(ValidateUsageRecord(r));
  for (const std::string* s : {&r.job_id, &r.api_key_id, &r.pipeline, &r.model_id, &r.orchestrator,
                               &r.unit, &r.dispute, &r.receipt, &r.receipt_status}) {
    if (!StorableText(*s)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "usage record ",
          r.job_id.size() <= 128 && StorableText(r.job_id) ? r.job_id
                                                           : std::string("(unprintable job id)"),
          ": a text field holds a NUL byte or invalid UTF-8"));
    }
  }
  if (options_.commit == PostgresLedgerOptions::Commit::kLocal) return RecordLocally(r);
  Pending pending{&r};
  {
    MutexLock lock(&mu_);
    if (closing_)
      return absl::UnavailableError(absl::StrCat("usage ledger ", Describe(), " is closing"));
    ++callers_;
    if (outage_) {
      // Known down: no connect timeout per job, straight to the journal.
      pending.journal = true;
    } else {
      queue_.push_back(&pending);
      queue_cv_.Signal();
      done_cv_.Wait(&mu_, [&pending] { return pending.done; });
    }
  }
  absl::StatusOr<bool> result = pending.journal ? Journal(r) : pending.written;
  MutexLock lock(&mu_);
  if (--callers_ == 0 && closing_) done_cv_.SignalAll();
  return result;
}

absl::StatusOr<bool> PostgresUsageLedger::RecordLocally(const UsageRecord& r) {
  bool outage = false;
  {
    MutexLock lock(&mu_);
    if (closing_)
      return absl::UnavailableError(absl::StrCat("usage ledger ", Describe(), " is closing"));
    ++callers_;
    outage = outage_;
  }
  absl::StatusOr<bool> result = outage ? Journal(r) : journal_->Record(r);
  if (result.ok() && *result) RequestReplay(/*wait=*/false);
  MutexLock lock(&mu_);
  if (--callers_ == 0 && closing_) done_cv_.SignalAll();
  return result;
}

void PostgresUsageLedger::RequestReplay(bool wait) {
  MutexLock lock(&flush_mu_);
  const uint64_t wanted = ++replay_wanted_;
  flush_cv_.SignalAll();
  if (!wait) return;
  ++readers_waiting_;
  flush_cv_.WaitFor(&flush_mu_, absl::ToChronoMilliseconds(options_.statement_timeout),
                    [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flush_mu_) {
                      return replay_done_ >= wanted || stop_replay_;
                    });
  --readers_waiting_;
}

absl::StatusOr<bool> PostgresUsageLedger::Journal(const UsageRecord& r) {
  auto written = journal_->Record(r);
  if (written.ok() && *written) {
    journaled_++;
    if (journaled_metric_ != nullptr) journaled_metric_->Increment();
  }
  return written;
}

bool PostgresUsageLedger::journaling() const {
  MutexLock lock(&mu_);
  return outage_;
}

void PostgresUsageLedger::EnterOutage(const absl::Status& why) {
  MutexLock lock(&mu_);
  if (outage_) return;
  outage_ = true;
  if (outages_metric_ != nullptr) outages_metric_->Increment();
  spdlog::warn(
      "usage ledger: {}: {}; recording completed jobs in the journal {} until PostgreSQL "
      "answers again (then replayed)",
      Describe(), std::string(why.message()), options_.journal.string());
}

void PostgresUsageLedger::WriterLoop(Conn pg) {
  mu_.Lock();
  while (true) {
    queue_cv_.Wait(
        &mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closing_ || !queue_.empty(); });
    if (queue_.empty()) break;  // closing, and every queued row answered
    std::vector<Pending*> batch;
    while (!queue_.empty() && batch.size() < kMaxBatch) {
      batch.push_back(queue_.front());
      queue_.pop_front();
    }
    mu_.Unlock();
    std::vector<const UsageRecord*> rows;
    rows.reserve(batch.size());
    for (Pending* p : batch) rows.push_back(p->record);
    absl::StatusOr<std::vector<bool>> written = absl::UnavailableError("not connected");
    // Twice at most: a connection PostgreSQL dropped while this writer was idle (a restart) is
    // only noticed when used, and a fresh one may work. A failure on a live connection (a
    // timeout, an error) is not retried.
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (pg == nullptr) {
        auto conn = Connect();
        if (!conn.ok()) {
          written = conn.status();
          break;
        }
        pg = *std::move(conn);
      }
      written = InsertRows(pg.get(), rows, absl::Now() + options_.statement_timeout);
      if (written.ok()) {
        batches_++;
        break;
      }
      const bool dropped = PQstatus(pg.get()) == CONNECTION_BAD;
      pg.reset();  // whatever went wrong, the next batch starts on a fresh connection
      if (!dropped) break;
    }
    // Every row of a failed batch goes to the journal, also one whose commit may have happened
    // (its answer was lost): the replay's ON CONFLICT counts it once.
    if (!written.ok()) EnterOutage(written.status());
    mu_.Lock();
    for (size_t i = 0; i < batch.size(); ++i) {
      if (written.ok()) {
        batch[i]->written = (*written)[i];
      } else {
        batch[i]->journal = true;
      }
      batch[i]->done = true;
    }
    done_cv_.SignalAll();
  }
  mu_.Unlock();
}

void PostgresUsageLedger::ReplayLoop() {
  const bool local = options_.commit == PostgresLedgerOptions::Commit::kLocal;
  uint64_t round = 0;  // the wake-ups this round serves
  while (true) {
    if (local) {
      CopyOnce();
    } else {
      ReplayOnce();
    }
    // While PostgreSQL is down, retry every retry_interval whatever wakes the thread (each job
    // would otherwise pay a connect attempt).
    const bool wake_on_rows = local && !journaling();
    MutexLock lock(&flush_mu_);
    replay_done_ = round;
    flush_cv_.SignalAll();
    flush_cv_.WaitFor(&flush_mu_, absl::ToChronoMilliseconds(options_.retry_interval),
                      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flush_mu_) {
                        return stop_replay_ || (wake_on_rows && replay_wanted_ > round);
                      });
    if (!stop_replay_ && wake_on_rows && readers_waiting_ == 0) {
      flush_cv_.WaitFor(&flush_mu_, absl::ToChronoMilliseconds(kCopyDelay),
                        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flush_mu_) {
                          return stop_replay_ || readers_waiting_ > 0;
                        });
    }
    if (stop_replay_) break;
    round = replay_wanted_;
  }
  // Commit::kLocal: what was journaled last goes to PostgreSQL now if it answers (rows it cannot
  // take stay in the journal, replayed at the next start).
  if (local && !journaling()) CopyOnce();
}

void PostgresUsageLedger::CopyOnce() {
  if (replay_conn_ == nullptr) {
    auto conn = Connect();
    if (!conn.ok()) {
      EnterOutage(conn.status());
      spdlog::debug("usage ledger: PostgreSQL still unreachable: {}",
                    std::string(conn.status().message()));
      return;
    }
    replay_conn_ = *std::move(conn);
  }
  int64_t copied = 0;
  // Bounded: each round copies later rows than the last, and the journal holds finitely many.
  for (int round = 0; round < 100000; ++round) {
    auto rows = journal_->After(copied_through_, kMaxBatch);
    if (!rows.ok()) {
      spdlog::error("usage ledger: cannot read the journal: {}",
                    std::string(rows.status().message()));
      return;
    }
    if (rows->empty()) break;
    std::vector<const UsageRecord*> ptrs;
    ptrs.reserve(rows->size());
    for (const auto& row : *rows) ptrs.push_back(&row.record);
    auto written = InsertRows(replay_conn_.get(), ptrs, absl::Now() + options_.statement_timeout);
    if (!written.ok() && PQstatus(replay_conn_.get()) == CONNECTION_BAD) {
      // A connection PostgreSQL dropped while idle (a restart) is only noticed when used: one
      // more try on a fresh one before calling it an outage.
      replay_conn_.reset();
      auto conn = Connect();
      if (!conn.ok()) {
        written = conn.status();
      } else {
        replay_conn_ = *std::move(conn);
        written = InsertRows(replay_conn_.get(), ptrs, absl::Now() + options_.statement_timeout);
      }
    }
    if (!written.ok()) {
      // The rows stay in the journal; the next round (after retry_interval) copies them again.
      replay_conn_.reset();
      EnterOutage(written.status());
      return;
    }
    copied_through_ = rows->back().number;
    copied += static_cast<int64_t>(rows->size());
    replayed_ += rows->size();
    if (replayed_metric_ != nullptr) replayed_metric_->Increment(static_cast<double>(rows->size()));
    if (rows->size() < kMaxBatch) break;
  }
  // Copied rows leave the journal many at a time (one commit, one fsync), not one delete per job.
  const absl::Time now = absl::Now();
  if (copied_through_ > trimmed_below_ && now - last_trim_ >= options_.retry_interval) {
    auto removed = journal_->RemoveBelow(copied_through_);
    if (removed.ok()) {
      trimmed_below_ = copied_through_;
      last_trim_ = now;
    } else {
      spdlog::error("usage ledger: cannot remove copied rows from the journal: {}",
                    std::string(removed.status().message()));
    }
  }
  MutexLock lock(&mu_);
  if (outage_) {
    outage_ = false;
    spdlog::info("usage ledger: {} answers again: {} journaled job(s) copied", Describe(), copied);
  }
}

void PostgresUsageLedger::ReplayOnce() {
  auto left = journal_->Count();
  if (!left.ok()) {
    spdlog::error("usage ledger: cannot read the journal: {}",
                  std::string(left.status().message()));
    return;
  }
  if (*left == 0 && !journaling()) return;
  if (replay_conn_ == nullptr) {
    auto conn = Connect();
    if (!conn.ok()) {
      if (options_.commit == PostgresLedgerOptions::Commit::kLocal) EnterOutage(conn.status());
      spdlog::debug("usage ledger: PostgreSQL still unreachable: {}",
                    std::string(conn.status().message()));
      return;
    }
    replay_conn_ = *std::move(conn);
  }
  int64_t replayed = 0;
  // Bounded: the journal only shrinks here, and the loop stops for the destructor.
  for (int round = 0; round < 100000; ++round) {
    auto rows = journal_->Oldest(kMaxBatch);
    if (!rows.ok()) {
      spdlog::error("usage ledger: cannot read the journal: {}",
                    std::string(rows.status().message()));
      return;
    }
    if (rows->empty()) break;
    std::vector<const UsageRecord*> ptrs;
    std::vector<std::string> ids;
    for (const UsageRecord& r : *rows) {
      ptrs.push_back(&r);
      ids.push_back(r.job_id);
    }
    auto written = InsertRows(replay_conn_.get(), ptrs, absl::Now() + options_.statement_timeout);
    if (!written.ok() && options_.commit == PostgresLedgerOptions::Commit::kLocal &&
        PQstatus(replay_conn_.get()) == CONNECTION_BAD) {
      // A connection PostgreSQL dropped while idle (a restart) is only noticed when used: one
      // more try on a fresh one before calling it an outage.
      replay_conn_.reset();
      if (auto conn = Connect(); conn.ok()) {
        replay_conn_ = *std::move(conn);
        written = InsertRows(replay_conn_.get(), ptrs, absl::Now() + options_.statement_timeout);
      }
    }
    if (!written.ok()) {
      if (options_.commit == PostgresLedgerOptions::Commit::kLocal) EnterOutage(written.status());
      replay_conn_.reset();
      spdlog::warn("usage ledger: replay of the journal into PostgreSQL stopped: {}",
                   std::string(written.status().message()));
      return;
    }
    // Only now, with the rows committed in PostgreSQL: a crash before this line replays them
    // again, and ON CONFLICT keeps them counted once.
    auto removed = journal_->Remove(ids);
    if (!removed.ok()) {
      spdlog::error("usage ledger: cannot remove replayed rows from the journal: {}",
                    std::string(removed.status().message()));
      return;
    }
    replayed += static_cast<int64_t>(ids.size());
    replayed_ += ids.size();
    if (replayed_metric_ != nullptr) replayed_metric_->Increment(static_cast<double>(ids.size()));
    if (rows->size() < kMaxBatch) break;
  }
  MutexLock lock(&mu_);
  // Rows a caller journals after this are picked up by the next round.
  if (outage_) {
    outage_ = false;
    spdlog::info(
        "usage ledger: {} answers again: {} journaled job(s) replayed; recording there again",
        Describe(), replayed);
  } else if (replayed > 0 &&
             options_.commit ==
                 PostgresLedgerOptions::Commit::kPostgres) {  // kLocal: every job's way
    spdlog::info("usage ledger: {} job(s) replayed from the journal into {}", replayed, Describe());
  }
}

template <typename Row, typename ReadRow>
absl::StatusOr<std::vector<Row>> PostgresUsageLedger::Select(
    const std::string& what, const std::string& sql, const UsageQuery& q, const ReadRow& read,
    const std::vector<std::string>& extra) {
  const std::string since = absl::StrCat(UnixMs(q.since));
  const std::string until = absl::StrCat(UnixMs(q.until));
  if (!StorableText(q.api_key_id)) return absl::InvalidArgumentError("api key id: invalid text");
  std::vector<const char*> params = {since.c_str(), until.c_str(), q.all_keys ? "true" : "false",
                                     q.api_key_id.c_str()};
  for (const std::string& e : extra) {
    if (!StorableText(e)) return absl::InvalidArgumentError("paging cursor: invalid text");
    params.push_back(e.c_str());
  }
  // Commit::kLocal: this gateway's answered jobs are in the answer (read your own writes).
  if (options_.commit == PostgresLedgerOptions::Commit::kLocal && !journaling())
    RequestReplay(/*wait=*/true);
  MutexLock lock(&read_mu_);
  absl::Status last;
  // Twice at most: a connection PostgreSQL dropped (a restart) is only noticed when used.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (read_conn_ == nullptr) {
      auto conn = Connect();
      if (!conn.ok()) {
        last = conn.status();
        break;
      }
      read_conn_ = *std::move(conn);
    }
    auto result = Run(read_conn_.get(), sql, &params, absl::Now() + options_.statement_timeout);
    if (result.ok()) {
      std::vector<Row> out;
      for (int i = 0; i < PQntuples(result->get()); ++i) out.push_back(read(result->get(), i));
      return out;
    }
    last = result.status();
    read_conn_.reset();
  }
  return absl::UnavailableError(absl::StrCat(
      "usage ledger ", Describe(), ": cannot read the ", what, ": ", last.message(),
      ". Jobs completed meanwhile are kept in each gateway's journal and counted once it "
      "answers"));
}

absl::StatusOr<int64_t> PostgresUsageLedger::DisputeOrchestrator(const std::string& orchestrator,
                                                                 const std::string& reason,
                                                                 absl::Time since) {
  if (orchestrator.empty() || reason.empty()) {
    return absl::InvalidArgumentError("disputing a node's rows needs its id and a reason");
  }
  if (!StorableText(orchestrator) || !StorableText(reason)) {
    return absl::InvalidArgumentError("node id or reason: invalid text");
  }
  // The journal first: its rows reach PostgreSQL disputed (the replay inserts them as they are).
  auto local = journal_->DisputeOrchestrator(orchestrator, reason, since);
  if (!local.ok()) return local.status();
  const std::string since_ms = absl::StrCat(UnixMs(since));
  std::vector<const char*> params = {reason.c_str(), orchestrator.c_str(), since_ms.c_str()};
  const std::string sql =
      absl::StrCat("UPDATE ", kTable,
                   " SET status = 'disputed', amount = 0, dispute = CASE WHEN dispute = '' THEN $1 "
                   "ELSE dispute || ',' || $1 END WHERE orchestrator = $2 AND status = 'paid' AND "
                   "completed_unix_ms >= $3::bigint RETURNING job_id");
  MutexLock lock(&read_mu_);
  absl::Status last;
  // Twice at most: a connection PostgreSQL dropped (a restart) is only noticed when used.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (read_conn_ == nullptr) {
      auto conn = Connect();
      if (!conn.ok()) {
        last = conn.status();
        break;
      }
      read_conn_ = *std::move(conn);
    }
    auto result = Run(read_conn_.get(), sql, &params, absl::Now() + options_.statement_timeout);
    if (result.ok()) return *local + PQntuples(result->get());
    last = result.status();
    read_conn_.reset();
  }
  return absl::UnavailableError(
      absl::StrCat("usage ledger ", Describe(), ": cannot dispute the rows of ", orchestrator, ": ",
                   last.message(), " (", *local, " rows in the journal were disputed)"));
}

namespace {
// The query's filters ($1 since, $2 until, $3 all keys, $4 the key), as SqliteUsageLedger's.
constexpr const char* kWhere =
    " WHERE completed_unix_ms >= $1::bigint AND completed_unix_ms < $2::bigint AND "
    "($3::boolean OR api_key_id = $4) ";
}  // namespace

absl::StatusOr<std::vector<UsageTotals>> PostgresUsageLedger::Totals(const UsageQuery& q) {
  // COLLATE "C": byte order, as SQLite's; SUM of BIGINT is NUMERIC in PostgreSQL.
  return Select<UsageTotals>(
      "totals",
      absl::StrCat("SELECT api_key_id, pipeline, model_id, MAX(unit COLLATE \"C\"), COUNT(*), "
                   "COALESCE(SUM(GREATEST(units, 0)), 0)::BIGINT, COALESCE(SUM(amount), 0), "
                   "SUM(CASE WHEN status = 'disputed' THEN 1 ELSE 0 END) FROM ",
                   kTable, kWhere,
                   "GROUP BY api_key_id, pipeline, model_id ORDER BY api_key_id COLLATE \"C\", "
                   "pipeline COLLATE \"C\", model_id COLLATE \"C\""),
      q, ReadTotals);
}

absl::StatusOr<std::vector<UsageRecord>> PostgresUsageLedger::Rows(const UsageQuery& q) {
  // The paging cursor ($5, $6): rows after it in the rows' order; none: after every row.
  const std::vector<std::string> after = {
      absl::StrCat(q.after ? q.after->first : std::numeric_limits<int64_t>::min()),
      q.after ? q.after->second : std::string()};
  return Select<UsageRecord>(
      "rows",
      absl::StrCat("SELECT ", kColumns, " FROM ", kTable, kWhere,
                   "AND (completed_unix_ms > $5::bigint OR (completed_unix_ms = $5::bigint AND "
                   "job_id COLLATE \"C\" > $6)) ORDER BY completed_unix_ms, job_id COLLATE \"C\"",
                   q.limit > 0 ? absl::StrCat(" LIMIT ", q.limit) : ""),
      q, ReadRecord, after);
}

}  // namespace switchyard::gateway
