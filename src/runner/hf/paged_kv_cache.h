// A paged KV cache (as vLLM's): one pool per model of fixed-size blocks of `block_tokens` token
// slots, holding the keys and values of every layer, sized from a memory budget in bytes. Each
// sequence owns a block table (the pool blocks that hold its positions, in order); blocks are
// taken as a sequence grows and returned the moment it finishes. The pool never grows: a request
// for a block the pool does not have is answered "no", never with an allocation.
//
// Not thread-safe: the engine's scheduler thread owns it (engine.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "runner/hf/hf_config.h"

namespace switchyard::runner::hf {

class PagedKvCache {
 public:
  // blocks = budget_bytes / bytes_per_block. INVALID_ARGUMENT when block_tokens is outside
  // [1, 4096] or the budget holds fewer blocks than one sequence of max_position_embeddings
  // tokens needs (a pool that cannot hold one full-context sequence could deadlock a request
  // that Submit accepted); RESOURCE_EXHAUSTED when the pool cannot be allocated.
  static absl::StatusOr<std::unique_ptr<PagedKvCache>> Create(const DecoderConfig& config,
                                                              int64_t budget_bytes,
                                                              int64_t block_tokens,
                                                              at::ScalarType dtype,
                                                              at::Device device);
  // Keys and values of all layers for block_tokens positions.
  static int64_t BytesPerBlock(const DecoderConfig& config, int64_t block_tokens,
                               at::ScalarType dtype);

  int64_t block_tokens() const { return block_tokens_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_blocks() const { return num_blocks_ - free_blocks(); }
  // Blocks needed to hold `tokens` positions.
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_tokens_ - 1) / block_tokens_; }

  // Grows `table` so that it holds `tokens` positions. False, with `table` unchanged, when the
  // pool has too few free blocks.
  bool Reserve(std::vector<int32_t>* table, int64_t tokens);
  // Returns the table's blocks to the pool and clears it.
  void Free(std::vector<int32_t>* table);

  // Layer pools viewed as [num_blocks * block_tokens, kv_heads, head_dim]: position p of a
  // sequence lives in row table[p / block_tokens] * block_tokens + p % block_tokens.
  at::Tensor& keys(int64_t layer) { return keys_[layer]; }
  at::Tensor& values(int64_t layer) { return values_[layer]; }
  // The pool rows of positions [begin, end) of a sequence (int64, on the pool's device); the
  // table must hold them.
  at::Tensor Slots(const std::vector<int32_t>& table, int64_t begin, int64_t end) const;

 private:
  PagedKvCache() = default;
  int64_t block_tokens_ = 0;
  int64_t num_blocks_ = 0;
  at::Device device_ = at::kCPU;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

}  // namespace switchyard::runner::hf
