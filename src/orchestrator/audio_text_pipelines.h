// Audio and text pipelines: audio-to-text, text-to-speech and llm. Contracts in
// docs/pipelines-audio-text.md. The pure helpers (decode, WAV encode, sampling, chat template,
// validation) are exposed for unit tests; the orchestrator service composes them.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "orchestrator/prompt_limits.h"
#include "runner/torch_model.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::orchestrator {

// ---------------------------------------------------------------------------------------------
// audio-to-text

struct AudioToTextOptions {
  int sample_rate = 16000;         // options.sample_rate
  int channels = 1;                // options.channels (1 = mono)
  double max_audio_seconds = 300;  // options.max_audio_seconds
};
// Reads the pipeline options of a model config (INVALID_ARGUMENT on a bad value).
absl::StatusOr<AudioToTextOptions> ParseAudioToTextOptions(const nlohmann::json& options);

// Decoded audio, resampled: `channels` planes of `samples` float32 values in -1..1.
struct DecodedAudio {
  int sample_rate = 0;
  int channels = 0;
  int64_t samples = 0;         // per channel
  std::vector<float> planar;   // channels * samples, channel-major
  int source_sample_rate = 0;  // as decoded, before resampling
  int source_channels = 0;
};

// Decodes any audio FFmpeg demuxes and decodes (WAV, MP3, AAC/M4A, OGG, FLAC, ...) from memory
// and converts it with libswresample to `sample_rate` Hz, `channels` channels, float32.
// INVALID_ARGUMENT when the data is empty, corrupt, has no audio stream or decodes to nothing,
// or when it is longer than `max_seconds` (the message names max_audio_seconds).
absl::StatusOr<DecodedAudio> DecodeAudio(std::string_view data, int sample_rate, int channels,
                                         double max_seconds);

// "true"/""/"sentence" -> "sentence", "word" -> "word", "false" -> "none"; INVALID_ARGUMENT
// naming return_timestamps otherwise.
absl::StatusOr<std::string> TimestampMode(const std::string& return_timestamps);

// Converts forward()'s result (str, or (str, List[str], Tensor[K, 2])) into the response's text
// and chunks. Chunks are dropped when `mode` is "none". INTERNAL when the result is malformed.
absl::Status FillTranscription(const c10::IValue& result, const std::string& mode,
                               v1::TextResponse* response);

// ---------------------------------------------------------------------------------------------
// text-to-speech

inline constexpr const char* kDefaultSpeakerDescription =
    "A male speaker delivers a slightly expressive and animated speech with a moderate speed and "
    "pitch.";

struct TextToSpeechOptions {
  int sample_rate = 0;  // options.sample_rate; 0: the module's int `sample_rate` or 24000
  // options.max_prompt_chars (older name: max_text_chars): the longest `text`, in characters
  // (Unicode code points, prompt_limits.h).
  int64_t max_prompt_chars = kDefaultSpeechMaxPromptChars;
};
absl::StatusOr<TextToSpeechOptions> ParseTextToSpeechOptions(const nlohmann::json& options);
// The request's text against the options (required; at most max_prompt_chars characters).
// INVALID_ARGUMENT naming `text`, its length and the limit.
absl::Status ValidateTextToSpeech(const v1::TextToSpeechRequest& request,
                                  const TextToSpeechOptions& options);

// Encodes float samples (interleaved when channels > 1, clamped to -1..1, NaN as 0) as a RIFF
// WAVE file, 16-bit signed little-endian PCM.
std::string EncodeWav(const std::vector<float>& interleaved, int channels, int sample_rate);

// Facts read back from a canonical 44-byte-header PCM WAV (for tests and sanity checks).
struct WavInfo {
  int channels = 0;
  int sample_rate = 0;
  int bits_per_sample = 0;
  int64_t frames = 0;
};
absl::StatusOr<WavInfo> ParseWavHeader(std::string_view wav);

// Converts forward()'s waveform (float [S], [1, S] or [C, S]) to interleaved samples.
absl::StatusOr<std::vector<float>> WaveformToInterleaved(const at::Tensor& waveform, int* channels);

// ---------------------------------------------------------------------------------------------
// llm

struct LlmOptions {
  int max_tokens_limit = 4096;    // options.max_tokens: largest max_tokens a request may ask
  int max_context_tokens = 8192;  // options.max_context_tokens: prompt + completion
  int64_t seed = 0;               // options.seed: the sampler's RNG seed (fixed: reproducible)
  int64_t eos_token_id = -1;      // options.eos_token_id; -1: the module's int `eos_token_id`
  // options.max_prompt_chars: all messages' content together, in characters (prompt_limits.h);
  // checked before the prompt is templated or tokenized.
  int64_t max_prompt_chars = kDefaultLlmMaxPromptChars;
};
absl::StatusOr<LlmOptions> ParseLlmOptions(const nlohmann::json& options);

struct SamplingParams {
  float temperature = 0.7f;  // 0: greedy
  int max_tokens = 256;
  float top_p = 1.0f;  // (0, 1]
  int top_k = -1;      // -1: off
};
// Validates the request (messages, roles, contents and their total length against
// max_prompt_chars, sampling fields) and fills defaults. INVALID_ARGUMENT naming the field.
absl::StatusOr<SamplingParams> ValidateLlmRequest(const v1::LLMRequest& request,
                                                  const LlmOptions& options);

// The built-in chat template (used when the module has no apply_chat_template):
//   for each message: "<|" role "|>\n" content "\n"   then   "<|assistant|>\n"
std::string DefaultChatTemplate(const std::vector<std::string>& roles,
                                const std::vector<std::string>& contents);

// Picks the next token from next-token logits `logits` (float, V values): argmax when
// temperature is 0, else softmax(logits / temperature) restricted to the top_k most likely and
// then to the smallest set whose probability reaches top_p, sampled with `rng`.
int64_t SampleToken(const std::vector<float>& logits, const SamplingParams& params,
                    std::mt19937_64& rng);

// Streaming text of generated ids: the text of ids[0..n) that may be emitted now, given what has
// been emitted so far. Holds back an incomplete UTF-8 character: U+FFFD at the end (tokenizers
// that replace), or the first bytes of a multi-byte character (tokenizers that return bytes).
std::string NewText(const std::string& decoded_so_far, const std::string& emitted);

// `text` with every byte that is not part of a well-formed UTF-8 character replaced by U+FFFD:
// protobuf string fields (and JSON) must be valid UTF-8, and a byte-level tokenizer's output of a
// sampled token need not be.
std::string ValidUtf8(absl::string_view text);

}  // namespace switchyard::orchestrator
