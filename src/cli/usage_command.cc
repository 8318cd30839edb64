// `switchyard usage`: the caller's usage from the gateway's ledger (GetUsage), docs/metering.md.
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/cli_support.h"
#include "cli/command.h"

namespace switchyard::cli::internal {
namespace {

namespace v1 = switchyard::v1;

// Unix seconds from "1700000000" or an RFC 3339 time ("2026-11-29T12:00:00Z"); "" is 0.
absl::StatusOr<int64_t> ParseWhen(const std::string& text, absl::string_view flag) {
  if (text.empty()) return 0;
  int64_t seconds = 0;
  if (absl::SimpleAtoi(text, &seconds)) {
    if (seconds < 0) return absl::InvalidArgumentError(absl::StrCat(flag, " must be >= 0"));
    return seconds;
  }
  absl::Time t;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &error)) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", Quote(text), " is neither Unix seconds nor an RFC 3339 time: ", error));
  }
  return absl::ToUnixSeconds(t);
}

// The usage table: one row per key, pipeline and model, then the total.
std::string FormatUsage(const v1::GetUsageResponse& response) {
  if (response.totals().empty()) return "no jobs recorded in that range\n";
  std::vector<std::vector<std::string>> rows = {
      {"KEY", "PIPELINE", "MODEL", "JOBS", "UNITS", "UNIT", "AMOUNT", "DISPUTED"}};
  for (const auto& t : response.totals()) {
    rows.push_back({t.api_key_id().empty() ? "-" : t.api_key_id(), t.pipeline(), t.model_id(),
                    absl::StrCat(t.jobs()), absl::StrCat(t.units()), t.unit(),
                    FormatPrice(t.amount()), absl::StrCat(t.disputed_jobs())});
  }
  return absl::StrCat(FormatTable(rows), "total: ", response.jobs(), " job",
                      response.jobs() == 1 ? "" : "s", ", amount ", FormatPrice(response.amount()),
                      "\n");
}

class UsageCommand final : public Command {
 public:
  UsageCommand()
      : Command("usage",
                "Jobs, units and amounts recorded in the gateway's usage ledger for your API key, "
                "per pipeline and model") {}

  std::string footer() const override {
    return "Global options (--gateway, --api-key, --json, --timeout, ...) go before or after the "
           "command; see switchyard --help.";
  }

  void AddOptions(CLI::App& c) override {
    c.add_option("--since", since_,
                 "Only jobs completed at or after this time (Unix seconds or RFC 3339)");
    c.add_option("--until", until_,
                 "Only jobs completed before this time (Unix seconds or RFC 3339)");
    c.add_option("--key", key_,
                 "Another API key id, or '*' for every key (operators: the gateway's "
                 "usage_admin_key_ids)");
    c.add_option("--receipts", receipts_,
                 "Export the rows with their signed receipts as JSON lines to FILE ('-': stdout) "
                 "instead of the totals; check it with `switchyard verify-receipts FILE`");
  }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override {
    v1::GetUsageRequest request;
    auto since = ParseWhen(since_, "--since");
    if (!since.ok()) return ReportUsageError(since.status(), err);
    auto until = ParseWhen(until_, "--until");
    if (!until.ok()) return ReportUsageError(until.status(), err);
    request.set_since_unix(*since);
    request.set_until_unix(*until);
    request.set_api_key_id(key_);
    if (!receipts_.empty()) {
      v1::ListUsageRowsRequest rows;
      rows.set_since_unix(*since);
      rows.set_until_unix(*until);
      rows.set_api_key_id(key_);
      return ExportReceipts(global, rows, receipts_, out, err);
    }
    v1::GetUsageResponse response;
    double elapsed_ms = 0;
    if (auto rc =
            CallUnary(global, &v1::Gateway::Stub::GetUsage, request, &response, &elapsed_ms, err)) {
      return *rc;
    }
    if (global.json) return PrintProtoJson(response, out, err);
    out << FormatUsage(response);
    return kExitOk;
  }

 private:
  std::string since_, until_, key_, receipts_;
};

}  // namespace

CommandPtr NewUsageCommand() { return std::make_unique<UsageCommand>(); }

}  // namespace switchyard::cli::internal
