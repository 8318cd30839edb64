#include "orchestrator/pipelines/request_validation.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace switchyard::orchestrator {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

// Reads positive integer option `name` of `model` into `*value`, which keeps its default when
// the option is absent.
absl::Status ReadIntOption(const ModelConfig& model, const char* name, int* value) {
  if (!model.options.is_object() || !model.options.contains(name)) return absl::OkStatus();
  const auto& v = model.options.at(name);
  if (!v.is_number_integer() || v.get<int64_t>() < 1 ||
      v.get<int64_t>() > std::numeric_limits<int>::max()) {
    return Invalid(absl::StrCat("model '", model.id, "': option '", name,
                                "' must be a positive integer (got ", v.dump(), ")"));
  }
  *value = v.get<int>();
  return absl::OkStatus();
}

std::string FloatText(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

// The prompt split on '|' with surrounding blanks removed; empty parts dropped.
std::vector<std::string> SplitPrompts(const std::string& prompt) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(prompt, '|')) {
    part = absl::StripAsciiWhitespace(part);
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

absl::Status CheckSize(const char* field, int value, int max, const char* max_name) {
  if (value <= 0 || value % 8 != 0) {
    return Invalid(absl::StrCat(field, " must be a positive multiple of 8 (got ", value, ")"));
  }
  if (value > max) {
    return Invalid(absl::StrCat(field, " ", value, " exceeds the model's ", max_name, " ", max));
  }
  return absl::OkStatus();
}

absl::Status CheckSteps(int steps, int max_steps) {
  if (steps < 1 || steps > max_steps) {
    return Invalid(absl::StrCat("num_inference_steps must be between 1 and ", max_steps, " (got ",
                                steps, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckNonNegative(const char* field, double value) {
  if (!std::isfinite(value) || value < 0) {
    return Invalid(
        absl::StrCat(field, " must be a finite number >= 0 (got ", FloatText(value), ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckImageCount(int per_prompt, size_t prompts, int max_images) {
  if (per_prompt < 1 || per_prompt > max_images) {
    return Invalid(absl::StrCat("num_images_per_prompt must be between 1 and ", max_images,
                                " (got ", per_prompt, ")"));
  }
  if (static_cast<int64_t>(per_prompt) * static_cast<int64_t>(prompts) > max_images) {
    return Invalid(absl::StrCat("num_images_per_prompt ", per_prompt, " x ", prompts,
                                " prompts exceeds the model's max_images ", max_images));
  }
  return absl::OkStatus();
}

absl::Status CheckLoras(const std::string& loras) {
  if (loras.empty()) return absl::OkStatus();
  return Invalid(
      "loras is not supported: LoRA adapters must be merged into the TorchScript model when it is "
      "exported");
}

// The prompt (all its '|' parts together) and the negative prompt, each against max_prompt_chars.
absl::Status CheckPrompts(const std::string& prompt, const std::string& negative_prompt,
                          const ImageLimits& limits) {
  if (auto st = CheckPromptChars("prompt", Utf8Chars(prompt), limits.max_prompt_chars); !st.ok()) {
    return st;
  }
  return CheckPromptChars("negative_prompt", Utf8Chars(negative_prompt), limits.max_prompt_chars);
}

// Reads an optional number from `options`; INVALID_ARGUMENT naming options.<key> when it is not
// a number in [lo, hi].
template <typename T>
absl::Status ReadNumber(const nlohmann::json& options, const char* key, double lo, double hi,
                        T* out) {
  if (!options.is_object() || !options.contains(key)) return absl::OkStatus();
  const auto& v = options.at(key);
  if (!v.is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("options.", key, " must be a number"));
  }
  double d = v.get<double>();
  if (!(d >= lo && d <= hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.", key, " must be between ", lo, " and ", hi));
  }
  *out = static_cast<T>(d);
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// image pipelines

absl::StatusOr<ImageLimits> ImageLimitsFor(const ModelConfig& model) {
  ImageLimits l;
  for (auto [name, field] : std::initializer_list<std::pair<const char*, int*>>{
           {"default_width", &l.default_width},
           {"default_height", &l.default_height},
           {"max_width", &l.max_width},
           {"max_height", &l.max_height},
           {"max_images", &l.max_images},
           {"max_steps", &l.max_steps},
           {"max_frames", &l.max_frames},
           {"max_fps", &l.max_fps},
           {"encoder_threads", &l.encoder_threads},
           {"max_prompt_chars", &l.max_prompt_chars}}) {
    auto st = ReadIntOption(model, name, field);
    if (!st.ok()) return st;
  }
  return l;
}

int64_t ResolveSeed(bool has_seed, int64_t seed) {
  if (has_seed) return seed;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return static_cast<int64_t>(rng() & 0xffffffffULL);
}

// The fields text-to-image and image-to-image share, in the order they are checked: prompt
// lengths first (nothing else is worth looking at in a request over them), the prompts, the
// input image (`image`, when the pipeline takes one), LoRAs, negative prompt, seed, guidance scale
// and images per prompt.
template <typename Request>
absl::Status ReadPromptParams(const Request& request, const ImageLimits& limits,
                              const std::string* image, PromptParams* p) {
  if (auto st = CheckPrompts(request.prompt(), request.negative_prompt(), limits); !st.ok()) {
    return st;
  }
  p->prompts = SplitPrompts(request.prompt());
  if (p->prompts.empty()) return Invalid("prompt is required");
  if (image != nullptr && image->empty()) return Invalid("image is required (PNG or JPEG)");
  if (auto st = CheckLoras(request.loras()); !st.ok()) return st;
  p->negative_prompt = request.negative_prompt();
  p->seed = ResolveSeed(request.has_seed(), request.seed());
  p->guidance_scale = request.has_guidance_scale() ? request.guidance_scale() : 7.5;
  if (auto st = CheckNonNegative("guidance_scale", p->guidance_scale); !st.ok()) return st;
  p->num_images_per_prompt =
      request.has_num_images_per_prompt() ? request.num_images_per_prompt() : 1;
  return CheckImageCount(p->num_images_per_prompt, p->prompts.size(), limits.max_images);
}

absl::StatusOr<TextToImageParams> ValidateTextToImage(const v1::TextToImageRequest& request,
                                                      const ModelConfig& model) {
  auto limits = ImageLimitsFor(model);
  if (!limits.ok()) return limits.status();
  TextToImageParams p;
  if (auto st = ReadPromptParams(request, *limits, nullptr, &p); !st.ok()) return st;
  p.width = request.has_width() ? request.width() : limits->default_width;
  p.height = request.has_height() ? request.height() : limits->default_height;
  if (auto st = CheckSize("width", p.width, limits->max_width, "max_width"); !st.ok()) return st;
  if (auto st = CheckSize("height", p.height, limits->max_height, "max_height"); !st.ok()) {
    return st;
  }
  p.num_inference_steps = request.has_num_inference_steps() ? request.num_inference_steps() : 50;
  if (auto st = CheckSteps(p.num_inference_steps, limits->max_steps); !st.ok()) return st;
  return p;
}

absl::StatusOr<ImageToImageParams> ValidateImageToImage(const v1::ImageToImageRequest& request,
                                                        const ModelConfig& model) {
  auto limits = ImageLimitsFor(model);
  if (!limits.ok()) return limits.status();
  ImageToImageParams p;
  if (auto st = ReadPromptParams(request, *limits, &request.image(), &p); !st.ok()) return st;
  p.strength = request.has_strength() ? request.strength() : 0.8;
  if (!(p.strength >= 0 && p.strength <= 1)) {
    return Invalid(
        absl::StrCat("strength must be between 0 and 1 (got ", FloatText(p.strength), ")"));
  }
  p.image_guidance_scale =
      request.has_image_guidance_scale() ? request.image_guidance_scale() : 1.5;
  if (auto st = CheckNonNegative("image_guidance_scale", p.image_guidance_scale); !st.ok()) {
    return st;
  }
  p.num_inference_steps = request.has_num_inference_steps() ? request.num_inference_steps() : 100;
  if (auto st = CheckSteps(p.num_inference_steps, limits->max_steps); !st.ok()) return st;
  return p;
}

absl::Status ValidateImageToText(const v1::ImageToTextRequest& request, const ModelConfig& model) {
  auto limits = ImageLimitsFor(model);
  if (!limits.ok()) return limits.status();
  if (auto st = CheckPromptChars("prompt", Utf8Chars(request.prompt()), limits->max_prompt_chars);
      !st.ok()) {
    return st;
  }
  if (request.image().empty()) return Invalid("image is required (PNG or JPEG)");
  return absl::OkStatus();
}

absl::StatusOr<ImageToVideoParams> ValidateImageToVideo(const v1::ImageToVideoRequest& request,
                                                        const ModelConfig& model) {
  auto limits = ImageLimitsFor(model);
  if (!limits.ok()) return limits.status();
  ImageToVideoParams p;
  if (request.image().empty()) return Invalid("image is required (PNG or JPEG)");
  p.seed = ResolveSeed(request.has_seed(), request.seed());
  p.width = request.has_width() ? request.width() : limits->default_width;
  p.height = request.has_height() ? request.height() : limits->default_height;
  if (auto st = CheckSize("width", p.width, limits->max_width, "max_width"); !st.ok()) return st;
  if (auto st = CheckSize("height", p.height, limits->max_height, "max_height"); !st.ok()) {
    return st;
  }
  p.fps = request.has_fps() ? request.fps() : 6;
  if (p.fps < 1 || p.fps > limits->max_fps) {
    return Invalid(
        absl::StrCat("fps must be between 1 and ", limits->max_fps, " (got ", p.fps, ")"));
  }
  p.motion_bucket_id = request.has_motion_bucket_id() ? request.motion_bucket_id() : 127;
  if (p.motion_bucket_id < 0) {
    return Invalid(absl::StrCat("motion_bucket_id must be >= 0 (got ", p.motion_bucket_id, ")"));
  }
  p.noise_aug_strength = request.has_noise_aug_strength() ? request.noise_aug_strength() : 0.02;
  if (auto st = CheckNonNegative("noise_aug_strength", p.noise_aug_strength); !st.ok()) return st;
  p.num_inference_steps = request.has_num_inference_steps() ? request.num_inference_steps() : 25;
  if (auto st = CheckSteps(p.num_inference_steps, limits->max_steps); !st.ok()) return st;
  p.max_frames = limits->max_frames;
  p.encoder_threads = limits->encoder_threads;
  return p;
}

absl::StatusOr<SegmentAnything2Params> ValidateSegmentAnything2(
    const v1::SegmentAnything2Request& request, const ModelConfig& /*model*/) {
  SegmentAnything2Params p;
  if (request.image().empty()) return Invalid("image is required (PNG or JPEG)");
  p.point_coords.assign(request.point_coords().begin(), request.point_coords().end());
  if (p.point_coords.size() % 2 != 0) {
    return Invalid(absl::StrCat("point_coords must hold (x, y) pairs: got ", p.point_coords.size(),
                                " values"));
  }
  for (float v : p.point_coords) {
    if (!std::isfinite(v)) return Invalid("point_coords must be finite numbers");
  }
  const size_t points = p.point_coords.size() / 2;
  if (static_cast<size_t>(request.point_labels_size()) != points) {
    return Invalid(absl::StrCat("point_labels must have one label per point: got ",
                                request.point_labels_size(), " labels for ", points, " points"));
  }
  for (int32_t label : request.point_labels()) {
    if (label != 0 && label != 1) {
      return Invalid(
          absl::StrCat("point_labels must be 0 (background) or 1 (foreground), got ", label));
    }
    p.point_labels.push_back(label);
  }
  p.box.assign(request.box().begin(), request.box().end());
  if (!p.box.empty() && p.box.size() != 4) {
    return Invalid(
        absl::StrCat("box must be exactly 4 values (x0, y0, x1, y1), got ", p.box.size()));
  }
  for (float v : p.box) {
    if (!std::isfinite(v)) return Invalid("box must be finite numbers");
  }
  p.mask_input.assign(request.mask_input().begin(), request.mask_input().end());
  if (!p.mask_input.empty() && p.mask_input.size() != 256 * 256) {
    return Invalid(
        absl::StrCat("mask_input must be 256x256 = 65536 values, got ", p.mask_input.size()));
  }
  if (points == 0 && p.box.empty() && p.mask_input.empty()) {
    return Invalid("a prompt is required: point_coords with point_labels, box, or mask_input");
  }
  p.multimask_output = request.has_multimask_output() ? request.multimask_output() : true;
  p.return_logits = request.has_return_logits() ? request.return_logits() : true;
  p.normalize_coords = request.has_normalize_coords() ? request.normalize_coords() : true;
  p.packed_tensors = request.packed_tensors();
  return p;
}

// ---------------------------------------------------------------------------------------------
// audio-to-text

absl::StatusOr<AudioToTextOptions> ParseAudioToTextOptions(const nlohmann::json& options) {
  AudioToTextOptions o;
  if (auto st = ReadNumber(options, "sample_rate", 1000, 384000, &o.sample_rate); !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "channels", 1, 8, &o.channels); !st.ok()) return st;
  if (auto st = ReadNumber(options, "max_audio_seconds", 0.001, 86400, &o.max_audio_seconds);
      !st.ok()) {
    return st;
  }
  return o;
}

absl::StatusOr<std::string> TimestampMode(const std::string& return_timestamps) {
  if (return_timestamps.empty() || return_timestamps == "true" || return_timestamps == "sentence") {
    return std::string("sentence");
  }
  if (return_timestamps == "word") return std::string("word");
  if (return_timestamps == "false") return std::string("none");
  return absl::InvalidArgumentError(
      absl::StrCat("return_timestamps must be 'true', 'sentence', 'word' or 'false', not '",
                   return_timestamps, "'"));
}

// ---------------------------------------------------------------------------------------------
// text-to-speech

absl::StatusOr<TextToSpeechOptions> ParseTextToSpeechOptions(const nlohmann::json& options) {
  TextToSpeechOptions o;
  if (auto st = ReadNumber(options, "sample_rate", 1000, 384000, &o.sample_rate); !st.ok()) {
    return st;
  }
  // max_text_chars is the option's older name; max_prompt_chars wins when both are given.
  if (auto st = ReadNumber(options, "max_text_chars", 1, 1e9, &o.max_prompt_chars); !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "max_prompt_chars", 1, 1e9, &o.max_prompt_chars); !st.ok()) {
    return st;
  }
  return o;
}

absl::Status ValidateTextToSpeech(const v1::TextToSpeechRequest& request,
                                  const TextToSpeechOptions& options) {
  if (request.text().empty()) return absl::InvalidArgumentError("text is required");
  return CheckPromptChars("text", Utf8Chars(request.text()), options.max_prompt_chars);
}

// ---------------------------------------------------------------------------------------------
// llm

absl::StatusOr<LlmOptions> ParseLlmOptions(const nlohmann::json& options) {
  LlmOptions o;
  if (auto st = ReadNumber(options, "max_tokens", 1, 1e7, &o.max_tokens_limit); !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "max_context_tokens", 1, 1e8, &o.max_context_tokens);
      !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "max_prompt_chars", 1, 1e9, &o.max_prompt_chars); !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "seed", 0, 9e15, &o.seed); !st.ok()) return st;
  if (auto st = ReadNumber(options, "eos_token_id", -1, 1e12, &o.eos_token_id); !st.ok()) {
    return st;
  }
  return o;
}

absl::StatusOr<SamplingParams> ValidateLlmRequest(const v1::LLMRequest& request,
                                                  const LlmOptions& options) {
  if (request.has_prompt()) {
    if (!request.messages().empty()) {
      return absl::InvalidArgumentError("set messages or prompt, not both");
    }
    if (request.prompt().empty()) return absl::InvalidArgumentError("prompt is empty");
    if (auto st = CheckPromptChars("prompt", Utf8Chars(request.prompt()), options.max_prompt_chars);
        !st.ok()) {
      return st;
    }
  } else if (request.messages().empty()) {
    return absl::InvalidArgumentError("messages is required (at least one message)");
  }
  for (int i = 0; i < request.messages_size(); ++i) {
    const auto& m = request.messages(i);
    if (m.role().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role is required"));
    }
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "].role must be 'system', 'user' or 'assistant', not '", m.role(), "'"));
    }
    if (m.content().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].content is required"));
    }
  }
  int64_t prompt_chars = 0;
  for (const auto& m : request.messages()) prompt_chars += Utf8Chars(m.content());
  if (auto st = CheckPromptChars("messages' content (all messages together)", prompt_chars,
                                 options.max_prompt_chars);
      !st.ok()) {
    return st;
  }
  SamplingParams p;
  if (request.stop_size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop has ", request.stop_size(), " strings, at most ", kMaxStopStrings));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string& s = request.stop(i);
    if (s.empty() || s.size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop[", i, "] must be 1 to ", kMaxStopStringBytes, " bytes, not ", s.size()));
    }
    p.stop.push_back(s);
  }
  p.seed = request.has_seed() ? request.seed() : options.seed;
  if (request.has_temperature()) p.temperature = request.temperature();
  if (request.has_max_tokens()) p.max_tokens = request.max_tokens();
  if (request.has_top_p()) p.top_p = request.top_p();
  if (request.has_top_k()) p.top_k = request.top_k();
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError("temperature must be >= 0");
  }
  if (!request.has_max_tokens()) p.max_tokens = std::min(p.max_tokens, options.max_tokens_limit);
  if (p.max_tokens < 1 || p.max_tokens > options.max_tokens_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be between 1 and ", options.max_tokens_limit));
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError("top_p must be in (0, 1]");
  }
  if (p.top_k != -1 && p.top_k < 1) {
    return absl::InvalidArgumentError("top_k must be -1 (off) or >= 1");
  }
  return p;
}

int64_t SampleToken(const std::vector<float>& logits, const SamplingParams& params,
                    std::mt19937_64& rng) {
  const int64_t v = static_cast<int64_t>(logits.size());
  if (v == 0) return 0;
  auto argmax = [&] {
    int64_t best = 0;
    for (int64_t i = 1; i < v; ++i) {
      if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
    }
    return best;
  };
  if (params.temperature <= 0) return argmax();
  std::vector<int64_t> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  int64_t keep = v;
  if (params.top_k > 0) keep = std::min<int64_t>(keep, params.top_k);
  const double max_logit = logits[order[0]];
  if (!std::isfinite(max_logit)) return argmax();
  std::vector<double> probs(keep);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    double x = (static_cast<double>(logits[order[i]]) - max_logit) / params.temperature;
    probs[i] = std::isfinite(x) ? std::exp(x) : 0.0;
    sum += probs[i];
  }
  if (!(sum > 0)) return order[0];
  // Nucleus: the smallest prefix (most likely first) whose probability reaches top_p.
  if (params.top_p < 1) {
    double cum = 0;
    int64_t n = 0;
    while (n < keep) {
      cum += probs[n] / sum;
      ++n;
      if (cum >= params.top_p) break;
    }
    keep = std::max<int64_t>(n, 1);
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += probs[i];
  }
  std::uniform_real_distribution<double> uniform(0.0, sum);
  double r = uniform(rng);
  for (int64_t i = 0; i < keep; ++i) {
    if (r < probs[i]) return order[i];
    r -= probs[i];
  }
  return order[keep - 1];
}

}  // namespace switchyard::orchestrator
