#include "gateway/inference_proxy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/secure_random.h"
#include "common/status.h"
#include "gateway/client_cancelled.h"

namespace switchyard::gateway {
namespace {

using InferStub = inference::GRPCInferenceService::Stub;

bool Retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context, grpc::Status status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

// Who a call is charged to and under which ledger key (docs/metering.md).
struct CallIdentity {
  std::string request_id;  // the client's x-request-id, else one of the gateway's own
  std::string job_id;      // the ledger's key: unique even when the client reused its id
  std::string api_key_id;  // "" without API keys
};

CallIdentity IdentityOf(const grpc::CallbackServerContext* context, const ApiKeyAuth* auth) {
  CallIdentity id;
  const auto& md = context->client_metadata();
  if (auto it = md.find("x-request-id");
      it != md.end() && !it->second.empty() && it->second.size() <= 128) {
    id.request_id.assign(it->second.data(), it->second.size());
    // A client's id need not be unique; the ledger's key gets a suffix of the gateway's own.
    id.job_id = absl::StrCat(id.request_id, "~", SecureRandomHex(16));
  } else {
    // 128 bits from OpenSSL: an id other clients may see must not be predictable.
    id.request_id = SecureRandomHex(16);
    id.job_id = id.request_id;
  }
  if (auth != nullptr) id.api_key_id = auth->KeyIdOf(context);
  return id;
}

// One forwarded call: picks an orchestrator, calls it asynchronously with the client's deadline
// and cancellation, retries elsewhere on retryable failures, and finishes the client's call
// exactly once. Owns itself (through the pending callback) until then.
template <typename Request, typename Response>
class ProxyJob : public std::enable_shared_from_this<ProxyJob<Request, Response>> {
 public:
  using Method = void (InferStub::async_interface::*)(grpc::ClientContext*, const Request*,
                                                      Response*, std::function<void(grpc::Status)>);

  ProxyJob(grpc::CallbackServerContext* context, const Request* request, Response* response,
           grpc::ServerUnaryReactor* reactor, std::string model, Method method, const char* what,
           bool counts_load, const GatewayConfig& config, Membership* membership, Router* router,
           JobMetrics* metrics, JobBilling* billing, CallIdentity identity)
      : context_(context),
        request_(request),
        response_(response),
        reactor_(reactor),
        model_(std::move(model)),
        method_(method),
        what_(what),
        counts_load_(counts_load),
        config_(config),
        membership_(membership),
        router_(router),
        metrics_(counts_load ? metrics : nullptr),
        billing_(counts_load ? billing : nullptr),
        identity_(std::move(identity)) {}

  void Start() {
    if (counts_load_) router_->RecordJob();
    Attempt();
  }

 private:
  void Attempt() {
    if (context_->IsCancelled()) return Finish(ClientCancelled());
    auto node = PickInferenceNode(*membership_->snapshot(), model_, excluded_,
                                  [this](const std::string& id) { return router_->IsEjected(id); });
    if (!node.ok()) {
      if (attempts_ > 0) {
        return Finish(grpc::Status(
            last_status_.error_code(),
            absl::StrCat(last_status_.error_message(), " (after ", attempts_, " attempt",
                         attempts_ == 1 ? "" : "s", "; no other orchestrator available)")));
      }
      return Finish(ToGrpcStatus(node.status()));
    }
    ++attempts_;
    node_ = *node;
    stub_ = inference::GRPCInferenceService::NewStub(node_->connection->channel());
    client_context_ = grpc::ClientContext::FromCallbackServerContext(*context_);
    if (context_->deadline() == std::chrono::system_clock::time_point::max()) {
      client_context_->set_deadline(std::chrono::system_clock::now() +
                                    std::chrono::milliseconds(config_.default_timeout_ms));
    }
    client_context_->AddMetadata("x-request-id", identity_.request_id);
    attempt_response_ = Response();
    attempt_start_ = absl::Now();
    if (counts_load_) node_->connection->in_flight().fetch_add(1);
    auto self = this->shared_from_this();
    (stub_->async()->*method_)(client_context_.get(), request_, &attempt_response_,
                               [self](grpc::Status status) { self->OnDone(std::move(status)); });
  }

  void OnDone(grpc::Status status) {
    if (counts_load_) node_->connection->in_flight().fetch_sub(1);
    const grpc::StatusCode code = status.error_code();
    const bool cancelled = context_->IsCancelled();
    // A ModelInfer call's units are checked and recorded before the client gets the response; a
    // node that misreported them is not paid and is penalised like a failed attempt (the client
    // still gets the result: the work was done).
    const bool paid = status.ok() ? Settle() : true;
    if (counts_load_ && !cancelled) {
      AttemptOutcome outcome = AttemptOutcome::kClientError;
      if (status.ok()) {
        outcome = paid ? AttemptOutcome::kSuccess : AttemptOutcome::kNodeFailure;
      } else if (code == grpc::StatusCode::UNAVAILABLE) {
        outcome = AttemptOutcome::kNodeFailure;
      } else if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        outcome = AttemptOutcome::kRefused;
      }
      router_->ReportAttempt(*node_, model_, outcome, absl::Now() - attempt_start_);
    }
    if (status.ok()) {
      *response_ = std::move(attempt_response_);
      if (counts_load_) {
        spdlog::info("[{}] kserve {} '{}' done on {} in {:.0f} ms (attempts {})",
                     identity_.request_id, what_, LogSafe(model_), node_->id,
                     absl::ToDoubleMilliseconds(absl::Now() - start_), attempts_);
      }
      return Finish(grpc::Status::OK);
    }
    spdlog::warn("kserve {} '{}' attempt {} on {} failed: {}: {}", what_, LogSafe(model_),
                 attempts_, node_->id, GrpcCodeName(status.error_code()), status.error_message());
    const bool deadline_left = std::chrono::system_clock::now() < context_->deadline();
    // Metadata calls are cheap and not counted as jobs; ModelInfer retries spend the budget.
    if (Retryable(code) && attempts_ < config_.max_attempts && deadline_left && !cancelled &&
        (!counts_load_ || router_->TryRetry())) {
      excluded_.insert(node_->id);
      last_status_ = status;
      if (metrics_ != nullptr) {
        metrics_->RecordRetry(
            kPipeline, code == grpc::StatusCode::RESOURCE_EXHAUSTED ? "refused" : "node_failure");
      }
      return Attempt();
    }
    Finish(std::move(status));
  }

  // Checks the successful attempt's units (the orchestrator's report in the response's
  // parameters) against the gateway's count and records the call (JobBilling::Settle); true when
  // paid or not metered (metadata calls, no billing).
  bool Settle() {
    if constexpr (!std::is_same_v<Request, inference::ModelInferRequest>) {
      return true;
    } else {
      if (billing_ == nullptr) return true;
      JobBilling::Job job;
      job.job_id = identity_.job_id;
      job.request_id = identity_.request_id;
      job.api_key_id = identity_.api_key_id;
      job.pipeline = kPipeline;
      job.model_id = model_;
      job.orchestrator = node_->id;
      auto report = metering::InferReportOf(attempt_response_);
      if (!report.ok()) {
        // Not reported: recorded as -1, which no count equals, so the call is disputed.
        spdlog::warn("[{}] kserve ModelInfer '{}' on {}: {}", identity_.request_id, LogSafe(model_),
                     node_->id, report.status().ToString());
      }
      job.reported_units = report.ok() ? report->units : -1;
      job.reported_price_per_unit =
          report.ok() ? report->price_per_unit : std::numeric_limits<double>::quiet_NaN();
      // The offer PickInferenceNode chose it by, in the view it was picked from.
      job.advertised_price_per_unit = AdvertisedPrice(*node_, "", model_);
      job.counted = metering::Units(*request_, attempt_response_);
      return billing_->Settle(job);
    }
  }

  void Finish(grpc::Status status) {
    // ModelInfer calls are jobs: counted like the public API's, under pipeline "kserve".
    if (metrics_ != nullptr) {
      metrics_->RecordJob(kPipeline, model_, status.error_code(), absl::Now() - start_);
    }
    reactor_->Finish(std::move(status));
  }

  static constexpr const char* kPipeline = "kserve";

  grpc::CallbackServerContext* context_;
  const Request* request_;
  Response* response_;
  grpc::ServerUnaryReactor* reactor_;
  std::string model_;
  Method method_;
  const char* what_;
  bool counts_load_;
  const GatewayConfig& config_;
  Membership* membership_;
  Router* router_;
  JobMetrics* metrics_;  // null for metadata calls (not jobs)
  JobBilling* billing_;  // null for metadata calls and when not metered
  const CallIdentity identity_;
  absl::Time start_ = absl::Now();
  absl::Time attempt_start_;
  std::set<std::string> excluded_;
  int attempts_ = 0;
  grpc::Status last_status_;
  std::shared_ptr<const NodeView> node_;
  std::unique_ptr<InferStub> stub_;
  std::unique_ptr<grpc::ClientContext> client_context_;
  Response attempt_response_;
};

template <typename Request, typename Response>
grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context, const Request* request,
                                  Response* response, const std::string& model,
                                  typename ProxyJob<Request, Response>::Method method,
                                  const char* what, bool counts_load, const GatewayConfig& config,
                                  Membership* membership, Router* router, JobMetrics* metrics,
                                  JobBilling* billing, const ApiKeyAuth* auth) {
  if (model.empty()) {
    return FinishNow(context,
                     grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a model name is required"));
  }
  auto* reactor = context->DefaultReactor();
  auto job = std::make_shared<ProxyJob<Request, Response>>(
      context, request, response, reactor, model, method, what, counts_load, config, membership,
      router, metrics, billing, IdentityOf(context, auth));
  job->Start();
  return reactor;
}

}  // namespace

InferenceProxy::InferenceProxy(const GatewayConfig& config, Membership* membership, Router* router)
    : config_(config), membership_(membership), router_(router) {}

grpc::ServerUnaryReactor* InferenceProxy::ServerLive(grpc::CallbackServerContext* context,
                                                     const inference::ServerLiveRequest*,
                                                     inference::ServerLiveResponse* response) {
  response->set_live(true);
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceProxy::ServerReady(grpc::CallbackServerContext* context,
                                                      const inference::ServerReadyRequest*,
                                                      inference::ServerReadyResponse* response) {
  response->set_ready(!membership_->snapshot()->nodes.empty());
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceProxy::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name("switchyard-gateway");
  response->set_version("0.1.0");
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* InferenceProxy::ModelReady(grpc::CallbackServerContext* context,
                                                     const inference::ModelReadyRequest* request,
                                                     inference::ModelReadyResponse* response) {
  if (auth_ != nullptr) {
    if (grpc::Status st = auth_->Check(context); !st.ok()) return FinishNow(context, st);
  }
  return Forward(context, request, response, request->name(),
                 &InferStub::async_interface::ModelReady, "ModelReady", false, config_, membership_,
                 router_, nullptr, nullptr, auth_);
}

grpc::ServerUnaryReactor* InferenceProxy::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (auth_ != nullptr) {
    if (grpc::Status st = auth_->Check(context); !st.ok()) return FinishNow(context, st);
  }
  return Forward(context, request, response, request->name(),
                 &InferStub::async_interface::ModelMetadata, "ModelMetadata", false, config_,
                 membership_, router_, nullptr, nullptr, auth_);
}

grpc::ServerUnaryReactor* InferenceProxy::ModelInfer(grpc::CallbackServerContext* context,
                                                     const inference::ModelInferRequest* request,
                                                     inference::ModelInferResponse* response) {
  if (auth_ != nullptr) {
    if (grpc::Status st = auth_->Check(context); !st.ok()) return FinishNow(context, st);
  }
  return Forward(context, request, response, request->model_name(),
                 &InferStub::async_interface::ModelInfer, "ModelInfer", true, config_, membership_,
                 router_, metrics_, billing_, auth_);
}

}  // namespace switchyard::gateway
