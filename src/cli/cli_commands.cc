#include "cli/cli_commands.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/cli_internal.h"
#include "common/media/segmenter.h"
#include "common/secure_random.h"
#include "common/status.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::cli {
namespace {

namespace fs = std::filesystem;
namespace v1 = switchyard::v1;
using Json = nlohmann::ordered_json;

// Longest input the CLI sends: the message limit less room for the other request fields.
constexpr int64_t kMaxInputBytes = kMaxMessageBytes - 64 * 1024;
constexpr int kMaxRenditions = 8;
constexpr int kMaxDimension = 16384;
constexpr double kMaxTimeoutSeconds = 365.0 * 24 * 3600;

// ---------------------------------------------------------------------------------------------
// Options.

struct CapabilitiesOptions {
  std::string pipeline;
  bool offers = false;
};

struct UpscaleOptions {
  std::string model;
  std::string in;
  std::string out;
  std::string prompt;
  int64_t seed = 0;
  int32_t steps = 0;
  bool no_safety_check = false;
  CLI::Option* seed_opt = nullptr;
  CLI::Option* steps_opt = nullptr;
};

struct TranscodeOptions {
  std::string in;
  std::string out_dir;
  std::vector<std::string> renditions;
  std::string container = "mpegts";
  std::string preset;
  std::string profile;
  double gop_seconds = 0;
  std::string fps;
  std::string stream_id;
  int64_t sequence = 0;
  double segment_seconds = 2.0;  // transcode-file only
  bool intra_only = false;
  std::string audio_codec;  // "" (gateway default: copy), "copy" or "aac"
  int64_t audio_bitrate_bps = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Small helpers, shared with pipeline_commands.cc through cli_internal.h.

namespace internal {

std::string Quote(absl::string_view s) { return absl::StrCat("'", s, "'"); }

std::string FormatDouble(double value, const char* format) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

std::string FormatMs(double ms) { return FormatDouble(std::max(0.0, ms), "%.0f"); }

std::string ErrnoMessage(int errnum) { return std::generic_category().message(errnum); }

// Reads a whole input file; usage errors (exit 2) come back as non-OK statuses.
absl::StatusOr<std::string> ReadInputFile(const std::string& path, absl::string_view what) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    return absl::NotFoundError(absl::StrCat(what, " ", Quote(path), " does not exist"));
  }
  if (fs::is_directory(st)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(path), " is a directory"));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot read ", what, " ", Quote(path), ": ", ErrnoMessage(errno)));
  }
  std::string data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) {
    return absl::DataLossError(
        absl::StrCat("cannot read ", what, " ", Quote(path), ": ", ErrnoMessage(errno)));
  }
  if (data.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(path), " is empty"));
  }
  if (static_cast<int64_t>(data.size()) > kMaxInputBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(path), " is too large (",
                                                   data.size(), " bytes, at most ", kMaxInputBytes,
                                                   ")"));
  }
  return data;
}

absl::Status CheckWritableDirectory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("output directory ", Quote(dir.string()), " does not exist"));
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("output directory ", Quote(dir.string()),
                                                    " is not writable: ", ErrnoMessage(errno)));
  }
  return absl::OkStatus();
}

// Checks that `path` can be created or overwritten, without touching it.
absl::Status CheckWritableFile(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("output ", Quote(path), " is a directory"));
  }
  const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (absl::Status s = CheckWritableDirectory(parent); !s.ok()) return s;
  if (fs::exists(p, ec) && ::access(p.c_str(), W_OK) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("output ", Quote(path), " is not writable: ", ErrnoMessage(errno)));
  }
  return absl::OkStatus();
}

// Creates `dir` (and its parents) when missing; checks that it is a writable directory.
absl::Status PrepareOutputDirectory(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create output directory ", Quote(dir), ": ", ec.message()));
    }
  } else if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("output ", Quote(dir), " is not a directory"));
  }
  return CheckWritableDirectory(dir);
}

// Writes `data` to a temporary file next to `path`, then renames it over `path`, so that a reader
// never sees a partial output.
absl::Status WriteFileAtomically(const fs::path& path, absl::string_view data) {
  fs::path tmp = path;
  tmp += absl::StrCat(".tmp-", GenerateRequestId().substr(0, 8));
  {
    std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
    if (!file) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write ", Quote(path.string()), ": ", ErrnoMessage(errno)));
    }
    file.write(data.data(), static_cast<std::streamsize>(data.size()));
    file.close();
    if (!file) {
      const int saved = errno;
      std::error_code ignored;
      fs::remove(tmp, ignored);
      return absl::DataLossError(
          absl::StrCat("cannot write ", Quote(path.string()), ": ", ErrnoMessage(saved)));
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", Quote(path.string()), ": ", ec.message()));
  }
  return absl::OkStatus();
}

// A name that is safe as a file name: [A-Za-z0-9._-], not starting with '.'.
bool IsSafeName(absl::string_view name) {
  if (name.empty() || name.front() == '.' || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

std::string SanitizeName(absl::string_view name) {
  std::string out;
  for (char c : name.substr(0, 64)) {
    out.push_back(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                          c == '-'
                      ? c
                      : '_');
  }
  if (out.empty() || out.front() == '.') out.insert(0, "r");
  return out;
}

// Left-aligned text table; columns separated by two spaces, no trailing blanks.
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

// ---------------------------------------------------------------------------------------------
// RPC plumbing.

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

int ReportUsageError(const absl::Status& status, std::ostream& err) {
  err << "error: " << status.message() << "\n";
  return kExitUsage;
}

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace internal

namespace {

using internal::CheckWritableFile;
using internal::FormatDouble;
using internal::FormatMs;
using internal::FormatPrice;
using internal::FormatTable;
using internal::GlobalOptions;
using internal::IsSafeName;
using internal::JobToJson;
using internal::MakeStub;
using internal::MillisecondsSince;
using internal::PrepareContext;
using internal::PrepareOutputDirectory;
using internal::Quote;
using internal::ReadInputFile;
using internal::ReportRpcError;
using internal::ReportUsageError;
using internal::SanitizeName;
using internal::WriteFileAtomically;

// ---------------------------------------------------------------------------------------------
// Commands.

int RunCapabilities(const GlobalOptions& global, const CapabilitiesOptions& options,
                    std::ostream& out, std::ostream& err) {
  v1::ListCapabilitiesRequest request;
  request.set_pipeline(options.pipeline);
  v1::ListCapabilitiesResponse response;
  grpc::ClientContext context;
  PrepareContext(global, context);
  const grpc::Status status = MakeStub(global)->ListCapabilities(&context, request, &response);
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
  out << FormatCapabilities(response, options.offers);
  return kExitOk;
}

int RunUpscale(const GlobalOptions& global, const UpscaleOptions& options, std::ostream& out,
               std::ostream& err) {
  absl::StatusOr<std::string> image = ReadInputFile(options.in, "input image");
  if (!image.ok()) return ReportUsageError(image.status(), err);
  absl::StatusOr<std::pair<int, int>> in_size = ProbeImageSize(*image);
  if (!in_size.ok()) {
    return ReportUsageError(absl::InvalidArgumentError(absl::StrCat(
                                "input image ", Quote(options.in),
                                " is not a PNG or JPEG image: ", in_size.status().message())),
                            err);
  }
  if (absl::Status s = CheckWritableFile(options.out); !s.ok()) return ReportUsageError(s, err);

  v1::UpscaleRequest request;
  request.set_model_id(options.model);
  request.set_image(std::move(*image));
  request.set_prompt(options.prompt);
  if (options.no_safety_check) request.set_safety_check(false);
  if (options.seed_opt != nullptr && options.seed_opt->count() > 0) request.set_seed(options.seed);
  if (options.steps_opt != nullptr && options.steps_opt->count() > 0) {
    request.set_num_inference_steps(options.steps);
  }

  v1::ImageResponse response;
  grpc::ClientContext context;
  PrepareContext(global, context);
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = MakeStub(global)->Upscale(&context, request, &response);
  const double elapsed_ms = MillisecondsSince(start);
  if (!status.ok()) return ReportRpcError(global, status, err);
  if (response.images_size() == 0 || response.images(0).data().empty()) {
    err << "error: the gateway returned no image\n";
    err << "request id: " << global.request_id << "\n";
    return kExitRpcError;
  }
  const v1::Media& media = response.images(0);
  if (absl::Status s = WriteFileAtomically(options.out, media.data()); !s.ok()) {
    return ReportUsageError(s, err);
  }

  const v1::JobInfo& job = response.job();
  if (global.json) {
    Json json = {{"input", options.in},
                 {"input_width", in_size->first},
                 {"input_height", in_size->second},
                 {"output", options.out},
                 {"bytes", media.data().size()},
                 {"width", media.width()},
                 {"height", media.height()},
                 {"content_type", media.content_type()},
                 {"seed", media.seed()},
                 {"nsfw", media.nsfw()},
                 {"request_id", global.request_id},
                 {"elapsed_ms", elapsed_ms},
                 {"job", JobToJson(job)}};
    out << json.dump(2) << "\n";
    return kExitOk;
  }
  out << "upscaled " << options.in << " (" << in_size->first << "x" << in_size->second << ") -> "
      << options.out << " (" << media.width() << "x" << media.height() << ") with "
      << (job.model_id().empty() ? options.model : job.model_id()) << " on "
      << (job.orchestrator().empty() ? "?" : job.orchestrator()) << " in "
      << FormatMs(job.compute_ms()) << " ms (attempts " << job.attempts() << ")\n";
  if (media.nsfw()) out << "warning: the output was flagged as NSFW\n";
  return kExitOk;
}

// Parses and checks the ladder; applies the command-wide settings to each rendition.
absl::StatusOr<std::vector<v1::Rendition>> BuildLadder(const TranscodeOptions& options) {
  if (options.renditions.empty()) {
    return absl::InvalidArgumentError("at least one --rendition is required");
  }
  if (static_cast<int>(options.renditions.size()) > kMaxRenditions) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxRenditions, " renditions, got ", options.renditions.size()));
  }
  std::pair<int32_t, int32_t> fps = {0, 0};
  if (!options.fps.empty()) {
    absl::StatusOr<std::pair<int32_t, int32_t>> parsed = ParseFps(options.fps);
    if (!parsed.ok()) return parsed.status();
    fps = *parsed;
  }
  if (!std::isfinite(options.gop_seconds) || options.gop_seconds < 0) {
    return absl::InvalidArgumentError("--gop must be a non-negative number of seconds");
  }
  std::vector<v1::Rendition> ladder;
  std::set<std::string> names;
  for (const std::string& text : options.renditions) {
    absl::StatusOr<v1::Rendition> rendition = ParseRendition(text);
    if (!rendition.ok()) return rendition.status();
    if (rendition->fps_num() == 0 && fps.first > 0) {
      rendition->set_fps_num(fps.first);
      rendition->set_fps_den(fps.second);
    }
    rendition->set_gop_seconds(options.gop_seconds);
    rendition->set_intra_only(options.intra_only);
    rendition->set_preset(options.preset);
    rendition->set_profile(options.profile);
    // Names known before the call must not collide (height 0 renditions are named later).
    if (!rendition->name().empty() || rendition->height() > 0) {
      const std::string name = RenditionBaseName(*rendition, 0, 0);
      if (!names.insert(name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("two renditions would both be named ", Quote(name),
                         "; give them distinct names, e.g. --rendition hi=1280x720:3000k"));
      }
    }
    ladder.push_back(*std::move(rendition));
  }
  return ladder;
}

int RunTranscode(const GlobalOptions& global, const TranscodeOptions& options, std::ostream& out,
                 std::ostream& err) {
  absl::StatusOr<std::vector<v1::Rendition>> ladder = BuildLadder(options);
  if (!ladder.ok()) return ReportUsageError(ladder.status(), err);
  absl::StatusOr<std::string> segment = ReadInputFile(options.in, "input segment");
  if (!segment.ok()) return ReportUsageError(segment.status(), err);
  if (absl::Status s = PrepareOutputDirectory(options.out_dir); !s.ok()) {
    return ReportUsageError(s, err);
  }

  v1::TranscodeRequest request;
  request.set_segment(std::move(*segment));
  for (v1::Rendition& r : *ladder) *request.add_renditions() = std::move(r);
  request.set_container(options.container);
  request.set_stream_id(options.stream_id);
  request.set_audio_codec(options.audio_codec);
  request.set_audio_bitrate_bps(options.audio_bitrate_bps);
  request.set_sequence(options.sequence);

  v1::TranscodeResponse response;
  grpc::ClientContext context;
  PrepareContext(global, context);
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = MakeStub(global)->Transcode(&context, request, &response);
  const double elapsed_ms = MillisecondsSince(start);
  if (!status.ok()) return ReportRpcError(global, status, err);
  if (response.renditions_size() != request.renditions_size()) {
    err << "error: the gateway returned " << response.renditions_size() << " renditions for "
        << request.renditions_size() << " asked for\n";
    err << "request id: " << global.request_id << "\n";
    return kExitRpcError;
  }

  const std::string extension = options.container == "mp4" ? ".mp4" : ".ts";
  std::set<std::string> used;
  std::vector<std::string> paths;
  for (int i = 0; i < response.renditions_size(); ++i) {
    const v1::RenditionResult& result = response.renditions(i);
    v1::Rendition effective = request.renditions(i);
    if (!result.rendition().name().empty()) effective.set_name(result.rendition().name());
    std::string base = SanitizeName(RenditionBaseName(effective, result.height(), i));
    for (int n = 2; !used.insert(base).second; ++n) {
      base = absl::StrCat(SanitizeName(RenditionBaseName(effective, result.height(), i)), "-", n);
    }
    const fs::path path = fs::path(options.out_dir) / (base + extension);
    if (absl::Status s = WriteFileAtomically(path, result.data()); !s.ok()) {
      return ReportUsageError(s, err);
    }
    paths.push_back(path.string());
  }

  const v1::JobInfo& job = response.job();
  if (global.json) {
    Json renditions = Json::array();
    for (int i = 0; i < response.renditions_size(); ++i) {
      const v1::RenditionResult& result = response.renditions(i);
      const v1::Rendition& asked =
          result.has_rendition() ? result.rendition() : request.renditions(i);
      renditions.push_back(Json{{"name", fs::path(paths[i]).stem().string()},
                                {"path", paths[i]},
                                {"width", result.width()},
                                {"height", result.height()},
                                {"frames", result.frames()},
                                {"bytes", result.data().size()},
                                {"pixels", result.pixels()},
                                {"bitrate_bps", asked.bitrate_bps()},
                                {"fps_num", asked.fps_num()},
                                {"fps_den", asked.fps_den()}});
    }
    Json json = {{"input", options.in},
                 {"input_frames", response.input_frames()},
                 {"duration_seconds", response.duration_seconds()},
                 {"container", options.container},
                 {"output_dir", options.out_dir},
                 {"renditions", std::move(renditions)},
                 {"request_id", global.request_id},
                 {"elapsed_ms", elapsed_ms},
                 {"job", JobToJson(job)}};
    out << json.dump(2) << "\n";
    return kExitOk;
  }

  std::vector<std::vector<std::string>> rows;
  int64_t total_bytes = 0;
  for (int i = 0; i < response.renditions_size(); ++i) {
    const v1::RenditionResult& result = response.renditions(i);
    total_bytes += static_cast<int64_t>(result.data().size());
    rows.push_back({fs::path(paths[i]).stem().string(),
                    absl::StrCat(result.width(), "x", result.height()),
                    absl::StrCat(result.frames(), " frames"),
                    absl::StrCat(result.data().size(), " bytes"), "-> " + paths[i]});
  }
  out << FormatTable(rows);
  out << "transcoded " << options.in << " (" << response.input_frames() << " frames, "
      << FormatDouble(response.duration_seconds(), "%.2f") << " s) into "
      << response.renditions_size() << " rendition" << (response.renditions_size() == 1 ? "" : "s")
      << ", " << total_bytes << " bytes, on "
      << (job.orchestrator().empty() ? "?" : job.orchestrator()) << " in "
      << FormatMs(job.compute_ms()) << " ms (attempts " << job.attempts() << ", total "
      << FormatMs(elapsed_ms) << " ms)\n";
  return kExitOk;
}

// A progress bar on one terminal line: [#####.....]  42%  12/30 segments
std::string ProgressLine(double fraction, int64_t segments) {
  constexpr int kWidth = 30;
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * kWidth + 0.5);
  return absl::StrCat("\r[", std::string(filled, '#'), std::string(kWidth - filled, '.'), "] ",
                      FormatDouble(fraction * 100, "%3.0f"), "%  ", segments, " segment",
                      segments == 1 ? "" : "s");
}

// Cuts the input into keyframe-aligned MPEG-TS segments, streams them through the gateway's
// TranscodeStream, and appends each rendition's segments to one MPEG-TS file per rendition.
// Stops at the first segment that fails (a file with a hole is not a result) and removes the
// partial outputs.
int RunTranscodeFile(const GlobalOptions& global, const TranscodeOptions& options,
                     std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::vector<v1::Rendition>> ladder = BuildLadder(options);
  if (!ladder.ok()) return ReportUsageError(ladder.status(), err);
  if (!std::isfinite(options.segment_seconds) || options.segment_seconds < 0.5 ||
      options.segment_seconds > 60) {
    return ReportUsageError(
        absl::InvalidArgumentError("--segment-seconds must be between 0.5 and 60"), err);
  }
  if (absl::Status s = PrepareOutputDirectory(options.out_dir); !s.ok()) {
    return ReportUsageError(s, err);
  }

  grpc::ClientContext context;
  PrepareContext(global, context);
  auto stub = MakeStub(global);
  std::unique_ptr<grpc::ClientReaderWriter<v1::TranscodeRequest, v1::TranscodeStreamResponse>>
      stream = stub->TranscodeStream(&context);
  const auto start = std::chrono::steady_clock::now();

  struct Output {
    fs::path path;
    fs::path partial;
    std::ofstream file;
    int64_t frames = 0;
    int64_t bytes = 0;
    int width = 0;
    int height = 0;
  };
  std::vector<Output> outputs;
  std::set<std::string> orchestrators;
  int64_t segments = 0;
  double seconds_done = 0;
  int64_t input_frames = 0;
  std::string failure;  // set when the gateway answered a segment with an error
  const bool show_progress = !global.json;

  absl::Status split = media::SplitIntoSegments(
      options.in, options.segment_seconds,
      [&](std::string segment, const media::SegmentInfo& info) -> absl::Status {
        v1::TranscodeRequest request;
        request.set_segment(std::move(segment));
        request.set_sequence(info.index);
        if (info.index == 0) {
          for (const v1::Rendition& r : *ladder) *request.add_renditions() = r;
          request.set_container("mpegts");
          request.set_stream_id(options.stream_id);
          request.set_audio_codec(options.audio_codec);
          request.set_audio_bitrate_bps(options.audio_bitrate_bps);
        }
        if (!stream->Write(request)) return absl::UnavailableError("the stream closed");
        v1::TranscodeStreamResponse response;
        if (!stream->Read(&response)) return absl::UnavailableError("the stream closed");
        if (response.code() != 0) {
          failure = absl::StrCat(
              "segment ", info.index, " (", FormatDouble(info.start_seconds, "%.2f"),
              " s) failed: ", GrpcCodeName(static_cast<grpc::StatusCode>(response.code())), ": ",
              response.error());
          return absl::AbortedError(failure);
        }
        const v1::TranscodeResponse& result = response.result();
        if (result.renditions_size() != static_cast<int>(ladder->size())) {
          failure = absl::StrCat("segment ", info.index, ": the gateway returned ",
                                 result.renditions_size(), " renditions for ", ladder->size());
          return absl::AbortedError(failure);
        }
        if (outputs.empty()) {
          std::set<std::string> used;
          outputs.resize(ladder->size());
          for (int i = 0; i < result.renditions_size(); ++i) {
            v1::Rendition effective = (*ladder)[i];
            const v1::RenditionResult& r = result.renditions(i);
            if (!r.rendition().name().empty()) effective.set_name(r.rendition().name());
            std::string base = SanitizeName(RenditionBaseName(effective, r.height(), i));
            for (int n = 2; !used.insert(base).second; ++n) {
              base =
                  absl::StrCat(SanitizeName(RenditionBaseName(effective, r.height(), i)), "-", n);
            }
            outputs[i].path = fs::path(options.out_dir) / (base + ".ts");
            outputs[i].partial = fs::path(options.out_dir) / (base + ".ts.partial");
            outputs[i].file.open(outputs[i].partial, std::ios::binary | std::ios::trunc);
            if (!outputs[i].file) {
              return absl::PermissionDeniedError(
                  absl::StrCat("cannot write ", outputs[i].partial.string()));
            }
          }
        }
        for (int i = 0; i < result.renditions_size(); ++i) {
          const v1::RenditionResult& r = result.renditions(i);
          Output& o = outputs[i];
          o.file.write(r.data().data(), static_cast<std::streamsize>(r.data().size()));
          if (!o.file) {
            return absl::DataLossError(absl::StrCat("writing ", o.partial.string(), " failed"));
          }
          o.frames += r.frames();
          o.bytes += static_cast<int64_t>(r.data().size());
          o.width = r.width();
          o.height = r.height();
        }
        orchestrators.insert(result.job().orchestrator());
        input_frames += result.input_frames();
        seconds_done += result.duration_seconds();
        ++segments;
        if (show_progress) {
          const double fraction = info.file_seconds > 0 ? info.end_seconds / info.file_seconds : 0;
          err << ProgressLine(fraction, segments) << std::flush;
        }
        return absl::OkStatus();
      });
  if (show_progress && segments > 0) err << "\n";
  stream->WritesDone();
  const grpc::Status status = stream->Finish();
  const double elapsed_ms = MillisecondsSince(start);
  auto discard = [&] {
    for (Output& o : outputs) {
      o.file.close();
      std::error_code ec;
      fs::remove(o.partial, ec);
    }
  };
  if (!split.ok()) {
    discard();
    if (!failure.empty()) {
      err << "error: " << failure << "\n"
          << "request id: " << global.request_id << "\n";
      return kExitRpcError;
    }
    if (!status.ok()) return ReportRpcError(global, status, err);
    if (split.code() == absl::StatusCode::kUnavailable) {
      err << "error: the gateway ended the stream early\n";
      return kExitRpcError;
    }
    return ReportUsageError(split, err);
  }
  if (!status.ok()) {
    discard();
    return ReportRpcError(global, status, err);
  }
  for (Output& o : outputs) {
    o.file.close();
    std::error_code ec;
    fs::rename(o.partial, o.path, ec);
    if (ec) {
      return ReportUsageError(absl::PermissionDeniedError(absl::StrCat(
                                  "cannot rename ", o.partial.string(), ": ", ec.message())),
                              err);
    }
  }

  const double realtime = elapsed_ms > 0 ? seconds_done / (elapsed_ms / 1000) : 0;
  if (global.json) {
    Json renditions = Json::array();
    for (const Output& o : outputs) {
      renditions.push_back(Json{{"name", o.path.stem().string()},
                                {"path", o.path.string()},
                                {"width", o.width},
                                {"height", o.height},
                                {"frames", o.frames},
                                {"bytes", o.bytes}});
    }
    out << Json{{"input", options.in},
                {"segments", segments},
                {"input_frames", input_frames},
                {"duration_seconds", seconds_done},
                {"output_dir", options.out_dir},
                {"renditions", std::move(renditions)},
                {"orchestrators",
                 std::vector<std::string>(orchestrators.begin(), orchestrators.end())},
                {"request_id", global.request_id},
                {"elapsed_ms", elapsed_ms},
                {"realtime_multiple", realtime}}
               .dump(2)
        << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const Output& o : outputs) {
    rows.push_back({o.path.stem().string(), absl::StrCat(o.width, "x", o.height),
                    absl::StrCat(o.frames, " frames"), absl::StrCat(o.bytes, " bytes"),
                    "-> " + o.path.string()});
  }
  out << FormatTable(rows);
  std::string nodes;
  for (const auto& n : orchestrators) absl::StrAppend(&nodes, nodes.empty() ? "" : ", ", n);
  out << "transcoded " << options.in << " (" << segments << " segments, " << input_frames
      << " frames, " << FormatDouble(seconds_done, "%.2f") << " s) on " << nodes << " in "
      << FormatMs(elapsed_ms) << " ms (" << FormatDouble(realtime, "%.2f") << "x realtime)\n";
  return kExitOk;
}

constexpr char kGlobalFooter[] =
    "Global options (--gateway, --timeout, --json, --request-id) may also follow the command.\n";

int RunCliOrThrow(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  GlobalOptions global;
  CapabilitiesOptions caps;
  UpscaleOptions upscale;
  TranscodeOptions transcode;

  CLI::App app{"Switchyard client: calls a switchyard-gateway's public API.", "switchyard"};
  app.fallthrough();
  app.require_subcommand(1);
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
  std::string tls_ca, tls_cert, tls_key;
  app.add_flag("--tls", global.tls,
               "Call the gateway over TLS, trusting the system's CAs (implied by --tls-ca)");
  app.add_option("--tls-ca", tls_ca, "PEM CA file the gateway's certificate must chain to (TLS)")
      ->envname("SWITCHYARD_TLS_CA");
  app.add_option("--tls-cert", tls_cert,
                 "PEM client certificate, for a gateway that requires one (with --tls-key)");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-server-name", global.tls_config.server_name_override,
                 "Name to check in the gateway's certificate instead of the --gateway host");

  CLI::App* caps_cmd = app.add_subcommand(
      "capabilities", "List the pipelines, models, capacity and prices the cluster offers now");
  caps_cmd->add_option("--pipeline", caps.pipeline, "Only this pipeline, e.g. upscale");
  caps_cmd->add_flag("--offers", caps.offers, "Also list every orchestrator's offers");
  caps_cmd->footer(kGlobalFooter);

  CLI::App* up_cmd =
      app.add_subcommand("upscale", "Upscale a PNG or JPEG image with a super-resolution model");
  up_cmd->add_option("--model", upscale.model, "Model id, e.g. esrgan-slim-x4")->required();
  up_cmd->add_option("--in", upscale.in, "Input image (PNG or JPEG)")->required();
  up_cmd->add_option("--out", upscale.out, "Output image (PNG)")->required();
  up_cmd->add_option("--prompt", upscale.prompt, "Prompt, for models that take one");
  upscale.seed_opt =
      up_cmd->add_option("--seed", upscale.seed, "Seed, for non-deterministic models");
  upscale.steps_opt =
      up_cmd->add_option("--steps", upscale.steps, "Inference steps, for diffusion upscalers")
          ->check(CLI::PositiveNumber);
  up_cmd->add_flag("--no-safety-check", upscale.no_safety_check, "Skip the safety checker");
  up_cmd->footer(kGlobalFooter);

  CLI::App* tc_cmd =
      app.add_subcommand("transcode", "Transcode a video segment into a ladder of renditions");
  tc_cmd->add_option("--in", transcode.in, "Input segment (MPEG-TS or MP4, H.264)")->required();
  tc_cmd->add_option("--out", transcode.out_dir, "Output directory (created when missing)")
      ->required();
  tc_cmd
      ->add_option("--rendition", transcode.renditions,
                   "[NAME=]WIDTHxHEIGHT:BITRATE[@FPS], e.g. 1280x720:3000k or 0x480:1.6M@30; "
                   "repeat for a ladder (1 to 8); width or height 0 keeps the aspect ratio")
      ->required()
      ->allow_extra_args(false);
  tc_cmd->add_option("--container", transcode.container, "Output container")
      ->check(CLI::IsMember({"mpegts", "mp4"}))
      ->capture_default_str();
  tc_cmd->add_option("--preset", transcode.preset, "libx264 preset (gateway default: veryfast)")
      ->check(CLI::IsMember({"ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                             "slow", "slower", "veryslow", "placebo"}));
  tc_cmd->add_option("--profile", transcode.profile, "H.264 profile (gateway default: main)")
      ->check(CLI::IsMember({"baseline", "main", "high"}));
  tc_cmd->add_flag("--intra-only", transcode.intra_only, "Every frame a keyframe (ignores --gop)");
  tc_cmd->add_option("--audio", transcode.audio_codec,
                     "Audio in the renditions: copy, or aac to re-encode (gateway default: copy)")
      ->check(CLI::IsMember({"copy", "aac"}));
  tc_cmd->add_option("--audio-bitrate", transcode.audio_bitrate_bps,
                     "AAC bitrate in bit/s with --audio aac (default 128000)")
      ->check(CLI::Range(int64_t{8000}, int64_t{512000}));
  tc_cmd->add_option("--gop", transcode.gop_seconds,
                     "Keyframe interval in seconds (0: encoder default, 2 s)");
  tc_cmd->add_option("--fps", transcode.fps,
                     "Output frame rate N or N/D for renditions without @FPS (default: input's)");
  tc_cmd->add_option("--stream-id", transcode.stream_id, "Stream the segment belongs to");
  tc_cmd->add_option("--sequence", transcode.sequence, "Sequence number of the segment");
  tc_cmd->footer(kGlobalFooter);

  TranscodeOptions transcode_file;
  CLI::App* tf_cmd = app.add_subcommand(
      "transcode-file",
      "Transcode a whole video file: cut into segments at keyframes, streamed through the "
      "gateway, reassembled into one MPEG-TS file per rendition (--timeout covers the whole file)");
  tf_cmd->add_option("--in", transcode_file.in, "Input file (any container, H.264 or HEVC video)")
      ->required();
  tf_cmd->add_option("--out", transcode_file.out_dir, "Output directory (created when missing)")
      ->required();
  tf_cmd
      ->add_option("--rendition", transcode_file.renditions,
                   "[NAME=]WIDTHxHEIGHT:BITRATE[@FPS], as for transcode; repeat for a ladder")
      ->required()
      ->allow_extra_args(false);
  tf_cmd
      ->add_option("--segment-seconds", transcode_file.segment_seconds,
                   "Target segment length; segments start at the next keyframe after it")
      ->capture_default_str();
  tf_cmd
      ->add_option("--preset", transcode_file.preset, "libx264 preset (gateway default: veryfast)")
      ->check(CLI::IsMember({"ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                             "slow", "slower", "veryslow", "placebo"}));
  tf_cmd->add_option("--profile", transcode_file.profile, "H.264 profile (gateway default: main)")
      ->check(CLI::IsMember({"baseline", "main", "high"}));
  tf_cmd->add_flag("--intra-only", transcode_file.intra_only,
                   "Every frame a keyframe (ignores --gop)");
  tf_cmd->add_option("--audio", transcode_file.audio_codec,
                     "Audio in the renditions: copy, or aac to re-encode (gateway default: copy)")
      ->check(CLI::IsMember({"copy", "aac"}));
  tf_cmd->add_option("--audio-bitrate", transcode_file.audio_bitrate_bps,
                     "AAC bitrate in bit/s with --audio aac (default 128000)")
      ->check(CLI::Range(int64_t{8000}, int64_t{512000}));
  tf_cmd->add_option("--gop", transcode_file.gop_seconds,
                     "Keyframe interval in seconds (0: encoder default, 2 s)");
  tf_cmd->add_option("--fps", transcode_file.fps,
                     "Output frame rate N or N/D for renditions without @FPS (default: input's)");
  tf_cmd->add_option("--stream-id", transcode_file.stream_id,
                     "Stream id (default: the gateway names the stream)");
  tf_cmd->footer(kGlobalFooter);

  internal::PipelineCommands pipelines(app);
  internal::UsageCommand usage(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e, out, err);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (global.gateway.empty()) {
    return ReportUsageError(absl::InvalidArgumentError("--gateway must not be empty"), err);
  }
  if (!std::isfinite(global.timeout_seconds) || global.timeout_seconds <= 0 ||
      global.timeout_seconds > kMaxTimeoutSeconds) {
    return ReportUsageError(
        absl::InvalidArgumentError("--timeout must be a positive number of seconds"), err);
  }
  global.tls_config.enabled = global.tls || !tls_ca.empty() || !tls_cert.empty() ||
                             !tls_key.empty() || !global.tls_config.server_name_override.empty();
  global.tls_config.ca_file = tls_ca;
  global.tls_config.cert_file = tls_cert;
  global.tls_config.key_file = tls_key;
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
    return ReportUsageError(absl::InvalidArgumentError(message), err);
  }
  {
    auto security = GrpcClientSecurity::Create(global.tls_config);
    if (!security.ok()) return ReportUsageError(security.status(), err);
    global.security = *std::move(security);
  }
  if (global.request_id.empty()) {
    global.request_id = GenerateRequestId();
  } else if (global.request_id.size() > 128 ||
             !std::all_of(global.request_id.begin(), global.request_id.end(),
                          [](char c) { return c >= 0x21 && c <= 0x7e; })) {
    return ReportUsageError(
        absl::InvalidArgumentError(
            "--request-id must be 1 to 128 printable ASCII characters without spaces"),
        err);
  }

  if (*caps_cmd) return RunCapabilities(global, caps, out, err);
  if (*up_cmd) return RunUpscale(global, upscale, out, err);
  if (*tc_cmd) return RunTranscode(global, transcode, out, err);
  if (*tf_cmd) return RunTranscodeFile(global, transcode_file, out, err);
  if (std::optional<int> rc = pipelines.Run(global, out, err)) return *rc;
  if (std::optional<int> rc = usage.Run(global, out, err)) return *rc;
  err << app.help();
  return kExitUsage;
}

absl::Status BadRendition(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid rendition \"", text, "\": ", why,
                   " (expected [NAME=]WIDTHxHEIGHT:BITRATE[@FPS], e.g. 1280x720:3000k)"));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public functions.

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

absl::StatusOr<int64_t> ParseBitrate(absl::string_view text) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid bitrate \"", text, "\": ", why, " (e.g. 800000, 3000k, 3M or 2.5M)"));
  };
  absl::string_view number = text;
  int64_t multiplier = 1;
  if (!number.empty()) {
    const char suffix = absl::ascii_tolower(static_cast<unsigned char>(number.back()));
    if (suffix == 'k') multiplier = 1000;
    if (suffix == 'm') multiplier = 1000 * 1000;
    if (multiplier != 1) number.remove_suffix(1);
  }
  if (number.empty()) return bad("no number");
  absl::string_view int_part = number;
  absl::string_view frac_part;
  if (const size_t dot = number.find('.'); dot != absl::string_view::npos) {
    int_part = number.substr(0, dot);
    frac_part = number.substr(dot + 1);
    if (frac_part.empty() || frac_part.size() > 6) return bad("bad decimal");
  }
  const auto all_digits = [](absl::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); });
  };
  if (int_part.empty() && frac_part.empty()) return bad("no number");
  if (!all_digits(int_part) || !all_digits(frac_part)) return bad("not a number");
  if (int_part.size() > 12) return bad("too large");
  int64_t whole = 0;
  if (!int_part.empty() && !absl::SimpleAtoi(int_part, &whole)) return bad("not a number");
  int64_t frac = 0;
  int64_t scale = 1;
  if (!frac_part.empty()) {
    if (!absl::SimpleAtoi(frac_part, &frac)) return bad("not a number");
    for (size_t i = 0; i < frac_part.size(); ++i) scale *= 10;
  }
  if ((frac * multiplier) % scale != 0) return bad("not a whole number of bits per second");
  const int64_t bps = whole * multiplier + frac * multiplier / scale;
  if (bps <= 0) return bad("must be positive");
  if (bps > int64_t{1000} * 1000 * 1000 * 1000) return bad("too large");
  return bps;
}

absl::StatusOr<std::pair<int32_t, int32_t>> ParseFps(absl::string_view text) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid frame rate \"", text, "\": ", why, " (e.g. 30, 30000/1001, 29.97)"));
  };
  int64_t num = 0;
  int64_t den = 1;
  if (const size_t slash = text.find('/'); slash != absl::string_view::npos) {
    if (!absl::SimpleAtoi(text.substr(0, slash), &num) ||
        !absl::SimpleAtoi(text.substr(slash + 1), &den)) {
      return bad("not N/D");
    }
  } else if (const size_t dot = text.find('.'); dot != absl::string_view::npos) {
    // The NTSC rates are written as decimals but mean N*1000/1001.
    if (text == "23.976" || text == "23.98") return std::pair<int32_t, int32_t>{24000, 1001};
    if (text == "29.97") return std::pair<int32_t, int32_t>{30000, 1001};
    if (text == "59.94") return std::pair<int32_t, int32_t>{60000, 1001};
    const absl::string_view int_part = text.substr(0, dot);
    const absl::string_view frac_part = text.substr(dot + 1);
    int64_t whole = 0;
    int64_t frac = 0;
    if (int_part.empty() || frac_part.empty() || frac_part.size() > 3 ||
        !absl::SimpleAtoi(int_part, &whole) || !absl::SimpleAtoi(frac_part, &frac) ||
        frac_part.front() == '+' || frac_part.front() == '-' || frac < 0) {
      return bad("not a decimal number");
    }
    den = 1;
    for (size_t i = 0; i < frac_part.size(); ++i) den *= 10;
    num = whole * den + frac;
  } else if (!absl::SimpleAtoi(text, &num)) {
    return bad("not a number");
  }
  if (num <= 0 || den <= 0) return bad("must be positive");
  const int64_t g = std::gcd(num, den);
  num /= g;
  den /= g;
  if (num > 1000 * den) return bad("too high");
  if (num > INT32_MAX || den > INT32_MAX) return bad("too large");
  return std::pair<int32_t, int32_t>{static_cast<int32_t>(num), static_cast<int32_t>(den)};
}

absl::StatusOr<v1::Rendition> ParseRendition(absl::string_view text) {
  v1::Rendition rendition;
  absl::string_view rest = text;
  if (const size_t eq = rest.find('='); eq != absl::string_view::npos) {
    const absl::string_view name = rest.substr(0, eq);
    if (!IsSafeName(name)) {
      return BadRendition(text, "the name must be letters, digits, '.', '_' or '-'");
    }
    rendition.set_name(std::string(name));
    rest = rest.substr(eq + 1);
  }
  const size_t colon = rest.find(':');
  if (colon == absl::string_view::npos) return BadRendition(text, "missing ':BITRATE'");
  const absl::string_view size = rest.substr(0, colon);
  absl::string_view rate = rest.substr(colon + 1);
  const size_t x = size.find_first_of("xX");
  if (x == absl::string_view::npos) return BadRendition(text, "the size must be WIDTHxHEIGHT");
  int32_t width = 0;
  int32_t height = 0;
  const absl::string_view w_text = size.substr(0, x);
  const absl::string_view h_text = size.substr(x + 1);
  const auto is_digits = [](absl::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
      return absl::ascii_isdigit(static_cast<unsigned char>(c));
    });
  };
  if (!is_digits(w_text) || !is_digits(h_text) || !absl::SimpleAtoi(w_text, &width) ||
      !absl::SimpleAtoi(h_text, &height)) {
    return BadRendition(text, "the size must be WIDTHxHEIGHT in pixels");
  }
  if (width > kMaxDimension || height > kMaxDimension) {
    return BadRendition(text, absl::StrCat("width and height must be at most ", kMaxDimension));
  }
  if (width == 0 && height == 0) return BadRendition(text, "width and height cannot both be 0");
  if (width % 2 != 0 || height % 2 != 0) return BadRendition(text, "width and height must be even");
  rendition.set_width(width);
  rendition.set_height(height);

  if (const size_t at = rate.find('@'); at != absl::string_view::npos) {
    absl::StatusOr<std::pair<int32_t, int32_t>> fps = ParseFps(rate.substr(at + 1));
    if (!fps.ok()) return BadRendition(text, fps.status().message());
    rendition.set_fps_num(fps->first);
    rendition.set_fps_den(fps->second);
    rate = rate.substr(0, at);
  }
  absl::StatusOr<int64_t> bps = ParseBitrate(rate);
  if (!bps.ok()) return BadRendition(text, bps.status().message());
  rendition.set_bitrate_bps(*bps);
  return rendition;
}

absl::StatusOr<std::pair<int, int>> ProbeImageSize(absl::string_view data) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(data[i]); };
  const auto be16 = [&](size_t i) { return (byte(i) << 8) | byte(i + 1); };
  const auto be32 = [&](size_t i) {
    return (uint32_t{byte(i)} << 24) | (uint32_t{byte(i + 1)} << 16) |
           (uint32_t{byte(i + 2)} << 8) | uint32_t{byte(i + 3)};
  };
  static constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";
  if (data.size() >= 8 && data.substr(0, 8) == absl::string_view(kPngSignature, 8)) {
    if (data.size() < 24 || data.substr(12, 4) != "IHDR") {
      return absl::InvalidArgumentError("truncated PNG header");
    }
    const uint32_t width = be32(16);
    const uint32_t height = be32(20);
    if (width == 0 || height == 0 || width > INT32_MAX || height > INT32_MAX) {
      return absl::InvalidArgumentError("bad PNG size");
    }
    return std::pair<int, int>{static_cast<int>(width), static_cast<int>(height)};
  }
  if (data.size() >= 3 && byte(0) == 0xFF && byte(1) == 0xD8 && byte(2) == 0xFF) {
    size_t pos = 2;
    while (pos < data.size()) {
      if (byte(pos) != 0xFF) return absl::InvalidArgumentError("corrupt JPEG header");
      while (pos < data.size() && byte(pos) == 0xFF) ++pos;  // fill bytes
      if (pos >= data.size()) break;
      const uint8_t marker = byte(pos++);
      if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no payload
      if (marker == 0xD9 || marker == 0xDA) {
        return absl::InvalidArgumentError("JPEG without a frame header");
      }
      if (pos + 2 > data.size()) break;
      const size_t length = be16(pos);
      if (length < 2) return absl::InvalidArgumentError("corrupt JPEG header");
      const bool is_sof =
          marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (is_sof) {
        if (pos + 7 > data.size()) break;
        const int height = be16(pos + 3);
        const int width = be16(pos + 5);
        if (width == 0 || height == 0) return absl::InvalidArgumentError("bad JPEG size");
        return std::pair<int, int>{width, height};
      }
      pos += length;
    }
    return absl::InvalidArgumentError("truncated JPEG header");
  }
  return absl::InvalidArgumentError("unknown format");
}

std::string StatusCodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) return kNames[code];
  return absl::StrCat("CODE_", code);
}

// The CLI's x-request-id: the gateway uses it as the job's request id, which shows on its status
// page, so it comes from OpenSSL's CSPRNG like the gateway's own ids.
std::string GenerateRequestId() { return SecureRandomHex(16); }

std::string RenditionBaseName(const v1::Rendition& rendition, int actual_height, int index) {
  if (!rendition.name().empty()) return rendition.name();
  const int height = rendition.height() > 0 ? rendition.height() : actual_height;
  if (height > 0) return absl::StrCat(height, "p");
  return absl::StrCat("rendition", index + 1);
}

std::string FormatCapabilities(const v1::ListCapabilitiesResponse& response, bool with_offers) {
  std::string out;
  if (response.capabilities().empty()) {
    out += "no capabilities: no orchestrator offers a model now\n";
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"PIPELINE", "MODEL", "ORCHESTRATORS", "WARM", "CAPACITY", "IN USE", "MIN PRICE", "UNIT"}};
    for (const v1::Capability& c : response.capabilities()) {
      rows.push_back({c.pipeline(), c.model_id(), absl::StrCat(c.orchestrators()),
                      absl::StrCat(c.warm_orchestrators()), absl::StrCat(c.capacity()),
                      absl::StrCat(c.in_use()), FormatPrice(c.min_price_per_unit()),
                      c.unit().empty() ? "-" : c.unit()});
    }
    out += FormatTable(rows);
  }
  if (with_offers && !response.offers().empty()) {
    std::vector<std::vector<std::string>> rows = {{"ORCHESTRATOR", "PIPELINE", "MODEL", "STATE",
                                                   "WARM", "CAPACITY", "IN USE", "PRICE", "UNIT"}};
    for (const v1::ModelOffer& o : response.offers()) {
      rows.push_back({o.orchestrator(), o.pipeline(), o.model_id(),
                      o.state().empty() ? "-" : o.state(), o.warm() ? "yes" : "no",
                      absl::StrCat(o.capacity()), absl::StrCat(o.in_use()),
                      FormatPrice(o.price_per_unit()), o.unit().empty() ? "-" : o.unit()});
    }
    out += "\n";
    out += FormatTable(rows);
  }
  out += "\n";
  if (response.orchestrators().empty()) {
    out += "no orchestrators known to the gateway\n";
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"ORCHESTRATOR", "ADDRESS", "SOURCE", "READY", "IN FLIGHT"}};
    for (const v1::OrchestratorInfo& o : response.orchestrators()) {
      rows.push_back({o.id(), o.address(), o.source().empty() ? "-" : o.source(),
                      o.ready() ? "yes" : "no", absl::StrCat(o.in_flight())});
    }
    out += FormatTable(rows);
  }
  return out;
}

}  // namespace switchyard::cli
