// Whisper's log-mel front end (transformers' WhisperFeatureExtractor, openai-whisper's
// log_mel_spectrogram) in libtorch: 16 kHz mono float samples, padded with zeros or trimmed to
// 30 s (480000 samples), STFT with n_fft 400, hop 160 and a periodic Hann window, centred with
// reflect padding, the last frame dropped (3000 frames), power spectrum, a Slaney-normalised mel
// filterbank on the Slaney mel scale (librosa.filters.mel(sr=16000, n_fft=400, n_mels=N), as HF's
// mel_filter_bank computes it), log10 with a 1e-10 floor, floored at max - 8, then (x + 4) / 4.
// The spectrum is computed in float64 and rounded to float32 once at the end.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::runner::hf {

inline constexpr int64_t kWhisperSampleRate = 16000;
inline constexpr int64_t kWhisperNfft = 400;
inline constexpr int64_t kWhisperHop = 160;
inline constexpr int64_t kWhisperWindowSamples = 30 * kWhisperSampleRate;             // 480000
inline constexpr int64_t kWhisperWindowFrames = kWhisperWindowSamples / kWhisperHop;  // 3000

// The filterbank [n_mels, n_fft / 2 + 1] (float64). n_mels in [1, 512].
absl::StatusOr<at::Tensor> WhisperMelFilters(int64_t n_mels);

// Log-mel [n_mels, 3000] (float32, CPU) of `samples` (16 kHz mono, nominally in [-1, 1]); more
// than 30 s is trimmed, less padded with zeros. INVALID_ARGUMENT for a non-finite sample or an
// n_mels outside [1, 512].
absl::StatusOr<at::Tensor> WhisperLogMel(const float* samples, int64_t count, int64_t n_mels);
inline absl::StatusOr<at::Tensor> WhisperLogMel(const std::vector<float>& samples, int64_t n_mels) {
  return WhisperLogMel(samples.data(), static_cast<int64_t>(samples.size()), n_mels);
}

}  // namespace switchyard::runner::hf
