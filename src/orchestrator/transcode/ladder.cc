#include "orchestrator/transcode/ladder.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/media/audio_encoder.h"
#include "common/media/hardware.h"

namespace switchyard::orchestrator::transcode {
namespace {

constexpr const char* kPresets[] = {"ultrafast", "superfast", "veryfast", "faster",  "fast",
                                    "medium",    "slow",      "slower",   "veryslow"};
constexpr const char* kProfiles[] = {"baseline", "main", "high"};
constexpr double kMaxFps = 240;
constexpr double kMaxGopSeconds = 60;
constexpr int64_t kMaxBitrate = 1'000'000'000;
constexpr double kDefaultGopSeconds = 2;

// 2 * round(x / 2), at least 2.
int RoundEven(double x) {
  const double r = 2 * std::round(x / 2);
  if (!(r >= 2)) return 2;
  if (r > INT_MAX - 1) return INT_MAX - 1;
  return static_cast<int>(r);
}

// Checks one ladder entry on its own (sizes needing the input are resolved later) and fills in
// defaults.
absl::Status ValidateSpec(size_t i, const TranscodeOptions& options, RenditionSpec& spec) {
  if (spec.width < 0 || (spec.width % 2) != 0) {
    return RenditionError(i, "width",
                          absl::StrCat("must be even and positive, or 0; got ", spec.width));
  }
  if (spec.height < 0 || (spec.height % 2) != 0) {
    return RenditionError(i, "height",
                          absl::StrCat("must be even and positive, or 0; got ", spec.height));
  }
  if (spec.width > options.max_width) {
    return RenditionError(
        i, "width", absl::StrCat(spec.width, " is more than the limit of ", options.max_width));
  }
  if (spec.height > options.max_height) {
    return RenditionError(
        i, "height", absl::StrCat(spec.height, " is more than the limit of ", options.max_height));
  }
  if (spec.bitrate_bps <= 0 || spec.bitrate_bps > kMaxBitrate) {
    return RenditionError(
        i, "bitrate_bps",
        absl::StrCat("must be in (0, ", kMaxBitrate, "]; got ", spec.bitrate_bps));
  }
  if (spec.fps_num != 0 || spec.fps_den != 0) {
    if (spec.fps_num <= 0 || spec.fps_den <= 0 ||
        static_cast<double>(spec.fps_num) / spec.fps_den > kMaxFps) {
      return RenditionError(
          i, "fps_num/fps_den",
          absl::StrCat("must be 0/0 (keep the input rate) or a positive rate up to ", kMaxFps,
                       "; got ", spec.fps_num, "/", spec.fps_den));
    }
  }
  if (!std::isfinite(spec.gop_seconds) || spec.gop_seconds < 0 ||
      spec.gop_seconds > kMaxGopSeconds) {
    return RenditionError(
        i, "gop_seconds",
        absl::StrCat("must be in [0, ", kMaxGopSeconds, "]; got ", spec.gop_seconds));
  }
  if (spec.gop_seconds == 0) spec.gop_seconds = kDefaultGopSeconds;
  if (spec.preset.empty()) spec.preset = "veryfast";
  if (std::find(std::begin(kPresets), std::end(kPresets), spec.preset) == std::end(kPresets)) {
    return RenditionError(i, "preset",
                          absl::StrCat("unknown preset \"", spec.preset,
                                       "\" (ultrafast, superfast, veryfast, faster, fast, medium, "
                                       "slow, slower, veryslow)"));
  }
  if (spec.profile.empty()) spec.profile = "main";
  if (std::find(std::begin(kProfiles), std::end(kProfiles), spec.profile) == std::end(kProfiles)) {
    return RenditionError(
        i, "profile",
        absl::StrCat("unknown profile \"", spec.profile, "\" (baseline, main or high)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RenditionError(size_t index, const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("renditions[", index, "].", field, ": ", what));
}

absl::StatusOr<std::vector<RenditionSpec>> ValidateLadder(const std::vector<RenditionSpec>& ladder,
                                                          const TranscodeOptions& options) {
  if (options.container != "mpegts" && options.container != "mp4") {
    return absl::InvalidArgumentError(
        absl::StrCat("container: must be \"mpegts\" or \"mp4\"; got \"", options.container, "\""));
  }
  if (ladder.empty()) return absl::InvalidArgumentError("renditions: the ladder is empty");
  if (ladder.size() > static_cast<size_t>(std::max(options.max_renditions, 0))) {
    return absl::InvalidArgumentError(absl::StrCat("renditions: ", ladder.size(),
                                                   " renditions, more than the limit of ",
                                                   options.max_renditions));
  }
  std::vector<RenditionSpec> specs = ladder;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (auto status = ValidateSpec(i, options, specs[i]); !status.ok()) return status;
  }
  return specs;
}

absl::Status ValidateCodecOptions(TranscodeOptions& options) {
  options.encoder_threads = std::clamp(options.encoder_threads, 0, 16);  // 0: libx264 decides
  options.decoder_threads = std::clamp(options.decoder_threads, 1, 16);
  if (options.thread_policy.empty()) options.thread_policy = "fixed";
  if (options.thread_policy != "fixed" && options.thread_policy != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "thread_policy: must be \"fixed\" or \"auto\"; got \"", options.thread_policy, "\""));
  }
  if (options.cores <= 0) options.cores = static_cast<int>(std::thread::hardware_concurrency());
  options.cores = std::clamp(options.cores, 1, 1024);
  options.segments_in_flight = std::max(options.segments_in_flight, 1);
  if (options.hw_decode.empty()) options.hw_decode = "auto";
  if (options.hw_decode != "auto" && options.hw_decode != "cuda" && options.hw_decode != "none") {
    return absl::InvalidArgumentError(absl::StrCat(
        "hw_decode: must be \"auto\", \"cuda\" or \"none\"; got \"", options.hw_decode, "\""));
  }
  if (options.hw_decode == "cuda" && media::SharedCudaDevice() == nullptr) {
    return absl::FailedPreconditionError(
        "hw_decode: \"cuda\" asked for, but this machine has no CUDA device FFmpeg can open");
  }
  if (options.hw_encode.empty()) options.hw_encode = "auto";
  if (options.hw_encode != "auto" && options.hw_encode != "nvenc" && options.hw_encode != "none") {
    return absl::InvalidArgumentError(absl::StrCat(
        "hw_encode: must be \"auto\", \"nvenc\" or \"none\"; got \"", options.hw_encode, "\""));
  }
  if (options.hw_encode == "nvenc" && !media::ProbeVideoHardware().nvenc_h264) {
    return absl::FailedPreconditionError(absl::StrCat(
        "hw_encode: \"nvenc\" asked for, but this machine has no NVENC encoder that opens (",
        media::ProbeVideoHardware().detail, ")"));
  }
  if (options.audio_codec.empty()) options.audio_codec = "copy";
  if (options.audio_codec != "copy" && options.audio_codec != "aac") {
    return absl::InvalidArgumentError(absl::StrCat(
        "audio_codec: must be \"copy\" or \"aac\"; got \"", options.audio_codec, "\""));
  }
  if (options.audio_codec == "aac" &&
      (options.audio_bitrate_bps < media::AacEncoder::kMinBitrate ||
       options.audio_bitrate_bps > media::AacEncoder::kMaxBitrate)) {
    return absl::InvalidArgumentError(absl::StrCat("audio_bitrate_bps: ", options.audio_bitrate_bps,
                                                   " is outside ", media::AacEncoder::kMinBitrate,
                                                   "..", media::AacEncoder::kMaxBitrate));
  }
  return absl::OkStatus();
}

absl::Status ResolveRenditionSize(size_t index, double display_aspect, int input_height,
                                  const TranscodeOptions& options, RenditionSpec& spec) {
  int width = 0;
  int height = 0;
  if (spec.width == 0 && spec.height == 0) {
    width = RoundEven(input_height * display_aspect);
    height = RoundEven(input_height);
  } else if (spec.width == 0) {
    width = RoundEven(spec.height * display_aspect);
    height = spec.height;
  } else if (spec.height == 0) {
    width = spec.width;
    height = RoundEven(spec.width / display_aspect);
  } else {
    width = spec.width;
    height = spec.height;
  }
  if (width > options.max_width || height > options.max_height) {
    return RenditionError(index, spec.width == 0 ? "width" : "height",
                          absl::StrCat("the output would be ", width, "x", height,
                                       " to keep the input's aspect ratio, larger than the limit "
                                       "of ",
                                       options.max_width, "x", options.max_height));
  }
  spec.width = width;
  spec.height = height;
  if (spec.name.empty()) spec.name = absl::StrCat(height, "p");
  return absl::OkStatus();
}

}  // namespace switchyard::orchestrator::transcode
