// Choosing the next token from one sequence's logits, as transformers' generate() does with
// do_sample: temperature, then top_k, then top_p (nucleus), then a draw from the softmax; greedy
// (the first maximum) at temperature 0 or top_k 1. Plain C++ on a float row, so that the
// engine's sampling is reproducible and independent of the rest of the batch.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "absl/status/status.h"

namespace switchyard::runner::hf {

struct SamplingParams {
  double temperature = 1.0;  // 0: greedy; must be >= 0
  double top_p = 1.0;        // in (0, 1]; 1 keeps all
  int64_t top_k = 0;         // 0 keeps all; >= 0
  // The generator's seed; without one the engine draws a seed from std::random_device.
  std::optional<uint64_t> seed;
  int64_t max_tokens = 16;  // >= 1
  // Generating one of these ends the sequence with finish reason "stop" (it is still reported).
  std::vector<int64_t> stop_token_ids;
  // Without it the config's eos_token_id(s) are stop ids too.
  bool ignore_eos = false;
};

// INVALID_ARGUMENT naming the field when temperature, top_p, top_k or max_tokens is out of range.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// The next token from logits[0, n). `rng` is the sequence's own generator (advanced by one draw
// unless the choice is greedy). Parameters must have passed ValidateSamplingParams.
int64_t SampleToken(const float* logits, int64_t n, const SamplingParams& params,
                    std::mt19937_64* rng);

}  // namespace switchyard::runner::hf
