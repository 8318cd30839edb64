// The public switchyard.v1.Gateway service (gRPC callback API). Each job is routed to an
// orchestrator, retried on another on retryable failures, and answered with the orchestrator's
// result or its error code.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "gateway/auth_interceptor.h"
#include "gateway/gateway_config.h"
#include "gateway/job_metrics.h"
#include "gateway/membership.h"
#include "gateway/recent_errors.h"
#include "gateway/router.h"
#include "gateway/stream_affinity.h"
#include "gateway/usage_ledger.h"
#include "gateway/wait_queue.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {

// A 128-bit id as 32 lowercase hex digits, from two draws of `random` (the service's id source:
// OpenSSL's CSPRNG in the daemon, a fixed sequence in tests). Request ids and generated stream
// ids: 64 bits from a PRNG whose state clients can rebuild would let them guess others' ids.
std::string NewHexId(const std::function<uint64_t()>& random);

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
  // Bidirectional: a live stream's segments in, each one's renditions out (see gateway.proto).
  grpc::ServerBidiReactor<v1::TranscodeRequest, v1::TranscodeStreamResponse>* TranscodeStream(
      grpc::CallbackServerContext* context) override;
  // One segment of a live video-to-video stream: routed with the stream's affinity like
  // Transcode's segments, retried elsewhere on node failures.
  grpc::ServerUnaryReactor* LiveVideoSegment(grpc::CallbackServerContext* context,
                                             const v1::LiveVideoSegmentRequest* request,
                                             v1::LiveVideoSegmentResponse* response) override;
  // The router, shared with the KServe proxy so both feed one view of node health.
  Router* router() { return &router_; }
  // Finished jobs and recent failures of the unary pipelines, for the status page.
  const JobLog* job_log() const { return &job_log_; }
  // Per-job Prometheus metrics (may stay unset); set before the service takes calls.
  void set_job_metrics(JobMetrics* metrics) { job_metrics_ = metrics; }
  // API key checks (may stay unset: no keys needed); set before the service takes calls.
  void set_auth(const ApiKeyAuth* auth) { auth_ = auth; }
  // The units check and usage ledger of completed jobs (docs/metering.md; may stay unset: jobs
  // are then not metered); set before the service takes calls.
  void set_billing(JobBilling* billing) { billing_ = billing; }

  // Usage totals from the ledger for the caller's API key (or any key, for operators).
  grpc::ServerUnaryReactor* GetUsage(grpc::CallbackServerContext* context,
                                     const v1::GetUsageRequest* request,
                                     v1::GetUsageResponse* response) override;

  grpc::ServerUnaryReactor* ListCapabilities(grpc::CallbackServerContext* context,
                                             const v1::ListCapabilitiesRequest* request,
                                             v1::ListCapabilitiesResponse* response) override;

  // Every other pipeline is routed the same way as Upscale.
  grpc::ServerUnaryReactor* TextToImage(grpc::CallbackServerContext* context,
                                        const v1::TextToImageRequest*, v1::ImageResponse*) override;
  grpc::ServerUnaryReactor* ImageToImage(grpc::CallbackServerContext* context,
                                         const v1::ImageToImageRequest* request,
                                         v1::ImageResponse* response) override;
  grpc::ServerUnaryReactor* ImageToVideo(grpc::CallbackServerContext* context,
                                         const v1::ImageToVideoRequest* request,
                                         v1::VideoResponse* response) override;
  grpc::ServerUnaryReactor* AudioToText(grpc::CallbackServerContext* context,
                                        const v1::AudioToTextRequest*, v1::TextResponse*) override;
  grpc::ServerUnaryReactor* SegmentAnything2(grpc::CallbackServerContext* context,
                                             const v1::SegmentAnything2Request* request,
                                             v1::MasksResponse* response) override;
  // Server streaming (gateway_service_llm.cc).
  grpc::ServerWriteReactor<v1::LLMResponse>* LLM(grpc::CallbackServerContext* context,
                                                 const v1::LLMRequest* request) override;
  grpc::ServerUnaryReactor* ImageToText(grpc::CallbackServerContext* context,
                                        const v1::ImageToTextRequest* request,
                                        v1::ImageToTextResponse* response) override;
  grpc::ServerUnaryReactor* TextToSpeech(grpc::CallbackServerContext* context,
                                         const v1::TextToSpeechRequest* request,
                                         v1::AudioResponse* response) override;

 private:
  using Stub = node::v1::Orchestrator::Stub;
  class TranscodeStreamReactor;
  // Streams whose node the gateway remembers, at most (the least recently used are forgotten).
  static constexpr size_t kMaxTrackedStreams = 100000;

  // Runs one segment: routed to the stream's node while it can take it (affinity), else to the
  // best one, retried elsewhere like any job. `finish` gets the outcome once.
  void StartTranscode(grpc::CallbackServerContext* context, const v1::TranscodeRequest* request,
                      v1::TranscodeResponse* response, RouteRequest route,
                      std::function<void(grpc::Status)> finish);
  // Tells a node, best effort, that the tenant's stream left it (ended or moved), freeing its
  // session slot.
  void CloseSessionOn(const std::string& node_id, const std::string& tenant,
                      const std::string& stream_id);
  // Validates the model id, then runs the job on the best orchestrator via `method`, retrying
  // elsewhere on retryable failures.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Route(
      grpc::CallbackServerContext* context, const Request* request, Response* response,
      const std::string& pipeline, const std::string& model_id,
      void (Stub::async_interface::*method)(grpc::ClientContext*, const Request*, Response*,
                                            std::function<void(grpc::Status)>));

  // The API key check's refusal, answered at once, or null when the call may go on. Unary methods
  // ask first, so a caller without a valid key learns nothing from validation errors.
  grpc::ServerUnaryReactor* RefuseUnauthorized(grpc::CallbackServerContext* context) const;
  // The API key id a call was admitted with ("" when the gateway needs no key).
  std::string ApiKeyIdOf(const grpc::CallbackServerContext* context) const;
  // The usage ledger's key for a job: its request id, made unique when the client chose it.
  std::string LedgerJobId(const grpc::CallbackServerContext* context,
                          const std::string& request_id) const;
  // The route of a job: pipeline, model and price cap (the client's x-max-price-per-unit
  // metadata, else the gateway's configured cap). INVALID_ARGUMENT for a malformed cap;
  // UNAUTHENTICATED or RESOURCE_EXHAUSTED when the API key check refused the call (every job
  // path, unary and streaming, passes here before any work).
  absl::StatusOr<RouteRequest> MakeRoute(grpc::CallbackServerContext* context,
                                         const std::string& pipeline,
                                         const std::string& model_id) const;

  const GatewayConfig& config_;
  Membership* membership_;
  Router router_;
  WaitQueue wait_queue_;
  StreamAffinity affinity_;
  JobLog job_log_;
  JobMetrics* job_metrics_ = nullptr;
  const ApiKeyAuth* auth_ = nullptr;
  JobBilling* billing_ = nullptr;
  std::function<uint64_t()> random_;
};

}  // namespace switchyard::gateway
