// The live-video-to-video pipeline of the orchestrator service: one segment of a live stream per
// call (live_video_pipeline.h; contract in docs/pipelines-image.md).
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/pipelines.h"
#include "common/status.h"
#include "orchestrator/pipelines/live_video_pipeline.h"
#include "orchestrator/serving/orchestrator_service.h"
#include "orchestrator/serving/request_context.h"
#include "orchestrator/serving/unary_pipeline.h"

namespace switchyard::orchestrator {

namespace {

// The live-video-to-video pipeline's descriptor (unary_pipeline.h): one segment of a stream.
struct LiveVideoPipeline : UnaryDescriptor<v1::LiveVideoSegmentRequest, true> {
  using Params = LiveVideoLimits;
  static std::string Subject(const Request& request) {
    return absl::StrCat(" stream '", LogSafe(request.stream_id()), "' segment ",
                        request.sequence());
  }
  static absl::Status CheckRequest(const Request& request) {
    if (request.segment().empty()) {
      return absl::InvalidArgumentError("segment is required (MPEG-TS bytes)");
    }
    if (!request.params().empty()) {
      const auto params = nlohmann::json::parse(request.params(), nullptr, false);
      if (params.is_discarded() || !params.is_object()) {
        return absl::InvalidArgumentError("params must be a JSON object");
      }
    }
    return absl::OkStatus();
  }
  static absl::StatusOr<Params> Validate(const Request&, const ModelConfig* config) {
    return LiveVideoLimitsFor(*config);
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& limits, Response* response) {
    auto result = RunLiveVideoSegment(ctx, request.segment(), request.params(), limits);
    if (!result.ok()) return result.status();
    response->set_segment(std::move(result->ts));
    response->set_frames(result->frames);
    response->set_width(result->width);
    response->set_height(result->height);
    response->set_first_pts_seconds(result->first_pts_seconds);
    response->set_last_pts_seconds(result->last_pts_seconds);
    return absl::StrCat(result->frames, " frames ", result->width, "x", result->height);
  }
};

}  // namespace

SWITCHYARD_SERVE_UNARY(LiveVideoSegment, LiveVideoPipeline)

}  // namespace switchyard::orchestrator
