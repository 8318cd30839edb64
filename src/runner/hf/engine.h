// The LLM engine (issue 21, "An engine, not a loop"): one scheduler thread that runs a Decoder
// over all active requests at once (iteration-level, "continuous" batching) with their keys and
// values in a paged KV cache (paged_kv_cache.h).
//
// Each step runs one decode token of every running sequence plus prefill chunks of admitted
// ones, up to max_batch_tokens new tokens, as one Decoder::ForwardRagged. A sequence that
// finishes (stop id, max_tokens), is cancelled or fails leaves in the same step and its blocks go
// back to the pool at once. Requests are admitted in FIFO order while the pool can hold all of
// their tokens (prompt + max_tokens - 1) next to the worst case of the running ones, so a running
// sequence never runs out of blocks and nothing is ever preempted; blocks are still taken only as
// a sequence grows, so blocks_in_use counts what is written. A request that waits past its
// deadline gets RESOURCE_EXHAUSTED.
//
// Shared prefixes (prefix_caching): once a prompt is prefilled its whole blocks are published in
// the pool (paged_kv_cache.h), and a later prompt that starts with the same tokens (a common
// system prompt, the earlier turns of a chat) takes them instead of computing them again; only
// the rest of its prompt is prefilled. At least the prompt's last token is always computed, for
// its logits.
//
// Not here (the rest of issue 21): stop *strings* (they need the tokenizer, which the pipeline
// owns: it can cancel a request when the detokenized text contains one), preemption of running
// sequences to admit more, the OpenAI API. The llm pipeline drives it for "format": "hf" models
// (orchestrator/pipelines/hf_llm.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "runner/hf/decoder.h"
#include "runner/hf/sampling.h"

namespace switchyard::runner::hf {

class PagedKvCache;

struct EngineOptions {
  int64_t kv_budget_bytes = int64_t{1} << 30;
  int64_t block_tokens = 16;
  // Sequences in one step (running ones; waiting ones do not count).
  int64_t max_batch_sequences = 16;
  // New tokens in one step: decode tokens plus prefill chunks (a long prompt is prefilled in
  // chunks of what is left). At least max_batch_sequences, so every running sequence decodes.
  int64_t max_batch_tokens = 512;
  // Reuse the keys and values of earlier prompts' shared prefixes (whole blocks).
  bool prefix_caching = true;
};

struct GenerationRequest {
  std::vector<int64_t> prompt;
  SamplingParams sampling;
  // Past it a waiting request gets RESOURCE_EXHAUSTED and a running one DEADLINE_EXCEEDED.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  // Set it (from any thread) to cancel: the request ends with CANCELLED within one step.
  std::shared_ptr<std::atomic<bool>> cancel;
};

struct GenerationResult {
  absl::Status status;        // OK when it stopped or reached max_tokens
  std::string finish_reason;  // "stop", "length", or "" when the status is not OK
  // Tokens of this request (for metering): the prompt tokens in the cache for it (prefilled, or
  // taken from a shared prefix) and the tokens generated, also when it ended early.
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // Of prompt_tokens, those taken from a shared prefix instead of computed.
  int64_t cached_prompt_tokens = 0;
};

struct GenerationCallbacks {
  // Each generated token, in order. Runs on the scheduler thread: keep it short, do not throw,
  // and do not destroy the engine from it (Submit and Stats are fine).
  std::function<void(int64_t token)> on_token;
  // Exactly once per accepted request, after its last on_token, on the scheduler thread.
  std::function<void(const GenerationResult& result)> on_done;
};

struct EngineStats {
  int64_t blocks_total = 0;
  int64_t blocks_in_use = 0;
  int64_t queue_length = 0;  // submitted, not yet admitted
  int64_t running = 0;
  int64_t steps = 0;              // forwards run so far
  int64_t cached_blocks = 0;      // published blocks nobody uses now (reusable, evictable)
  int64_t prefix_hit_tokens = 0;  // prompt tokens taken from shared prefixes so far
};

class Engine {
 public:
  // INVALID_ARGUMENT for options out of range or a KV budget below one full-context sequence.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::shared_ptr<const Decoder> decoder,
                                                        const EngineOptions& options);
  // Signals the scheduler and joins it; requests still waiting or running end with CANCELLED.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request. INVALID_ARGUMENT (and no callback) for an empty prompt, ids outside the
  // vocabulary, sampling parameters out of range, or prompt + max_tokens past
  // max_position_embeddings or past the KV budget; otherwise callbacks.on_done runs exactly once.
  absl::Status Submit(GenerationRequest request, GenerationCallbacks callbacks)
      ABSL_LOCKS_EXCLUDED(mu_);

  EngineStats Stats() const;
  const EngineOptions& options() const { return options_; }

 private:
  struct Sequence;

  Engine(std::shared_ptr<const Decoder> decoder, const EngineOptions& options,
         std::unique_ptr<PagedKvCache> cache);
  void Run();
  // One scheduling round and forward; false when there was nothing to do.
  bool Step();
  void Finish(Sequence* seq, absl::Status status, const std::string& reason);

  const std::shared_ptr<const Decoder> decoder_;
  const EngineOptions options_;
  // The scheduler thread's alone (not locked): the pool, the admitted and waiting sequences.
  std::unique_ptr<PagedKvCache> cache_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  int64_t committed_blocks_ = 0;  // worst-case blocks of the running sequences

  mutable Mutex mu_;
  CondVar wake_;
  std::deque<std::unique_ptr<Sequence>> incoming_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<int64_t> blocks_in_use_{0};
  std::atomic<int64_t> queue_length_{0};
  std::atomic<int64_t> running_count_{0};
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> cached_blocks_{0};
  std::atomic<int64_t> prefix_hit_tokens_{0};
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace switchyard::runner::hf
