// `transcode` (one segment, one Transcode call) and `transcode-file` (a whole file cut at
// keyframes and streamed through TranscodeStream), with the ladder flags they share.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_files.h"
#include "cli/cli_support.h"
#include "cli/command.h"
#include "cli/renditions.h"
#include "common/media/segmenter.h"
#include "common/status.h"

namespace switchyard::cli::internal {
namespace {

namespace fs = std::filesystem;
namespace v1 = switchyard::v1;

// One row a rendition: name, size, frames, bytes, path.
std::vector<std::string> RenditionRow(const fs::path& path, int width, int height, int64_t frames,
                                      int64_t bytes) {
  return {path.stem().string(), absl::StrCat(width, "x", height), absl::StrCat(frames, " frames"),
          absl::StrCat(bytes, " bytes"), "-> " + path.string()};
}

constexpr char kTranscodeDescription[] = "Transcode a video segment into a ladder of renditions";

// The `transcode` command's flags (its quote's too).
struct TranscodeFlags {
  LadderFlags ladder;
  std::string container = "mpegts";
  int64_t sequence = 0;

  void AddOptions(CLI::App& c) {
    ladder.AddInOutLadder(
        c, "Input segment (MPEG-TS or MP4, H.264)",
        "[NAME=]WIDTHxHEIGHT:BITRATE[@FPS], e.g. 1280x720:3000k or 0x480:1.6M@30; repeat for a "
        "ladder (1 to 8); width or height 0 keeps the aspect ratio");
    c.add_option("--container", container, "Output container")
        ->check(CLI::IsMember({"mpegts", "mp4"}))
        ->capture_default_str();
    ladder.AddEncoding(c);
    c.add_option("--stream-id", ladder.stream_id, "Stream the segment belongs to");
    c.add_option("--sequence", sequence, "Sequence number of the segment");
  }

  // The request: the ladder checked and the segment read (a non-OK status is a usage error).
  absl::StatusOr<v1::TranscodeRequest> BuildRequest() const {
    absl::StatusOr<std::vector<v1::Rendition>> renditions = ladder.BuildLadder();
    if (!renditions.ok()) return renditions.status();
    absl::StatusOr<std::string> segment = ReadInputFile(ladder.in, "input segment");
    if (!segment.ok()) return segment.status();
    v1::TranscodeRequest request;
    request.set_segment(*std::move(segment));
    for (const v1::Rendition& r : *renditions) *request.add_renditions() = r;
    request.set_container(container);
    request.set_stream_id(ladder.stream_id);
    request.set_audio_codec(ladder.audio_codec);
    request.set_audio_bitrate_bps(ladder.audio_bitrate_bps);
    request.set_sequence(sequence);
    return request;
  }
};

class TranscodeCommand final : public Command {
 public:
  TranscodeCommand() : Command("transcode", kTranscodeDescription) {}

  void AddOptions(CLI::App& c) override { options_.AddOptions(c); }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override {
    absl::StatusOr<v1::TranscodeRequest> built = options_.BuildRequest();
    if (!built.ok()) return ReportUsageError(built.status(), err);
    if (absl::Status s = PrepareOutputDirectory(options_.ladder.out_dir); !s.ok()) {
      return ReportUsageError(s, err);
    }
    const v1::TranscodeRequest& request = *built;
    const std::vector<v1::Rendition> ladder(request.renditions().begin(),
                                            request.renditions().end());

    v1::TranscodeResponse response;
    double elapsed_ms = 0;
    if (auto rc = CallUnary(global, &v1::Gateway::Stub::Transcode, request, &response, &elapsed_ms,
                            err)) {
      return *rc;
    }
    if (response.renditions_size() != request.renditions_size()) {
      err << "error: the gateway returned " << response.renditions_size() << " renditions for "
          << request.renditions_size() << " asked for\n";
      err << "request id: " << global.request_id << "\n";
      return kExitRpcError;
    }
    const std::vector<fs::path> paths =
        options_.ladder.OutputPaths(ladder, response, options_.container == "mp4" ? ".mp4" : ".ts");
    for (int i = 0; i < response.renditions_size(); ++i) {
      if (absl::Status s = WriteFileAtomically(paths[i], response.renditions(i).data()); !s.ok()) {
        return ReportUsageError(s, err);
      }
    }
    if (global.json) {
      PrintJson(ToJson(global, request, response, paths, elapsed_ms), out);
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows;
    int64_t total_bytes = 0;
    for (int i = 0; i < response.renditions_size(); ++i) {
      const v1::RenditionResult& r = response.renditions(i);
      total_bytes += static_cast<int64_t>(r.data().size());
      rows.push_back(RenditionRow(paths[i], r.width(), r.height(), r.frames(),
                                  static_cast<int64_t>(r.data().size())));
    }
    const v1::JobInfo& job = response.job();
    out << FormatTable(rows);
    out << "transcoded " << options_.ladder.in << " (" << response.input_frames() << " frames, "
        << FormatDouble(response.duration_seconds(), "%.2f") << " s) into "
        << response.renditions_size() << " rendition"
        << (response.renditions_size() == 1 ? "" : "s") << ", " << total_bytes << " bytes, on "
        << (job.orchestrator().empty() ? "?" : job.orchestrator()) << " in "
        << FormatMs(job.compute_ms()) << " ms (attempts " << job.attempts() << ", total "
        << FormatMs(elapsed_ms) << " ms)\n";
    return kExitOk;
  }

 private:
  Json ToJson(const GlobalOptions& global, const v1::TranscodeRequest& request,
              const v1::TranscodeResponse& response, const std::vector<fs::path>& paths,
              double elapsed_ms) const {
    Json renditions = Json::array();
    for (int i = 0; i < response.renditions_size(); ++i) {
      const v1::RenditionResult& result = response.renditions(i);
      const v1::Rendition& asked =
          result.has_rendition() ? result.rendition() : request.renditions(i);
      renditions.push_back(Json{{"name", paths[i].stem().string()},
                                {"path", paths[i].string()},
                                {"width", result.width()},
                                {"height", result.height()},
                                {"frames", result.frames()},
                                {"bytes", result.data().size()},
                                {"pixels", result.pixels()},
                                {"bitrate_bps", asked.bitrate_bps()},
                                {"fps_num", asked.fps_num()},
                                {"fps_den", asked.fps_den()}});
    }
    return Json{{"input", options_.ladder.in},
                {"input_frames", response.input_frames()},
                {"duration_seconds", response.duration_seconds()},
                {"container", options_.container},
                {"output_dir", options_.ladder.out_dir},
                {"renditions", std::move(renditions)},
                {"request_id", global.request_id},
                {"elapsed_ms", elapsed_ms},
                {"job", JobToJson(response.job())}};
  }

  TranscodeFlags options_;
};

// `switchyard quote transcode`: the `transcode` command's flags, --out optional.
class TranscodeQuotePart final : public QuotePart {
 public:
  const char* name() const override { return "transcode"; }
  const char* description() const override { return kTranscodeDescription; }
  void AddOptions(CLI::App& c) override {
    options_.AddOptions(c);
    for (CLI::Option* option : c.get_options()) {
      if (option->get_name() == "--out") option->required(false);
    }
  }
  absl::StatusOr<std::vector<v1::QuoteRequest>> BuildQuotes() override {
    absl::StatusOr<v1::TranscodeRequest> request = options_.BuildRequest();
    if (!request.ok()) return request.status();
    std::vector<v1::QuoteRequest> quotes(1);
    *quotes[0].mutable_transcode() = *std::move(request);
    return quotes;
  }

 private:
  TranscodeFlags options_;
};

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
class TranscodeFileCommand final : public Command {
 public:
  TranscodeFileCommand()
      : Command("transcode-file",
                "Transcode a whole video file: cut into segments at keyframes, streamed through "
                "the gateway, reassembled into one MPEG-TS file per rendition (--timeout covers "
                "the whole file)") {}

  void AddOptions(CLI::App& c) override {
    flags_.AddInOutLadder(
        c, "Input file (any container, H.264 or HEVC video)",
        "[NAME=]WIDTHxHEIGHT:BITRATE[@FPS], as for transcode; repeat for a ladder");
    c.add_option("--segment-seconds", segment_seconds_,
                 "Target segment length; segments start at the next keyframe after it")
        ->capture_default_str();
    flags_.AddEncoding(c);
    c.add_option("--stream-id", flags_.stream_id,
                 "Stream id (default: the gateway names the stream)");
  }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override;

 private:
  struct Output {
    fs::path path;
    fs::path partial;
    std::ofstream file;
    int64_t frames = 0;
    int64_t bytes = 0;
    int width = 0;
    int height = 0;
  };

  // Sends one segment and appends its renditions; `failure_` says why the gateway refused it.
  absl::Status TranscodeSegment(
      grpc::ClientReaderWriter<v1::TranscodeRequest, v1::TranscodeStreamResponse>& stream,
      std::string segment, const media::SegmentInfo& info);
  absl::Status OpenOutputs(const v1::TranscodeResponse& first);
  void DiscardOutputs();
  void PrintSummary(const GlobalOptions& global, double elapsed_ms, std::ostream& out) const;

  LadderFlags flags_;
  double segment_seconds_ = 2.0;
  // State of one run.
  std::vector<v1::Rendition> ladder_;
  std::vector<Output> outputs_;
  std::set<std::string> orchestrators_;
  int64_t segments_ = 0;
  double seconds_done_ = 0;
  int64_t input_frames_ = 0;
  std::string failure_;
};

int TranscodeFileCommand::Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::vector<v1::Rendition>> ladder = flags_.BuildLadder();
  if (!ladder.ok()) return ReportUsageError(ladder.status(), err);
  ladder_ = *std::move(ladder);
  if (!std::isfinite(segment_seconds_) || segment_seconds_ < 0.5 || segment_seconds_ > 60) {
    return ReportUsageError(
        absl::InvalidArgumentError("--segment-seconds must be between 0.5 and 60"), err);
  }
  if (absl::Status s = PrepareOutputDirectory(flags_.out_dir); !s.ok()) {
    return ReportUsageError(s, err);
  }

  grpc::ClientContext context;
  PrepareContext(global, context);
  auto stub = MakeStub(global);
  auto stream = stub->TranscodeStream(&context);
  const auto start = std::chrono::steady_clock::now();
  const bool show_progress = !global.json;
  const absl::Status split = media::SplitIntoSegments(
      flags_.in, segment_seconds_,
      [&](std::string segment, const media::SegmentInfo& info) -> absl::Status {
        SY_RETURN_IF_ERROR(TranscodeSegment(*stream, std::move(segment), info));
        if (show_progress) {
          const double fraction = info.file_seconds > 0 ? info.end_seconds / info.file_seconds : 0;
          err << ProgressLine(fraction, segments_) << std::flush;
        }
        return absl::OkStatus();
      });
  if (show_progress && segments_ > 0) err << "\n";
  stream->WritesDone();
  const grpc::Status status = stream->Finish();
  const double elapsed_ms = MillisecondsSince(start);
  if (!split.ok()) {
    DiscardOutputs();
    if (!failure_.empty()) {
      err << "error: " << failure_ << "\n"
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
    DiscardOutputs();
    return ReportRpcError(global, status, err);
  }
  for (Output& o : outputs_) {
    o.file.close();
    std::error_code ec;
    fs::rename(o.partial, o.path, ec);
    if (ec) {
      return ReportUsageError(absl::PermissionDeniedError(absl::StrCat(
                                  "cannot rename ", o.partial.string(), ": ", ec.message())),
                              err);
    }
  }
  PrintSummary(global, elapsed_ms, out);
  return kExitOk;
}

absl::Status TranscodeFileCommand::TranscodeSegment(
    grpc::ClientReaderWriter<v1::TranscodeRequest, v1::TranscodeStreamResponse>& stream,
    std::string segment, const media::SegmentInfo& info) {
  v1::TranscodeRequest request;
  request.set_segment(std::move(segment));
  request.set_sequence(info.index);
  if (info.index == 0) {
    for (const v1::Rendition& r : ladder_) *request.add_renditions() = r;
    request.set_container("mpegts");
    request.set_stream_id(flags_.stream_id);
    request.set_audio_codec(flags_.audio_codec);
    request.set_audio_bitrate_bps(flags_.audio_bitrate_bps);
  }
  if (!stream.Write(request)) return absl::UnavailableError("the stream closed");
  v1::TranscodeStreamResponse response;
  if (!stream.Read(&response)) return absl::UnavailableError("the stream closed");
  if (response.code() != 0) {
    failure_ =
        absl::StrCat("segment ", info.index, " (", FormatDouble(info.start_seconds, "%.2f"),
                     " s) failed: ", GrpcCodeName(static_cast<grpc::StatusCode>(response.code())),
                     ": ", response.error());
    return absl::AbortedError(failure_);
  }
  const v1::TranscodeResponse& result = response.result();
  if (result.renditions_size() != static_cast<int>(ladder_.size())) {
    failure_ = absl::StrCat("segment ", info.index, ": the gateway returned ",
                            result.renditions_size(), " renditions for ", ladder_.size());
    return absl::AbortedError(failure_);
  }
  if (outputs_.empty()) SY_RETURN_IF_ERROR(OpenOutputs(result));
  for (int i = 0; i < result.renditions_size(); ++i) {
    const v1::RenditionResult& r = result.renditions(i);
    Output& o = outputs_[i];
    o.file.write(r.data().data(), static_cast<std::streamsize>(r.data().size()));
    if (!o.file)
      return absl::DataLossError(absl::StrCat("writing ", o.partial.string(), " failed"));
    o.frames += r.frames();
    o.bytes += static_cast<int64_t>(r.data().size());
    o.width = r.width();
    o.height = r.height();
  }
  orchestrators_.insert(result.job().orchestrator());
  input_frames_ += result.input_frames();
  seconds_done_ += result.duration_seconds();
  ++segments_;
  return absl::OkStatus();
}

// The outputs are named after the first segment's renditions and written as ".partial" files
// until the whole file is done.
absl::Status TranscodeFileCommand::OpenOutputs(const v1::TranscodeResponse& first) {
  const std::vector<fs::path> paths = flags_.OutputPaths(ladder_, first, ".ts");
  outputs_.resize(paths.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    Output& o = outputs_[i];
    o.path = paths[i];
    o.partial = paths[i];
    o.partial += ".partial";
    o.file.open(o.partial, std::ios::binary | std::ios::trunc);
    if (!o.file)
      return absl::PermissionDeniedError(absl::StrCat("cannot write ", o.partial.string()));
  }
  return absl::OkStatus();
}

void TranscodeFileCommand::DiscardOutputs() {
  for (Output& o : outputs_) {
    o.file.close();
    std::error_code ec;
    fs::remove(o.partial, ec);
  }
}

void TranscodeFileCommand::PrintSummary(const GlobalOptions& global, double elapsed_ms,
                                        std::ostream& out) const {
  const double realtime = elapsed_ms > 0 ? seconds_done_ / (elapsed_ms / 1000) : 0;
  if (global.json) {
    Json renditions = Json::array();
    for (const Output& o : outputs_) {
      renditions.push_back(Json{{"name", o.path.stem().string()},
                                {"path", o.path.string()},
                                {"width", o.width},
                                {"height", o.height},
                                {"frames", o.frames},
                                {"bytes", o.bytes}});
    }
    PrintJson(Json{{"input", flags_.in},
                   {"segments", segments_},
                   {"input_frames", input_frames_},
                   {"duration_seconds", seconds_done_},
                   {"output_dir", flags_.out_dir},
                   {"renditions", std::move(renditions)},
                   {"orchestrators",
                    std::vector<std::string>(orchestrators_.begin(), orchestrators_.end())},
                   {"request_id", global.request_id},
                   {"elapsed_ms", elapsed_ms},
                   {"realtime_multiple", realtime}},
              out);
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const Output& o : outputs_) {
    rows.push_back(RenditionRow(o.path, o.width, o.height, o.frames, o.bytes));
  }
  out << FormatTable(rows);
  std::string nodes;
  for (const auto& n : orchestrators_) absl::StrAppend(&nodes, nodes.empty() ? "" : ", ", n);
  out << "transcoded " << flags_.in << " (" << segments_ << " segments, " << input_frames_
      << " frames, " << FormatDouble(seconds_done_, "%.2f") << " s) on " << nodes << " in "
      << FormatMs(elapsed_ms) << " ms (" << FormatDouble(realtime, "%.2f") << "x realtime)\n";
}

}  // namespace

QuotePartPtr NewTranscodeQuotePart() { return std::make_unique<TranscodeQuotePart>(); }

CommandPtr NewTranscodeCommand() { return std::make_unique<TranscodeCommand>(); }
CommandPtr NewTranscodeFileCommand() { return std::make_unique<TranscodeFileCommand>(); }

}  // namespace switchyard::cli::internal
