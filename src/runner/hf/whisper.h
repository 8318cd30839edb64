// Whisper (Hugging Face `WhisperForConditionalGeneration` checkpoints) in libtorch C++, no
// TorchScript and no Python: config.json parsing and the encoder-decoder forward pass, written
// from transformers' modeling_whisper.py.
//
// Encoder: conv1 (k 3, pad 1) + GELU, conv2 (k 3, stride 2, pad 1) + GELU over the log-mel
// [num_mel_bins, 2 * max_source_positions] (log_mel.h), plus embed_positions as stored (HF
// stores the sinusoids; they are computed when absent), pre-LN transformer layers (LayerNorm eps
// 1e-5, q scaled by head_dim^-0.5, k_proj without bias, exact GELU MLP), final layer_norm.
// Decoder: embed_tokens (times sqrt(d_model) with scale_embedding) + learned embed_positions,
// pre-LN layers with causal self-attention (a KV cache) and cross-attention whose keys and values
// are computed once per audio window (StartDecoding), final layer_norm, logits from proj_out
// (tied to embed_tokens unless tie_word_embeddings is false).
//
// Every config field that changes the math is honoured or refused naming it; unknown fields are
// refused. Every tensor is checked against the shape the config implies before use, and
// tensors the config does not account for are refused.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard::runner::hf {

struct WhisperConfig {
  int64_t d_model = 0;
  int64_t encoder_layers = 0;
  int64_t encoder_attention_heads = 0;
  int64_t encoder_ffn_dim = 0;
  int64_t decoder_layers = 0;
  int64_t decoder_attention_heads = 0;
  int64_t decoder_ffn_dim = 0;
  int64_t num_mel_bins = 80;            // 80, or 128 (large-v3)
  int64_t max_source_positions = 1500;  // encoder positions: 30 s of audio after the stride-2 conv
  int64_t max_target_positions = 448;   // decoder positions
  int64_t vocab_size = 0;
  int64_t decoder_start_token_id = 50258;  // <|startoftranscript|>
  int64_t eos_token_id = 50257;            // <|endoftext|>
  bool scale_embedding = false;
  bool tie_word_embeddings = true;
  std::string torch_dtype;  // informational
};

// Parses and validates config.json text; `source` names it in errors.
absl::StatusOr<WhisperConfig> ParseWhisperConfig(const std::string& json_text,
                                                 const std::string& source = "config.json");
// Reads <folder>/config.json (at most 4 MiB) and parses it.
absl::StatusOr<WhisperConfig> LoadWhisperConfig(const std::filesystem::path& folder);

// Per-window decoder state: the cross-attention keys and values of one audio window's encoder
// output and the self-attention cache of the tokens decoded so far. Batch 1.
struct WhisperDecoderState {
  std::vector<at::Tensor> cross_k, cross_v;  // per layer [1, heads, source, head_dim]
  std::vector<at::Tensor> self_k, self_v;    // per layer [1, heads, length, head_dim]
  int64_t length = 0;                        // tokens held (the next token's position)
};

class WhisperModel {
 public:
  // Loads <folder>/config.json and the safetensors weights, converted to `dtype` (float32,
  // bfloat16, or float16 on CUDA) on `device`. Errors name the field, file or tensor.
  static absl::StatusOr<std::unique_ptr<WhisperModel>> Load(const std::filesystem::path& folder,
                                                            at::Device device = at::kCPU,
                                                            at::ScalarType dtype = at::kFloat);

  const WhisperConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  // Mel frames one window must have: 2 * max_source_positions (3000 = 30 s).
  int64_t window_frames() const { return 2 * config_.max_source_positions; }

  // Encoder output [1, max_source_positions, d_model] (float32) for a log-mel
  // [num_mel_bins, window_frames()] or [1, num_mel_bins, window_frames()] (float32, any device).
  absl::StatusOr<at::Tensor> Encode(const at::Tensor& mel) const;

  // A fresh decoder state for one window: computes every layer's cross-attention keys and
  // values from `encoder_out` (as Encode returns it).
  absl::StatusOr<WhisperDecoderState> StartDecoding(const at::Tensor& encoder_out) const;

  // Float32 logits [tokens.size(), vocab] for `tokens` at positions [state->length, ...); the
  // state then holds them too. A failed call leaves the state unchanged.
  absl::StatusOr<at::Tensor> DecodeStep(const std::vector<int64_t>& tokens,
                                        WhisperDecoderState* state) const;

 private:
  struct Attention {
    at::Tensor q_w, q_b, k_w, v_w, v_b, o_w, o_b;  // k_proj has no bias in Whisper
  };
  struct Layer {
    at::Tensor ln1_w, ln1_b;  // self_attn_layer_norm
    Attention self_attn;
    at::Tensor ln_x_w, ln_x_b;  // encoder_attn_layer_norm (decoder only)
    Attention cross_attn;       // decoder only
    at::Tensor ln2_w, ln2_b;    // final_layer_norm
    at::Tensor fc1_w, fc1_b, fc2_w, fc2_b;
  };

  WhisperModel() = default;
  at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads,
                    const at::Tensor& mask) const;
  at::Tensor Mlp(const Layer& layer, const at::Tensor& x) const;

  WhisperConfig config_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor conv1_w_, conv1_b_, conv2_w_, conv2_b_;
  at::Tensor enc_pos_;  // [max_source_positions, d_model]
  std::vector<Layer> enc_layers_;
  at::Tensor enc_ln_w_, enc_ln_b_;
  at::Tensor embed_;    // [vocab, d_model]
  at::Tensor dec_pos_;  // [max_target_positions, d_model]
  std::vector<Layer> dec_layers_;
  at::Tensor dec_ln_w_, dec_ln_b_;
  at::Tensor proj_out_;  // [vocab, d_model] (embed_ when tied)
};

// openai-whisper's sinusoids(length, channels): [sin | cos] of position * 10000^(-i/(c/2-1)).
at::Tensor WhisperSinusoids(int64_t length, int64_t channels);

}  // namespace switchyard::runner::hf
