// RunCli: the global options, and the CLI11 app built from the command table.
#include "cli/cli_commands.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_support.h"
#include "cli/command.h"
#include "common/secure_random.h"
#include "common/status.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::cli {
namespace {

namespace v1 = switchyard::v1;
using internal::CommandFactory;
using internal::CommandPtr;
using internal::GlobalOptions;
using internal::NewJobCommand;
using internal::ReportUsageError;

constexpr double kMaxTimeoutSeconds = 365.0 * 24 * 3600;

// Every command, in the order `switchyard --help` lists them.
constexpr CommandFactory kCommands[] = {
    internal::NewCapabilitiesCommand,
    NewJobCommand<v1::UpscaleRequest>,
    internal::NewTranscodeCommand,
    internal::NewTranscodeFileCommand,
    NewJobCommand<v1::TextToImageRequest>,
    NewJobCommand<v1::ImageToImageRequest>,
    NewJobCommand<v1::ImageToVideoRequest>,
    NewJobCommand<v1::AudioToTextRequest>,
    NewJobCommand<v1::SegmentAnything2Request>,
    NewJobCommand<v1::LLMRequest>,
    NewJobCommand<v1::ImageToTextRequest>,
    NewJobCommand<v1::TextToSpeechRequest>,
    NewJobCommand<v1::LiveVideoSegmentRequest>,
    internal::NewOrchestratorsCommand,
    internal::NewUsageCommand,
    internal::NewVerifyReceiptsCommand,
    internal::NewExplainCommand,
    internal::NewQuoteCommand,
};

// The TLS flags as given; GlobalOptions::tls_config is made from them after the parse.
struct TlsFlags {
  std::string ca, cert, key;
};

void AddGlobalOptions(CLI::App& app, GlobalOptions& global, TlsFlags& tls) {
  app.add_option("--gateway", global.gateway, "Gateway address HOST:PORT")
      ->envname(kGatewayEnvVar)
      ->capture_default_str();
  app.add_option("--timeout", global.timeout_seconds, "Deadline of the call, in seconds")
      ->capture_default_str();
  app.add_flag("--json", global.json, "Print machine-readable JSON on stdout");
  app.add_option("--request-id", global.request_id,
                 "Request id sent as x-request-id metadata (random when not given)");
  app.add_option("--api-key", global.api_key,
                 "API key for a gateway that requires one (sent as authorization: Bearer)")
      ->envname("SWITCHYARD_API_KEY");
  app.add_flag("--tls", global.tls,
               "Call the gateway over TLS, trusting the system's CAs (implied by --tls-ca)");
  app.add_option("--tls-ca", tls.ca, "PEM CA file the gateway's certificate must chain to (TLS)")
      ->envname("SWITCHYARD_TLS_CA");
  app.add_option("--tls-cert", tls.cert,
                 "PEM client certificate, for a gateway that requires one (with --tls-key)");
  app.add_option("--tls-key", tls.key, "PEM private key of --tls-cert");
  app.add_option("--tls-server-name", global.tls_config.server_name_override,
                 "Name to check in the gateway's certificate instead of the --gateway host");
}

// Checks the parsed global options and completes them (TLS credentials, request id); a non-OK
// status is a usage error.
absl::Status FinishGlobalOptions(GlobalOptions& global, const TlsFlags& tls) {
  if (global.gateway.empty()) return absl::InvalidArgumentError("--gateway must not be empty");
  if (!std::isfinite(global.timeout_seconds) || global.timeout_seconds <= 0 ||
      global.timeout_seconds > kMaxTimeoutSeconds) {
    return absl::InvalidArgumentError("--timeout must be a positive number of seconds");
  }
  global.tls_config.enabled = global.tls || !tls.ca.empty() || !tls.cert.empty() ||
                              !tls.key.empty() || !global.tls_config.server_name_override.empty();
  global.tls_config.ca_file = tls.ca;
  global.tls_config.cert_file = tls.cert;
  global.tls_config.key_file = tls.key;
  if (auto st = CheckTlsClientConfig(global.tls_config, "--tls"); !st.ok()) {
    // "--tls.cert_file: ..." reads better as the flag's own name.
    std::string message(st.message());
    static constexpr std::pair<const char*, const char*> kFlags[] = {
        {".ca_file", "-ca"}, {".cert_file", "-cert"}, {".key_file", "-key"}};
    for (const auto& [field, flag] : kFlags) {
      if (absl::StartsWith(message, absl::StrCat("--tls", field))) {
        message = absl::StrCat("--tls", flag, message.substr(5 + std::strlen(field)));
      }
    }
    return absl::InvalidArgumentError(message);
  }
  auto security = GrpcClientSecurity::Create(global.tls_config);
  if (!security.ok()) return security.status();
  global.security = *std::move(security);
  if (global.request_id.empty()) {
    global.request_id = GenerateRequestId();
  } else if (global.request_id.size() > 128 ||
             !std::all_of(global.request_id.begin(), global.request_id.end(),
                          [](char c) { return c >= 0x21 && c <= 0x7e; })) {
    return absl::InvalidArgumentError(
        "--request-id must be 1 to 128 printable ASCII characters without spaces");
  }
  return absl::OkStatus();
}

int RunCliOrThrow(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  GlobalOptions global;
  TlsFlags tls;
  CLI::App app{"Switchyard client: calls a switchyard-gateway's public API.", "switchyard"};
  app.fallthrough();
  app.require_subcommand(1);
  AddGlobalOptions(app, global, tls);

  std::vector<std::pair<CommandPtr, CLI::App*>> commands;
  for (CommandFactory make : kCommands) {
    CommandPtr command = make();
    CLI::App* sub = app.add_subcommand(command->name(), command->description());
    command->AddOptions(*sub);
    sub->footer(command->footer());
    commands.emplace_back(std::move(command), sub);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e, out, err);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (absl::Status s = FinishGlobalOptions(global, tls); !s.ok()) {
    return ReportUsageError(s, err);
  }
  for (auto& [command, sub] : commands) {
    if (*sub) return command->Run(global, out, err);
  }
  err << app.help();
  return kExitUsage;
}

}  // namespace

int RunCli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  try {
    return RunCliOrThrow(argc, argv, out, err);
  } catch (const std::exception& e) {
    err << "error: " << e.what() << "\n";
  } catch (...) {
    err << "error: unexpected failure\n";
  }
  return kExitRpcError;
}

int RunCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::vector<const char*> argv;
  argv.reserve(args.size() + 2);
  argv.push_back("switchyard");
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  argv.push_back(nullptr);
  return RunCli(static_cast<int>(args.size() + 1), argv.data(), out, err);
}

std::string StatusCodeName(int code) {
  if (code >= 0 && code <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) {
    return GrpcCodeName(static_cast<grpc::StatusCode>(code));
  }
  return absl::StrCat("CODE_", code);
}

// The CLI's x-request-id: the gateway uses it as the job's request id, which shows on its status
// page, so it comes from OpenSSL's CSPRNG like the gateway's own ids.
std::string GenerateRequestId() { return SecureRandomHex(16); }

}  // namespace switchyard::cli
