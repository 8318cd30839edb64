#include "runner/hf/log_mel.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace switchyard::runner::hf {
namespace {

// The Slaney mel scale (librosa's htk=False, HF's mel_scale="slaney"): linear below 1 kHz,
// logarithmic above.
constexpr double kMinLogHertz = 1000.0;
constexpr double kMinLogMel = 15.0;
const double kLogStep = 27.0 / std::log(6.4);

double HertzToMel(double hz) {
  if (hz < kMinLogHertz) return 3.0 * hz / 200.0;
  return kMinLogMel + std::log(hz / kMinLogHertz) * kLogStep;
}

double MelToHertz(double mel) {
  if (mel < kMinLogMel) return 200.0 * mel / 3.0;
  return kMinLogHertz * std::exp((mel - kMinLogMel) / kLogStep);
}

}  // namespace

absl::StatusOr<at::Tensor> WhisperMelFilters(int64_t n_mels) {
  if (n_mels < 1 || n_mels > 512) {
    return absl::InvalidArgumentError(absl::StrCat("n_mels ", n_mels, " not in [1, 512]"));
  }
  const int64_t bins = kWhisperNfft / 2 + 1;
  const double mel_min = HertzToMel(0.0), mel_max = HertzToMel(kWhisperSampleRate / 2.0);
  std::vector<double> edges(n_mels + 2);  // filter corner frequencies in Hz
  for (int64_t i = 0; i < n_mels + 2; ++i) {
    edges[i] = MelToHertz(mel_min + (mel_max - mel_min) * static_cast<double>(i) /
                                        static_cast<double>(n_mels + 1));
  }
  at::Tensor filters = at::zeros({n_mels, bins}, at::kDouble);
  auto f = filters.accessor<double, 2>();
  for (int64_t m = 0; m < n_mels; ++m) {
    const double lower = edges[m], center = edges[m + 1], upper = edges[m + 2];
    const double enorm = 2.0 / (upper - lower);  // Slaney: constant energy per channel
    for (int64_t b = 0; b < bins; ++b) {
      const double hz =
          static_cast<double>(b) * (kWhisperSampleRate / 2.0) / static_cast<double>(bins - 1);
      const double down = (hz - lower) / (center - lower);
      const double up = (upper - hz) / (upper - center);
      f[m][b] = std::max(0.0, std::min(down, up)) * enorm;
    }
  }
  return filters;
}

absl::StatusOr<at::Tensor> WhisperLogMel(const float* samples, int64_t count, int64_t n_mels) {
  if (count < 0 || (count > 0 && samples == nullptr)) {
    return absl::InvalidArgumentError("no samples");
  }
  auto filters = WhisperMelFilters(n_mels);
  if (!filters.ok()) return filters.status();
  const int64_t used = std::min(count, kWhisperWindowSamples);
  for (int64_t i = 0; i < used; ++i) {
    if (!std::isfinite(samples[i])) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", i, " is not finite"));
    }
  }
  c10::InferenceMode guard;
  at::Tensor audio = at::zeros({kWhisperWindowSamples}, at::kDouble);
  {
    auto a = audio.accessor<double, 1>();
    for (int64_t i = 0; i < used; ++i) a[i] = samples[i];
  }
  at::Tensor window = at::hann_window(kWhisperNfft, /*periodic=*/true, at::kDouble);
  at::Tensor spec = at::stft(audio, kWhisperNfft, kWhisperHop, kWhisperNfft, window,
                             /*center=*/true, "reflect", /*normalized=*/false,
                             /*onesided=*/true, /*return_complex=*/true);  // [201, 3001]
  at::Tensor power = at::abs(spec.narrow(1, 0, kWhisperWindowFrames)).pow(2);
  at::Tensor mel = at::matmul(*filters, power);  // [n_mels, 3000]
  at::Tensor log_spec = at::log10(at::clamp_min(mel, 1e-10));
  log_spec = at::maximum(log_spec, log_spec.max() - 8.0);
  log_spec = (log_spec + 4.0) / 4.0;
  return log_spec.to(at::kFloat).contiguous();
}

}  // namespace switchyard::runner::hf
