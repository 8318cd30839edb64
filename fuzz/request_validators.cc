// Fuzzes the orchestrator's validation of the public API's protobuf requests: the bytes are
// parsed as a request message (as gRPC does before the service sees it) and the pipeline's
// validator runs on it against a model with default options. Input: one byte choosing the
// request type (its value modulo 7: text-to-image, image-to-image, image-to-video,
// segment-anything-2, llm, audio-to-text), then the serialized message; or, for 6, a model's
// `options` JSON from a config, read as every pipeline reads its options.
// What validates must hold its documented bounds; an llm request's sampling parameters are then
// used to sample a token from fixed logits, which must pick one of them.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_util.h"
#include "orchestrator/pipelines/request_validation.h"

namespace {

using namespace switchyard::orchestrator;  // NOLINT: a fuzz target's body
namespace v1 = switchyard::v1;

template <typename Message>
bool Parse(const uint8_t* data, size_t size, Message* message) {
  return message->ParseFromArray(data, static_cast<int>(size));
}

ModelConfig Model(const char* pipeline) {
  ModelConfig m;
  m.id = "fuzz-model";
  m.pipeline = pipeline;
  return m;
}

void CheckInvalid(const absl::Status& status) { switchyard::fuzz::CheckInvalidArgument(status); }

void CheckSize(int width, int height, const ImageLimits& l) {
  SWITCHYARD_FUZZ_CHECK(width > 0 && width % 8 == 0 && width <= l.max_width, "width out of range");
  SWITCHYARD_FUZZ_CHECK(height > 0 && height % 8 == 0 && height <= l.max_height,
                        "height out of range");
}

void TextToImage(const uint8_t* data, size_t size) {
  v1::TextToImageRequest r;
  if (!Parse(data, size, &r)) return;
  const ModelConfig model = Model(switchyard::pipelines::kTextToImage);
  auto p = ValidateTextToImage(r, model);
  if (!p.ok()) return CheckInvalid(p.status());
  const ImageLimits l = *ImageLimitsFor(model);
  SWITCHYARD_FUZZ_CHECK(!p->prompts.empty(), "no prompt");
  CheckSize(p->width, p->height, l);
  SWITCHYARD_FUZZ_CHECK(p->num_inference_steps >= 1 && p->num_inference_steps <= l.max_steps,
                        "steps out of range");
  SWITCHYARD_FUZZ_CHECK(p->guidance_scale >= 0, "negative guidance_scale");
  SWITCHYARD_FUZZ_CHECK(p->num_images_per_prompt >= 1 &&
                            p->num_images_per_prompt * static_cast<int64_t>(p->prompts.size()) <=
                                l.max_images,
                        "more images than max_images");
}

void ImageToImage(const uint8_t* data, size_t size) {
  v1::ImageToImageRequest r;
  if (!Parse(data, size, &r)) return;
  const ModelConfig model = Model(switchyard::pipelines::kImageToImage);
  auto p = ValidateImageToImage(r, model);
  if (!p.ok()) return CheckInvalid(p.status());
  const ImageLimits l = *ImageLimitsFor(model);
  SWITCHYARD_FUZZ_CHECK(!p->prompts.empty() && !r.image().empty(), "no prompt or no image");
  SWITCHYARD_FUZZ_CHECK(p->strength >= 0 && p->strength <= 1, "strength out of range");
  SWITCHYARD_FUZZ_CHECK(p->guidance_scale >= 0 && p->image_guidance_scale >= 0,
                        "negative guidance scale");
  SWITCHYARD_FUZZ_CHECK(p->num_inference_steps >= 1 && p->num_inference_steps <= l.max_steps,
                        "steps out of range");
  SWITCHYARD_FUZZ_CHECK(p->num_images_per_prompt * static_cast<int64_t>(p->prompts.size()) <=
                            l.max_images,
                        "more images than max_images");
}

void ImageToVideo(const uint8_t* data, size_t size) {
  v1::ImageToVideoRequest r;
  if (!Parse(data, size, &r)) return;
  const ModelConfig model = Model(switchyard::pipelines::kImageToVideo);
  auto p = ValidateImageToVideo(r, model);
  if (!p.ok()) return CheckInvalid(p.status());
  const ImageLimits l = *ImageLimitsFor(model);
  CheckSize(p->width, p->height, l);
  SWITCHYARD_FUZZ_CHECK(p->fps >= 1 && p->fps <= l.max_fps, "fps out of range");
  SWITCHYARD_FUZZ_CHECK(p->motion_bucket_id >= 0 && p->noise_aug_strength >= 0,
                        "negative motion_bucket_id or noise_aug_strength");
}

void SegmentAnything2(const uint8_t* data, size_t size) {
  v1::SegmentAnything2Request r;
  if (!Parse(data, size, &r)) return;
  auto p = ValidateSegmentAnything2(r, Model(switchyard::pipelines::kSegmentAnything2));
  if (!p.ok()) return CheckInvalid(p.status());
  SWITCHYARD_FUZZ_CHECK(p->point_coords.size() == 2 * p->point_labels.size(),
                        "labels do not match points");
  SWITCHYARD_FUZZ_CHECK(p->box.empty() || p->box.size() == 4, "box is not 4 values");
  SWITCHYARD_FUZZ_CHECK(p->mask_input.empty() || p->mask_input.size() == 256 * 256,
                        "mask_input is not 256x256");
  for (float v : p->point_coords) SWITCHYARD_FUZZ_CHECK(std::isfinite(v), "non-finite point");
  for (float v : p->box) SWITCHYARD_FUZZ_CHECK(std::isfinite(v), "non-finite box");
}

void Llm(const uint8_t* data, size_t size) {
  v1::LLMRequest r;
  if (!Parse(data, size, &r)) return;
  const LlmOptions options;
  auto p = ValidateLlmRequest(r, options);
  if (!p.ok()) return CheckInvalid(p.status());
  SWITCHYARD_FUZZ_CHECK(p->temperature >= 0 && std::isfinite(p->temperature),
                        "temperature out of range");
  SWITCHYARD_FUZZ_CHECK(p->max_tokens >= 1 && p->max_tokens <= options.max_tokens_limit,
                        "max_tokens out of range");
  SWITCHYARD_FUZZ_CHECK(p->top_p > 0 && p->top_p <= 1, "top_p out of range");
  SWITCHYARD_FUZZ_CHECK(p->top_k == -1 || p->top_k >= 1, "top_k out of range");
  const std::vector<float> logits = {1.5f, -2.f, 0.f, 3.25f, 3.25f, -80.f, 40.f, 0.5f};
  std::mt19937_64 rng(1);
  const int64_t token = SampleToken(logits, *p, rng);
  SWITCHYARD_FUZZ_CHECK(token >= 0 && token < static_cast<int64_t>(logits.size()),
                        "sampled a token outside the vocabulary");
}

void AudioToText(const uint8_t* data, size_t size) {
  v1::AudioToTextRequest r;
  if (!Parse(data, size, &r)) return;
  auto mode = TimestampMode(r.return_timestamps());
  if (!mode.ok()) return CheckInvalid(mode.status());
  SWITCHYARD_FUZZ_CHECK(*mode == "sentence" || *mode == "word" || *mode == "none",
                        "unknown timestamp mode");
}

// A model config's `options`, as each pipeline reads them: bad values are errors, never crashes.
void ModelOptions(const uint8_t* data, size_t size) {
  ModelConfig model = Model(switchyard::pipelines::kTextToImage);
  model.options = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (model.options.is_discarded() || !model.options.is_object()) return;
  if (auto l = ImageLimitsFor(model); !l.ok()) {
    CheckInvalid(l.status());
  } else {
    SWITCHYARD_FUZZ_CHECK(l->max_width > 0 && l->max_height > 0 && l->max_images > 0 &&
                              l->max_steps > 0 && l->max_frames > 0 && l->max_fps > 0,
                          "a limit that is not positive");
  }
  if (auto o = ParseAudioToTextOptions(model.options); !o.ok()) CheckInvalid(o.status());
  if (auto o = ParseTextToSpeechOptions(model.options); !o.ok()) CheckInvalid(o.status());
  if (auto o = ParseLlmOptions(model.options); !o.ok()) CheckInvalid(o.status());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t* msg = data + 1;
  const size_t len = size - 1;
  switch (data[0] % 7) {
    case 0: TextToImage(msg, len); break;
    case 1: ImageToImage(msg, len); break;
    case 2: ImageToVideo(msg, len); break;
    case 3: SegmentAnything2(msg, len); break;
    case 4: Llm(msg, len); break;
    case 5: AudioToText(msg, len); break;
    default: ModelOptions(msg, len); break;
  }
  return 0;
}
