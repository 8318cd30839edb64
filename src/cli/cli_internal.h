// Helpers shared by the CLI's command files (cli_commands.cc, pipeline_commands.cc). Not a
// public interface: the CLI's entry point and tested building blocks are in cli_commands.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cli/cli_commands.h"
#include "common/tls.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::cli::internal {

using Json = nlohmann::ordered_json;

// Options every command takes (before or after the command name).
struct GlobalOptions {
  std::string gateway = kDefaultGateway;
  double timeout_seconds = 120;
  bool json = false;
  std::string request_id;
  std::string api_key;  // --api-key / SWITCHYARD_API_KEY; empty: none sent
  // TLS to the gateway: --tls (system roots), --tls-ca, --tls-cert/--tls-key (mutual TLS),
  // --tls-server-name. `security` is made from them once the flags are parsed.
  bool tls = false;
  TlsClientConfig tls_config;
  GrpcClientSecurity security;
};

// "'text'", for paths and names in messages.
std::string Quote(absl::string_view s);
// printf-style formatting of one double.
std::string FormatDouble(double value, const char* format);
// Milliseconds as a whole number, e.g. 812.4 -> "812".
std::string FormatMs(double ms);

// Reads a whole input file; usage errors (exit 2) come back as non-OK statuses naming `what`.
absl::StatusOr<std::string> ReadInputFile(const std::string& path, absl::string_view what);
// Checks that `path` can be created or overwritten, without touching it.
absl::Status CheckWritableFile(const std::string& path);
// Creates `dir` (and its parents) when missing; checks that it is a writable directory.
absl::Status PrepareOutputDirectory(const std::string& dir);
// Writes `data` to a temporary file next to `path`, then renames it over `path`, so that a reader
// never sees a partial output.
absl::Status WriteFileAtomically(const std::filesystem::path& path, absl::string_view data);

std::string ErrnoMessage(int errnum);
absl::Status CheckWritableDirectory(const std::filesystem::path& dir);
// A name that is safe as a file name: [A-Za-z0-9._-], not starting with '.'.
bool IsSafeName(absl::string_view name);
// `name` with every other character replaced by '_'.
std::string SanitizeName(absl::string_view name);

// Left-aligned text table; columns separated by two spaces, no trailing blanks.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);
std::string FormatPrice(double price);
Json JobToJson(const switchyard::v1::JobInfo& job);

// A stub for --gateway, plaintext or TLS as the global options say.
std::unique_ptr<switchyard::v1::Gateway::Stub> MakeStub(const GlobalOptions& global);
// Sets the deadline (--timeout) and the request id metadata.
void PrepareContext(const GlobalOptions& global, grpc::ClientContext& context);
// Prints the gRPC error and the request id; returns kExitRpcError.
int ReportRpcError(const GlobalOptions& global, const grpc::Status& status, std::ostream& err);
// Prints the usage error; returns kExitUsage.
int ReportUsageError(const absl::Status& status, std::ostream& err);
double MillisecondsSince(std::chrono::steady_clock::time_point start);

// The pipeline subcommands other than upscale and transcoding (text-to-image, image-to-image,
// image-to-video, audio-to-text, segment-anything-2, llm, image-to-text, text-to-speech) and
// `orchestrators`; pipeline_commands.cc.
class PipelineCommands {
 public:
  // Registers the subcommands on `app`; their options are stored in this object, which must
  // outlive the parse.
  explicit PipelineCommands(CLI::App& app);
  ~PipelineCommands();
  PipelineCommands(const PipelineCommands&) = delete;
  PipelineCommands& operator=(const PipelineCommands&) = delete;

  // After a successful parse: runs the chosen subcommand if it is one of these and returns its
  // exit code; nullopt when another subcommand was chosen.
  std::optional<int> Run(const GlobalOptions& global, std::ostream& out, std::ostream& err);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// `usage` (usage_command.cc): the gateway's usage ledger for the caller's API key.
class UsageCommand {
 public:
  explicit UsageCommand(CLI::App& app);
  ~UsageCommand();
  UsageCommand(const UsageCommand&) = delete;
  UsageCommand& operator=(const UsageCommand&) = delete;
  // As PipelineCommands::Run.
  std::optional<int> Run(const GlobalOptions& global, std::ostream& out, std::ostream& err);

 private:
  struct State;
  std::unique_ptr<State> state_;
};
// The usage table: one row per key, pipeline and model, then the total.
std::string FormatUsage(const switchyard::v1::GetUsageResponse& response);

}  // namespace switchyard::cli::internal
