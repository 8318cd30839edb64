// Choosing the next token from one sequence's logits, as transformers' generate() does with
// do_sample: temperature, then top_k, then top_p (nucleus), then a draw from the softmax; greedy
// (the first maximum) at temperature 0 or top_k 1. Plain C++ on a float row, so that the
// engine's sampling is reproducible and independent of the rest of the batch (SampleTokens runs
// a step's rows in parallel with the same results).
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
// unless the choice is greedy). Parameters must have passed ValidateSamplingParams. Candidates
// are ordered with a radix sort of the logits (ties by id); not thread-safe for one `rng`.
int64_t SampleToken(const float* logits, int64_t n, const SamplingParams& params,
                    std::mt19937_64* rng);

// One row of a step's logits to sample from, with its sequence's parameters and generator.
struct SampleRow {
  int64_t row = 0;  // in the [rows, n] logits
  const SamplingParams* params = nullptr;
  std::mt19937_64* rng = nullptr;
};

// tokens[i] = SampleToken(logits + rows[i].row * n, n, *rows[i].params, rows[i].rng) for every
// row, the rows spread over libtorch's intra-op threads. Each row draws from its own generator
// only, so the tokens equal those of calling SampleToken row by row, in any order. The rows'
// generators must be distinct.
void SampleTokens(const float* logits, int64_t n, const std::vector<SampleRow>& rows,
                  int64_t* tokens);

}  // namespace switchyard::runner::hf
