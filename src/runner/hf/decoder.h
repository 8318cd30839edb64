// The decoder-only transformers of Hugging Face checkpoints in libtorch C++ (no TorchScript, no
// Python): LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM, loaded from a checkpoint
// folder (config.json + safetensors, see hf_config.h and safetensors.h). The weights are plain
// tensors held in a struct; the forward pass follows transformers' modeling_llama / qwen2 / qwen3
// (RMSNorm in float32, rotate_half RoPE with llama3 scaling, grouped-query attention with a
// causal mask and float32 softmax, Qwen2 q/k/v biases, Qwen3 q/k RMSNorm over head_dim before
// RoPE, SwiGLU MLP, tied or separate lm_head).
//
// ForwardRagged is the engine's step (engine.h): several sequences at different positions, their
// keys and values in a PagedKvCache (paged_kv_cache.h). Forward() with a KvCache stays for
// single-batch use and as the reference the ragged step is tested against.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runner/hf/hf_config.h"

namespace switchyard::runner::hf {

class PagedKvCache;

// One sequence's part of a ragged step: `tokens` (a prefill chunk or one decode token) at
// positions [past, past + tokens.size()); positions [0, past) are already in the paged cache
// under `blocks`, which must also hold the new positions.
struct RaggedSequence {
  const std::vector<int64_t>* tokens = nullptr;
  int64_t past = 0;
  const std::vector<int32_t>* blocks = nullptr;
};

// Keys and values of every layer for a batch of sequences that advance together (all of the
// same length). Forward() calls Append for each layer in order with the new tokens' keys and
// values, then Commit once all layers have seen them; a failed forward commits nothing, so the
// partially written positions are overwritten by the next call.
class KvCache {
 public:
  virtual ~KvCache() = default;
  // Tokens held per sequence (the position of the next token).
  virtual int64_t length() const = 0;
  virtual int64_t batch() const = 0;
  // Stores k, v ([batch, kv_heads, t, head_dim]) at positions [length(), length() + t) of
  // `layer` and returns all keys and values of that layer, [batch, kv_heads, length() + t,
  // head_dim] (views are fine).
  virtual absl::StatusOr<std::pair<at::Tensor, at::Tensor>> Append(int64_t layer,
                                                                   const at::Tensor& k,
                                                                   const at::Tensor& v) = 0;
  // Makes t appended tokens part of length().
  virtual void Commit(int64_t t) = 0;
};

// One preallocated [batch, kv_heads, capacity, head_dim] buffer per layer for keys and one for
// values. Simple and fast for one batch; it reserves the whole capacity up front.
class ContiguousKvCache : public KvCache {
 public:
  // capacity <= max_position_embeddings. RESOURCE_EXHAUSTED when the buffers cannot be allocated.
  static absl::StatusOr<std::unique_ptr<ContiguousKvCache>> Create(const DecoderConfig& config,
                                                                   int64_t batch, int64_t capacity,
                                                                   at::ScalarType dtype,
                                                                   at::Device device);
  int64_t length() const override { return length_; }
  int64_t batch() const override { return batch_; }
  int64_t capacity() const { return capacity_; }
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> Append(int64_t layer, const at::Tensor& k,
                                                           const at::Tensor& v) override;
  void Commit(int64_t t) override { length_ += t; }
  // Forgets the held tokens (the buffers are kept).
  void Reset() { length_ = 0; }

 private:
  ContiguousKvCache() = default;
  int64_t batch_ = 0;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

class Decoder {
 public:
  // Loads <folder>/config.json and the safetensors weights, converted to `dtype` (float32,
  // bfloat16, or float16 on CUDA) on `device`. Float32 weights on the CPU stay memory-mapped.
  // Errors name the field, file or tensor (with the expected shape).
  static absl::StatusOr<std::unique_ptr<Decoder>> Load(const std::filesystem::path& folder,
                                                       at::Device device = at::kCPU,
                                                       at::ScalarType dtype = at::kFloat);

  const DecoderConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

  // A cache sized for this model's layers, heads and dtype.
  absl::StatusOr<std::unique_ptr<ContiguousKvCache>> NewCache(int64_t batch,
                                                              int64_t capacity) const;

  // Logits [B, T, vocab] (float32) for token_ids [B, T] (int64, any device) at positions
  // [cache->length(), cache->length() + T); the cache then holds them too. Without a cache the
  // tokens are a whole sequence from position 0. Thread-compatible: concurrent calls need
  // separate caches. Runs under c10::InferenceMode, so the logits are inference tensors: modify
  // them in place only under InferenceMode too (or clone them).
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& token_ids, KvCache* cache) const;

  // One forward over several sequences at once: the linear layers run once on all new tokens
  // concatenated, attention per sequence over its cached blocks (causal within its new tokens).
  // Writes the new keys and values into `cache` and returns float32 logits [sequences, vocab] of
  // each sequence's last new token. A failed step leaves the written positions to be
  // overwritten. Concurrent calls need separate caches.
  absl::StatusOr<at::Tensor> ForwardRagged(const std::vector<RaggedSequence>& sequences,
                                           PagedKvCache* cache) const;

  // Greedy decoding of one sequence: prefill `prompt`, then `steps` tokens, each the argmax of
  // the previous logits. When `step_logits` is given it receives the [vocab] float32 logits each
  // token was chosen from.
  absl::StatusOr<std::vector<int64_t>> GenerateGreedy(
      const std::vector<int64_t>& prompt, int64_t steps,
      std::vector<at::Tensor>* step_logits = nullptr) const;

 private:
  struct Layer {
    at::Tensor input_norm;      // [hidden]
    at::Tensor qkv_w;           // [(heads + 2 kv_heads) * head_dim, hidden]: q, k, v fused
    at::Tensor qkv_b;           // same rows, or undefined
    at::Tensor q_norm, k_norm;  // [head_dim] (Qwen3) or undefined
    at::Tensor o_w, o_b;        // [hidden, heads * head_dim], [hidden] or undefined
    at::Tensor post_norm;       // [hidden]
    at::Tensor gate_up_w;       // [2 * intermediate, hidden]: gate, up fused
    at::Tensor down_w;          // [hidden, intermediate]
  };

  Decoder() = default;
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w) const;
  absl::StatusOr<at::Tensor> ForwardImpl(const at::Tensor& ids, KvCache* cache, int64_t past) const;

  DecoderConfig config_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor embed_;  // [vocab, hidden]
  at::Tensor final_norm_;
  at::Tensor lm_head_;   // [vocab, hidden] (the embedding when tied)
  at::Tensor inv_freq_;  // [head_dim / 2] float64, llama3 scaling applied
  std::vector<Layer> layers_;
};

}  // namespace switchyard::runner::hf
