// The gateway's durable usage ledger (SQLite, Debian's libsqlite3) and the billing check of each
// completed job. docs/metering.md.
//
// One row per completed job, keyed by the job's ledger id (unique), written before the job's
// response is sent to its client: the database is in WAL mode with synchronous=FULL, so once
// Record returns the row survives a crash of the gateway (kill -9, power loss after the fsync),
// and a record written twice for one job is ignored rather than counted twice.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics.h"

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
  double price_per_unit = 0;
  double amount = 0;  // paid to the orchestrator: units x price, or 0 when disputed
  bool disputed = false;
  absl::Time completed = absl::UnixEpoch();
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
  absl::Time since = absl::InfinitePast();   // completed at or after
  absl::Time until = absl::InfiniteFuture();  // completed before
  bool all_keys = false;                      // else only `api_key_id`
  std::string api_key_id;
};

class UsageLedger {
 public:
  // Opens (creating if needed) the database at `path`, its directory too. UNAVAILABLE naming the
  // path when it cannot be opened or is not a ledger.
  static absl::StatusOr<std::unique_ptr<UsageLedger>> Open(const std::filesystem::path& path);
  ~UsageLedger();
  UsageLedger(const UsageLedger&) = delete;
  UsageLedger& operator=(const UsageLedger&) = delete;

  // Writes the job's row and waits for it to be durable. Returns true when written, false when a
  // row with that job id was already there (nothing changes). UNAVAILABLE on a write error.
  absl::StatusOr<bool> Record(const UsageRecord& record);

  // Totals per API key, pipeline and model, ordered by them.
  absl::StatusOr<std::vector<UsageTotals>> Totals(const UsageQuery& query);

  // The rows the query selects, oldest first, for audits and tests.
  absl::StatusOr<std::vector<UsageRecord>> Rows(const UsageQuery& query);

  const std::filesystem::path& path() const { return path_; }

 private:
  explicit UsageLedger(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
  std::mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Checks each completed job's units and records it: a job whose orchestrator reported other units
// than the gateway counted is disputed (logged, counted in
// switchyard_gateway_billing_mismatches_total{orchestrator,pipeline}, recorded with amount 0).
// Thread-safe.
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
    double price_per_unit = 0;
    absl::StatusOr<int64_t> counted = 0;  // the gateway's count, or why it could not count
  };
  // True when the job is paid (units agree), false when disputed. A ledger write error is logged
  // and does not fail the job (the client's result stays deliverable).
  bool Settle(const Job& job);

  UsageLedger* ledger() const { return ledger_; }

 private:
  UsageLedger* ledger_;
  prometheus::Family<prometheus::Counter>* mismatches_ = nullptr;
};

}  // namespace switchyard::gateway
