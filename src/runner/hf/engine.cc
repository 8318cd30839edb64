#include "runner/hf/engine.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runner/hf/paged_kv_cache.h"

namespace switchyard::runner::hf {

struct Engine::Sequence {
  GenerationRequest request;
  GenerationCallbacks callbacks;
  std::vector<int64_t> stop_ids;  // sorted
  std::mt19937_64 rng;
  int64_t worst_blocks = 0;  // blocks for prompt + max_tokens - 1 positions
  bool admitted = false;
  std::vector<int32_t> blocks;
  int64_t computed = 0;  // positions whose keys and values are in the cache
  int64_t cached = 0;    // of them, taken from a shared prefix at admission
  bool published = false;
  int64_t last_token = -1;
  int64_t completion_tokens = 0;
  bool done = false;
  std::vector<int64_t> step_tokens;  // this step's new tokens

  int64_t prompt_size() const { return static_cast<int64_t>(request.prompt.size()); }
  bool cancelled() const { return request.cancel != nullptr && request.cancel->load(); }
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::shared_ptr<const Decoder> decoder,
                                                       const EngineOptions& options) {
  if (decoder == nullptr) return absl::InvalidArgumentError("engine without a decoder");
  if (options.max_batch_sequences < 1 || options.max_batch_sequences > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_sequences ", options.max_batch_sequences, " not in [1, 4096]"));
  }
  if (options.max_batch_tokens < options.max_batch_sequences ||
      options.max_batch_tokens > (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_tokens ", options.max_batch_tokens,
                                                   " not in [max_batch_sequences ",
                                                   options.max_batch_sequences, ", 2^20]"));
  }
  auto cache = PagedKvCache::Create(decoder->config(), options.kv_budget_bytes,
                                    options.block_tokens, decoder->dtype(), decoder->device());
  if (!cache.ok()) return cache.status();
  return std::unique_ptr<Engine>(new Engine(std::move(decoder), options, *std::move(cache)));
}

Engine::Engine(std::shared_ptr<const Decoder> decoder, const EngineOptions& options,
               std::unique_ptr<PagedKvCache> cache)
    : decoder_(std::move(decoder)), options_(options), cache_(std::move(cache)) {
  thread_ = std::thread([this] { Run(); });
}

Engine::~Engine() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  wake_.SignalAll();
  thread_.join();
}

EngineStats Engine::Stats() const {
  EngineStats s;
  s.blocks_total = cache_->num_blocks();  // fixed at Create
  s.blocks_in_use = blocks_in_use_.load();
  s.queue_length = queue_length_.load();
  s.running = running_count_.load();
  s.steps = steps_.load();
  s.cached_blocks = cached_blocks_.load();
  s.prefix_hit_tokens = prefix_hit_tokens_.load();
  return s;
}

absl::Status Engine::Submit(GenerationRequest request, GenerationCallbacks callbacks) {
  const DecoderConfig& c = decoder_->config();
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt == 0) return absl::InvalidArgumentError("empty prompt");
  for (int64_t id : request.prompt) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (prompt >= c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt,
                                                   " tokens leaves no room to generate within "
                                                   "max_position_embeddings ",
                                                   c.max_position_embeddings));
  }
  if (absl::Status s = ValidateSamplingParams(request.sampling); !s.ok()) return s;
  // The last generated token is never fed back, so it needs no cache position.
  const int64_t max_tokens = request.sampling.max_tokens;
  if (max_tokens > c.max_position_embeddings - prompt) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt, " tokens + max_tokens ",
                                                   max_tokens, " exceed max_position_embeddings ",
                                                   c.max_position_embeddings));
  }
  const int64_t positions = prompt + max_tokens - 1;
  if (cache_->BlocksFor(positions) > cache_->num_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prompt, " + ", max_tokens, " tokens need ", cache_->BlocksFor(positions),
                     " KV blocks; the KV budget holds ", cache_->num_blocks()));
  }
  auto seq = std::make_unique<Sequence>();
  seq->stop_ids = request.sampling.stop_token_ids;
  if (!request.sampling.ignore_eos) {
    seq->stop_ids.insert(seq->stop_ids.end(), c.eos_token_ids.begin(), c.eos_token_ids.end());
  }
  std::sort(seq->stop_ids.begin(), seq->stop_ids.end());
  seq->rng.seed(request.sampling.seed
                    ? *request.sampling.seed
                    : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}());
  seq->worst_blocks = cache_->BlocksFor(positions);
  seq->request = std::move(request);
  seq->callbacks = std::move(callbacks);
  {
    MutexLock lock(&mu_);
    if (stop_) return absl::CancelledError("the engine is shutting down");
    incoming_.push_back(std::move(seq));
    queue_length_.fetch_add(1);
  }
  wake_.Signal();
  return absl::OkStatus();
}

void Engine::Finish(Sequence* seq, absl::Status status, const std::string& reason) {
  if (seq->done) return;
  seq->done = true;
  cache_->Free(&seq->blocks);
  // The counters are updated before on_done, so a caller woken by it sees them final.
  if (seq->admitted) {
    committed_blocks_ -= seq->worst_blocks;
    running_count_.fetch_sub(1);
  } else {
    queue_length_.fetch_sub(1);
  }
  blocks_in_use_.store(cache_->used_blocks());
  cached_blocks_.store(cache_->idle_cached_blocks());
  GenerationResult result;
  result.status = std::move(status);
  result.finish_reason = result.status.ok() ? reason : "";
  result.prompt_tokens = std::min(seq->computed, seq->prompt_size());
  result.completion_tokens = seq->completion_tokens;
  result.cached_prompt_tokens = seq->cached;
  if (seq->callbacks.on_done) seq->callbacks.on_done(result);
}

void Engine::Run() {
  while (true) {
    {
      MutexLock lock(&mu_);
      // running_ and waiting_ are this thread's own; read here only to decide whether to sleep.
      if (running_.empty() && waiting_.empty()) {
        wake_.Wait(&mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || !incoming_.empty();
        });
      }
      if (stop_) break;
      while (!incoming_.empty()) {
        waiting_.push_back(std::move(incoming_.front()));
        incoming_.pop_front();
      }
    }
    Step();
  }
  // Shutdown: everything still waiting or running ends with CANCELLED.
  {
    MutexLock lock(&mu_);
    while (!incoming_.empty()) {
      waiting_.push_back(std::move(incoming_.front()));
      incoming_.pop_front();
    }
  }
  const absl::Status cancelled = absl::CancelledError("the engine was shut down");
  for (auto& seq : running_) Finish(seq.get(), cancelled, "");
  for (auto& seq : waiting_) Finish(seq.get(), cancelled, "");
  running_.clear();
  waiting_.clear();
}

bool Engine::Step() {
  const auto now = std::chrono::steady_clock::now();
  // Cancelled or expired sequences leave before the step and free their blocks now.
  for (auto& seq : running_) {
    if (seq->cancelled()) {
      Finish(seq.get(), absl::CancelledError("request cancelled"), "");
    } else if (now >= seq->request.deadline) {
      Finish(seq.get(), absl::DeadlineExceededError("deadline passed while generating"), "");
    }
  }
  for (auto& seq : waiting_) {
    if (seq->cancelled()) {
      Finish(seq.get(), absl::CancelledError("request cancelled while waiting"), "");
    }
  }
  auto is_done = [](const std::unique_ptr<Sequence>& s) { return s->done; };
  running_.erase(std::remove_if(running_.begin(), running_.end(), is_done), running_.end());
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), is_done), waiting_.end());
  // FIFO admission: the head waits until its worst case fits; later ones wait behind it so that
  // a long request is not starved by short ones.
  while (!waiting_.empty() &&
         static_cast<int64_t>(running_.size()) < options_.max_batch_sequences &&
         committed_blocks_ + waiting_.front()->worst_blocks <= cache_->num_blocks()) {
    Sequence* seq = waiting_.front().get();
    seq->admitted = true;
    committed_blocks_ += seq->worst_blocks;
    if (options_.prefix_caching) {
      // The matched blocks count in its worst case like any other, so admission stays exact.
      seq->cached = cache_->MatchPrefix(seq->request.prompt, seq->prompt_size() - 1, &seq->blocks);
      seq->computed = seq->cached;
      prefix_hit_tokens_.fetch_add(seq->cached);
    }
    queue_length_.fetch_sub(1);
    running_count_.fetch_add(1);
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  // Only what could not be admitted expires here: its deadline passed because the budget is full.
  for (auto& seq : waiting_) {
    if (now >= seq->request.deadline) {
      Finish(seq.get(),
             absl::ResourceExhaustedError(absl::StrCat(
                 "the KV cache budget is full (", cache_->num_blocks(), " blocks of ",
                 cache_->block_tokens(),
                 " tokens, all committed to running requests): the deadline passed while the "
                 "request waited for its ",
                 seq->worst_blocks, " blocks")),
             "");
    }
  }
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), is_done), waiting_.end());
  if (running_.empty()) return false;

  // The batch: every decoding sequence's one token first, then prefill chunks in admission order
  // while max_batch_tokens allows (max_batch_tokens >= max_batch_sequences, so decodes fit).
  std::vector<Sequence*> batch;
  std::vector<RaggedSequence> inputs;
  int64_t budget = options_.max_batch_tokens;
  for (auto& seq : running_) {
    if (seq->computed < seq->prompt_size()) continue;
    seq->step_tokens.assign(1, seq->last_token);
    batch.push_back(seq.get());
    --budget;
  }
  for (auto& seq : running_) {
    if (seq->computed >= seq->prompt_size() || budget <= 0) continue;
    const int64_t t = std::min(seq->prompt_size() - seq->computed, budget);
    seq->step_tokens.assign(seq->request.prompt.begin() + seq->computed,
                            seq->request.prompt.begin() + seq->computed + t);
    batch.push_back(seq.get());
    budget -= t;
  }
  for (Sequence* seq : batch) {
    const int64_t need = seq->computed + static_cast<int64_t>(seq->step_tokens.size());
    // Admission committed the worst case, so this only fails on a bookkeeping bug.
    if (!cache_->Reserve(&seq->blocks, need)) {
      Finish(seq, absl::InternalError("KV pool out of blocks despite admission"), "");
      continue;
    }
    inputs.push_back(RaggedSequence{&seq->step_tokens, seq->computed, &seq->blocks});
  }
  batch.erase(std::remove_if(batch.begin(), batch.end(), [](Sequence* s) { return s->done; }),
              batch.end());
  blocks_in_use_.store(cache_->used_blocks());
  if (!batch.empty()) {
    auto logits = decoder_->ForwardRagged(inputs, cache_.get());
    steps_.fetch_add(1);
    if (!logits.ok()) {
      for (Sequence* seq : batch) Finish(seq, logits.status(), "");
    } else {
      c10::InferenceMode guard;
      at::Tensor rows = logits->to(at::kCPU).contiguous();
      const int64_t vocab = rows.size(1);
      const float* data = rows.data_ptr<float>();
      // Sequences whose prompt is done sample a token from their row; all rows at once.
      std::vector<SampleRow> sample_rows;
      std::vector<Sequence*> sampled;
      for (size_t i = 0; i < batch.size(); ++i) {
        Sequence* seq = batch[i];
        seq->computed += static_cast<int64_t>(seq->step_tokens.size());
        if (seq->computed < seq->prompt_size()) continue;  // a prefill chunk short of the end
        if (options_.prefix_caching && !seq->published) {
          cache_->Publish(seq->blocks, seq->request.prompt, seq->prompt_size());
          seq->published = true;
        }
        sample_rows.push_back(
            SampleRow{static_cast<int64_t>(i), &seq->request.sampling, &seq->rng});
        sampled.push_back(seq);
      }
      std::vector<int64_t> tokens(sampled.size());
      SampleTokens(data, vocab, sample_rows, tokens.data());
      for (size_t j = 0; j < sampled.size(); ++j) {
        Sequence* seq = sampled[j];
        const int64_t token = tokens[j];
        ++seq->completion_tokens;
        seq->last_token = token;
        if (seq->callbacks.on_token) seq->callbacks.on_token(token);
        if (std::binary_search(seq->stop_ids.begin(), seq->stop_ids.end(), token)) {
          Finish(seq, absl::OkStatus(), "stop");
        } else if (seq->completion_tokens >= seq->request.sampling.max_tokens) {
          Finish(seq, absl::OkStatus(), "length");
        }
      }
    }
  }
  // Finished sequences leave in the same step; their blocks are already back in the pool.
  running_.erase(std::remove_if(running_.begin(), running_.end(), is_done), running_.end());
  blocks_in_use_.store(cache_->used_blocks());
  cached_blocks_.store(cache_->idle_cached_blocks());
  return true;
}

}  // namespace switchyard::runner::hf
