// The live-video-to-video job: MPEG-TS segments of one live stream in, each run frame by frame
// through a live-video model, the output segments written out (job_command.h says what a Job is).
// One call per segment (Gateway.LiveVideoSegment) with one stream id, so the segments stay on
// one orchestrator as the HTTP trickle sessions' do; a failed segment stops the run.
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_files.h"
#include "cli/job_command.h"
#include "common/json_limits.h"
#include "common/secure_random.h"
#include "common/status.h"

namespace switchyard::cli::internal {

namespace v1 = switchyard::v1;

namespace {

// At most this many segments per run: each is one call, and the outputs are kept in memory until
// all are written. A longer stream is several runs (or the HTTP trickle API).
constexpr size_t kMaxSegments = 64;
// The gateway refuses larger params (docs/http-api.md: control messages); refused here first.
constexpr size_t kMaxParamsBytes = 64 * 1024;
// Gateway.LiveVideoSegment's stream_id limit (gateway.proto).
constexpr size_t kMaxStreamIdBytes = 128;
// All segments of a run together: they are read before the first call.
constexpr int64_t kMaxTotalBytes = int64_t{1} << 30;

}  // namespace

template <>
struct Job<v1::LiveVideoSegmentRequest> {
  static constexpr char kDescription[] =
      "Run MPEG-TS segments of a live stream through a live-video-to-video model";
  static constexpr auto kMethod = &v1::Gateway::Stub::LiveVideoSegment;
  std::string model, out, params, stream_id;
  std::vector<std::string> in;
  std::vector<std::string> segments;  // read and checked by BuildRequest, sent by Stream

  void AddOptions(CLI::App& c) {
    c.add_option("--model", model, "Model id, e.g. realesr-animevideov3-x2-live")->required();
    c.add_option("--in", in,
                 "Input MPEG-TS segment(s) of one stream, in order (repeat the flag or list them)")
        ->required();
    c.add_option("--out", out,
                 "Output: a .ts file for one segment, or a directory (segment-N.ts) for several")
        ->required();
    c.add_option("--params", params, "The model's parameters as a JSON object (default {})");
    c.add_option("--stream-id", stream_id, "Stream id sent with every segment (default: random)");
  }

  // Reads and checks every input before the first call (a bad one is a usage error, exit 2);
  // returns the request every segment's call starts from.
  absl::StatusOr<v1::LiveVideoSegmentRequest> BuildRequest() {
    if (in.size() > kMaxSegments) {
      return absl::InvalidArgumentError(
          absl::StrCat("--in: ", in.size(), " segments, at most ", kMaxSegments, " per run"));
    }
    if (!params.empty()) {
      if (params.size() > kMaxParamsBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("--params: ", params.size(), " bytes, at most ", kMaxParamsBytes));
      }
      absl::StatusOr<nlohmann::json> parsed = ParseJson(params);
      if (!parsed.ok() || !parsed->is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--params must be a JSON object",
                         parsed.ok() ? "" : absl::StrCat(": ", parsed.status().message())));
      }
    }
    if (stream_id.size() > kMaxStreamIdBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("--stream-id: ", stream_id.size(), " bytes, at most ", kMaxStreamIdBytes));
    }
    // `switchyard quote live-video-to-video` writes nothing: no output to check.
    if (!out.empty()) {
      SY_RETURN_IF_ERROR(in.size() == 1 ? CheckWritableFile(out) : PrepareOutputDirectory(out));
    }
    int64_t total = 0;
    for (const std::string& path : in) {
      absl::StatusOr<std::string> segment = ReadInputFile(path, "input segment");
      if (!segment.ok()) return segment.status();
      total += static_cast<int64_t>(segment->size());
      if (total > kMaxTotalBytes) {
        return absl::InvalidArgumentError(absl::StrCat("--in: the segments are more than ",
                                                       kMaxTotalBytes,
                                                       " bytes together; send fewer per run"));
      }
      segments.push_back(*std::move(segment));
    }
    v1::LiveVideoSegmentRequest request;
    request.set_model_id(model);
    request.set_stream_id(stream_id.empty() ? absl::StrCat("cli-", SecureRandomHex(8)) : stream_id);
    request.set_params(params);
    return request;
  }

  // One call per segment, in order; each output is written as soon as it arrives. A failed call
  // stops the run (the outputs so far stay written) with the RPC error's exit code.
  int Stream(const GlobalOptions& global, const v1::LiveVideoSegmentRequest& base, std::ostream& o,
             std::ostream& err) {
    Json results = Json::array();
    int64_t total_units = 0;
    double total_ms = 0;
    for (size_t i = 0; i < segments.size(); ++i) {
      v1::LiveVideoSegmentRequest request = base;
      request.set_segment(std::move(segments[i]));
      request.set_sequence(static_cast<int64_t>(i));
      v1::LiveVideoSegmentResponse response;
      double elapsed_ms = 0;
      if (auto rc = CallUnary(global, kMethod, request, &response, &elapsed_ms, err)) {
        err << "segment " << i << " (" << in[i] << ") failed; " << i
            << " segment(s) written before it\n";
        return *rc;
      }
      if (response.segment().empty()) return NoResult(global, "segment", err);
      const std::string path = OutputPath(i);
      if (absl::Status s = WriteFileAtomically(path, response.segment()); !s.ok()) {
        return ReportUsageError(s, err);
      }
      total_units += response.job().units();
      total_ms += elapsed_ms;
      if (global.json) {
        results.push_back(Json{{"input", in[i]},
                               {"output", path},
                               {"bytes", response.segment().size()},
                               {"frames", response.frames()},
                               {"width", response.width()},
                               {"height", response.height()},
                               {"first_pts_seconds", response.first_pts_seconds()},
                               {"last_pts_seconds", response.last_pts_seconds()},
                               {"elapsed_ms", elapsed_ms},
                               {"job", JobToJson(response.job())}});
      } else {
        o << "segment " << i << ": " << in[i] << " -> " << path << " (" << response.frames()
          << " frames, " << response.width() << "x" << response.height() << ", "
          << FormatDouble(elapsed_ms, "%.0f") << " ms), "
          << JobLine(pipelines::kLiveVideoToVideo, response.job(), model) << "\n";
      }
    }
    if (global.json) {
      PrintJson(Json{{"stream_id", base.stream_id()},
                     {"segments", std::move(results)},
                     {"units", total_units},
                     {"elapsed_ms", total_ms}},
                o);
    }
    return kExitOk;
  }

  std::string OutputPath(size_t i) const {
    return in.size() == 1
               ? out
               : (std::filesystem::path(out) / absl::StrCat("segment-", i, ".ts")).string();
  }
};

template CommandPtr NewJobCommand<v1::LiveVideoSegmentRequest>();
template QuotePartPtr NewQuotePart<v1::LiveVideoSegmentRequest>();

}  // namespace switchyard::cli::internal
