#include "runner/hf/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace switchyard::runner::hf {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature ", p.temperature, " must be a finite number >= 0"));
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p ", p.top_p, " not in (0, 1]"));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k ", p.top_k, " must be >= 0"));
  }
  if (p.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", p.max_tokens, " must be >= 1"));
  }
  return absl::OkStatus();
}

int64_t SampleToken(const float* logits, int64_t n, const SamplingParams& p, std::mt19937_64* rng) {
  if (n < 1) return -1;
  if (p.temperature == 0 || p.top_k == 1) {
    // The first maximum, as argmax.
    return std::max_element(logits, logits + n) - logits;
  }
  // Candidates sorted by logit, highest first (ties by id, so the order is deterministic).
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  std::vector<double> scaled(n);
  for (int64_t i = 0; i < n; ++i) scaled[i] = static_cast<double>(logits[order[i]]) / p.temperature;
  int64_t keep = n;
  if (p.top_k > 0 && p.top_k < n) {
    // transformers' TopKLogitsWarper removes logits below the k-th largest, so ties with it stay.
    const double kth = scaled[p.top_k - 1];
    keep = p.top_k;
    while (keep < n && scaled[keep] >= kth) ++keep;
  }
  // Softmax over the kept candidates (the removed ones are -inf).
  std::vector<double> probs(keep);
  const double max = scaled[0];
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += probs[i] = std::exp(scaled[i] - max);
  for (double& q : probs) q /= sum;
  if (p.top_p < 1) {
    // TopPLogitsWarper: remove the tokens whose ascending cumulative probability is <= 1 - top_p,
    // always keeping the most likely one. Equivalently, from the top: keep the smallest prefix
    // whose tail (everything after it) sums to <= 1 - top_p.
    double tail = 0;
    int64_t cut = keep;
    for (int64_t i = keep - 1; i >= 1; --i) {
      if (tail + probs[i] > 1 - p.top_p) break;
      tail += probs[i];
      cut = i;
    }
    keep = cut;
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += probs[i];
    for (int64_t i = 0; i < keep; ++i) probs[i] /= sum;
  }
  // One uniform draw in [0, 1) with 53 random bits, walked along the cumulative distribution.
  const double u = static_cast<double>((*rng)() >> 11) * 0x1.0p-53;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += probs[i];
    if (u < acc) return order[i];
  }
  return order[keep - 1];  // rounding left u above the last cumulative sum
}

}  // namespace switchyard::runner::hf
