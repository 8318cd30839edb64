// What the CLI's commands share: formatting, the one unary call with the global options, and
// the error reports that decide the exit code.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "cli/command.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::cli::internal {

using Json = nlohmann::ordered_json;

// "'text'", for paths and names in messages.
std::string Quote(absl::string_view s);
// printf-style formatting of one double.
std::string FormatDouble(double value, const char* format);
// Milliseconds as a whole number, e.g. 812.4 -> "812".
std::string FormatMs(double ms);
// Left-aligned text table; columns separated by two spaces, no trailing blanks.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);
std::string FormatPrice(double price);

Json JobToJson(const switchyard::v1::JobInfo& job);
// "<pipeline> with <model> on <orchestrator> in <ms> ms (attempts <n>)"; `model` when the job
// names none.
std::string JobLine(absl::string_view pipeline, const switchyard::v1::JobInfo& job,
                    const std::string& model);
// One JSON document on stdout.
void PrintJson(const Json& json, std::ostream& out);
// A job's --json result: `result` with the request id, the elapsed time and the job's JobInfo
// added, as one JSON document on stdout. Returns kExitOk.
int PrintJobJson(Json result, const GlobalOptions& global, double elapsed_ms,
                 const switchyard::v1::JobInfo& job, std::ostream& out);
// A response as proto JSON (field names as in the proto); kExitRpcError when it cannot be encoded.
int PrintProtoJson(const google::protobuf::Message& message, std::ostream& out, std::ostream& err);

// A stub for --gateway, plaintext or TLS as the global options say.
std::unique_ptr<switchyard::v1::Gateway::Stub> MakeStub(const GlobalOptions& global);
// Sets the deadline (--timeout) and the request id metadata.
void PrepareContext(const GlobalOptions& global, grpc::ClientContext& context);
// Prints the gRPC error and the request id; returns kExitRpcError.
int ReportRpcError(const GlobalOptions& global, const grpc::Status& status, std::ostream& err);
// "the gateway returned no <what>" and the request id; returns kExitRpcError.
int NoResult(const GlobalOptions& global, absl::string_view what, std::ostream& err);
// Prints the usage error; returns kExitUsage.
int ReportUsageError(const absl::Status& status, std::ostream& err);
double MillisecondsSince(std::chrono::steady_clock::time_point start);

template <typename Request, typename Response>
using UnaryMethod = grpc::Status (switchyard::v1::Gateway::Stub::*)(grpc::ClientContext*,
                                                                    const Request&, Response*);

// One unary call with the global deadline and request id. nullopt on success; otherwise the exit
// code after printing the error.
template <typename Request, typename Response>
std::optional<int> CallUnary(const GlobalOptions& global, UnaryMethod<Request, Response> method,
                             const Request& request, Response* response, double* elapsed_ms,
                             std::ostream& err) {
  grpc::ClientContext context;
  PrepareContext(global, context);
  auto stub = MakeStub(global);
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = ((*stub).*method)(&context, request, response);
  *elapsed_ms = MillisecondsSince(start);
  if (!status.ok()) return ReportRpcError(global, status, err);
  return std::nullopt;
}

}  // namespace switchyard::cli::internal
