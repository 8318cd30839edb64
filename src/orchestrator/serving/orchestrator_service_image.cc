// Image pipelines of the orchestrator service: text-to-image, image-to-image, image-to-video,
// segment-anything-2, image-to-text. Contracts: docs/pipelines-image.md.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/pipelines.h"
#include "common/status.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "orchestrator/serving/orchestrator_service.h"
#include "orchestrator/serving/request_context.h"
#include "orchestrator/serving/unary_pipeline.h"

namespace switchyard::orchestrator {
namespace {

// Images of text-to-image and image-to-image: image i of each prompt was generated from seed + i
// (docs/pipelines-image.md).
void FillImages(ImagesResult& result, int64_t seed, int per_prompt, v1::ImageResponse* response) {
  for (size_t i = 0; i < result.images.size(); ++i) {
    auto& image = result.images[i];
    auto* media = response->add_images();
    media->set_data(std::move(image.png));
    media->set_content_type("image/png");
    media->set_seed(seed + static_cast<int64_t>(i) % per_prompt);
    media->set_width(image.width);
    media->set_height(image.height);
  }
}

// Descriptors of the image pipelines (unary_pipeline.h). Each validates against its model's
// options, so a model not served here is refused first (kNeedsModelConfig true).
struct TextToImagePipeline : UnaryDescriptor<v1::TextToImageRequest, true> {
  using Params = TextToImageParams;
  static absl::StatusOr<Params> Validate(const Request& request, const ModelConfig* config) {
    return ValidateTextToImage(request, *config);
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    auto result = RunTextToImage(ctx, params);
    if (!result.ok()) return result.status();
    FillImages(*result, params.seed, params.num_images_per_prompt, response);
    return absl::StrCat(result->images.size(), " image(s) ", params.width, "x", params.height,
                        " seed ", params.seed);
  }
};

struct ImageToImagePipeline : UnaryDescriptor<v1::ImageToImageRequest, true> {
  using Params = ImageToImageParams;
  static absl::StatusOr<Params> Validate(const Request& request, const ModelConfig* config) {
    return ValidateImageToImage(request, *config);
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    auto result = RunImageToImage(ctx, request.image(), params);
    if (!result.ok()) return result.status();
    FillImages(*result, params.seed, params.num_images_per_prompt, response);
    return absl::StrCat(result->input_width, "x", result->input_height, " -> ",
                        result->images.size(), " image(s) seed ", params.seed);
  }
};

struct ImageToVideoPipeline : UnaryDescriptor<v1::ImageToVideoRequest, true> {
  using Params = ImageToVideoParams;
  static absl::StatusOr<Params> Validate(const Request& request, const ModelConfig* config) {
    return ValidateImageToVideo(request, *config);
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    auto result = RunImageToVideo(ctx, request.image(), params);
    if (!result.ok()) return result.status();
    auto* media = response->add_images();
    media->set_data(std::move(result->mp4));
    media->set_content_type("video/mp4");
    media->set_seed(params.seed);
    media->set_width(result->width);
    media->set_height(result->height);
    return absl::StrCat(result->frames, " frames ", result->width, "x", result->height, " at ",
                        params.fps, " fps seed ", params.seed);
  }
};

struct SegmentAnything2Pipeline : UnaryDescriptor<v1::SegmentAnything2Request, true> {
  using Params = SegmentAnything2Params;
  static absl::StatusOr<Params> Validate(const Request& request, const ModelConfig* config) {
    return ValidateSegmentAnything2(request, *config);
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    auto result = RunSegmentAnything2(ctx, request.image(), params);
    if (!result.ok()) return result.status();
    response->set_masks(std::move(result->masks));
    response->set_scores(std::move(result->scores));
    response->set_logits(std::move(result->logits));
    if (params.packed_tensors) {
      *response->mutable_masks_tensor() = std::move(result->masks_tensor);
      *response->mutable_scores_tensor() = std::move(result->scores_tensor);
      *response->mutable_logits_tensor() = std::move(result->logits_tensor);
    }
    return absl::StrCat(result->input_width, "x", result->input_height, " -> ", result->num_masks,
                        " mask(s)");
  }
};

struct ImageToTextPipeline : UnaryDescriptor<v1::ImageToTextRequest, true> {
  struct Params {};
  static absl::StatusOr<Params> Validate(const Request& request, const ModelConfig* config) {
    if (absl::Status st = ValidateImageToText(request, *config); !st.ok()) return st;
    return Params{};
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    auto result = RunImageToText(ctx, request.image(), request.prompt());
    if (!result.ok()) return result.status();
    response->set_text(std::move(result->text));
    return absl::StrCat(result->input_width, "x", result->input_height, " -> ",
                        response->text().size(), " chars");
  }
};

}  // namespace

SWITCHYARD_SERVE_UNARY(TextToImage, TextToImagePipeline)
SWITCHYARD_SERVE_UNARY(ImageToImage, ImageToImagePipeline)
SWITCHYARD_SERVE_UNARY(ImageToVideo, ImageToVideoPipeline)
SWITCHYARD_SERVE_UNARY(SegmentAnything2, SegmentAnything2Pipeline)
SWITCHYARD_SERVE_UNARY(ImageToText, ImageToTextPipeline)

}  // namespace switchyard::orchestrator
