// The llm pipeline for a Hugging Face checkpoint folder ("format": "hf", docs/hf-checkpoints.md):
// the Decoder's weights, the BPE tokenizer (llm::Tokenizer), the chat template of
// tokenizer_config.json and the paged-KV Engine with continuous batching, loaded once per model by
// the model manager (it rides on a payload executor, runner/model_executor.h) and shared by every
// request.
//
// A request's messages go through the chat template (add_generation_prompt), the result is
// encoded with special tokens allowed, because the template itself writes <|im_start|> and the
// like. The user's content is inside that text, so a user can type a special token and it becomes
// one; transformers' apply_chat_template(tokenize=True) behaves the same (docs/hf-checkpoints.md
// says so). Generated tokens stream back as text deltas, incomplete UTF-8 held back.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/pipelines/llm_pipeline.h"

namespace switchyard::llm {
class ChatTemplate;
class Tokenizer;
}  // namespace switchyard::llm
namespace switchyard::runner::hf {
class Decoder;
class Engine;
}  // namespace switchyard::runner::hf

namespace switchyard::orchestrator {

class HfLlm {
 public:
  // Loads <config.path>: the decoder (config.json, *.safetensors) in config.hf.dtype on
  // `device`, tokenizer.json (or, without one, SentencePiece's tokenizer.model),
  // tokenizer_config.json (its chat_template is required:
  // FAILED_PRECONDITION without one, since guessing a format gives a model prompts it was not
  // trained on) and the engine with config.hf's budget. Errors name the file.
  static absl::StatusOr<std::shared_ptr<HfLlm>> Load(const ModelConfig& config,
                                                     const std::string& device);
  ~HfLlm();

  // Weights plus the KV budget: what the model manager counts against the device.
  int64_t memory_bytes() const { return memory_bytes_; }
  // The token ids that end a reply: eos and the template's end-of-turn tokens in the vocabulary.
  const std::vector<int64_t>& stop_ids() const { return stop_ids_; }
  int64_t max_position_embeddings() const;
  // Blocks of the KV pool in use now (0 when no sequence is running): for tests and status.
  int64_t kv_blocks_in_use() const;

  // Generates the reply to `request.messages()` (see GenerateChat in llm_pipeline.h for the
  // contract: errors before the first token are the status; later ones in `stopped`). Blocks
  // until the engine finishes the request; `ctx.is_cancelled` (polled) cancels it and
  // `ctx.deadline` is its deadline.
  absl::StatusOr<ChatOutcome> Generate(const RunContext& ctx, const v1::LLMRequest& request,
                                       const LlmOptions& options, const SamplingParams& params,
                                       const EmitDelta& emit) const;

 private:
  HfLlm() = default;

  std::shared_ptr<const runner::hf::Decoder> decoder_;
  std::unique_ptr<llm::Tokenizer> tokenizer_;
  std::unique_ptr<llm::ChatTemplate> template_;
  std::unique_ptr<runner::hf::Engine> engine_;
  std::string bos_token_, eos_token_;
  bool add_bos_ = false;  // a raw prompt (LLMRequest.prompt) gets BOS first, as transformers does
  std::vector<int64_t> stop_ids_;
  int64_t memory_bytes_ = 0;
};

// The bytes of the *.safetensors files in `folder` (0 when none can be read): the load-time
// estimate of an hf model's weights.
int64_t SafetensorsBytes(const std::filesystem::path& folder);

}  // namespace switchyard::orchestrator
