// The `switchyard` command-line client of the gateway's public API (switchyard.v1.Gateway).
//
// The CLI's logic lives in its library so that it can be tested; main.cc only calls RunCli().
// Each subcommand is a Command (command.h) listed once in the command table of cli_commands.cc;
// the pipeline jobs are generic over a per-pipeline Job (job_command.h).
//
// Exit codes: 0 on success, 1 when the RPC failed (or the gateway's answer was unusable), 2 for
// usage errors found before calling: bad arguments, unreadable input, unwritable output.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcError = 1;
inline constexpr int kExitUsage = 2;

// Default gateway address when neither --gateway nor SWITCHYARD_GATEWAY is given.
inline constexpr char kDefaultGateway[] = "127.0.0.1:50051";
// Environment variable that overrides the default gateway address.
inline constexpr char kGatewayEnvVar[] = "SWITCHYARD_GATEWAY";
// gRPC metadata key carrying the request id.
inline constexpr char kRequestIdMetadataKey[] = "x-request-id";
// Largest message the CLI sends or receives (media travel inline).
inline constexpr int kMaxMessageBytes = 256 * 1024 * 1024;

// Runs the CLI on `argv` (argv[0] is the program name). Writes results to `out` and diagnostics
// to `err`; returns the process exit code. Never throws.
int RunCli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

// Same, with the arguments after the program name.
int RunCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// ---------------------------------------------------------------------------------------------
// Building blocks, exposed for tests (renditions.cc, cli_files.cc, node_commands.cc).

// Parses a bitrate in bits per second: "800000", "3000k", "3M", "2.5M" (k = 1000, M = 1000000;
// suffixes case-insensitive). INVALID_ARGUMENT unless the result is a positive integer.
absl::StatusOr<int64_t> ParseBitrate(absl::string_view text);

// Parses a frame rate "N" or "N/D" (also a decimal such as "29.97") into a positive fraction.
absl::StatusOr<std::pair<int32_t, int32_t>> ParseFps(absl::string_view text);

// Parses a rendition "[NAME=]WIDTHxHEIGHT:BITRATE[@FPS]", e.g. "1280x720:3000k",
// "480p=854x480:1.6M@30000/1001" or "0x360:800k" (0 keeps the input's aspect ratio). Width and
// height must be even when positive, and not both 0.
absl::StatusOr<switchyard::v1::Rendition> ParseRendition(absl::string_view text);

// Width and height of a PNG or JPEG image, read from its header. INVALID_ARGUMENT when the data
// is neither or the header is truncated.
absl::StatusOr<std::pair<int, int>> ProbeImageSize(absl::string_view data);

// Name of a gRPC status code as in the gRPC docs, e.g. 14 -> "UNAVAILABLE".
std::string StatusCodeName(int code);

// A random request id (32 lowercase hex digits).
std::string GenerateRequestId();

// Base file name (no extension) of a rendition's output: its name, else "<height>p" (using
// `actual_height` when the rendition asked for height 0), else "rendition<index+1>".
std::string RenditionBaseName(const switchyard::v1::Rendition& rendition, int actual_height,
                              int index);

// The human-readable capabilities listing; `with_offers` adds one line per model offer.
std::string FormatCapabilities(const switchyard::v1::ListCapabilitiesResponse& response,
                               bool with_offers);

}  // namespace switchyard::cli
