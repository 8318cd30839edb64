// config.json of a Hugging Face decoder-only checkpoint, for the architectures the libtorch
// decoder implements (decoder.h): LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM. Every
// field that changes the computation is either honoured or refused with an error naming it; an
// unknown field is refused too, since nothing says it leaves the math alone. Fields known not to
// change the math (generation defaults, bookkeeping) are ignored.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::runner::hf {

enum class Architecture { kLlama, kQwen2, kQwen3 };

// transformers' `rope_type: llama3` (modeling_rope_utils._compute_llama3_parameters).
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct DecoderConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as written in `architectures`
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<Llama3RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;    // Qwen2 always; Llama and Qwen3 with attention_bias
  bool o_bias = false;      // Llama and Qwen3 with attention_bias
  bool qk_norm = false;     // Qwen3
  std::string torch_dtype;  // as written ("" when absent); informational
  std::vector<int64_t> bos_token_ids;
  std::vector<int64_t> eos_token_ids;
};

// Parses and validates config.json text; `source` names it in errors.
absl::StatusOr<DecoderConfig> ParseDecoderConfig(const std::string& json_text,
                                                 const std::string& source = "config.json");
// Reads <folder>/config.json (at most 4 MiB) and parses it.
absl::StatusOr<DecoderConfig> LoadDecoderConfig(const std::filesystem::path& folder);

}  // namespace switchyard::runner::hf
