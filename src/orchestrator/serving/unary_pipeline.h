// How the orchestrator serves a unary model pipeline: one generic handler over a descriptor, so a
// pipeline's gRPC method is one line and its code is only what differs (docs/development.md,
// "Adding a pipeline").
//
// A descriptor is a struct (deriving from UnaryDescriptor below for the first five) with:
//   using Request, Response, Params;
//   static constexpr const char* kName;             // the pipeline (common/pipelines.h)
//   static constexpr bool kNeedsModelConfig;         // Validate needs the model's config: a model
//                                                    // not served here is refused before it
//   static const std::string& ModelId(const Request&);
//   // Checks that need no model, made before the model is looked up (UnaryDescriptor's: none).
//   static absl::Status CheckRequest(const Request&);
//   // Checks against the model's options (`config` is null when the model is not a `kName`
//   // model here and kNeedsModelConfig is false). Runs before a cold model is loaded, so a bad
//   // request never loads one.
//   static absl::StatusOr<Params> Validate(const Request&, const ModelConfig* config);
//   // Runs the job and fills the response's payload (not its JobInfo); returns what the log
//   // line says about the job.
//   static absl::StatusOr<std::string> Run(const RunContext&, const Request&, Params&,
//                                          Response*);
//   // What identifies the job beyond its model in log lines (e.g. a stream and segment),
//   // starting with a space; LogSafe'd by the descriptor (UnaryDescriptor's: nothing).
//   static std::string Subject(const Request&);
// The optional members are defaults in UnaryDescriptor that a descriptor hides, not `requires`
// checks: files built with libtorch are also parsed as C++17 (scripts/check-thread-safety).
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/pipelines.h"
#include "common/receipt.h"
#include "common/status.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "orchestrator/serving/orchestrator_service.h"
#include "orchestrator/serving/request_context.h"

namespace switchyard::orchestrator {

// The common part of a descriptor, from the pipeline table (common/pipelines.h): request and
// response types, name and model id field. `kNeedsConfig`: kNeedsModelConfig.
template <typename RequestT, bool kNeedsConfig>
struct UnaryDescriptor {
  using Request = RequestT;
  using Response = typename pipelines::PipelineOf<RequestT>::Response;
  static constexpr const char* kName = pipelines::PipelineOf<RequestT>::kName;
  static constexpr bool kNeedsModelConfig = kNeedsConfig;
  static const std::string& ModelId(const Request& request) {
    return pipelines::PipelineOf<RequestT>::ModelId(request);
  }
  static absl::Status CheckRequest(const Request&) { return absl::OkStatus(); }
  static std::string Subject(const Request&) { return std::string(); }
};

template <typename Pipeline>
grpc::Status OrchestratorService::ServeUnary(grpc::ServerContext* context,
                                             const typename Pipeline::Request* request,
                                             typename Pipeline::Response* response) {
  const std::string rid = RequestIdOf(context);
  const absl::Time start = absl::Now();
  const std::string pipeline(Pipeline::kName);
  const std::string& model_id = Pipeline::ModelId(*request);
  if (absl::Status st = Pipeline::CheckRequest(*request); !st.ok()) return ToGrpcStatus(st);
  const ModelConfig* found = models_->Find(model_id);
  if (found != nullptr && found->pipeline != pipeline) found = nullptr;
  if (found == nullptr && Pipeline::kNeedsModelConfig) {
    return ToGrpcStatus(AcquireModel(context, pipeline, model_id).status());
  }
  auto params = Pipeline::Validate(*request, found);
  if (!params.ok()) return ToGrpcStatus(params.status());
  auto model = AcquireModel(context, pipeline, model_id);
  if (!model.ok()) return ToGrpcStatus(model.status());
  RunContext ctx{model->executor.get(), model->config, DeadlineOf(context),
                 [context] { return context->IsCancelled(); }};
  board_->Changed();  // the executor's queue grows now
  auto summary = Pipeline::Run(ctx, *request, *params, response);
  board_->Changed();
  if (!summary.ok()) {
    spdlog::warn("[{}] {} {}{} failed: {}", rid, pipeline, LogSafe(model_id),
                 Pipeline::Subject(*request),
                 LogSafe(summary.status().ToString(), kLogSafeMaxErrorBytes));
    return ToGrpcStatus(summary.status());
  }
  if constexpr (std::is_same_v<typename Pipeline::Response, v1::ImageResponse>) {
    // FOR TESTS ONLY: a cheating node (test_output_fault); it signs what it returns.
    if (DrawOutputFault()) PerturbImages(rid, response);
  }
  ResultDigest result_digest;
  result_digest.Add(*response);  // before its JobInfo is filled in
  auto* job = response->mutable_job();
  // Counted from the request and the response as the gateway recounts them (docs/metering.md).
  FillJobInfo(context, *model->config, ReportedUnits(metering::Units(*request, *response), rid),
              start, job);
  SignReceipt(context, Pipeline::kName, RequestDigest(*request), result_digest.Finish(), start,
              job);
  spdlog::info("[{}] {} {}{} {} in {:.0f} ms", rid, pipeline, LogSafe(model_id),
               Pipeline::Subject(*request), *summary, job->compute_ms());
  return grpc::Status::OK;
}

// Defines the orchestrator's gRPC method `Method` (a row of SWITCHYARD_UNARY_PIPELINES) as
// ServeUnary of `Descriptor`; one line next to the descriptor.
#define SWITCHYARD_SERVE_UNARY(Method, Descriptor)                             \
  grpc::Status OrchestratorService::Method(grpc::ServerContext* context,       \
                                           const v1::Method##Request* request, \
                                           Descriptor::Response* response) {   \
    return ServeUnary<Descriptor>(context, request, response);                 \
  }

}  // namespace switchyard::orchestrator
