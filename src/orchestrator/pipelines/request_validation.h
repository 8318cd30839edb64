// Validation of the orchestrator's untrusted input that needs no model: the public API's
// protobuf requests (image pipelines, audio-to-text's return_timestamps, text-to-speech, llm),
// the models' `options` they are checked against, and the llm sampler that consumes the
// validated sampling parameters. Torch-free, so the libFuzzer build (clang, which cannot compile
// libtorch's headers here) can fuzz it (fuzz/request_validators.cc); image_pipelines.h and
// audio_text_pipelines.h include it. Contracts in docs/pipelines-image.md and
// docs/pipelines-audio-text.md.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/pipelines.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/pipelines/prompt_limits.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::orchestrator {

// ---------------------------------------------------------------------------------------------
// image pipelines

// The limits and defaults a model's `options` may override (docs/pipelines-image.md).
struct ImageLimits {
  int default_width = 1024;
  int default_height = 576;
  int max_width = 2048;
  int max_height = 2048;
  int max_images = 4;  // images per request (all prompts together)
  int max_steps = 1000;
  int max_frames = 256;  // image-to-video output frames
  int max_fps = 60;
  int encoder_threads = 1;  // libx264 threads for image-to-video
  // Longest prompt and negative_prompt, each, in characters (prompt_limits.h).
  int max_prompt_chars = static_cast<int>(kDefaultImageMaxPromptChars);
};
// Reads `model.options` over the defaults; INVALID_ARGUMENT naming the model and the option when
// one is not a positive integer (the config is wrong, not the request).
absl::StatusOr<ImageLimits> ImageLimitsFor(const ModelConfig& model);

// The request's seed, or a random one in [0, 2^32) when it has none.
int64_t ResolveSeed(bool has_seed, int64_t seed);

// Validated requests, defaults filled in. Validation errors are INVALID_ARGUMENT naming the field.
// What text-to-image and image-to-image share.
struct PromptParams {
  std::vector<std::string> prompts;  // the prompt split on '|', blanks trimmed
  std::string negative_prompt;
  int64_t seed = 0;
  double guidance_scale = 7.5;
  int num_images_per_prompt = 1;
};
struct TextToImageParams : PromptParams {
  int num_inference_steps = 50;
  int width = 1024;
  int height = 576;
};
absl::StatusOr<TextToImageParams> ValidateTextToImage(const v1::TextToImageRequest& request,
                                                      const ModelConfig& model);

struct ImageToImageParams : PromptParams {
  double strength = 0.8;
  double image_guidance_scale = 1.5;
  int num_inference_steps = 100;
};
absl::StatusOr<ImageToImageParams> ValidateImageToImage(const v1::ImageToImageRequest& request,
                                                        const ModelConfig& model);

// image-to-text has no parameters beyond its prompt: checks it against the model's
// max_prompt_chars (and the image is present) before the model is loaded or the image decoded.
absl::Status ValidateImageToText(const v1::ImageToTextRequest& request, const ModelConfig& model);

struct ImageToVideoParams {
  int64_t seed = 0;
  int width = 1024;
  int height = 576;
  int fps = 6;
  int motion_bucket_id = 127;
  double noise_aug_strength = 0.02;
  int num_inference_steps = 25;
  int max_frames = 256;
  int encoder_threads = 1;
};
absl::StatusOr<ImageToVideoParams> ValidateImageToVideo(const v1::ImageToVideoRequest& request,
                                                        const ModelConfig& model);

struct SegmentAnything2Params {
  std::vector<float> point_coords;  // x0, y0, x1, y1, ... in pixels
  std::vector<int64_t> point_labels;
  std::vector<float> box;         // empty or x0, y0, x1, y1
  std::vector<float> mask_input;  // empty or 256 * 256
  bool multimask_output = true;
  bool return_logits = true;
  bool normalize_coords = true;
  bool packed_tensors = false;  // answer FloatTensors instead of JSON strings
};
absl::StatusOr<SegmentAnything2Params> ValidateSegmentAnything2(
    const v1::SegmentAnything2Request& request, const ModelConfig& model);

// ---------------------------------------------------------------------------------------------
// audio-to-text

struct AudioToTextOptions {
  int sample_rate = 16000;         // options.sample_rate
  int channels = 1;                // options.channels (1 = mono)
  double max_audio_seconds = 300;  // options.max_audio_seconds
};
// Reads the pipeline options of a model config (INVALID_ARGUMENT on a bad value).
absl::StatusOr<AudioToTextOptions> ParseAudioToTextOptions(const nlohmann::json& options);

// "true"/""/"sentence" -> "sentence", "word" -> "word", "false" -> "none"; INVALID_ARGUMENT
// naming return_timestamps otherwise.
absl::StatusOr<std::string> TimestampMode(const std::string& return_timestamps);

// ---------------------------------------------------------------------------------------------
// text-to-speech

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
  float top_p = 1.0f;             // (0, 1]
  int top_k = -1;                 // -1: off
  int64_t seed = 0;               // the request's seed, else the model's (LlmOptions.seed)
  std::vector<std::string> stop;  // stop strings, at most kMaxStopStrings
};
inline constexpr int kMaxStopStrings = 4;
inline constexpr size_t kMaxStopStringBytes = 256;
// Validates the request (messages, roles and contents, or a raw prompt, and their total length
// against max_prompt_chars; sampling fields; stop strings) and fills defaults. INVALID_ARGUMENT
// naming the field.
absl::StatusOr<SamplingParams> ValidateLlmRequest(const v1::LLMRequest& request,
                                                  const LlmOptions& options);

// Picks the next token from next-token logits `logits` (float, V values): argmax when
// temperature is 0, else softmax(logits / temperature) restricted to the top_k most likely and
// then to the smallest set whose probability reaches top_p, sampled with `rng`.
int64_t SampleToken(const std::vector<float>& logits, const SamplingParams& params,
                    std::mt19937_64& rng);

}  // namespace switchyard::orchestrator
