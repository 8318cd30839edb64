#include "gateway/api/inference_proxy.h"

#include <spdlog/spdlog.h>

#include <limits>
#include <type_traits>
#include <utility>

#include "common/logging.h"
#include "common/metering.h"
#include "common/pipelines.h"
#include "common/secure_random.h"
#include "gateway/api/unary_dispatch.h"

namespace switchyard::gateway {
namespace {

using InferStub = inference::GRPCInferenceService::Stub;

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context, grpc::Status status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

// A ModelInfer call's units: the orchestrator's report in the response's parameters, against
// the gateway's own count.
std::optional<SettleUnits> InferUnits(const inference::ModelInferRequest& request,
                                      const inference::ModelInferResponse& response,
                                      const NodeView& node) {
  auto report = metering::InferReportOf(response);
  if (!report.ok()) {
    // Not reported: recorded as -1, which no count equals, so the call is disputed.
    spdlog::warn("kserve ModelInfer '{}' on {}: {}", LogSafe(request.model_name()), node.id,
                 report.status().ToString());
  }
  return SettleUnits{
      report.ok() ? report->units : -1,
      report.ok() ? report->price_per_unit : std::numeric_limits<double>::quiet_NaN(),
      metering::Units(request, response)};
}

}  // namespace

InferenceProxy::InferenceProxy(const GatewayConfig& config, Membership* membership, Router* router)
    : membership_(membership) {
  env_.config = &config;
  env_.snapshot = [membership] { return membership->snapshot(); };
  env_.router = router;
}

grpc::ServerUnaryReactor* InferenceProxy::RefuseUnauthorized(
    grpc::CallbackServerContext* context) const {
  if (auth_ == nullptr) return nullptr;
  grpc::Status st = auth_->Check(context);
  return st.ok() ? nullptr : FinishNow(context, std::move(st));
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* InferenceProxy::Forward(grpc::CallbackServerContext* context,
                                                  const Request* request, Response* response,
                                                  const std::string& model,
                                                  Method<Request, Response> method,
                                                  DispatchPolicy policy) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (model.empty()) {
    return FinishNow(context,
                     grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a model name is required"));
  }
  typename UnaryTransport<Request, Response>::Units units;
  if constexpr (std::is_same_v<Request, inference::ModelInferRequest>) {
    if (env_.billing != nullptr) units = InferUnits;
  }
  auto* reactor = context->DefaultReactor();
  auto transport = std::make_unique<UnaryTransport<Request, Response>>(
      context, request, response,
      [method](const NodeView& node, grpc::ClientContext* ctx, const Request* req, Response* resp,
               std::function<void(grpc::Status)> done) {
        // The node's KServe service shares its channel; the stub lives until the call ends.
        std::shared_ptr<InferStub> stub =
            inference::GRPCInferenceService::NewStub(node.connection->channel());
        (stub->async()->*method)(ctx, req, resp, [stub, done = std::move(done)](grpc::Status st) {
          done(std::move(st));
        });
      },
      std::move(units), [reactor](grpc::Status st) { reactor->Finish(std::move(st)); });
  // 128 bits from OpenSSL for the ids the gateway makes: an id other clients may see must not be
  // predictable.
  CallIdentity identity = CallIdentity::Of(
      context->client_metadata(), auth_ != nullptr ? auth_->KeyIdOf(context) : std::string(),
      [] { return SecureRandomU64(); });
  RouteRequest route{pipelines::kKserve, model, {}, 0, ""};
  JobDispatch::Create(env_, policy, std::move(route), std::move(identity), ClientDeadline(context),
                      std::move(transport))
      ->Start();
  return reactor;
}

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
  return Forward(context, request, response, request->name(),
                 &InferStub::async_interface::ModelReady,
                 DispatchPolicy::KserveLookup("ModelReady"));
}

grpc::ServerUnaryReactor* InferenceProxy::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  return Forward(context, request, response, request->name(),
                 &InferStub::async_interface::ModelMetadata,
                 DispatchPolicy::KserveLookup("ModelMetadata"));
}

grpc::ServerUnaryReactor* InferenceProxy::ModelInfer(grpc::CallbackServerContext* context,
                                                     const inference::ModelInferRequest* request,
                                                     inference::ModelInferResponse* response) {
  return Forward(context, request, response, request->model_name(),
                 &InferStub::async_interface::ModelInfer, DispatchPolicy::KserveInfer());
}

}  // namespace switchyard::gateway
