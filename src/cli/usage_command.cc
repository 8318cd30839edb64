// `switchyard usage`: the caller's usage from the gateway's ledger (GetUsage), docs/metering.md.
#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/cli_internal.h"

namespace switchyard::cli::internal {
namespace {

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

}  // namespace

struct UsageCommand::State {
  CLI::App* cmd = nullptr;
  std::string since, until, key;
};

UsageCommand::UsageCommand(CLI::App& app) : state_(std::make_unique<State>()) {
  state_->cmd = app.add_subcommand(
      "usage",
      "Jobs, units and amounts recorded in the gateway's usage ledger for your API key, per "
      "pipeline and model");
  state_->cmd->add_option("--since", state_->since,
                          "Only jobs completed at or after this time (Unix seconds or RFC 3339)");
  state_->cmd->add_option("--until", state_->until,
                          "Only jobs completed before this time (Unix seconds or RFC 3339)");
  state_->cmd->add_option("--key", state_->key,
                          "Another API key id, or '*' for every key (operators: the gateway's "
                          "usage_admin_key_ids)");
  state_->cmd->footer(
      "Global options (--gateway, --api-key, --json, --timeout, ...) go before or after the "
      "command; see switchyard --help.");
}

UsageCommand::~UsageCommand() = default;

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

std::optional<int> UsageCommand::Run(const GlobalOptions& global, std::ostream& out,
                                     std::ostream& err) {
  if (!*state_->cmd) return std::nullopt;
  v1::GetUsageRequest request;
  auto since = ParseWhen(state_->since, "--since");
  if (!since.ok()) return ReportUsageError(since.status(), err);
  auto until = ParseWhen(state_->until, "--until");
  if (!until.ok()) return ReportUsageError(until.status(), err);
  request.set_since_unix(*since);
  request.set_until_unix(*until);
  request.set_api_key_id(state_->key);
  v1::GetUsageResponse response;
  grpc::ClientContext context;
  PrepareContext(global, context);
  const grpc::Status status = MakeStub(global)->GetUsage(&context, request, &response);
  if (!status.ok()) return ReportRpcError(global, status, err);
  if (global.json) {
    google::protobuf::util::JsonPrintOptions print;
    print.add_whitespace = true;
    print.always_print_primitive_fields = true;
    print.preserve_proto_field_names = true;
    std::string json;
    const auto st = google::protobuf::util::MessageToJsonString(response, &json, print);
    if (!st.ok()) {
      err << "error: cannot encode the response as JSON: " << st.ToString() << "\n";
      return kExitRpcError;
    }
    out << json;
    if (json.empty() || json.back() != '\n') out << "\n";
    return kExitOk;
  }
  out << FormatUsage(response);
  return kExitOk;
}

}  // namespace switchyard::cli::internal
