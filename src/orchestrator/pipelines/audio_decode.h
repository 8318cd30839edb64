// Decoding of the audio-to-text pipeline's uploaded audio (untrusted input). Torch-free, so the
// libFuzzer build (clang, fuzz/audio_decode.cc) can compile it; audio_text_pipelines.h includes it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::orchestrator {

// Decoded audio, resampled: `channels` planes of `samples` float32 values in -1..1.
struct DecodedAudio {
  int sample_rate = 0;
  int channels = 0;
  int64_t samples = 0;         // per channel
  std::vector<float> planar;   // channels * samples, channel-major
  int source_sample_rate = 0;  // as decoded, before resampling
  int source_channels = 0;
};

// Decodes any audio FFmpeg demuxes and decodes (WAV, MP3, AAC/M4A, OGG, FLAC, ...) from memory
// and converts it with libswresample to `sample_rate` Hz, `channels` channels, float32.
// INVALID_ARGUMENT when the data is empty, corrupt, has no audio stream or decodes to nothing,
// or when it is longer than `max_seconds` (the message names max_audio_seconds).
absl::StatusOr<DecodedAudio> DecodeAudio(std::string_view data, int sample_rate, int channels,
                                         double max_seconds);

}  // namespace switchyard::orchestrator
