#include "cli/cli_support.h"

#include <algorithm>
#include <cstdio>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"

namespace switchyard::cli::internal {

namespace v1 = switchyard::v1;

std::string Quote(absl::string_view s) { return absl::StrCat("'", s, "'"); }

std::string FormatDouble(double value, const char* format) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

std::string FormatMs(double ms) { return FormatDouble(std::max(0.0, ms), "%.0f"); }

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

std::string FormatPrice(double price) { return FormatDouble(price, "%g"); }

Json JobToJson(const v1::JobInfo& job) {
  return Json{{"request_id", job.request_id()},
              {"orchestrator", job.orchestrator()},
              {"model_id", job.model_id()},
              {"units", job.units()},
              {"price_per_unit", job.price_per_unit()},
              {"compute_ms", job.compute_ms()},
              {"attempts", job.attempts()}};
}

std::string JobLine(absl::string_view pipeline, const v1::JobInfo& job, const std::string& model) {
  return absl::StrCat(pipeline, " with ", job.model_id().empty() ? model : job.model_id(), " on ",
                      job.orchestrator().empty() ? "?" : job.orchestrator(), " in ",
                      FormatMs(job.compute_ms()), " ms (attempts ", job.attempts(), ")");
}

void PrintJson(const Json& json, std::ostream& out) { out << json.dump(2) << "\n"; }

int PrintJobJson(Json result, const GlobalOptions& global, double elapsed_ms,
                 const switchyard::v1::JobInfo& job, std::ostream& out) {
  result["request_id"] = global.request_id;
  result["elapsed_ms"] = elapsed_ms;
  result["job"] = JobToJson(job);
  PrintJson(result, out);
  return kExitOk;
}

int PrintProtoJson(const google::protobuf::Message& message, std::ostream& out, std::ostream& err) {
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  print.always_print_primitive_fields = true;
  print.preserve_proto_field_names = true;
  std::string json;
  const auto st = google::protobuf::util::MessageToJsonString(message, &json, print);
  if (!st.ok()) {
    err << "error: cannot encode the response as JSON: " << st.ToString() << "\n";
    return kExitRpcError;
  }
  out << json;
  if (json.empty() || json.back() != '\n') out << "\n";
  return kExitOk;
}

std::unique_ptr<v1::Gateway::Stub> MakeStub(const GlobalOptions& global) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return v1::Gateway::NewStub(global.security.CreateChannel(global.gateway, args));
}

void PrepareContext(const GlobalOptions& global, grpc::ClientContext& context) {
  const auto timeout = std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::duration<double>(global.timeout_seconds));
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  context.AddMetadata(kRequestIdMetadataKey, global.request_id);
  if (!global.api_key.empty()) context.AddMetadata("authorization", "Bearer " + global.api_key);
}

int ReportRpcError(const GlobalOptions& global, const grpc::Status& status, std::ostream& err) {
  err << "error: " << StatusCodeName(status.error_code()) << ": " << status.error_message() << "\n";
  err << "request id: " << global.request_id << "\n";
  return kExitRpcError;
}

int NoResult(const GlobalOptions& global, absl::string_view what, std::ostream& err) {
  err << "error: the gateway returned no " << what << "\n";
  err << "request id: " << global.request_id << "\n";
  return kExitRpcError;
}

int ReportUsageError(const absl::Status& status, std::ostream& err) {
  err << "error: " << status.message() << "\n";
  return kExitUsage;
}

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace switchyard::cli::internal
