#include "runner/hf/sampling.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace switchyard::runner::hf {
namespace {

// A key whose unsigned order is the float's order, highest logit first: larger floats give
// smaller keys; -0 and +0 give the same key (they compare equal).
inline uint32_t DescendingKey(float f) {
  if (f == 0) f = 0;
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u = (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);  // ascending with the float
  return ~u;
}

// `order` = ids [0, n) by logit, highest first, ties by id (what a stable sort of [0, n) by
// `logits[a] > logits[b]` gives): a stable LSD radix sort of the ids, 11 bits of the key a pass,
// starting from id order. `keys` and `tmp` are scratch.
void SortByLogit(const float* logits, int64_t n, std::vector<int64_t>* order,
                 std::vector<uint32_t>* keys, std::vector<int64_t>* tmp) {
  constexpr int kBits = 11;
  constexpr uint32_t kBuckets = 1u << kBits;
  order->resize(static_cast<size_t>(n));
  tmp->resize(static_cast<size_t>(n));
  keys->resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) (*keys)[static_cast<size_t>(i)] = DescendingKey(logits[i]);
  std::iota(order->begin(), order->end(), 0);
  std::array<uint32_t, kBuckets> count;
  for (int shift = 0; shift < 32; shift += kBits) {
    count.fill(0);
    for (int64_t id : *order) ++count[((*keys)[static_cast<size_t>(id)] >> shift) & (kBuckets - 1)];
    // A pass where every key has the same digit leaves the order as it is.
    if (*std::max_element(count.begin(), count.end()) == static_cast<uint32_t>(n)) continue;
    uint32_t sum = 0;
    for (uint32_t& c : count) {
      const uint32_t c0 = c;
      c = sum;
      sum += c0;
    }
    for (int64_t id : *order) {
      (*tmp)[count[((*keys)[static_cast<size_t>(id)] >> shift) & (kBuckets - 1)]++] = id;
    }
    order->swap(*tmp);
  }
}

}  // namespace

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
  thread_local std::vector<int64_t> order, tmp;
  thread_local std::vector<uint32_t> keys;
  thread_local std::vector<double> scaled, probs;
  SortByLogit(logits, n, &order, &keys, &tmp);
  scaled.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) scaled[i] = static_cast<double>(logits[order[i]]) / p.temperature;
  int64_t keep = n;
  if (p.top_k > 0 && p.top_k < n) {
    // transformers' TopKLogitsWarper removes logits below the k-th largest, so ties with it stay.
    const double kth = scaled[p.top_k - 1];
    keep = p.top_k;
    while (keep < n && scaled[keep] >= kth) ++keep;
  }
  // Softmax over the kept candidates (the removed ones are -inf).
  probs.resize(static_cast<size_t>(keep));
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

void SampleTokens(const float* logits, int64_t n, const std::vector<SampleRow>& rows,
                  int64_t* tokens) {
  const int64_t count = static_cast<int64_t>(rows.size());
  // Greedy rows are a scan of the row; the others sort it. One row per task either way: each
  // row has its own generator, so the tokens do not depend on how the rows are split.
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const SampleRow& r = rows[static_cast<size_t>(i)];
      tokens[i] = SampleToken(logits + r.row * n, n, *r.params, r.rng);
    }
  });
}

}  // namespace switchyard::runner::hf
