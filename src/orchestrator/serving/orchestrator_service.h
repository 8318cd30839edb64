// The orchestrator's gRPC service: runs the jobs gateways hand it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/histogram.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/node_identity.h"
#include "common/pipelines.h"
#include "orchestrator/models/model_manager.h"
#include "orchestrator/models/status_board.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/serving/admin_auth.h"
#include "orchestrator/serving/transcode_sessions.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::orchestrator {

class OrchestratorService final : public node::v1::Orchestrator::Service {
 public:
  OrchestratorService(const OrchestratorConfig& config, ModelManager* models, StatusBoard* board);

  grpc::Status Transcode(grpc::ServerContext* context, const v1::TranscodeRequest* request,
                         v1::TranscodeResponse* response) override;
  grpc::Status CloseTranscodeSession(grpc::ServerContext* context,
                                     const node::v1::CloseTranscodeSessionRequest* request,
                                     node::v1::CloseTranscodeSessionResponse* response) override;
  grpc::Status GetStatus(grpc::ServerContext* context, const node::v1::GetStatusRequest* request,
                         node::v1::NodeStatus* response) override;
  // A known-answer check of this node's hardware (runner/hardware_challenge.h), one at a time.
  grpc::Status HardwareChallenge(grpc::ServerContext* context,
                                 const node::v1::HardwareChallengeRequest* request,
                                 node::v1::HardwareChallengeResponse* response) override;
  // A known-answer check of this node's NVDEC/NVENC claims (common/media/video_challenge.h);
  // shares HardwareChallenge's one-at-a-time limit.
  grpc::Status VideoChallenge(grpc::ServerContext* context,
                              const node::v1::VideoChallengeRequest* request,
                              node::v1::VideoChallengeResponse* response) override;
  grpc::Status LoadModel(grpc::ServerContext* context, const node::v1::ModelRequest* request,
                         node::v1::NodeCapability* response) override;
  grpc::Status UnloadModel(grpc::ServerContext* context, const node::v1::ModelRequest* request,
                           node::v1::NodeCapability* response) override;

  // The unary pipelines of the pipeline table (common/pipelines.h), each defined by
  // SWITCHYARD_SERVE_UNARY (unary_pipeline.h) next to its descriptor: upscale in
  // orchestrator_service.cc, the image pipelines in orchestrator_service_image.cc, live video in
  // orchestrator_service_live.cc, audio and text in orchestrator_service_audio_text.cc.
#define SWITCHYARD_UNARY_METHOD(Method, Response, name)                                 \
  grpc::Status Method(grpc::ServerContext* context, const v1::Method##Request* request, \
                      v1::Response* response) override;
  SWITCHYARD_UNARY_PIPELINES(SWITCHYARD_UNARY_METHOD)
#undef SWITCHYARD_UNARY_METHOD

  // The LLM streams its tokens (orchestrator_service_audio_text.cc).
  grpc::Status LLM(grpc::ServerContext* context, const v1::LLMRequest* request,
                   grpc::ServerWriter<v1::LLMResponse>* writer) override;

  // The node's status as advertised to gateways: identity, capabilities and load.
  node::v1::NodeStatus BuildStatus() const;

  // Set the address advertised to gateways (known once the server has bound its port, so while
  // GetStatus may already be running).
  void set_advertise_address(std::string address) {
    std::lock_guard<std::mutex> lock(address_mu_);
    advertise_address_ = std::move(address);
  }
  // Per-segment realtime ratio (input seconds / compute seconds), when metrics are on.
  void set_transcode_realtime_histogram(prometheus::Histogram* h) { transcode_realtime_ = h; }
  // Video hardware found at start (media::ProbeVideoHardware), advertised in the node status.
  // Set before the server starts.
  void set_hardware(std::vector<std::string> names) { hardware_ = std::move(names); }
  // The node's identity key, which signs each job's receipt (common/receipt.h) and is reported
  // in GetStatus; null: no receipts. Not owned; outlives this. Set before the server starts.
  void set_identity(const NodeKey* identity) { identity_ = identity; }
  void set_draining(bool draining) {
    draining_ = draining;
    board_->Changed();
  }

 private:
  // A model ready to run one job of `pipeline`: its config and executor.
  struct AcquiredModel {
    const ModelConfig* config = nullptr;
    std::shared_ptr<runner::ModelExecutor> executor;
  };
  // Finds `model_id` (INVALID_ARGUMENT if empty; NOT_FOUND if not served here for `pipeline`)
  // and returns its executor, loading a cold model first (UNAVAILABLE if it failed to load).
  absl::StatusOr<AcquiredModel> AcquireModel(grpc::ServerContext* context,
                                             const std::string& pipeline,
                                             const std::string& model_id);
  // Serves one job of the unary pipeline `Pipeline` describes (unary_pipeline.h, where it is
  // defined): validation, the model, the run, the response's JobInfo and the log lines.
  template <typename Pipeline>
  grpc::Status ServeUnary(grpc::ServerContext* context, const typename Pipeline::Request* request,
                          typename Pipeline::Response* response);
  // Admin calls (LoadModel, UnloadModel, CloseTranscodeSession): OK for a caller with a
  // credential AdminAuth accepts; UNAUTHENTICATED (logged with the peer) otherwise.
  grpc::Status CheckAdmin(grpc::ServerContext* context, absl::string_view call) const;
  // LoadModel and UnloadModel: the admin check, the model id, the log line, `action` on the
  // model, and its capability as the answer.
  grpc::Status ModelAdminCall(
      grpc::ServerContext* context, const char* call, const char* verb,
      const node::v1::ModelRequest& request, node::v1::NodeCapability* response,
      const std::function<absl::Status(const std::string& model_id)>& action);
  // Fills the orchestrator's part of a successful job's JobInfo.
  void FillJobInfo(grpc::ServerContext* context, const ModelConfig& model, int64_t units,
                   absl::Time start, v1::JobInfo* job) const;
  // Signs the job's receipt into `job` (filled: model, units and price are read from it) with
  // the gateway and job ids the gateway sent, the digests of the request received and the
  // result sent (common/receipt.h), and the job's start and now. Nothing without an identity
  // key; a signing error is logged and leaves the job without a receipt.
  void SignReceipt(grpc::ServerContext* context, const char* pipeline,
                   const std::string& request_sha256, const std::string& result_sha256,
                   absl::Time start, v1::JobInfo* job) const;

  // FOR TESTS ONLY (test_output_fault): whether this job's result is to be perturbed (a draw of
  // a sequence fixed by the seed), and the perturbation of an image job's result (the first
  // pixels of each image inverted, re-encoded as PNG) and of a transcode's (each rendition cut to
  // its first half, as a node that skips work would). Logged loudly.
  bool DrawOutputFault() const;
  void PerturbImages(const std::string& rid, v1::ImageResponse* response) const;
  void PerturbRenditions(const std::string& rid, v1::TranscodeResponse* response) const;

  const OrchestratorConfig& config_;
  const NodeKey* identity_ = nullptr;
  mutable std::atomic<uint64_t> output_fault_draws_{0};  // test_output_fault's sequence
  NodeKeyPtr forged_identity_;  // test_receipt_fault "forge": a throwaway key
  const AdminAuth admin_auth_;
  ModelManager* models_;
  StatusBoard* board_;
  mutable std::mutex address_mu_;
  std::string advertise_address_;  // guarded by address_mu_ (a std::mutex: not annotated)
  std::vector<std::string> hardware_;
  prometheus::Histogram* transcode_realtime_ = nullptr;
  std::atomic<bool> draining_{false};
  std::atomic<bool> challenge_running_{false};
  std::unique_ptr<TranscodeSessions> transcode_sessions_;
};

}  // namespace switchyard::orchestrator
