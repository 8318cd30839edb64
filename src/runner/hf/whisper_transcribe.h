// Greedy Whisper transcription of 16 kHz audio with a WhisperModel (whisper.h), the log-mel front
// end (log_mel.h) and the checkpoint's tokenizer.json (llm::Tokenizer): what transformers'
// WhisperForConditionalGeneration.generate does with num_beams 1 and no temperature fallback,
// and openai-whisper's transcribe() does for long audio.
//
// - Prompt: <|startoftranscript|> <|lang|> <|transcribe|> (or <|translate|>) for multilingual
//   models, then <|notimestamps|> unless timestamps are asked; English-only models (.en) get
//   <|startoftranscript|> and <|notimestamps|> only. Without a language the first window's
//   language is detected: the argmax over the language tokens of the logits after
//   <|startoftranscript|> (as HF's detect_language).
// - Each step: generation_config.json's suppress_tokens, begin_suppress_tokens (first step
//   only), then with timestamps HF's WhisperTimeStampLogitsProcessor rules (no <|notimestamps|>;
//   timestamps in pairs; never decreasing; the first token a timestamp <= max_initial_timestamp;
//   only timestamps when their summed probability beats every text token), then argmax; stop at
//   <|endoftext|> or max_new_tokens.
// - Audio longer than 30 s runs in 30 s windows, each with its own log-mel (padded with zeros).
//   Without timestamps the next window starts 30 s later; with timestamps it starts at the last
//   complete segment's end timestamp (openai's seek), or 30 s later when the window ended on a
//   single timestamp or had none.
// - Text: the generated tokens without special and timestamp tokens, decoded; chunks are the
//   timestamped segments (start/end seconds from the audio's start).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runner/hf/whisper.h"
#include "runner/llm/tokenizer.h"

namespace switchyard::runner::hf {

// generation_config.json's fields that decoding uses (everything else is ignored).
struct WhisperGenerationConfig {
  std::vector<int64_t> suppress_tokens;
  std::vector<int64_t> begin_suppress_tokens;
  std::map<std::string, int64_t> lang_to_id;  // "<|en|>" -> id
  std::optional<bool> is_multilingual;
  int64_t max_initial_timestamp_index = 50;  // 1.0 s
};

// Parses generation_config.json text (at most 4 MiB; ids must be inside the vocabulary).
absl::StatusOr<WhisperGenerationConfig> ParseWhisperGenerationConfig(const std::string& json_text,
                                                                     int64_t vocab_size,
                                                                     const std::string& source);

struct WhisperRequest {
  std::string language;  // "en" or "<|en|>"; empty: detect (multilingual) or English (.en)
  bool translate = false;
  bool timestamps = false;
  int64_t max_new_tokens = 224;  // per window; capped at max_target_positions - prompt length
  // Polled before every window and decoder step; a non-OK status (cancelled, deadline) ends the
  // transcription with it.
  std::function<absl::Status()> keep_going;
};

struct WhisperSegment {
  double start = 0, end = 0;  // seconds from the start of the audio
  std::string text;
};

struct WhisperResult {
  std::string text;
  std::string language;  // the language token used ("<|en|>"), empty for English-only models
  std::vector<WhisperSegment> chunks;  // only with timestamps
  // Every window's generated tokens (prompt and <|endoftext|> excluded), for tests.
  std::vector<std::vector<int64_t>> window_tokens;
  std::vector<int64_t> window_starts;  // mel frames (10 ms) where each window began
};

struct WhisperLimits {
  int64_t max_samples = 3600 * 16000;  // one hour at 16 kHz
};

class WhisperTranscriber {
 public:
  // A checkpoint folder: config.json, safetensors, tokenizer.json (+ tokenizer_config.json),
  // optionally generation_config.json. The tokenizer must have <|endoftext|>,
  // <|startoftranscript|>, <|transcribe|>, <|translate|>, <|notimestamps|> and <|0.00|>.
  static absl::StatusOr<std::unique_ptr<WhisperTranscriber>> Load(
      const std::filesystem::path& folder, at::Device device = at::kCPU,
      at::ScalarType dtype = at::kFloat, const WhisperLimits& limits = {});

  // `samples`: 16 kHz mono. Thread-compatible with itself (each call has its own state), so
  // concurrent calls are fine.
  absl::StatusOr<WhisperResult> Transcribe(const std::vector<float>& samples,
                                           const WhisperRequest& request) const;

  const WhisperModel& model() const { return *model_; }
  const llm::Tokenizer& tokenizer() const { return *tokenizer_; }
  bool multilingual() const { return multilingual_; }

 private:
  WhisperTranscriber() = default;
  // One window's greedy decode; `language` is filled when empty and the model is multilingual.
  absl::StatusOr<std::vector<int64_t>> DecodeWindow(const at::Tensor& mel,
                                                    const WhisperRequest& request,
                                                    int64_t* language) const;
  void ApplyTimestampRules(at::Tensor& logits, const std::vector<int64_t>& generated) const;

  std::unique_ptr<WhisperModel> model_;
  std::unique_ptr<llm::Tokenizer> tokenizer_;
  WhisperGenerationConfig generation_;
  WhisperLimits limits_;
  bool multilingual_ = true;
  int64_t eos_ = 0, sot_ = 0, transcribe_ = 0, translate_ = 0, no_timestamps_ = 0;
  int64_t timestamp_begin_ = 0;
  std::map<std::string, int64_t> languages_;  // "<|en|>" -> id
};

}  // namespace switchyard::runner::hf
