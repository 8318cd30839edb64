// The CLI's one command interface. Every subcommand (`capabilities`, each pipeline job,
// `transcode`, `usage`, ...) is a Command made by a factory named once in the command table of
// cli_commands.cc, which RunCli turns into the CLI11 app. Not a public interface: the entry point
// and the tested building blocks are in cli_commands.h.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "cli/cli_commands.h"
#include "common/tls.h"

namespace switchyard::cli::internal {

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

// The help footer of every command but `usage`.
inline constexpr char kGlobalFooter[] =
    "Global options (--gateway, --timeout, --json, --request-id) may also follow the command.\n";

class Command {
 public:
  Command(std::string name, std::string description)
      : name_(std::move(name)), description_(std::move(description)) {}
  virtual ~Command() = default;
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;

  const std::string& name() const { return name_; }
  const std::string& description() const { return description_; }
  virtual std::string footer() const { return kGlobalFooter; }

  // Adds the command's options to its subcommand; their values land in this object, which
  // outlives the parse.
  virtual void AddOptions(CLI::App& command) = 0;
  // Runs the command after a successful parse; returns the exit code (cli_commands.h).
  virtual int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) = 0;

 private:
  std::string name_;
  std::string description_;
};
using CommandPtr = std::unique_ptr<Command>;
using CommandFactory = CommandPtr (*)();

// The factories, by the file that defines them.
// node_commands.cc: what the gateway routes to.
CommandPtr NewCapabilitiesCommand();
CommandPtr NewOrchestratorsCommand();
// transcode_commands.cc: one segment, and a whole file through a stream.
CommandPtr NewTranscodeCommand();
CommandPtr NewTranscodeFileCommand();
// usage_command.cc: the caller's usage ledger.
CommandPtr NewUsageCommand();
// receipts_command.cc: `verify-receipts`, and the export behind `usage --receipts`.
CommandPtr NewVerifyReceiptsCommand();
// Writes every ledger row `first` selects (its window and key; paged through ListUsageRows) as
// JSON lines to `path` (atomically; "-": `out`). Returns the exit code.
int ExportReceipts(const GlobalOptions& global, const switchyard::v1::ListUsageRowsRequest& first,
                   const std::string& path, std::ostream& out, std::ostream& err);
// Limits of the export and the verifier (hostile files are refused, not buffered).
inline constexpr int kReceiptsPageSize = 1000;
inline constexpr size_t kMaxReceiptLineBytes = 64 * 1024;
inline constexpr int64_t kMaxReceiptLines = 10'000'000;
inline constexpr uint64_t kMaxReceiptFileBytes = 4ULL << 30;
inline constexpr size_t kMaxReceiptKeysFileBytes = 16 << 20;
inline constexpr int64_t kMaxReportedBadReceipts = 100;
// explain_command.cc: how the router judges every node for a pipeline and model.
CommandPtr NewExplainCommand();
// One per pipeline job, keyed by its request type (common/pipelines.h names the command); the
// job's flags, request and output are a Job<Request> (job_command.h).
template <typename Request>
CommandPtr NewJobCommand();

// `switchyard quote <pipeline> ...` (quote_command.cc): one pipeline's job flags, read by its
// Job<Request> as the job command reads them (outputs optional: a quote writes nothing), made
// into Gateway.Quote requests: one per call the job command would make (a live-video run: one
// per segment).
class QuotePart {
 public:
  virtual ~QuotePart() = default;
  virtual const char* name() const = 0;
  virtual const char* description() const = 0;
  virtual void AddOptions(CLI::App& command) = 0;
  // A non-OK status is a usage error.
  virtual absl::StatusOr<std::vector<switchyard::v1::QuoteRequest>> BuildQuotes() = 0;
};
using QuotePartPtr = std::unique_ptr<QuotePart>;
// One per quotable job (job_command.h), instantiated next to NewJobCommand.
template <typename Request>
QuotePartPtr NewQuotePart();
QuotePartPtr NewTranscodeQuotePart();  // transcode_commands.cc
CommandPtr NewQuoteCommand();

}  // namespace switchyard::cli::internal
