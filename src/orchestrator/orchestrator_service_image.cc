// Image pipelines of the orchestrator service: text-to-image, image-to-image, image-to-video,
// segment-anything-2, image-to-text.
#include "orchestrator/orchestrator_service.h"
#include "orchestrator/warmup.h"

namespace switchyard::orchestrator {
namespace {

grpc::Status NotYet(const char* pipeline) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      std::string("the ") + pipeline + " pipeline is not implemented yet");
}

}  // namespace

// No warm-up until these pipelines have contracts.
WarmupInputs ImageWarmupInputs(const ModelConfig&) { return std::nullopt; }

grpc::Status OrchestratorService::TextToImage(grpc::ServerContext*, const v1::TextToImageRequest*,
                                              v1::ImageResponse*) {
  return NotYet("text-to-image");
}
grpc::Status OrchestratorService::ImageToImage(grpc::ServerContext*, const v1::ImageToImageRequest*,
                                               v1::ImageResponse*) {
  return NotYet("image-to-image");
}
grpc::Status OrchestratorService::ImageToVideo(grpc::ServerContext*, const v1::ImageToVideoRequest*,
                                               v1::VideoResponse*) {
  return NotYet("image-to-video");
}
grpc::Status OrchestratorService::SegmentAnything2(grpc::ServerContext*,
                                                   const v1::SegmentAnything2Request*,
                                                   v1::MasksResponse*) {
  return NotYet("segment-anything-2");
}
grpc::Status OrchestratorService::ImageToText(grpc::ServerContext*, const v1::ImageToTextRequest*,
                                              v1::ImageToTextResponse*) {
  return NotYet("image-to-text");
}

}  // namespace switchyard::orchestrator
