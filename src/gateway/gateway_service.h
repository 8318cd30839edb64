// The public switchyard.v1.Gateway service (gRPC callback API). Each job is routed to an
// orchestrator, retried on another on retryable failures, and answered with the orchestrator's
// result or its error code.
#pragma once

#include <functional>
#include <memory>

#include "gateway/gateway_config.h"
#include "gateway/membership.h"
#include "gateway/router.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {

class GatewayService final : public v1::Gateway::CallbackService {
 public:
  GatewayService(const GatewayConfig& config, Membership* membership,
                 std::function<uint64_t()> random);

  grpc::ServerUnaryReactor* Upscale(grpc::CallbackServerContext* context,
                                    const v1::UpscaleRequest* request,
                                    v1::ImageResponse* response) override;
  grpc::ServerUnaryReactor* Transcode(grpc::CallbackServerContext* context,
                                      const v1::TranscodeRequest* request,
                                      v1::TranscodeResponse* response) override;
  grpc::ServerUnaryReactor* ListCapabilities(grpc::CallbackServerContext* context,
                                             const v1::ListCapabilitiesRequest* request,
                                             v1::ListCapabilitiesResponse* response) override;

  // Pipelines without a runner yet: UNIMPLEMENTED with a message saying so.
  grpc::ServerUnaryReactor* TextToImage(grpc::CallbackServerContext* context,
                                        const v1::TextToImageRequest*, v1::ImageResponse*) override;
  grpc::ServerUnaryReactor* ImageToImage(grpc::CallbackServerContext* context,
                                         const v1::ImageToImageRequest*,
                                         v1::ImageResponse*) override;
  grpc::ServerUnaryReactor* ImageToVideo(grpc::CallbackServerContext* context,
                                         const v1::ImageToVideoRequest*,
                                         v1::VideoResponse*) override;
  grpc::ServerUnaryReactor* AudioToText(grpc::CallbackServerContext* context,
                                        const v1::AudioToTextRequest*, v1::TextResponse*) override;
  grpc::ServerUnaryReactor* SegmentAnything2(grpc::CallbackServerContext* context,
                                             const v1::SegmentAnything2Request*,
                                             v1::MasksResponse*) override;
  grpc::ServerWriteReactor<v1::LLMResponse>* LLM(grpc::CallbackServerContext* context,
                                                 const v1::LLMRequest*) override;
  grpc::ServerUnaryReactor* ImageToText(grpc::CallbackServerContext* context,
                                        const v1::ImageToTextRequest*,
                                        v1::ImageToTextResponse*) override;
  grpc::ServerUnaryReactor* TextToSpeech(grpc::CallbackServerContext* context,
                                         const v1::TextToSpeechRequest*,
                                         v1::AudioResponse*) override;

 private:
  const GatewayConfig& config_;
  Membership* membership_;
  Router router_;
  std::function<uint64_t()> random_;
};

}  // namespace switchyard::gateway
