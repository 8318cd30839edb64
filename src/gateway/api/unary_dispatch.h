// The transport of a unary job (the public API's pipelines, transcode segments, KServe calls):
// each attempt is one asynchronous unary call to the node, with the client's deadline and
// cancellation (a child context) and the attempt's own deadline. JobDispatch drives it.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/tenant.h"
#include "gateway/api/job_dispatch.h"
#include "gateway/api/packed_masks.h"

namespace switchyard::gateway {

// A node's successful answer checked before it is metered or passed on; an error makes the
// attempt a node failure (tried elsewhere). Most answers need no check beyond protobuf's.
template <typename Response>
absl::Status CheckNodeAnswer(const Response&) {
  return absl::OkStatus();
}
// Packed masks (segment-anything-2 with packed_tensors): consistent shapes and sizes.
inline absl::Status CheckNodeAnswer(const v1::MasksResponse& response) {
  return CheckPackedMasks(response);
}

template <typename Request, typename Response>
class UnaryTransport final : public DispatchTransport {
 public:
  // Starts the node's method for one attempt; `done` gets its status.
  using Call = std::function<void(const NodeView& node, grpc::ClientContext*, const Request*,
                                  Response*, std::function<void(grpc::Status)> done)>;
  // The units of a successful attempt (nullopt: not metered).
  using Units = std::function<std::optional<SettleUnits>(const Request&, const Response&,
                                                         const NodeView& node)>;
  // Answers the client (the response is filled when the status is OK).
  using Answer = std::function<void(grpc::Status)>;

  UnaryTransport(grpc::CallbackServerContext* context, const Request* request, Response* response,
                 Call call, Units units, Answer answer)
      : context_(context),
        request_(request),
        response_(response),
        call_(std::move(call)),
        units_(std::move(units)),
        answer_(std::move(answer)) {}

  // Told which node ran the job when it succeeded (a stream's affinity), before the answer.
  void set_on_success(std::function<void(const std::string& node)> f) {
    on_success_ = std::move(f);
  }

  void StartAttempt(const AttemptPlan& plan, Done done) override {
    client_context_ = grpc::ClientContext::FromCallbackServerContext(*context_);
    client_context_->set_deadline(absl::ToChronoTime(plan.deadline));
    client_context_->AddMetadata("x-request-id", plan.identity->request_id);
    if (!plan.tenant.empty()) client_context_->AddMetadata(kTenantMetadataKey, plan.tenant);
    AddReceiptMetadata(plan, client_context_.get());
    attempt_response_ = Response();
    node_ = plan.node;
    call_(*plan.node, client_context_.get(), request_, &attempt_response_,
          [this, done = std::move(done)](grpc::Status status) {
            AttemptResult result;
            if (status.ok()) {
              if (absl::Status bad = CheckNodeAnswer(attempt_response_); !bad.ok()) {
                status = grpc::Status(
                    grpc::StatusCode::UNAVAILABLE,
                    absl::StrCat(node_->id, " answered a malformed result: ", bad.message()));
              }
            }
            if (status.ok() && units_) {
              result.units = units_(*request_, attempt_response_, *node_);
            } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
              const auto& trailers = client_context_->GetServerTrailingMetadata();
              result.tenant_limited = trailers.find(kTenantLimitTrailerKey) != trailers.end();
            }
            result.status = std::move(status);
            done(std::move(result));
          });
  }

  void Finish(grpc::Status status, const FinishInfo& info) override {
    if (status.ok()) {
      *response_ = std::move(attempt_response_);
      // The public API's responses say which node ran the job; KServe's have no such field.
      if constexpr (requires(Response & r) { r.mutable_job(); }) {
        auto* job = response_->mutable_job();
        job->set_request_id(info.request_id);
        job->set_orchestrator(info.orchestrator);
        job->set_attempts(info.attempts);
      }
      if (on_success_) on_success_(info.orchestrator);
    }
    answer_(std::move(status));
  }

  bool ClientCancelled() const override { return context_->IsCancelled(); }

 private:
  grpc::CallbackServerContext* context_;
  const Request* request_;
  Response* response_;
  Call call_;
  Units units_;
  Answer answer_;
  std::function<void(const std::string&)> on_success_;
  std::shared_ptr<const NodeView> node_;
  std::unique_ptr<grpc::ClientContext> client_context_;
  Response attempt_response_;
};

// The client's deadline as JobDispatch takes it (InfiniteFuture: none).
inline absl::Time ClientDeadline(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

}  // namespace switchyard::gateway
