// The live-video-to-video pipeline of the orchestrator service: one segment of a live stream per
// call (live_video_pipeline.h; contract in docs/pipelines-image.md).
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/status.h"
#include "orchestrator/live_video_pipeline.h"
#include "orchestrator/orchestrator_service.h"
#include "orchestrator/request_context.h"

namespace switchyard::orchestrator {

grpc::Status OrchestratorService::LiveVideoSegment(grpc::ServerContext* context,
                                                   const v1::LiveVideoSegmentRequest* request,
                                                   v1::LiveVideoSegmentResponse* response) {
  const std::string rid = RequestIdOf(context);
  const absl::Time start = absl::Now();
  if (request->segment().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "segment is required (MPEG-TS bytes)");
  }
  if (!request->params().empty()) {
    const auto params = nlohmann::json::parse(request->params(), nullptr, false);
    if (params.is_discarded() || !params.is_object()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "params must be a JSON object");
    }
  }
  // Check the model's options before a cold model is loaded for nothing.
  const ModelConfig* found = models_->Find(request->model_id());
  if (found == nullptr || found->pipeline != kLiveVideoToVideo) {
    return ToGrpcStatus(AcquireModel(context, kLiveVideoToVideo, request->model_id()).status());
  }
  auto limits = LiveVideoLimitsFor(*found);
  if (!limits.ok()) return ToGrpcStatus(limits.status());
  auto model = AcquireModel(context, kLiveVideoToVideo, request->model_id());
  if (!model.ok()) return ToGrpcStatus(model.status());
  RunContext ctx{model->executor.get(), model->config, DeadlineOf(context),
                 [context] { return context->IsCancelled(); }};
  board_->Changed();  // the executor's queue grows now
  auto result = RunLiveVideoSegment(ctx, request->segment(), request->params(), *limits);
  board_->Changed();
  if (!result.ok()) {
    spdlog::warn("[{}] live-video-to-video {} stream '{}' segment {} failed: {}", rid,
                 LogSafe(request->model_id()), LogSafe(request->stream_id()), request->sequence(),
                 LogSafe(result.status().ToString(), kLogSafeMaxErrorBytes));
    return ToGrpcStatus(result.status());
  }
  response->set_segment(std::move(result->ts));
  response->set_frames(result->frames);
  response->set_width(result->width);
  response->set_height(result->height);
  response->set_first_pts_seconds(result->first_pts_seconds);
  response->set_last_pts_seconds(result->last_pts_seconds);
  auto* job = response->mutable_job();
  // Counted from the returned segment's bytes, as the gateway recounts them (docs/metering.md).
  FillJobInfo(context, *model->config, ReportedUnits(metering::Units(*request, *response), rid),
              start, job);
  spdlog::info("[{}] live-video-to-video {} stream '{}' segment {}: {} frames {}x{} in {:.0f} ms",
               rid, LogSafe(request->model_id()), LogSafe(request->stream_id()),
               request->sequence(), result->frames, result->width, result->height,
               job->compute_ms());
  return grpc::Status::OK;
}

}  // namespace switchyard::orchestrator
