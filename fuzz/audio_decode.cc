// Fuzzes orchestrator::DecodeAudio, the audio-to-text pipeline's decoding of the uploaded file
// (any container and codec FFmpeg reads from memory, resampled to the model's rate), with the
// pipeline's default options and a short length cap so one input cannot decode for long.
#include <cmath>
#include <cstdint>

#include "fuzz/ffmpeg_quiet.h"
#include "fuzz/fuzz_util.h"
#include "orchestrator/pipelines/audio_decode.h"

namespace {
constexpr int kSampleRate = 16000;  // the pipeline's default sample_rate
constexpr int kChannels = 1;        // and channels
constexpr double kMaxSeconds = 20;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = switchyard::fuzz::QuietFfmpeg();
  (void)quiet;
  auto audio = switchyard::orchestrator::DecodeAudio(switchyard::fuzz::AsView(data, size),
                                                     kSampleRate, kChannels, kMaxSeconds);
  if (!audio.ok()) {
    // Out-of-memory conditions are RESOURCE_EXHAUSTED; everything about the input itself is
    // INVALID_ARGUMENT.
    if (audio.status().code() != absl::StatusCode::kResourceExhausted) {
      switchyard::fuzz::CheckInvalidArgument(audio.status());
    }
    return 0;
  }
  SWITCHYARD_FUZZ_CHECK(audio->sample_rate == kSampleRate && audio->channels == kChannels,
                        "not resampled to the requested format");
  SWITCHYARD_FUZZ_CHECK(audio->samples > 0, "success with no samples");
  SWITCHYARD_FUZZ_CHECK(audio->samples <= static_cast<int64_t>(std::ceil(kMaxSeconds * kSampleRate)),
                        "audio longer than max_seconds accepted");
  SWITCHYARD_FUZZ_CHECK(audio->planar.size() == static_cast<size_t>(audio->samples * kChannels),
                        "planar buffer size != channels * samples");
  SWITCHYARD_FUZZ_CHECK(audio->source_sample_rate > 0 && audio->source_channels > 0,
                        "source format unknown");
  for (float v : audio->planar) {
    SWITCHYARD_FUZZ_CHECK(std::isfinite(v), "a decoded sample is not finite");
    SWITCHYARD_FUZZ_CHECK(v >= -1 && v <= 1, "a decoded sample outside -1..1");
  }
  return 0;
}
