// Image pipelines of the orchestrator service: text-to-image, image-to-image, image-to-video,
// segment-anything-2, image-to-text. Contracts: docs/pipelines-image.md.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/status.h"
#include "orchestrator/image_pipelines.h"
#include "orchestrator/orchestrator_service.h"
#include "orchestrator/request_context.h"
#include "orchestrator/warmup.h"

namespace switchyard::orchestrator {
namespace {

// Multiple of 8 not below 8, for warm-up sizes.
int64_t Round8(int64_t v) { return std::max<int64_t>(8, (v + 7) / 8 * 8); }

grpc::Status Failed(const std::string& rid, const char* pipeline, const std::string& model_id,
                    const absl::Status& status) {
  spdlog::warn("[{}] {} {} failed: {}", rid, pipeline, LogSafe(model_id),
               LogSafe(status.ToString(), kLogSafeMaxErrorBytes));
  return ToGrpcStatus(status);
}

}  // namespace

WarmupInputs ImageWarmupInputs(const ModelConfig& model) {
  if (model.warmup_size <= 0) return std::nullopt;
  const int64_t s = Round8(model.warmup_size);
  auto image = [&] { return c10::IValue(at::zeros({1, 3, s, s}, at::kFloat)); };
  using Inputs = runner::ModelExecutor::Inputs;
  if (model.pipeline == kTextToImage) {
    return Inputs{c10::IValue(std::string("warm-up")),
                  c10::IValue(std::string()),
                  c10::IValue(int64_t{0}),
                  c10::IValue(int64_t{1}),
                  c10::IValue(7.5),
                  c10::IValue(s),
                  c10::IValue(s),
                  c10::IValue(int64_t{1})};
  }
  if (model.pipeline == kImageToImage) {
    return Inputs{image(),
                  c10::IValue(std::string("warm-up")),
                  c10::IValue(std::string()),
                  c10::IValue(int64_t{0}),
                  c10::IValue(0.8),
                  c10::IValue(7.5),
                  c10::IValue(1.5),
                  c10::IValue(int64_t{1}),
                  c10::IValue(int64_t{1})};
  }
  if (model.pipeline == kImageToVideo) {
    return Inputs{image(),           c10::IValue(int64_t{0}), c10::IValue(s),
                  c10::IValue(s),    c10::IValue(int64_t{6}), c10::IValue(int64_t{127}),
                  c10::IValue(0.02), c10::IValue(int64_t{1})};
  }
  if (model.pipeline == kSegmentAnything2) {
    return Inputs{image(),
                  c10::IValue(at::full({1, 2}, 0.5, at::kFloat)),
                  c10::IValue(at::ones({1}, at::kLong)),
                  c10::IValue(at::zeros({0, 4}, at::kFloat)),
                  c10::IValue(at::zeros({0, 256, 256}, at::kFloat)),
                  c10::IValue(true),
                  c10::IValue(true)};
  }
  if (model.pipeline == kImageToText) {
    return Inputs{image(), c10::IValue(std::string())};
  }
  return std::nullopt;
}

grpc::Status OrchestratorService::TextToImage(grpc::ServerContext* context,
                                              const v1::TextToImageRequest* request,
                                              v1::ImageResponse* response) {
  const std::string rid = RequestIdOf(context);
  const absl::Time start = absl::Now();
  // Validate against the model's options before a cold model is loaded for a bad request.
  const ModelConfig* found = models_->Find(request->model_id());
  if (found == nullptr || found->pipeline != kTextToImage) {
    return ToGrpcStatus(AcquireModel(context, kTextToImage, request->model_id()).status());
  }
  auto params = ValidateTextToImage(*request, *found);
  if (!params.ok()) return ToGrpcStatus(params.status());
  auto model = AcquireModel(context, kTextToImage, request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  RunContext ctx{model->executor.get(), model->config, DeadlineOf(context),
                 [context] { return context->IsCancelled(); }};
  board_->Changed();  // the executor's queue grows now
  auto result = RunTextToImage(ctx, *params);
  board_->Changed();
  if (!result.ok()) return Failed(rid, kTextToImage, request->model_id(), result.status());
  for (size_t i = 0; i < result->images.size(); ++i) {
    auto& image = result->images[i];
    auto* media = response->add_images();
    media->set_data(std::move(image.png));
    media->set_content_type("image/png");
    // Image i of each prompt was generated from seed + i (docs/pipelines-image.md).
    media->set_seed(params->seed + static_cast<int64_t>(i) % params->num_images_per_prompt);
    media->set_width(image.width);
    media->set_height(image.height);
  }
  auto* job = response->mutable_job();
  FillJobInfo(context, *model->config, ReportedUnits(metering::Units(*request, *response), rid),
              start, job);
  spdlog::info("[{}] text-to-image {} {} image(s) {}x{} seed {} in {:.0f} ms", rid,
               LogSafe(request->model_id()), result->images.size(), params->width, params->height,
               params->seed, job->compute_ms());
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::ImageToImage(grpc::ServerContext* context,
                                               const v1::ImageToImageRequest* request,
                                               v1::ImageResponse* response) {
  const std::string rid = RequestIdOf(context);
  const absl::Time start = absl::Now();
  // Validate against the model's options before a cold model is loaded for a bad request.
  const ModelConfig* found = models_->Find(request->model_id());
  if (found == nullptr || found->pipeline != kImageToImage) {
    return ToGrpcStatus(AcquireModel(context, kImageToImage, request->model_id()).status());
  }
  auto params = ValidateImageToImage(*request, *found);
  if (!params.ok()) return ToGrpcStatus(params.status());
  auto model = AcquireModel(context, kImageToImage, request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  RunContext ctx{model->executor.get(), model->config, DeadlineOf(context),
                 [context] { return context->IsCancelled(); }};
  board_->Changed();
  auto result = RunImageToImage(ctx, request->image(), *params);
  board_->Changed();
  if (!result.ok()) return Failed(rid, kImageToImage, request->model_id(), result.status());
  for (size_t i = 0; i < result->images.size(); ++i) {
    auto& image = result->images[i];
    auto* media = response->add_images();
    media->set_data(std::move(image.png));
    media->set_content_type("image/png");
    media->set_seed(params->seed + static_cast<int64_t>(i) % params->num_images_per_prompt);
    media->set_width(image.width);
    media->set_height(image.height);
  }
  auto* job = response->mutable_job();
  FillJobInfo(context, *model->config, ReportedUnits(metering::Units(*request, *response), rid),
              start, job);
  spdlog::info("[{}] image-to-image {} {}x{} -> {} image(s) seed {} in {:.0f} ms", rid,
               LogSafe(request->model_id()), result->input_width, result->input_height,
               result->images.size(), params->seed, job->compute_ms());
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::ImageToVideo(grpc::ServerContext* context,
                                               const v1::ImageToVideoRequest* request,
                                               v1::VideoResponse* response) {
  const std::string rid = RequestIdOf(context);
  const absl::Time start = absl::Now();
  // Validate against the model's options before a cold model is loaded for a bad request.
  const ModelConfig* found = models_->Find(request->model_id());
  if (found == nullptr || found->pipeline != kImageToVideo) {
    return ToGrpcStatus(AcquireModel(context, kImageToVideo, request->model_id()).status());
  }
  auto params = ValidateImageToVideo(*request, *found);
  if (!params.ok()) return ToGrpcStatus(params.status());
  auto model = AcquireModel(context, kImageToVideo, request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  RunContext ctx{model->executor.get(), model->config, DeadlineOf(context),
                 [context] { return context->IsCancelled(); }};
  board_->Changed();
  auto result = RunImageToVideo(ctx, request->image(), *params);
  board_->Changed();
  if (!result.ok()) return Failed(rid, kImageToVideo, request->model_id(), result.status());
  auto* media = response->add_images();
  media->set_data(std::move(result->mp4));
  media->set_content_type("video/mp4");
  media->set_seed(params->seed);
  media->set_width(result->width);
  media->set_height(result->height);
  auto* job = response->mutable_job();
  FillJobInfo(context, *model->config, ReportedUnits(metering::Units(*request, *response), rid),
              start, job);
  spdlog::info("[{}] image-to-video {} {} frames {}x{} at {} fps seed {} in {:.0f} ms", rid,
               LogSafe(request->model_id()), result->frames, result->width, result->height,
               params->fps, params->seed, job->compute_ms());
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::SegmentAnything2(grpc::ServerContext* context,
                                                   const v1::SegmentAnything2Request* request,
                                                   v1::MasksResponse* response) {
  const std::string rid = RequestIdOf(context);
  const absl::Time start = absl::Now();
  // Validate against the model's options before a cold model is loaded for a bad request.
  const ModelConfig* found = models_->Find(request->model_id());
  if (found == nullptr || found->pipeline != kSegmentAnything2) {
    return ToGrpcStatus(AcquireModel(context, kSegmentAnything2, request->model_id()).status());
  }
  auto params = ValidateSegmentAnything2(*request, *found);
  if (!params.ok()) return ToGrpcStatus(params.status());
  auto model = AcquireModel(context, kSegmentAnything2, request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  RunContext ctx{model->executor.get(), model->config, DeadlineOf(context),
                 [context] { return context->IsCancelled(); }};
  board_->Changed();
  auto result = RunSegmentAnything2(ctx, request->image(), *params);
  board_->Changed();
  if (!result.ok()) return Failed(rid, kSegmentAnything2, request->model_id(), result.status());
  response->set_masks(std::move(result->masks));
  response->set_scores(std::move(result->scores));
  response->set_logits(std::move(result->logits));
  auto* job = response->mutable_job();
  FillJobInfo(context, *model->config, ReportedUnits(metering::Units(*request, *response), rid),
              start, job);
  spdlog::info("[{}] segment-anything-2 {} {}x{} -> {} mask(s) in {:.0f} ms", rid,
               LogSafe(request->model_id()), result->input_width, result->input_height,
               result->num_masks, job->compute_ms());
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::ImageToText(grpc::ServerContext* context,
                                              const v1::ImageToTextRequest* request,
                                              v1::ImageToTextResponse* response) {
  const std::string rid = RequestIdOf(context);
  const absl::Time start = absl::Now();
  // Validate against the model's options before a cold model is loaded for a bad request.
  const ModelConfig* found = models_->Find(request->model_id());
  if (found == nullptr || found->pipeline != kImageToText) {
    return ToGrpcStatus(AcquireModel(context, kImageToText, request->model_id()).status());
  }
  if (auto st = ValidateImageToText(*request, *found); !st.ok()) return ToGrpcStatus(st);
  auto model = AcquireModel(context, kImageToText, request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  RunContext ctx{model->executor.get(), model->config, DeadlineOf(context),
                 [context] { return context->IsCancelled(); }};
  board_->Changed();
  auto result = RunImageToText(ctx, request->image(), request->prompt());
  board_->Changed();
  if (!result.ok()) return Failed(rid, kImageToText, request->model_id(), result.status());
  response->set_text(std::move(result->text));
  auto* job = response->mutable_job();
  FillJobInfo(context, *model->config, ReportedUnits(metering::Units(*request, *response), rid),
              start, job);
  spdlog::info("[{}] image-to-text {} {}x{} -> {} chars in {:.0f} ms", rid,
               LogSafe(request->model_id()), result->input_width, result->input_height,
               response->text().size(), job->compute_ms());
  return grpc::Status::OK;
}

}  // namespace switchyard::orchestrator
