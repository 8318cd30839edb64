#include "runner/hf/paged_kv_cache.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace switchyard::runner::hf {

int64_t PagedKvCache::BytesPerBlock(const DecoderConfig& config, int64_t block_tokens,
                                    at::ScalarType dtype) {
  return 2 * config.num_hidden_layers * block_tokens * config.num_key_value_heads *
         config.head_dim * static_cast<int64_t>(c10::elementSize(dtype));
}

absl::StatusOr<std::unique_ptr<PagedKvCache>> PagedKvCache::Create(const DecoderConfig& config,
                                                                   int64_t budget_bytes,
                                                                   int64_t block_tokens,
                                                                   at::ScalarType dtype,
                                                                   at::Device device) {
  if (block_tokens < 1 || block_tokens > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block size ", block_tokens, " tokens not in [1, 4096]"));
  }
  const int64_t per_block = BytesPerBlock(config, block_tokens, dtype);
  const int64_t one_sequence = (config.max_position_embeddings + block_tokens - 1) / block_tokens;
  const int64_t blocks = budget_bytes > 0 ? budget_bytes / per_block : 0;
  if (blocks < one_sequence) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV budget ", budget_bytes, " bytes holds ", blocks, " blocks of ", block_tokens,
        " tokens (", per_block, " bytes each); one sequence of max_position_embeddings ",
        config.max_position_embeddings, " needs ", one_sequence, " (", one_sequence * per_block,
        " bytes)"));
  }
  if (blocks > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(absl::StrCat("KV budget of ", blocks, " blocks too large"));
  }
  std::unique_ptr<PagedKvCache> cache(new PagedKvCache());
  cache->block_tokens_ = block_tokens;
  cache->num_blocks_ = blocks;
  cache->device_ = device;
  cache->free_.reserve(blocks);
  cache->holders_.assign(blocks, 0);
  cache->published_.resize(blocks);
  cache->idle_at_.resize(blocks);
  for (int64_t b = blocks - 1; b >= 0; --b) cache->free_.push_back(static_cast<int32_t>(b));
  try {
    c10::InferenceMode guard;
    auto options = at::TensorOptions().dtype(dtype).device(device);
    for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
      cache->keys_.push_back(
          at::zeros({blocks * block_tokens, config.num_key_value_heads, config.head_dim}, options));
      cache->values_.push_back(
          at::zeros({blocks * block_tokens, config.num_key_value_heads, config.head_dim}, options));
    }
  } catch (const c10::Error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV pool of ", blocks, " blocks: ", e.what_without_backtrace()));
  }
  return cache;
}

namespace {

// The key of a block: its parent's key mixed with its tokens (splitmix64 steps). Only a lookup
// aid: a match also compares the tokens and the parent block.
uint64_t ChainKey(uint64_t parent, const int64_t* tokens, int64_t n) {
  uint64_t h = parent ^ 0x9e3779b97f4a7c15ULL;
  for (int64_t i = 0; i < n; ++i) {
    h ^= static_cast<uint64_t>(tokens[i]) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
  }
  return h == 0 ? 1 : h;  // 0 marks an unpublished block
}

}  // namespace

int32_t PagedKvCache::TakeBlock() {
  int32_t block = -1;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else if (!idle_cached_.empty()) {
    block = idle_cached_.front();
    idle_cached_.pop_front();
    Unpublish(block);
  }
  if (block >= 0) holders_[block] = 1;
  return block;
}

void PagedKvCache::Unpublish(int32_t block) {
  Published& p = published_[block];
  auto it = by_key_.find(p.key);
  if (it != by_key_.end() && it->second == block) by_key_.erase(it);
  p = Published();
}

bool PagedKvCache::Reserve(std::vector<int32_t>* table, int64_t tokens) {
  const int64_t need = BlocksFor(tokens) - static_cast<int64_t>(table->size());
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (int64_t i = 0; i < need; ++i) table->push_back(TakeBlock());
  return true;
}

void PagedKvCache::Free(std::vector<int32_t>* table) {
  for (auto it = table->rbegin(); it != table->rend(); ++it) {
    const int32_t block = *it;
    if (--holders_[block] > 0) continue;
    if (published_[block].key != 0) {
      idle_at_[block] = idle_cached_.insert(idle_cached_.end(), block);
    } else {
      free_.push_back(block);
    }
  }
  table->clear();
}

int64_t PagedKvCache::MatchPrefix(const std::vector<int64_t>& tokens, int64_t limit,
                                  std::vector<int32_t>* table) {
  limit = std::min<int64_t>(limit, static_cast<int64_t>(tokens.size()));
  uint64_t key = 0;
  int32_t parent = -1;
  int64_t matched = 0;
  while (matched + block_tokens_ <= limit) {
    const int64_t* chunk = tokens.data() + matched;
    key = ChainKey(key, chunk, block_tokens_);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) break;
    const int32_t block = it->second;
    const Published& p = published_[block];
    if (p.parent != parent || !std::equal(p.tokens.begin(), p.tokens.end(), chunk)) break;
    if (holders_[block]++ == 0) idle_cached_.erase(idle_at_[block]);
    table->push_back(block);
    parent = block;
    matched += block_tokens_;
  }
  return matched;
}

void PagedKvCache::Publish(const std::vector<int32_t>& table, const std::vector<int64_t>& tokens,
                           int64_t computed) {
  computed = std::min<int64_t>(computed, static_cast<int64_t>(tokens.size()));
  uint64_t key = 0;
  int32_t parent = -1;
  for (int64_t b = 0; (b + 1) * block_tokens_ <= computed && b < static_cast<int64_t>(table.size());
       ++b) {
    const int64_t* chunk = tokens.data() + b * block_tokens_;
    key = ChainKey(key, chunk, block_tokens_);
    const int32_t block = table[b];
    Published& p = published_[block];
    if (p.key == key && p.parent == parent && std::equal(p.tokens.begin(), p.tokens.end(), chunk)) {
      // Published already (matched from the cache, or by this sequence before).
      parent = block;
      continue;
    }
    if (p.key != 0 || by_key_.count(key) != 0) return;  // another block holds this prefix
    p.key = key;
    p.parent = parent;
    p.tokens.assign(chunk, chunk + block_tokens_);
    by_key_[key] = block;
    parent = block;
  }
}

}  // namespace switchyard::runner::hf
