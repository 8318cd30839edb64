// A paged KV cache (as vLLM's): one pool per model of fixed-size blocks of `block_tokens` token
// slots, holding the keys and values of every layer, sized from a memory budget in bytes. Each
// sequence owns a block table (the pool blocks that hold its positions, in order); blocks are
// taken as a sequence grows and returned the moment it finishes. The pool never grows: a request
// for a block the pool does not have is answered "no", never with an allocation.
//
// Shared prefixes (vLLM's automatic prefix caching): a sequence whose prompt is computed can
// publish its full prompt blocks (Publish); a later prompt that starts with the same tokens takes
// those blocks instead of computing them again (MatchPrefix). A block is identified by its tokens
// and its whole prefix (the chain of blocks before it), checked token by token, never by a hash
// alone. Shared blocks are full and never written again: a sequence only writes positions past
// what it matched, which lie in blocks of its own. Blocks are reference-counted; a published
// block that nobody uses stays cached and is evicted (least recently used first) only when the
// free list is empty, so cached blocks never stand in the way of a reservation.
//
// Not thread-safe: the engine's scheduler thread owns it (engine.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
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
  // Blocks a reservation can take: free ones plus cached ones nobody uses (evicted on demand).
  int64_t free_blocks() const {
    return static_cast<int64_t>(free_.size()) + static_cast<int64_t>(idle_cached_.size());
  }
  // Blocks held by at least one sequence.
  int64_t used_blocks() const { return num_blocks_ - free_blocks(); }
  // Published blocks nobody uses now (kept for a later prompt with the same prefix).
  int64_t idle_cached_blocks() const { return static_cast<int64_t>(idle_cached_.size()); }
  // Blocks needed to hold `tokens` positions.
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_tokens_ - 1) / block_tokens_; }

  // Grows `table` so that it holds `tokens` positions. False, with `table` unchanged, when the
  // pool has too few free blocks.
  bool Reserve(std::vector<int32_t>* table, int64_t tokens);
  // Drops the table's hold on its blocks and clears it: a block nobody holds goes back to the
  // free list, or stays cached when it is published.
  void Free(std::vector<int32_t>* table);

  // Appends to the empty `table` the published blocks that hold the longest prefix of
  // tokens[0, limit) in whole blocks, taking a hold on each; returns how many tokens they hold
  // (a multiple of block_tokens).
  int64_t MatchPrefix(const std::vector<int64_t>& tokens, int64_t limit,
                      std::vector<int32_t>* table);
  // Publishes the whole blocks of tokens[0, computed) that `table` holds (its keys and values
  // for those positions are written): blocks already published, or whose prefix another block
  // already publishes, are left as they are.
  void Publish(const std::vector<int32_t>& table, const std::vector<int64_t>& tokens,
               int64_t computed);

  // Layer pools viewed as [num_blocks * block_tokens, kv_heads, head_dim]: position p of a
  // sequence lives in row table[p / block_tokens] * block_tokens + p % block_tokens.
  at::Tensor& keys(int64_t layer) { return keys_[layer]; }
  at::Tensor& values(int64_t layer) { return values_[layer]; }

 private:
  PagedKvCache() = default;
  int64_t block_tokens_ = 0;
  int64_t num_blocks_ = 0;
  at::Device device_ = at::kCPU;
  // A free block, or an idle cached one evicted for it; -1 when there is none.
  int32_t TakeBlock();
  void Unpublish(int32_t block);

  // What a published block holds: its tokens and the block before it in the chain (-1: first).
  struct Published {
    uint64_t key = 0;  // hash of the whole prefix up to and including this block
    int32_t parent = -1;
    std::vector<int64_t> tokens;
  };

  std::vector<int32_t> free_;         // a stack: the most recently freed block is reused first
  std::vector<int32_t> holders_;      // per block: sequences holding it
  std::vector<Published> published_;  // per block; key 0 and no tokens when unpublished
  std::unordered_map<uint64_t, int32_t> by_key_;
  std::list<int32_t> idle_cached_;  // published, nobody holds them; least recent first
  std::vector<std::list<int32_t>::iterator> idle_at_;  // per block, valid while in idle_cached_
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

}  // namespace switchyard::runner::hf
