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
#include "orchestrator/pipelines/audio_decode.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "orchestrator/pipelines/prompt_limits.h"
#include "orchestrator/pipelines/request_validation.h"
#include "runner/model_executor.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::orchestrator {

// ---------------------------------------------------------------------------------------------
// audio-to-text
// AudioToTextOptions, ParseAudioToTextOptions, TimestampMode: request_validation.h (torch-free);
// DecodedAudio, DecodeAudio: audio_decode.h (torch-free).

// Converts forward()'s result (str, or (str, List[str], Tensor[K, 2])) into the response's text
// and chunks. Chunks are dropped when `mode` is "none". INTERNAL when the result is malformed.
absl::Status FillTranscription(const c10::IValue& result, const std::string& mode,
                               v1::TextResponse* response);

// Runs `ctx`'s model on decoded audio and fills the response's text and chunks.
absl::Status RunAudioToText(const RunContext& ctx, DecodedAudio& audio, const std::string& mode,
                            v1::TextResponse* response);

// ---------------------------------------------------------------------------------------------
// text-to-speech

inline constexpr const char* kDefaultSpeakerDescription =
    "A male speaker delivers a slightly expressive and animated speech with a moderate speed and "
    "pitch.";

// TextToSpeechOptions, ParseTextToSpeechOptions, ValidateTextToSpeech: request_validation.h.

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

// Speaks `text` with `ctx`'s model: a WAV at the options' sample rate (else the module's
// `sample_rate` attribute, else 24 kHz).
struct Speech {
  std::string wav;
  int64_t frames = 0;
  int sample_rate = 0;
};
absl::StatusOr<Speech> RunTextToSpeech(const RunContext& ctx, const std::string& text,
                                       const std::string& description,
                                       const TextToSpeechOptions& options);

// Converts forward()'s waveform (float [S], [1, S] or [C, S]) to interleaved samples.
absl::StatusOr<std::vector<float>> WaveformToInterleaved(const at::Tensor& waveform, int* channels);

// ---------------------------------------------------------------------------------------------
// llm
// LlmOptions, ParseLlmOptions, SamplingParams, ValidateLlmRequest, SampleToken:
// request_validation.h (torch-free).

// The built-in chat template (used when the module has no apply_chat_template):
//   for each message: "<|" role "|>\n" content "\n"   then   "<|assistant|>\n"
std::string DefaultChatTemplate(const std::vector<std::string>& roles,
                                const std::vector<std::string>& contents);

// Streaming text of generated ids: the text of ids[0..n) that may be emitted now, given what has
// been emitted so far. Holds back an incomplete UTF-8 character: U+FFFD at the end (tokenizers
// that replace), or the first bytes of a multi-byte character (tokenizers that return bytes).
std::string NewText(const std::string& decoded_so_far, const std::string& emitted);

// `text` with every byte that is not part of a well-formed UTF-8 character replaced by U+FFFD:
// protobuf string fields (and JSON) must be valid UTF-8, and a byte-level tokenizer's output of a
// sampled token need not be.
std::string ValidUtf8(absl::string_view text);

}  // namespace switchyard::orchestrator
