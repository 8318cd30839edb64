// The gateway's durable usage ledger and the billing check of each completed job. docs/metering.md.
//
// UsageLedger is the interface JobBilling, GetUsage and /usage use; SqliteUsageLedger (below, the
// embedded default: a single gateway needs nothing but its binary) and PostgresUsageLedger
// (postgres_usage_ledger.h, one ledger for several gateways) implement it.
//
// SqliteUsageLedger (Debian's libsqlite3): one row per completed job, keyed by the job's ledger id
// (unique), written before the job's response is sent to its client: the database is in WAL mode
// with synchronous=FULL, and Record returns only once the transaction holding the row has committed
// (fsynced), so a row Record reported survives a crash of the gateway (kill -9, power loss after
// the fsync), and a record written twice for one job is ignored rather than counted twice.
//
// Group commit: rows are written by one writer thread, a batch of queued rows per transaction
// (one fsync); each Record call waits for its own row's batch, so callers that arrive while a
// batch commits share the next fsync instead of queueing on one mutex for one fsync each.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "common/thread_pool.h"
#include "switchyard/v1/gateway.pb.h"

struct sqlite3;

namespace switchyard::gateway {

// One completed job.
struct UsageRecord {
  std::string job_id;  // unique per job: the ledger's key
  std::string api_key_id;
  std::string pipeline;
  std::string model_id;
  std::string orchestrator;
  std::string unit;
  int64_t units = 0;           // as the gateway counted them (-1 when they could not be counted)
  int64_t reported_units = 0;  // as the orchestrator reported them
  // The price billed: what the node advertised when it was picked, capped by the job's price cap
  // (0 when it advertised none valid). Always finite and >= 0.
  double price_per_unit = 0;
  // As the orchestrator reported it in its response (NaN: not reported, or not a number).
  double reported_price_per_unit = 0;
  double amount = 0;  // paid to the orchestrator: units x price, or 0 when disputed
  bool disputed = false;
  // Why a disputed job was not paid, comma-separated: "units" (other units than the gateway
  // counted), "price" (another price than advertised), "advertised_price" (none valid advertised),
  // "amount" (units x price not finite). Empty when paid.
  std::string dispute;
  absl::Time completed = absl::UnixEpoch();
  // The node's signed receipt as received (ReceiptToJson in common/receipt.h, compact), "" when
  // there was none; and what the gateway found when it checked it (JobBilling::Settle below):
  // "verified", "verified_unbound", "unsigned", "missing", "bad_signature", "mismatch", or
  // "none" (no receipt expected: a KServe call, or a row from before receipts).
  std::string receipt = {};
  std::string receipt_status = "none";
};

// Totals of one API key, pipeline and model.
struct UsageTotals {
  std::string api_key_id;
  std::string pipeline;
  std::string model_id;
  std::string unit;
  int64_t jobs = 0;
  int64_t units = 0;  // counted units of every job (disputed ones too: the client got them)
  double amount = 0;  // paid jobs only
  int64_t disputed_jobs = 0;
};

struct UsageQuery {
  absl::Time since = absl::InfinitePast();    // completed at or after
  absl::Time until = absl::InfiniteFuture();  // completed before
  bool all_keys = false;                      // else only `api_key_id`
  std::string api_key_id;
  // Rows only (paging): after this (completion in ms, job id) in the rows' order, and at most
  // `limit` of them (0: all).
  std::optional<std::pair<int64_t, std::string>> after = std::nullopt;
  size_t limit = 0;
};

// Where completed jobs are recorded, once each. Thread-safe.
class UsageLedger {
 public:
  virtual ~UsageLedger() = default;

  // Records the job's row durably before it returns. Returns true when written, false when a row
  // with that job id was already there (nothing changes). INVALID_ARGUMENT for a row
  // ValidateUsageRecord refuses (never written); UNAVAILABLE when it could not be written.
  virtual absl::StatusOr<bool> Record(const UsageRecord& record) = 0;

  // Totals per API key, pipeline and model, ordered by them (byte order).
  virtual absl::StatusOr<std::vector<UsageTotals>> Totals(const UsageQuery& query) = 0;

  // The rows the query selects, oldest first (then by job id), for audits and tests.
  virtual absl::StatusOr<std::vector<UsageRecord>> Rows(const UsageQuery& query) = 0;

  // Where the rows go, for logs ("SQLite /var/lib/switchyard/usage.db"); never a password.
  virtual std::string Describe() const = 0;

  // Disputes every paid row of `orchestrator` completed at or after `since`: its status becomes
  // disputed, its amount 0, and `reason` is added to its dispute (a spot check proved the node's
  // results wrong: "verification"). Rows already disputed keep theirs. Returns how many rows
  // changed. INVALID_ARGUMENT for an empty node id or reason; UNAVAILABLE on a write error.
  virtual absl::StatusOr<int64_t> DisputeOrchestrator(const std::string& orchestrator,
                                                      const std::string& reason,
                                                      absl::Time since) = 0;
};
using UsageLedgerPtr = std::unique_ptr<UsageLedger>;

// Largest receipt kept with a row (its protobuf encoding; a larger one is a "mismatch"), and the
// largest receipt JSON a row may hold.
inline constexpr size_t kMaxReceiptBytes = 4096;
inline constexpr size_t kMaxReceiptJsonBytes = 16384;

// OK, or INVALID_ARGUMENT naming the job: a row without a job id, with a price or amount that
// is not a finite number >= 0, or with a receipt over kMaxReceiptJsonBytes. Every backend
// refuses these before writing anything.
absl::Status ValidateUsageRecord(const UsageRecord& record);

// The embedded ledger: one SQLite database file (see the top of this file). Also the journal of
// PostgresUsageLedger while PostgreSQL cannot be reached.
class SqliteUsageLedger final : public UsageLedger {
 public:
  // Opens (creating if needed) the database at `path`, its directory too. UNAVAILABLE naming the
  // path when it cannot be opened or is not a ledger.
  static absl::StatusOr<std::unique_ptr<SqliteUsageLedger>> Open(const std::filesystem::path& path);
  // Commits what is queued, answers every waiting Record call, then closes.
  ~SqliteUsageLedger() override;
  SqliteUsageLedger(const SqliteUsageLedger&) = delete;
  SqliteUsageLedger& operator=(const SqliteUsageLedger&) = delete;

  // Queues the job's row for the writer thread and waits until the transaction that holds it has
  // committed (durable). Returns true when written, false when a row with that job id was already
  // there (nothing changes). UNAVAILABLE on a write error (every row of that batch gets it, none
  // of them is written) or when the ledger is closing; INVALID_ARGUMENT for a row without a job
  // id or with a price or amount that is not a finite number >= 0 (never written).
  absl::StatusOr<bool> Record(const UsageRecord& record) override ABSL_LOCKS_EXCLUDED(queue_mu_);

  absl::StatusOr<std::vector<UsageTotals>> Totals(const UsageQuery& query) override
      ABSL_LOCKS_EXCLUDED(read_mu_);
  absl::StatusOr<std::vector<UsageRecord>> Rows(const UsageQuery& query) override
      ABSL_LOCKS_EXCLUDED(read_mu_);
  std::string Describe() const override { return "SQLite " + path_.string(); }
  absl::StatusOr<int64_t> DisputeOrchestrator(const std::string& orchestrator,
                                              const std::string& reason, absl::Time since) override
      ABSL_LOCKS_EXCLUDED(read_mu_);

  // For the journal's replay: the `limit` oldest rows (by completion, then job id), and the
  // deletion of rows once they are safely elsewhere. Remove returns how many rows went.
  absl::StatusOr<std::vector<UsageRecord>> Oldest(size_t limit) ABSL_LOCKS_EXCLUDED(read_mu_);
  absl::StatusOr<int64_t> Remove(const std::vector<std::string>& job_ids)
      ABSL_LOCKS_EXCLUDED(read_mu_);
  absl::StatusOr<int64_t> Count() ABSL_LOCKS_EXCLUDED(read_mu_);

  // For a journal copied in order of writing (PostgresUsageLedger's Commit::kLocal): up to
  // `limit` rows written after the row numbered `after` (SQLite's rowid), in the order they were
  // written, each with its number; and the deletion of the rows numbered below `below` (the row
  // numbered `below` stays, so later rows keep getting higher numbers).
  struct NumberedRow {
    int64_t number = 0;
    UsageRecord record;
  };
  absl::StatusOr<std::vector<NumberedRow>> After(int64_t after, size_t limit)
      ABSL_LOCKS_EXCLUDED(read_mu_);
  absl::StatusOr<int64_t> RemoveBelow(int64_t below) ABSL_LOCKS_EXCLUDED(read_mu_);

  const std::filesystem::path& path() const { return path_; }

  // Most rows in one transaction: bounds a batch's time holding the write lock.
  static constexpr size_t kMaxBatch = 1024;

 private:
  // One queued row and, once its batch committed, the answer for its caller.
  struct Pending {
    const UsageRecord* record;
    bool done = false;  // guarded by queue_mu_ (a caller's stack entry: not annotatable)
    absl::StatusOr<bool> result = false;
  };

  explicit SqliteUsageLedger(std::filesystem::path path) : path_(std::move(path)) {}
  void WriterLoop() ABSL_LOCKS_EXCLUDED(queue_mu_);
  // Writes `batch` in one transaction; sets every entry's result (not `done`).
  void WriteBatch(const std::vector<Pending*>& batch);

  std::filesystem::path path_;
  // The writer's connection: used only by the writer thread once it runs (and by Open before).
  sqlite3* write_db_ = nullptr;
  // Reads (Totals, Rows) on a connection of their own, so they never wait for a commit's fsync
  // (WAL: readers see the last committed state). Remove writes on it too: it is rare (the
  // journal's replay), and SQLite's busy timeout orders it with the writer's transactions.
  Mutex read_mu_;
  sqlite3* read_db_ ABSL_GUARDED_BY(read_mu_) = nullptr;

  Mutex queue_mu_;
  CondVar queue_cv_;  // writer: rows queued, or closing
  CondVar done_cv_;   // callers: a batch committed
  std::deque<Pending*> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool closing_ ABSL_GUARDED_BY(queue_mu_) = false;
  int callers_ ABSL_GUARDED_BY(queue_mu_) = 0;  // inside Record: the destructor waits for them
  std::thread writer_;
};

// Checks each completed job's units and price and records it. The price billed is the one the
// node advertised in the capability it was picked by (capped by the job's price cap), never the
// one it reports. A job is disputed (logged, counted in
// switchyard_gateway_billing_mismatches_total{orchestrator,pipeline}, recorded with amount 0)
// when its orchestrator reported other units than the gateway counted, or another price than it
// advertised (also counted in switchyard_gateway_billing_price_disputes_total), or when no valid
// advertised price is known.
//
// Receipts (docs/security.md, "Receipts"): the node's signed receipt is checked against the
// node's key (the one its id is bound to, else the one in its status) and against what the
// gateway saw (job and gateway ids, node, pipeline, model, units, price, request and result
// digests), counted in switchyard_gateway_receipts_total{orchestrator,status} and kept with the
// row. A bad signature, a receipt for something else, or none from a node whose key is known
// disputes the job ("receipt": not paid; the client still gets its result, as with disputed
// units). No receipt from a node with no known key is paid and flagged "unsigned". Thread-safe.
class JobBilling {
 public:
  // `ledger` may be null (no ledger: the check still runs); `metrics` may be null.
  JobBilling(UsageLedger* ledger, Metrics* metrics);

  struct Job {
    std::string job_id;
    std::string request_id;  // for logs
    std::string api_key_id;
    std::string pipeline;
    std::string model_id;
    std::string orchestrator;
    int64_t reported_units = 0;
    // As the orchestrator reported it in its response.
    double reported_price_per_unit = 0;
    // The price per unit the node advertised for this pipeline and model in the snapshot it was
    // picked from (AdvertisedPrice in gateway/routing/router.h); nullopt when it advertised none.
    std::optional<double> advertised_price_per_unit;
    // The job's price cap (the client's x-max-price-per-unit, else the config's); 0: none.
    double max_price_per_unit = 0;
    // The client's x-max-total-price (0: none): the amount is never above it. When the counted
    // units times the price would be (more units than the quote, possible only where the quote
    // was not exact), the price billed is lowered to the largest that keeps units x price within
    // it (metering::PriceWithinTotal; logged, not a dispute).
    double max_total_price = 0;
    absl::StatusOr<int64_t> counted = 0;  // the gateway's count, or why it could not count
    // Receipts: whether the job kind carries one (false: KServe; no check, status "none"), the
    // receipt the node sent (null: none), the model it reported in JobInfo, the digests of the
    // request the gateway sent and of the result it received (common/receipt.h), this gateway's
    // id, and the node's key as its status reports it ("" for none; used when no key is bound).
    bool receipts = false;
    const v1::JobReceipt* receipt = nullptr;
    std::string reported_model_id = {};
    std::string request_sha256 = {};
    std::string result_sha256 = {};
    std::string gateway_id = {};
    std::string status_key = {};
  };
  // True when the job is paid (units and price agree), false when disputed. A ledger write error
  // is logged and does not fail the job (the client's result stays deliverable).
  bool Settle(const Job& job);

  UsageLedger* ledger() const { return ledger_; }
  // Threads to settle jobs on (null without a ledger): a ledger write waits for a disk flush or a
  // round trip, and gRPC's callback threads, where attempts end, must not wait (every call in the
  // process needs them; two on a two-core host). As many as the jobs whose rows one group commit
  // may carry at once.
  ThreadPool* settle_threads() const { return settle_threads_.get(); }
  static constexpr int kSettleThreads = 16;

  // The key a node id is bound to at this gateway ("" for none): NodeKeys::BoundKey. Set before
  // jobs run; unset: only the key in the node's status is known.
  void set_bound_key(std::function<std::string(const std::string& node_id)> f) {
    bound_key_ = std::move(f);
  }

  // The receipt check alone: the receipt status (see UsageRecord) and, when not good, why.
  struct ReceiptCheck {
    std::string status;
    std::string problem;  // for logs; "" when good
    bool disputed = false;
  };
  ReceiptCheck CheckReceipt(const Job& job) const;

 private:
  UsageLedger* ledger_;
  ThreadPoolPtr settle_threads_;
  std::function<std::string(const std::string&)> bound_key_;
  prometheus::Family<prometheus::Counter>* receipts_ = nullptr;
  prometheus::Family<prometheus::Counter>* mismatches_ = nullptr;
  prometheus::Family<prometheus::Counter>* price_disputes_ = nullptr;
};

}  // namespace switchyard::gateway
