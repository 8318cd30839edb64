#include "runner/hf/paged_kv_cache.h"

#include <c10/core/InferenceMode.h>

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

bool PagedKvCache::Reserve(std::vector<int32_t>* table, int64_t tokens) {
  const int64_t need = BlocksFor(tokens) - static_cast<int64_t>(table->size());
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (int64_t i = 0; i < need; ++i) {
    table->push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void PagedKvCache::Free(std::vector<int32_t>* table) {
  for (auto it = table->rbegin(); it != table->rend(); ++it) free_.push_back(*it);
  table->clear();
}

at::Tensor PagedKvCache::Slots(const std::vector<int32_t>& table, int64_t begin,
                               int64_t end) const {
  at::Tensor slots = at::empty({end - begin}, at::kLong);
  auto* p = slots.data_ptr<int64_t>();
  for (int64_t pos = begin; pos < end; ++pos) {
    p[pos - begin] =
        static_cast<int64_t>(table[pos / block_tokens_]) * block_tokens_ + pos % block_tokens_;
  }
  return slots.to(device_);
}

}  // namespace switchyard::runner::hf
