// The Livepeer AI HTTP API's pipeline paths, in one table (Routes(), at the end): a UnaryRoute
// descriptor per unary pipeline, in the spec's field order (the order 422 bodies list errors in),
// and the LLM's and live video's own handlers (and quotes). Adding a pipeline's path: a descriptor
// and a row.
#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "gateway/api/livepeer_api_internal.h"

namespace switchyard::gateway::livepeer {
namespace {

using Async = v1::Gateway::StubInterface::async_interface;

// `a` then `b`.
template <size_t N, size_t M>
constexpr std::array<Field, N + M> Join(const std::array<Field, N>& a,
                                        const std::array<Field, M>& b) {
  std::array<Field, N + M> out{};
  for (size_t i = 0; i < N; ++i) out[i] = a[i];
  for (size_t i = 0; i < M; ++i) out[N + i] = b[i];
  return out;
}

// Images as data URLs.
Json ImagesJson(const v1::ImageResponse& response, const MediaSink&) {
  Json images = Json::array();
  for (const auto& m : response.images()) {
    const std::string type = m.content_type().empty() ? "image/png" : m.content_type();
    images.push_back({{"url", DataUrl(type, m.data())}, {"seed", m.seed()}, {"nsfw", m.nsfw()}});
  }
  return Json{{"images", images}};
}

// The fields the diffusion-style image paths share, after their own.
constexpr std::array<Field, 7> kGenerationFields = {{{"loras"},
                                                     {"guidance_scale"},
                                                     {"negative_prompt"},
                                                     {"safety_check"},
                                                     {.name = "seed", .min = kAnyInt},
                                                     {"num_inference_steps"},
                                                     {"num_images_per_prompt"}}};

constexpr auto kTextToImageFields =
    Join(std::array<Field, 4>{{{"model_id", true}, {"prompt", true}, {"height"}, {"width"}}},
         kGenerationFields);
constexpr UnaryRoute<v1::TextToImageRequest> kTextToImage = {
    pipelines::kTextToImage, Body::kJson, kTextToImageFields, &Async::TextToImage, ImagesJson};

constexpr auto kImageToImageFields = Join(std::array<Field, 5>{{{"model_id", true},
                                                                {"prompt", true},
                                                                {"image", true},
                                                                {"strength"},
                                                                {"image_guidance_scale"}}},
                                          kGenerationFields);
constexpr UnaryRoute<v1::ImageToImageRequest> kImageToImage = {
    pipelines::kImageToImage, Body::kForm, kImageToImageFields,
    &Async::ImageToImage,     ImagesJson,  ImageInputStatus};

// The spec requires prompt too, but ESRGAN takes none and the Livepeer clients send an empty one;
// a missing prompt is accepted as "".
constexpr Field kUpscaleFields[] = {{"model_id", true},
                                    {"image", true},
                                    {"prompt"},
                                    {"safety_check"},
                                    {.name = "seed", .min = kAnyInt},
                                    {"num_inference_steps"}};
constexpr UnaryRoute<v1::UpscaleRequest> kUpscale = {pipelines::kUpscale, Body::kForm,
                                                     kUpscaleFields,      &Async::Upscale,
                                                     ImagesJson,          ImageInputStatus};

// Videos as URLs this gateway serves (GET /stream/<id>/<name>).
Json VideosJson(const v1::VideoResponse& response, const MediaSink& media) {
  Json images = Json::array();
  int i = 0;
  for (const auto& m : response.images()) {
    const std::string type = m.content_type().empty() ? "video/mp4" : m.content_type();
    images.push_back({{"url", media.Put(type, m.data(), absl::StrCat("video-", i++, ".mp4"))},
                      {"seed", m.seed()},
                      {"nsfw", m.nsfw()}});
  }
  return Json{{"images", images}};
}

constexpr Field kImageToVideoFields[] = {{"model_id", true},
                                         {"image", true},
                                         {"height"},
                                         {"width"},
                                         {"fps"},
                                         {.name = "motion_bucket_id", .min = 0},
                                         {"noise_aug_strength"},
                                         {"safety_check"},
                                         {.name = "seed", .min = kAnyInt},
                                         {"num_inference_steps"}};
constexpr UnaryRoute<v1::ImageToVideoRequest> kImageToVideo = {.pipeline = pipelines::kImageToVideo,
                                                               .body = Body::kForm,
                                                               .fields = kImageToVideoFields,
                                                               .method = &Async::ImageToVideo,
                                                               .to_json = VideosJson,
                                                               .refine = ImageInputStatus,
                                                               .may_respond_async = true};

// A JSON array of numbers nested `depth` deep (e.g. "[[1,2],[3,4]]" for 2), flattened; every
// innermost array must have `inner` values when inner > 0. Records a validation error otherwise.
std::optional<std::vector<double>> NumberArray(Params& p, const std::string& name, int depth,
                                               int inner, const std::string& shape) {
  auto text = p.Str(name);
  if (!text) return std::nullopt;
  // The walk below goes only `depth` levels down, but the field's text is the client's: parse it
  // with the same depth limit as a JSON body.
  if (absl::Status st = CheckJsonDepth(*text); !st.ok()) {
    p.Refuse(absl::StrCat(name, ": ", st.message()));
    return std::nullopt;
  }
  auto parsed = ParseJson(*text);
  const Json v = parsed.ok() ? *std::move(parsed) : Json(Json::value_t::discarded);
  std::vector<double> out;
  std::function<bool(const Json&, int)> walk = [&](const Json& j, int level) {
    if (!j.is_array()) return false;
    if (level == depth) {
      if (inner > 0 && static_cast<int>(j.size()) != inner) return false;
      for (const auto& x : j) {
        if (!x.is_number()) return false;
        out.push_back(x.get<double>());
      }
      return true;
    }
    for (const auto& x : j) {
      if (!walk(x, level + 1)) return false;
    }
    return true;
  };
  if (v.is_discarded() || !walk(v, 1)) {
    p.Fail(name, absl::StrCat("Value error, ", name, " must be a JSON array ", shape),
           "value_error");
    return std::nullopt;
  }
  return out;
}

constexpr Field kMaskOptions[] = {{"multimask_output"}, {"return_logits"}, {"normalize_coords"}};

// The prompts (form fields holding JSON arrays) and the mask options.
void ReadMaskPrompts(Params& p, v1::SegmentAnything2Request* r) {
  if (auto v = NumberArray(p, "point_coords", 2, 2, "of [x, y] pairs, e.g. [[10, 20]]")) {
    for (double x : *v) r->add_point_coords(static_cast<float>(x));
  }
  if (auto v = NumberArray(p, "point_labels", 1, 0, "of 0/1 labels, e.g. [1, 0]")) {
    for (double x : *v) {
      if (x != 0 && x != 1) {
        p.Fail("point_labels", "Value error, point_labels must be 0 or 1", "value_error");
        break;
      }
      r->add_point_labels(static_cast<int32_t>(x));
    }
  }
  if (auto v = NumberArray(p, "box", 1, 4, "of 4 values [x0, y0, x1, y1]")) {
    for (double x : *v) r->add_box(static_cast<float>(x));
  }
  if (auto v = NumberArray(p, "mask_input", 3, 0, "shaped 1xHxW")) {
    for (double x : *v) r->add_mask_input(static_cast<float>(x));
  }
  ReadFields(p, kMaskOptions, r);
}

// Strings holding JSON, as the spec's MasksResponse has them.
Json MasksJson(const v1::MasksResponse& response, const MediaSink&) {
  return Json{
      {"masks", response.masks()}, {"scores", response.scores()}, {"logits", response.logits()}};
}

constexpr Field kSegmentAnything2Fields[] = {{"model_id", true}, {"image", true}};
constexpr UnaryRoute<v1::SegmentAnything2Request> kSegmentAnything2 = {pipelines::kSegmentAnything2,
                                                                       Body::kForm,
                                                                       kSegmentAnything2Fields,
                                                                       &Async::SegmentAnything2,
                                                                       MasksJson,
                                                                       ImageInputStatus,
                                                                       ReadMaskPrompts};

Json TranscriptJson(const v1::TextResponse& response, const MediaSink&) {
  Json chunks = Json::array();
  for (const auto& c : response.chunks()) {
    chunks.push_back(
        {{"timestamp", Json(std::vector<double>(c.timestamp().begin(), c.timestamp().end()))},
         {"text", c.text()}});
  }
  return Json{{"text", response.text()}, {"chunks", chunks}};
}

constexpr Field kAudioToTextFields[] = {{"audio", true}, {"model_id", true}, {"return_timestamps"}};
constexpr UnaryRoute<v1::AudioToTextRequest> kAudioToText = {
    pipelines::kAudioToText, Body::kForm,    kAudioToTextFields,
    &Async::AudioToText,     TranscriptJson, AudioInputStatus};

Json CaptionJson(const v1::ImageToTextResponse& response, const MediaSink&) {
  return Json{{"text", response.text()}};
}

constexpr Field kImageToTextFields[] = {{"image", true}, {"model_id", true}, {"prompt"}};
constexpr UnaryRoute<v1::ImageToTextRequest> kImageToText = {
    pipelines::kImageToText, Body::kForm, kImageToTextFields,
    &Async::ImageToText,     CaptionJson, ImageInputStatus};

Json SpeechJson(const v1::AudioResponse& response, const MediaSink&) {
  const std::string type =
      response.audio().content_type().empty() ? "audio/wav" : response.audio().content_type();
  return Json{{"audio", {{"url", DataUrl(type, response.audio().data())}}}};
}

// An absent description: the orchestrator applies the spec's default speaker description.
constexpr Field kTextToSpeechFields[] = {{"model_id", true}, {"text"}, {"description"}};
constexpr UnaryRoute<v1::TextToSpeechRequest> kTextToSpeech = {
    pipelines::kTextToSpeech, Body::kJson, kTextToSpeechFields, &Async::TextToSpeech, SpeechJson};

constexpr Route kRoutes[] = {
    Unary<kTextToImage>(),
    Unary<kImageToImage>(),
    Unary<kUpscale>(),
    Unary<kImageToVideo>(),
    Unary<kSegmentAnything2>(),
    Unary<kAudioToText>(),
    Unary<kImageToText>(),
    Unary<kTextToSpeech>(),
    {.pipeline = pipelines::kLlm, .serve = Llm, .check = CheckLlmFields, .quote = LlmQuote},
    {.pipeline = pipelines::kLiveVideoToVideo,
     .serve = LiveVideoToVideo,
     .check = nullptr,
     .quote = LiveVideoQuote},
};

}  // namespace

std::span<const Route> Routes() { return kRoutes; }

}  // namespace switchyard::gateway::livepeer
