// The KServe Open Inference Protocol v2 (inference.GRPCInferenceService) on the gateway's port:
// ModelInfer, ModelReady and ModelMetadata are forwarded to an orchestrator that offers the model
// (under any pipeline), retried elsewhere on UNAVAILABLE/RESOURCE_EXHAUSTED. ModelInfer calls are
// metered like the public API's jobs (pipeline "kserve", unit "element": the orchestrator's report
// in the response's parameters is checked against the gateway's own count, and each call written to
// the usage ledger). See docs/kserve.md and docs/metering.md.
#pragma once

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/metering.h"
#include "gateway/api/job_dispatch.h"
#include "gateway/billing/auth_interceptor.h"
#include "gateway/billing/usage_ledger.h"
#include "gateway/gateway_config.h"
#include "gateway/membership/membership.h"
#include "gateway/observability/job_metrics.h"
#include "gateway/routing/router.h"
#include "inference/open_inference_grpc.grpc.pb.h"

namespace switchyard::gateway {

// Chooses the orchestrator for a call on `model_name` from a snapshot, whatever the pipeline the
// node offers it under (the transcode pseudo-model is never chosen). Skips draining nodes, nodes
// in `excluded` and nodes where the model failed to load. Preference: READY with a free slot,
// then READY (the job queues), then cold/loading; within a tier the lowest load (in use /
// capacity, using the gateway's own in-flight count when fresher), ties to the first listed.
// NOT_FOUND when no node offers the model at all, UNAVAILABLE when none can take it now.
// `ejected` (may be empty) says whether the router has ejected a node; those are skipped too.
// Inline so that tests which do not link the gateway library can use it.
inline absl::StatusOr<std::shared_ptr<const NodeView>> PickInferenceNode(
    const Snapshot& snapshot, const std::string& model_name,
    const std::set<std::string>& excluded = {},
    const std::function<bool(const std::string&)>& ejected = nullptr) {
  int offered = 0;
  int best_tier = std::numeric_limits<int>::max();
  double best_load = std::numeric_limits<double>::max();
  std::shared_ptr<const NodeView> best;
  std::string why_not;
  for (const auto& node : snapshot.nodes) {
    for (const auto& cap : node->status.capabilities()) {
      if (cap.model_id() != model_name || cap.pipeline() == "transcode") continue;
      ++offered;
      if (node->status.draining()) {
        why_not = absl::StrCat(node->id, " is draining");
        continue;
      }
      if (excluded.count(node->id) != 0) {
        why_not = absl::StrCat(node->id, " already failed this call");
        continue;
      }
      if (ejected && ejected(node->id)) {
        why_not = absl::StrCat(node->id, " is ejected after repeated failures");
        continue;
      }
      if (cap.state() == node::v1::MODEL_STATE_FAILED) {
        why_not = absl::StrCat(node->id, " failed to load it: ", cap.error());
        continue;
      }
      if (!metering::ValidPrice(cap.price_per_unit())) {
        why_not = absl::StrCat(node->id, " advertises an invalid price per unit");
        continue;
      }
      const int capacity = std::max(1, cap.capacity());
      const int in_flight = node->connection ? node->connection->in_flight().load() : 0;
      const int in_use = std::max(cap.in_use(), in_flight);
      const bool ready = cap.state() == node::v1::MODEL_STATE_READY;
      const int tier = ready ? (in_use < capacity ? 0 : 1) : 2;
      const double load = static_cast<double>(in_use) / capacity;
      if (tier < best_tier || (tier == best_tier && load < best_load)) {
        best_tier = tier;
        best_load = load;
        best = node;
      }
      break;  // one offer per node is enough
    }
  }
  if (offered == 0) {
    return absl::NotFoundError(absl::StrCat("no orchestrator serves model '", model_name, "'"));
  }
  if (best == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("no orchestrator can take model '", model_name, "' now (", why_not, ")"));
  }
  return best;
}

class InferenceProxy final : public inference::GRPCInferenceService::CallbackService {
 public:
  // `router` (shared with the public API) keeps node health and the retry budget: ModelInfer
  // attempts feed it and skip ejected nodes. Calls are driven by JobDispatch (job_dispatch.h).
  InferenceProxy(const GatewayConfig& config, Membership* membership, Router* router);
  // API key checks for the Model* methods (may stay unset); set before the proxy takes calls.
  void set_auth(const ApiKeyAuth* auth) { auth_ = auth; }
  // Counts ModelInfer calls in the gateway's job metrics (pipeline "kserve"); may stay unset.
  void set_job_metrics(JobMetrics* metrics) { env_.metrics = metrics; }
  // Checks and records each successful ModelInfer call's units (docs/metering.md); may stay unset
  // (calls are then not metered). The gateway's, shared with the public API; it outlives the
  // proxy's calls.
  void set_billing(JobBilling* billing) {
    env_.billing = billing;
    env_.settle_threads = billing != nullptr ? billing->settle_threads() : nullptr;
  }
  // The public API's wait for room (may stay unset): a finished ModelInfer call frees a slot on
  // its node, which wakes a job waiting for one.
  void set_room(RoomWaiter* room) { env_.room = room; }
  // The public API's job log (may stay unset): ModelInfer calls count on the status page too.
  void set_job_log(JobLog* job_log) { env_.job_log = job_log; }

#define SWITCHYARD_KSERVE(Method)                                             \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context,      \
                                   const inference::Method##Request* request, \
                                   inference::Method##Response* response) override
  // Answered by the gateway itself: live always; ready when it knows at least one orchestrator.
  SWITCHYARD_KSERVE(ServerLive);
  SWITCHYARD_KSERVE(ServerReady);
  SWITCHYARD_KSERVE(ServerMetadata);
  // Forwarded to an orchestrator serving the model.
  SWITCHYARD_KSERVE(ModelReady);
  SWITCHYARD_KSERVE(ModelMetadata);
  SWITCHYARD_KSERVE(ModelInfer);
#undef SWITCHYARD_KSERVE

 private:
  // The API key check's refusal, answered at once, or null when the call may go on.
  grpc::ServerUnaryReactor* RefuseUnauthorized(grpc::CallbackServerContext* context) const;
  template <typename Request, typename Response>
  using Method = void (inference::GRPCInferenceService::Stub::async_interface::*)(
      grpc::ClientContext*, const Request*, Response*, std::function<void(grpc::Status)>);
  // Forwards a Model* call on `model` to an orchestrator via `method`, as a job of `policy`.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context, const Request* request,
                                    Response* response, const std::string& model,
                                    Method<Request, Response> method, DispatchPolicy policy);

  Membership* membership_;
  const ApiKeyAuth* auth_ = nullptr;
  DispatchEnv env_;
};

}  // namespace switchyard::gateway
