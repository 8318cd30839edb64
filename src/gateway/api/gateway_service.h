// The public switchyard.v1.Gateway service (gRPC callback API). Each job is routed to an
// orchestrator, retried on another on retryable failures, and answered with the orchestrator's
// result or its error code.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "common/pipelines.h"
#include "common/thread_pool.h"
#include "gateway/api/job_dispatch.h"
#include "gateway/api/spot_check.h"
#include "gateway/billing/auth_interceptor.h"
#include "gateway/billing/usage_ledger.h"
#include "gateway/gateway_config.h"
#include "gateway/membership/hardware_checker.h"
#include "gateway/membership/membership.h"
#include "gateway/observability/job_metrics.h"
#include "gateway/observability/recent_errors.h"
#include "gateway/routing/router.h"
#include "gateway/routing/stream_affinity.h"
#include "gateway/routing/wait_queue.h"
#include "gateway/routing/warm_demand.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {

// A job refused (NOT_FOUND) for want of a node under its price cap, when the cap came from
// x-max-total-price: the message says so. Any other status comes back as it was.
grpc::Status WithTotalCap(grpc::Status status, double max_total_price);

// ListUsageRows: most rows in one answer, and the longest page token it takes.
inline constexpr int kMaxUsageRowsPage = 1000;
inline constexpr size_t kMaxUsagePageTokenBytes = 1024;

class GatewayService final : public v1::Gateway::CallbackService {
 public:
  GatewayService(const GatewayConfig& config, Membership* membership,
                 std::function<uint64_t()> random);

  grpc::ServerUnaryReactor* Transcode(grpc::CallbackServerContext* context,
                                      const v1::TranscodeRequest* request,
                                      v1::TranscodeResponse* response) override;
  // Bidirectional: a live stream's segments in, each one's renditions out (see gateway.proto).
  grpc::ServerBidiReactor<v1::TranscodeRequest, v1::TranscodeStreamResponse>* TranscodeStream(
      grpc::CallbackServerContext* context) override;

  // The unary pipelines of the pipeline table (common/pipelines.h), each routed by Route to the
  // best orchestrator and retried elsewhere on node failures. A live video-to-video segment
  // (LiveVideoSegment) goes with its stream's affinity, like Transcode's segments.
#define SWITCHYARD_ROUTED(Method, Response, name)                                              \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context,                       \
                                   const v1::Method##Request* request, v1::Response* response) \
      override;
  SWITCHYARD_UNARY_PIPELINES(SWITCHYARD_ROUTED)
#undef SWITCHYARD_ROUTED

  // The router, shared with the KServe proxy so both feed one view of node health.
  Router* router() { return &router_; }
  // The wait for room of its unary jobs, which other job sources wake when they free a slot.
  RoomWaiter* room() { return &room_; }
  // The jobs that found no warm node with room, per route, for demand-driven warm-up (the
  // registry tells orchestrators that offer those routes cold).
  const WarmDemandTracker* warm_demand() const { return &warm_demand_; }
  // Finished jobs (unary pipelines, transcode segments, LLM streams; KServe ModelInfer calls
  // when the proxy shares it) and recent failures, for the status page.
  const JobLog* job_log() const { return &job_log_; }
  JobLog* job_log() { return &job_log_; }  // for other job sources (the KServe proxy)
  // Per-job Prometheus metrics (may stay unset); set before the service takes calls.
  void set_job_metrics(JobMetrics* metrics) { env_.metrics = metrics; }
  // API key checks (may stay unset: no keys needed); set before the service takes calls.
  void set_auth(const ApiKeyAuth* auth) { auth_ = auth; }
  // The units check and usage ledger of completed jobs (docs/metering.md; may stay unset: jobs
  // are then not metered); set before the service takes calls.
  void set_billing(JobBilling* billing) {
    billing_ = billing;
    env_.billing = billing;
    env_.settle_threads = billing != nullptr ? billing->settle_threads() : nullptr;
  }

  // Spot checks of answered jobs (config `verification`; may stay unset: none); set before the
  // service takes calls. Destroyed with the service, before the router it uses.
  void set_spot_checker(std::unique_ptr<SpotChecker> checker) {
    spot_checker_ = std::move(checker);
  }
  SpotChecker* spot_checker() { return spot_checker_.get(); }

  // The known-answer hardware checks (config `verification.hardware`; may stay unset), whose
  // findings ListCapabilities shows. Not owned; outlives the service's calls. Set before the
  // service takes calls.
  void set_hardware_checker(const HardwareChecker* checker) { hardware_checker_ = checker; }

  // Where streams' affinity is kept (default: this gateway's own table; a shared one with
  // state.redis, routing/redis_affinity.h); set before the service takes calls.
  void set_affinity_store(std::unique_ptr<AffinityStore> store) { affinity_ = std::move(store); }

  // Usage totals from the ledger for the caller's API key (or any key, for operators).
  grpc::ServerUnaryReactor* GetUsage(grpc::CallbackServerContext* context,
                                     const v1::GetUsageRequest* request,
                                     v1::GetUsageResponse* response) override;
  grpc::ServerUnaryReactor* ListUsageRows(grpc::CallbackServerContext* context,
                                          const v1::ListUsageRowsRequest* request,
                                          v1::ListUsageRowsResponse* response) override;

  // How the router judges every node for a pipeline and model (operators; see gateway.proto).
  grpc::ServerUnaryReactor* ExplainRoute(grpc::CallbackServerContext* context,
                                         const v1::ExplainRouteRequest* request,
                                         v1::ExplainRouteResponse* response) override;

  // Prices a request before it runs (see gateway.proto; docs/metering.md, "Quotes").
  grpc::ServerUnaryReactor* Quote(grpc::CallbackServerContext* context,
                                  const v1::QuoteRequest* request,
                                  v1::QuoteResponse* response) override;

  grpc::ServerUnaryReactor* ListCapabilities(grpc::CallbackServerContext* context,
                                             const v1::ListCapabilitiesRequest* request,
                                             v1::ListCapabilitiesResponse* response) override;

  // Server streaming (gateway_service_llm.cc).
  grpc::ServerWriteReactor<v1::LLMResponse>* LLM(grpc::CallbackServerContext* context,
                                                 const v1::LLMRequest* request) override;

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
  template <typename Request, typename Response>
  using UnaryMethod = void (Stub::async_interface::*)(grpc::ClientContext*, const Request*,
                                                      Response*, std::function<void(grpc::Status)>);
  // A unary job of the pipeline Request belongs to (pipelines::PipelineOf): checks its inputs
  // and model id, then runs it on the best orchestrator via `method` (JobDispatch).
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Route(grpc::CallbackServerContext* context, const Request* request,
                                  Response* response, UnaryMethod<Request, Response> method);
  // Runs a unary job on `route`; `answer` gets its outcome once, `on_success` (may be empty) the
  // node that ran it; `tenant` (may be empty) is sent to the node with each attempt.
  template <typename Request, typename Response>
  void Dispatch(grpc::CallbackServerContext* context, const Request* request, Response* response,
                RouteRequest route, UnaryMethod<Request, Response> method,
                std::function<void(grpc::Status)> answer,
                std::function<void(const std::string&)> on_success, std::string tenant = "");

  // The spot check of an answered unary job, when it is sampled (nullopt otherwise): copies of
  // the request and of the result the client got, and the re-run through `method`.
  template <typename Request, typename Response>
  std::optional<SpotChecker::Job> SpotCheckOf(const Request& request, const Response& response,
                                              UnaryMethod<Request, Response> method);

  // The API key check's refusal, answered at once, or null when the call may go on. Unary methods
  // ask first, so a caller without a valid key learns nothing from validation errors.
  grpc::ServerUnaryReactor* RefuseUnauthorized(grpc::CallbackServerContext* context) const;
  // The API key id a call was admitted with ("" when the gateway needs no key).
  std::string ApiKeyIdOf(const grpc::CallbackServerContext* context) const;
  // The call's request id, ledger key and API key id.
  CallIdentity IdentityOf(const grpc::CallbackServerContext* context) const;
  // The route of a job: pipeline, model and price cap (the client's x-max-price-per-unit
  // metadata, else the gateway's configured cap). INVALID_ARGUMENT for a malformed cap;
  // UNAUTHENTICATED or RESOURCE_EXHAUSTED when the API key check refused the call (every job
  // path, unary and streaming, passes here before any work).
  // Also reads x-max-total-price into route.max_total_price (INVALID_ARGUMENT when malformed);
  // CapForTotal turns it into the price cap once the request's units are known.
  absl::StatusOr<RouteRequest> MakeRoute(grpc::CallbackServerContext* context,
                                         const std::string& pipeline,
                                         const std::string& model_id) const;
  // With x-max-total-price (route->max_total_price > 0): the request's quoted units
  // (common/quote_units.h) turn it into a price cap per unit, the lower of it and the route's
  // cap. INVALID_ARGUMENT when the request cannot be measured, FAILED_PRECONDITION when its units
  // are not known before it runs (text-to-speech). Does nothing without the header.
  template <typename Request>
  absl::Status CapForTotal(const Request& request, RouteRequest* route) const;
  // The quote of one request (Quote's work, after the oneof is unpacked).
  template <typename Request>
  grpc::Status QuoteOf(grpc::CallbackServerContext* context, const Request& request,
                       const std::string& pipeline, const std::string& model_id,
                       v1::QuoteResponse* response) const;

  const GatewayConfig& config_;
  Membership* membership_;
  Router router_;
  WaitQueue wait_queue_;
  WaitQueueRoom room_;
  WarmDemandTracker warm_demand_;
  std::unique_ptr<AffinityStore> affinity_;
  JobLog job_log_;
  const ApiKeyAuth* auth_ = nullptr;
  // GetUsage's and ListUsageRows' common part: the ledger (FAILED_PRECONDITION without one) and
  // the query for the window and key asked for, with the key rules (PERMISSION_DENIED for
  // another key's rows unless the caller is a usage admin).
  grpc::Status UsageQueryOf(grpc::CallbackServerContext* context, int64_t since_unix,
                            int64_t until_unix, const std::string& api_key_id, UsageLedger** ledger,
                            UsageQuery* query) const;
  JobBilling* billing_ = nullptr;  // also in env_; here for GetUsage's ledger
  std::function<uint64_t()> random_;
  // What every job is dispatched with (the members above, and the metrics and billing set later).
  DispatchEnv env_;
  // Last: destroyed first, while the router and the ledger its checks use are still there.
  std::unique_ptr<SpotChecker> spot_checker_;
  const HardwareChecker* hardware_checker_ = nullptr;
  // Where answers that take long to write run (segment-anything-2's masks printed as JSON: tens
  // of milliseconds for a large image), not on gRPC's callback threads, which every call shares.
  // Last of all: destroyed first, running what is queued while the members it uses are there.
  ThreadPoolPtr answer_threads_;
  static constexpr int kAnswerThreads = 2;
};

}  // namespace switchyard::gateway
