#include "gateway/gateway_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/status.h"
#include "common/tenant.h"
#include "gateway/client_cancelled.h"

namespace switchyard::gateway {

std::string NewHexId(const std::function<uint64_t()>& random) {
  const uint64_t high = random();
  const uint64_t low = random();
  return absl::StrFormat("%016x%016x", high, low);
}

namespace {

using Stub = node::v1::Orchestrator::Stub;

std::string RequestIdOf(const grpc::CallbackServerContext* context,
                        const std::function<uint64_t()>& random) {
  const auto& md = context->client_metadata();
  auto it = md.find("x-request-id");
  if (it != md.end() && !it->second.empty() && it->second.size() <= 128) {
    return std::string(it->second.data(), it->second.size());
  }
  return NewHexId(random);
}

// One client job: picks an orchestrator, calls it asynchronously with a per-attempt timeout,
// retries elsewhere on retryable failures (within the retry budget), waits in the gateway's queue
// when every suitable node refused for capacity, and finishes the client's call exactly once.
// Owns itself until then.
template <typename Request, typename Response>
class UnaryJob : public std::enable_shared_from_this<UnaryJob<Request, Response>> {
 public:
  using AsyncCall = std::function<void(Stub*, grpc::ClientContext*, const Request*, Response*,
                                       std::function<void(grpc::Status)>)>;

  // `finish` is called exactly once with the job's outcome; `on_success` (may be empty) is told
  // which node ran it.
  UnaryJob(grpc::CallbackServerContext* context, const Request* request, Response* response,
           std::function<void(grpc::Status)> finish, RouteRequest route, AsyncCall call,
           const GatewayConfig& config, Membership* membership, Router* router,
           WaitQueue* wait_queue, std::string request_id, JobLog* job_log, JobMetrics* job_metrics,
           std::function<void(const std::string&)> on_success = {})
      : context_(context),
        request_(request),
        response_(response),
        finish_(std::move(finish)),
        on_success_(std::move(on_success)),
        route_(std::move(route)),
        call_(std::move(call)),
        config_(config),
        membership_(membership),
        router_(router),
        wait_queue_(wait_queue),
        request_id_(std::move(request_id)),
        job_log_(job_log),
        job_metrics_(job_metrics) {
    deadline_ = context_->deadline();
    if (deadline_ == std::chrono::system_clock::time_point::max()) {
      deadline_ =
          std::chrono::system_clock::now() + std::chrono::milliseconds(config_.default_timeout_ms);
    }
  }

  // How the job's units are checked and recorded once it succeeds (docs/metering.md); a job
  // without it (billing null) is not metered.
  struct Metering {
    JobBilling* billing = nullptr;
    std::string api_key_id;
    std::string job_id;  // the ledger's key
    std::function<absl::StatusOr<int64_t>(const Request&, const Response&)> count;
  };
  void set_metering(Metering metering) { metering_ = std::move(metering); }
  // The tenant (API key id) sent to the orchestrator for calls that keep per-stream state there
  // (transcode sessions); empty: none sent.
  void set_tenant(std::string tenant) { tenant_ = std::move(tenant); }
  const std::string& request_id() const { return request_id_; }

  void Start() {
    router_->RecordJob();
    Attempt();
  }

 private:
  bool DeadlinePassed() const { return std::chrono::system_clock::now() >= deadline_; }

  void Attempt() {
    if (context_->IsCancelled()) return Finish(ClientCancelled());
    if (DeadlinePassed()) return FinishDeadline();
    auto snapshot = membership_->snapshot();
    auto choice = router_->Pick(*snapshot, route_);
    if (!choice.ok()) {
      // Every node that could take it refused for capacity: wait for room. A job already waiting
      // for room goes on waiting when no node is routable at the moment it wakes (its node
      // dropped for a late heartbeat, or restarting): one is routed to again as soon as it is
      // heard from, and the job's deadline still bounds the wait.
      if (!refused_.empty() || waiting_for_room_) return Park();
      if (attempts_ > 0) {
        // Everything suitable has been tried: report the last orchestrator's error.
        return Finish(grpc::Status(
            last_status_.error_code(),
            absl::StrCat(last_status_.error_message(), " (after ", attempts_, " attempt",
                         attempts_ == 1 ? "" : "s", "; no other orchestrator available)")));
      }
      return Finish(ToGrpcStatus(choice.status()));
    }
    ++attempts_;
    node_ = choice->node;
    warm_ = choice->warm;
    // Propagates the client's deadline and cancellation to the orchestrator call; the attempt's
    // own deadline is the earlier of the job's and the pipeline's attempt timeout.
    client_context_ = grpc::ClientContext::FromCallbackServerContext(*context_);
    client_context_->set_deadline(std::min(
        deadline_, std::chrono::system_clock::now() +
                       std::chrono::milliseconds(config_.AttemptTimeoutMs(route_.pipeline))));
    client_context_->AddMetadata("x-request-id", request_id_);
    if (!tenant_.empty()) client_context_->AddMetadata(kTenantMetadataKey, tenant_);
    attempt_response_ = Response();
    attempt_start_ = absl::Now();
    node_->connection->in_flight().fetch_add(1);
    auto self = this->shared_from_this();
    call_(node_->connection->stub(), client_context_.get(), request_, &attempt_response_,
          [self](grpc::Status status) { self->OnAttemptDone(std::move(status)); });
  }

  void OnAttemptDone(grpc::Status status) {
    node_->connection->in_flight().fetch_sub(1);
    // A slot freed on that node, unless the node refused the job for capacity: then it held no
    // slot, and waking a waiting job would only send it to be refused in turn (waiting jobs
    // would keep waking each other, hammering a full node with attempts until it had room).
    if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) wait_queue_->Signal();
    const absl::Duration latency = absl::Now() - attempt_start_;
    if (status.ok()) {
      // The units are checked and the job recorded before the client gets the response; a node
      // that misreported them is not paid and is penalised like a failed attempt (the client
      // still gets the result: the work was done).
      const bool paid = Settle();
      router_->ReportAttempt(*node_, route_.model_id,
                             paid ? AttemptOutcome::kSuccess : AttemptOutcome::kNodeFailure,
                             latency, !warm_);
      *response_ = std::move(attempt_response_);
      auto* job = response_->mutable_job();
      job->set_request_id(request_id_);
      job->set_orchestrator(node_->id);
      job->set_attempts(attempts_);
      spdlog::info("[{}] {} '{}' done on {} in {:.0f} ms (attempts {})", LogSafe(request_id_),
                   route_.pipeline, LogSafe(route_.model_id), node_->id,
                   absl::ToDoubleMilliseconds(absl::Now() - start_), attempts_);
      if (on_success_) on_success_(node_->id);
      return Finish(grpc::Status::OK);
    }
    const grpc::StatusCode code = status.error_code();
    const bool cancelled = context_->IsCancelled();
    if (code == grpc::StatusCode::RESOURCE_EXHAUSTED && !cancelled && TenantLimited()) {
      return OnTenantLimited(std::move(status));
    }
    // DEADLINE_EXCEEDED before the job's own deadline: the attempt timed out on that node.
    const bool attempt_timed_out =
        code == grpc::StatusCode::DEADLINE_EXCEEDED && !DeadlinePassed() && !cancelled;
    if (attempt_timed_out) {
      status = grpc::Status(
          code, absl::StrCat("attempt timed out after ", config_.AttemptTimeoutMs(route_.pipeline),
                             " ms on ", node_->id));
    }
    AttemptOutcome outcome = AttemptOutcome::kClientError;
    if (code == grpc::StatusCode::UNAVAILABLE || attempt_timed_out) {
      outcome = AttemptOutcome::kNodeFailure;
    } else if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      outcome = AttemptOutcome::kRefused;
    }
    // A node that took the job and failed ends the wait for room: from here the job fails over
    // (or reports that failure) like one that never waited.
    if (outcome != AttemptOutcome::kRefused) waiting_for_room_ = false;
    if (!cancelled) router_->ReportAttempt(*node_, route_.model_id, outcome, latency, !warm_);
    spdlog::warn("[{}] {} '{}' attempt {} on {} failed: {}: {}", LogSafe(request_id_),
                 route_.pipeline, LogSafe(route_.model_id), attempts_, node_->id,
                 GrpcCodeName(code), LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
    if (cancelled) return Finish(ClientCancelled());
    if (outcome == AttemptOutcome::kClientError || DeadlinePassed()) {
      return Finish(std::move(status));  // not retryable: the client's error, or out of time
    }
    last_status_ = status;
    route_.excluded.insert(node_->id);
    if (outcome == AttemptOutcome::kRefused) {
      refused_.insert(node_->id);
      // Another node may have room now; if the budget says no, wait for room instead.
      if (router_->TryRetry()) {
        if (job_metrics_ != nullptr) job_metrics_->RecordRetry(route_.pipeline, "refused");
        return Attempt();
      }
      return Park();
    }
    ++failures_;
    if (failures_ >= config_.max_attempts) return Finish(std::move(status));
    if (!router_->TryRetry()) {
      return Finish(grpc::Status(code, absl::StrCat(status.error_message(),
                                                    " (not retried: the gateway's retry budget "
                                                    "is spent)")));
    }
    if (job_metrics_ != nullptr) job_metrics_->RecordRetry(route_.pipeline, "node_failure");
    Attempt();
  }

  // Whether the node refused because the caller's key holds as many sessions as one key may
  // there (its trailing metadata says so), rather than for want of a free slot.
  bool TenantLimited() const {
    const auto& trailers = client_context_->GetServerTrailingMetadata();
    return trailers.find(kTenantLimitTrailerKey) != trailers.end();
  }

  // A per-key limit on one node: another node may take the call, but waiting in the queue for
  // room would not help (the key's own sessions hold it), so with no other node the client gets
  // the node's RESOURCE_EXHAUSTED, which names the limit, at once.
  void OnTenantLimited(grpc::Status status) {
    router_->ReportAttempt(*node_, route_.model_id, AttemptOutcome::kClientError,
                           absl::Now() - attempt_start_, !warm_);
    spdlog::info("[{}] {} '{}' attempt {} on {} refused: {}", LogSafe(request_id_), route_.pipeline,
                 LogSafe(route_.model_id), attempts_, node_->id,
                 LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
    waiting_for_room_ = false;
    last_status_ = status;
    route_.excluded.insert(node_->id);
    if (DeadlinePassed() || !router_->TryRetry()) return Finish(std::move(status));
    Attempt();
  }

  // Checks the successful attempt's units against the gateway's count and records the job (see
  // JobBilling::Settle); true when paid or not metered.
  bool Settle() {
    if (metering_.billing == nullptr) return true;
    const v1::JobInfo& info = attempt_response_.job();
    JobBilling::Job job;
    job.job_id = metering_.job_id;
    job.request_id = request_id_;
    job.api_key_id = metering_.api_key_id;
    job.pipeline = route_.pipeline;
    job.model_id = route_.model_id;
    job.orchestrator = node_->id;
    job.reported_units = info.units();
    job.reported_price_per_unit = info.price_per_unit();
    // node_ is the view the router picked it from: the price it advertised then is the one paid.
    job.advertised_price_per_unit = AdvertisedPrice(*node_, route_.pipeline, route_.model_id);
    job.max_price_per_unit = route_.max_price_per_unit;
    job.counted = metering_.count(*request_, attempt_response_);
    return metering_.billing->Settle(job);
  }

  // Waits in the gateway queue until a node may have room, then tries the refusing nodes again.
  void Park() {
    if (!parked_since_) parked_since_ = absl::Now();
    park_start_ = absl::Now();
    auto self = this->shared_from_this();
    if (!wait_queue_->Park(absl::FromChrono(deadline_),
                           [self](bool expired) { self->OnWake(expired); })) {
      return Finish(
          grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       absl::StrCat("every orchestrator for ", route_.pipeline, " '",
                                    route_.model_id, "' is busy and the gateway's queue is full (",
                                    wait_queue_->capacity(), " jobs waiting)")));
    }
  }

  void OnWake(bool expired) {
    if (job_metrics_ != nullptr) {
      job_metrics_->RecordQueueWait(route_.pipeline, absl::Now() - park_start_);
    }
    if (expired) return FinishDeadline();
    for (const auto& id : refused_) route_.excluded.erase(id);
    refused_.clear();
    waiting_for_room_ = true;
    Attempt();
  }

  void FinishDeadline() {
    std::string why = "deadline exceeded";
    if (parked_since_) {
      why = absl::StrCat(
          "deadline exceeded while waiting ",
          static_cast<int64_t>(absl::ToDoubleMilliseconds(absl::Now() - *parked_since_)),
          " ms at the gateway for an orchestrator with room");
    }
    if (attempts_ > 0) absl::StrAppend(&why, " (last attempt: ", last_status_.error_message(), ")");
    Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, why));
  }

  void Finish(grpc::Status status) {
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      spdlog::info("[{}] {} '{}' answered {}: {}", LogSafe(request_id_), route_.pipeline,
                   LogSafe(route_.model_id), GrpcCodeName(status.error_code()),
                   LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
      job_log_->RecordFailure({absl::Now(), request_id_, route_.pipeline, route_.model_id,
                               node_ ? node_->id : "", GrpcCodeName(status.error_code()),
                               status.error_message(), attempts_});
    } else if (status.ok()) {
      job_log_->RecordSuccess(absl::Now());
    } else {
      spdlog::debug("[{}] {} '{}' {}", LogSafe(request_id_), route_.pipeline,
                    LogSafe(route_.model_id),
                    LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
    }
    if (job_metrics_ != nullptr) {
      job_metrics_->RecordJob(route_.pipeline, route_.model_id, status.error_code(),
                              absl::Now() - start_);
    }
    finish_(std::move(status));
  }

  grpc::CallbackServerContext* context_;
  const Request* request_;
  Response* response_;
  std::function<void(grpc::Status)> finish_;
  std::function<void(const std::string&)> on_success_;
  RouteRequest route_;
  AsyncCall call_;
  const GatewayConfig& config_;
  Membership* membership_;
  Router* router_;
  WaitQueue* wait_queue_;
  std::string request_id_;
  JobLog* job_log_;          // the service's; outlives every job
  JobMetrics* job_metrics_;  // the service's, or null; outlives every job
  std::chrono::system_clock::time_point deadline_;
  absl::Time start_ = absl::Now();
  absl::Time park_start_;  // when the job last parked in the wait queue
  absl::Time attempt_start_;
  std::optional<absl::Time> parked_since_;
  int attempts_ = 0;
  int failures_ = 0;  // attempts that failed on the node's side (bounded by max_attempts)
  std::set<std::string> refused_;  // nodes that refused for capacity since the last wait
  bool waiting_for_room_ = false;  // woken from the wait queue; no node has failed the job since
  grpc::Status last_status_;
  std::shared_ptr<const NodeView> node_;
  bool warm_ = false;
  std::unique_ptr<grpc::ClientContext> client_context_;
  Response attempt_response_;
  Metering metering_;
  std::string tenant_;
};

// Metering of a unary job with the pipeline's own count (common/metering.h).
template <typename Request, typename Response>
typename UnaryJob<Request, Response>::Metering Meter(JobBilling* billing, std::string api_key_id,
                                                     std::string job_id) {
  typename UnaryJob<Request, Response>::Metering m;
  m.billing = billing;
  m.api_key_id = std::move(api_key_id);
  m.job_id = std::move(job_id);
  m.count = [](const Request& request, const Response& response) {
    return metering::Units(request, response);
  };
  return m;
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context, grpc::Status status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

grpc::ServerUnaryReactor* Invalid(grpc::CallbackServerContext* context, const char* message) {
  return FinishNow(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message));
}

}  // namespace

GatewayService::GatewayService(const GatewayConfig& config, Membership* membership,
                               std::function<uint64_t()> random)
    : config_(config),
      membership_(membership),
      router_(config.routing, random),
      wait_queue_(config.max_queued_jobs),
      affinity_(absl::Milliseconds(config.stream_idle_timeout_ms), kMaxTrackedStreams),
      random_(random) {}

std::string GatewayService::ApiKeyIdOf(const grpc::CallbackServerContext* context) const {
  return auth_ != nullptr ? auth_->KeyIdOf(context) : std::string();
}

std::string GatewayService::LedgerJobId(const grpc::CallbackServerContext* context,
                                        const std::string& request_id) const {
  // An id the client chose (x-request-id) names the job in logs but need not be unique: the
  // ledger's key gets a suffix of the gateway's own, so a reused id is never mistaken for a
  // duplicate record of an earlier job.
  const auto& md = context->client_metadata();
  auto it = md.find("x-request-id");
  if (it != md.end() && absl::string_view(it->second.data(), it->second.size()) == request_id) {
    return absl::StrCat(request_id, "~", NewHexId(random_));
  }
  return request_id;
}

grpc::ServerUnaryReactor* GatewayService::RefuseUnauthorized(
    grpc::CallbackServerContext* context) const {
  if (auth_ == nullptr) return nullptr;
  grpc::Status st = auth_->Check(context);
  return st.ok() ? nullptr : FinishNow(context, std::move(st));
}

absl::StatusOr<RouteRequest> GatewayService::MakeRoute(grpc::CallbackServerContext* context,
                                                       const std::string& pipeline,
                                                       const std::string& model_id) const {
  if (auth_ != nullptr) {
    if (grpc::Status st = auth_->Check(context); !st.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    }
  }
  RouteRequest route{pipeline, model_id, {}, config_.PriceCap(pipeline, model_id), ""};
  const auto& md = context->client_metadata();
  if (auto it = md.find("x-max-price-per-unit"); it != md.end()) {
    std::string text(it->second.data(), it->second.size());
    double cap = 0;
    if (!absl::SimpleAtod(text, &cap) || !(cap > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "x-max-price-per-unit must be a positive number (price per unit), got '", text, "'"));
    }
    route.max_price_per_unit = cap;
  }
  return route;
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* GatewayService::Route(
    grpc::CallbackServerContext* context, const Request* request, Response* response,
    const std::string& pipeline, const std::string& model_id,
    void (Stub::async_interface::*method)(grpc::ClientContext*, const Request*, Response*,
                                          std::function<void(grpc::Status)>)) {
  if (model_id.empty()) return Invalid(context, "model_id is required (see ListCapabilities)");
  auto route = MakeRoute(context, pipeline, model_id);
  if (!route.ok()) return FinishNow(context, ToGrpcStatus(route.status()));
  auto* reactor = context->DefaultReactor();
  auto job = std::make_shared<UnaryJob<Request, Response>>(
      context, request, response, [reactor](grpc::Status st) { reactor->Finish(std::move(st)); },
      *std::move(route),
      [method](Stub* stub, grpc::ClientContext* ctx, const Request* req, Response* resp,
               std::function<void(grpc::Status)> done) {
        (stub->async()->*method)(ctx, req, resp, std::move(done));
      },
      config_, membership_, &router_, &wait_queue_, RequestIdOf(context, random_), &job_log_,
      job_metrics_);
  job->set_metering(Meter<Request, Response>(billing_, ApiKeyIdOf(context),
                                             LedgerJobId(context, job->request_id())));
  job->Start();
  return reactor;
}

grpc::ServerUnaryReactor* GatewayService::Upscale(grpc::CallbackServerContext* context,
                                                  const v1::UpscaleRequest* request,
                                                  v1::ImageResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->image().empty()) return Invalid(context, "image is required (PNG or JPEG bytes)");
  return Route(context, request, response, "upscale", request->model_id(),
               &Stub::async_interface::Upscale);
}

namespace {

constexpr size_t kMaxStreamIdBytes = 128;  // as the orchestrator allows

// The checks every segment must pass before it is routed.
grpc::Status CheckSegment(const v1::TranscodeRequest& request) {
  if (request.segment().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "segment is required (MPEG-TS or MP4 bytes)");
  }
  if (request.renditions().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "at least one rendition is required");
  }
  if (request.stream_id().size() > kMaxStreamIdBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("stream_id is ", request.stream_id().size(),
                                     " bytes; at most ", kMaxStreamIdBytes, " allowed"));
  }
  return grpc::Status::OK;
}

bool SameRenditions(const google::protobuf::RepeatedPtrField<v1::Rendition>& a,
                    const google::protobuf::RepeatedPtrField<v1::Rendition>& b) {
  if (a.size() != b.size()) return false;
  for (int i = 0; i < a.size(); ++i) {
    if (a[i].SerializeAsString() != b[i].SerializeAsString()) return false;
  }
  return true;
}

}  // namespace

void GatewayService::StartTranscode(grpc::CallbackServerContext* context,
                                    const v1::TranscodeRequest* request,
                                    v1::TranscodeResponse* response, RouteRequest route,
                                    std::function<void(grpc::Status)> finish) {
  std::function<void(const std::string&)> on_success;
  // Streams are the caller's key's: the same stream id under another key is another stream, here
  // and in the orchestrator's sessions (docs/security.md).
  std::string tenant = ApiKeyIdOf(context);
  if (!request->stream_id().empty()) {
    // The stream stays where its session is; if that node cannot take it, the router picks
    // another and the stream moves there.
    const std::string home = affinity_.NodeOf(tenant, request->stream_id());
    route.preferred = home;
    on_success = [this, tenant, id = request->stream_id(), home](const std::string& node) {
      affinity_.Set(tenant, id, node);
      if (!home.empty() && home != node) {
        spdlog::info("stream '{}' moved from {} to {}", LogSafe(id), home, node);
        CloseSessionOn(home, tenant, id);
      }
    };
  }
  auto job = std::make_shared<UnaryJob<v1::TranscodeRequest, v1::TranscodeResponse>>(
      context, request, response, std::move(finish), std::move(route),
      [](Stub* stub, grpc::ClientContext* ctx, const v1::TranscodeRequest* req,
         v1::TranscodeResponse* resp, std::function<void(grpc::Status)> done) {
        stub->async()->Transcode(ctx, req, resp, std::move(done));
      },
      config_, membership_, &router_, &wait_queue_, RequestIdOf(context, random_), &job_log_,
      job_metrics_, std::move(on_success));
  job->set_metering(Meter<v1::TranscodeRequest, v1::TranscodeResponse>(
      billing_, tenant, LedgerJobId(context, job->request_id())));
  job->set_tenant(std::move(tenant));
  job->Start();
}

void GatewayService::CloseSessionOn(const std::string& node_id, const std::string& tenant,
                                    const std::string& stream_id) {
  auto snapshot = membership_->snapshot();
  for (const auto& node : snapshot->nodes) {
    if (node->id != node_id || node->connection == nullptr) continue;
    // Best effort: a node that is gone has no session to close, and one that does not answer
    // closes it at its idle timeout.
    struct Call {
      grpc::ClientContext context;
      node::v1::CloseTranscodeSessionRequest request;
      node::v1::CloseTranscodeSessionResponse response;
    };
    auto* call = new Call;
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    // The node refuses this admin call without a credential it has configured: send back the
    // secret it registered with, never another of ours to an address a node chose. Static nodes
    // get none (security.md): one that requires a credential closes the session when idle.
    if (!node->credential.empty()) {
      call->context.AddMetadata("x-switchyard-registration-secret", node->credential);
    }
    call->request.set_stream_id(stream_id);
    if (!tenant.empty()) call->context.AddMetadata(kTenantMetadataKey, tenant);
    node->connection->stub()->async()->CloseTranscodeSession(
        &call->context, &call->request, &call->response,
        [call, node_id, stream_id](grpc::Status status) {
          if (!status.ok()) {
            spdlog::debug("closing stream '{}' on {}: {}", LogSafe(stream_id), node_id,
                          status.error_message());
          }
          delete call;
        });
    return;
  }
}

grpc::ServerUnaryReactor* GatewayService::Transcode(grpc::CallbackServerContext* context,
                                                    const v1::TranscodeRequest* request,
                                                    v1::TranscodeResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (auto st = CheckSegment(*request); !st.ok()) return FinishNow(context, std::move(st));
  auto route = MakeRoute(context, "transcode", "libx264");
  if (!route.ok()) return FinishNow(context, ToGrpcStatus(route.status()));
  auto* reactor = context->DefaultReactor();
  StartTranscode(context, request, response, *std::move(route),
                 [reactor](grpc::Status st) { reactor->Finish(std::move(st)); });
  return reactor;
}

grpc::ServerUnaryReactor* GatewayService::LiveVideoSegment(
    grpc::CallbackServerContext* context, const v1::LiveVideoSegmentRequest* request,
    v1::LiveVideoSegmentResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->model_id().empty()) {
    return Invalid(context, "model_id is required (see ListCapabilities)");
  }
  if (request->segment().empty()) return Invalid(context, "segment is required (MPEG-TS bytes)");
  if (request->stream_id().size() > kMaxStreamIdBytes) {
    return FinishNow(context,
                     grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  absl::StrCat("stream_id is ", request->stream_id().size(),
                                               " bytes; at most ", kMaxStreamIdBytes, " allowed")));
  }
  auto route = MakeRoute(context, "live-video-to-video", request->model_id());
  if (!route.ok()) return FinishNow(context, ToGrpcStatus(route.status()));
  std::function<void(const std::string&)> on_success;
  if (!request->stream_id().empty()) {
    // The orchestrator keeps no state between segments, but a stream stays on one node while it
    // can (warm model, no cold start elsewhere). Its own key space in the affinity table.
    const std::string key = absl::StrCat("live-video-to-video/", request->stream_id());
    route->preferred = affinity_.NodeOf(ApiKeyIdOf(context), key);
    on_success = [this, tenant = ApiKeyIdOf(context), key](const std::string& node) {
      affinity_.Set(tenant, key, node);
    };
  }
  auto* reactor = context->DefaultReactor();
  auto job = std::make_shared<UnaryJob<v1::LiveVideoSegmentRequest, v1::LiveVideoSegmentResponse>>(
      context, request, response, [reactor](grpc::Status st) { reactor->Finish(std::move(st)); },
      *std::move(route),
      [](Stub* stub, grpc::ClientContext* ctx, const v1::LiveVideoSegmentRequest* req,
         v1::LiveVideoSegmentResponse* resp, std::function<void(grpc::Status)> done) {
        stub->async()->LiveVideoSegment(ctx, req, resp, std::move(done));
      },
      config_, membership_, &router_, &wait_queue_, RequestIdOf(context, random_), &job_log_,
      job_metrics_, std::move(on_success));
  // One ledger row per segment, charged to the session's key (the HTTP session forwards it).
  job->set_metering(Meter<v1::LiveVideoSegmentRequest, v1::LiveVideoSegmentResponse>(
      billing_, ApiKeyIdOf(context), LedgerJobId(context, job->request_id())));
  job->Start();
  return reactor;
}

// A live stream: reads a segment, runs it (routed with the stream's affinity, retried elsewhere
// like any job), writes its outcome, then reads the next. One segment is in flight at a time,
// because the orchestrator's session runs a stream's segments in order anyway. Deletes itself in
// OnDone, which gRPC calls only after Finish and once no operation is pending; Finish is called
// only when no segment job is running, so no job outlives the reactor.
class GatewayService::TranscodeStreamReactor final
    : public grpc::ServerBidiReactor<v1::TranscodeRequest, v1::TranscodeStreamResponse> {
 public:
  TranscodeStreamReactor(GatewayService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    auto route = service_->MakeRoute(context, "transcode", "libx264");
    if (!route.ok()) {
      Finish(ToGrpcStatus(route.status()));
      return;
    }
    route_ = *std::move(route);
    tenant_ = service_->ApiKeyIdOf(context);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return End();  // the client closed its side, or the call was cancelled
    if (first_) {
      first_ = false;
      if (request_.renditions().empty()) {
        return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "the stream's first message must set the renditions"));
      }
      stream_id_ = request_.stream_id();
      if (stream_id_.empty()) {
        stream_id_ = absl::StrCat("stream-", NewHexId(service_->random_));
      } else if (stream_id_.size() > kMaxStreamIdBytes) {
        return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   absl::StrCat("stream_id is ", stream_id_.size(),
                                                " bytes; at most ", kMaxStreamIdBytes)));
      }
      ladder_ = request_.renditions();
      container_ = request_.container();
    }
    const int64_t index = received_++;
    grpc::Status invalid = grpc::Status::OK;
    if (!request_.stream_id().empty() && request_.stream_id() != stream_id_) {
      invalid = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                             absl::StrCat("stream_id '", request_.stream_id(),
                                          "' differs from the stream's '", stream_id_, "'"));
    }
    // Later messages inherit the ladder and container; a new ladder applies from then on.
    if (request_.renditions().empty()) {
      *request_.mutable_renditions() = ladder_;
    } else if (!SameRenditions(request_.renditions(), ladder_)) {
      ladder_ = request_.renditions();
    }
    if (request_.container().empty()) {
      request_.set_container(container_);
    } else {
      container_ = request_.container();
    }
    request_.set_stream_id(stream_id_);
    if (request_.sequence() == 0) request_.set_sequence(index);
    if (invalid.ok()) invalid = CheckSegment(request_);
    if (!invalid.ok()) return Write(invalid);
    service_->StartTranscode(context_, &request_, &result_, route_,
                             [this](grpc::Status status) { Write(std::move(status)); });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return End();
    request_.Clear();
    result_.Clear();
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  void Write(grpc::Status status) {
    response_.Clear();
    response_.set_stream_id(stream_id_);
    response_.set_sequence(request_.sequence());
    response_.set_code(status.error_code());
    if (status.ok()) {
      *response_.mutable_result() = std::move(result_);
    } else {
      response_.set_error(status.error_message());
    }
    StartWrite(&response_);
  }

  void End() {
    if (!stream_id_.empty()) {
      if (auto node = service_->affinity_.Forget(tenant_, stream_id_)) {
        service_->CloseSessionOn(*node, tenant_, stream_id_);
      }
    }
    Finish(context_->IsCancelled() ? ClientCancelled() : grpc::Status::OK);
  }

  GatewayService* service_;
  grpc::CallbackServerContext* context_;
  RouteRequest route_;
  std::string tenant_;  // the caller's API key id: its streams are its own
  bool first_ = true;
  std::string stream_id_;
  google::protobuf::RepeatedPtrField<v1::Rendition> ladder_;
  std::string container_;
  int64_t received_ = 0;
  v1::TranscodeRequest request_;
  v1::TranscodeResponse result_;
  v1::TranscodeStreamResponse response_;
};

grpc::ServerBidiReactor<v1::TranscodeRequest, v1::TranscodeStreamResponse>*
GatewayService::TranscodeStream(grpc::CallbackServerContext* context) {
  return new TranscodeStreamReactor(this, context);
}

grpc::ServerUnaryReactor* GatewayService::ListCapabilities(
    grpc::CallbackServerContext* context, const v1::ListCapabilitiesRequest* request,
    v1::ListCapabilitiesResponse* response) {
  if (auth_ != nullptr) {
    if (grpc::Status st = auth_->Check(context); !st.ok()) return FinishNow(context, st);
  }
  auto snapshot = membership_->snapshot();
  std::map<std::pair<std::string, std::string>, v1::Capability> caps;
  for (const auto& node : snapshot->nodes) {
    auto* info = response->add_orchestrators();
    info->set_id(node->id);
    info->set_address(node->connection->address());
    info->set_source(node->source == NodeSource::kStatic ? "static" : "registered");
    info->set_ready(!node->status.draining());
    info->set_in_flight(node->connection->in_flight().load());
    for (const auto& h : node->status.hardware()) info->add_hardware(h);
    for (const auto& c : node->status.capabilities()) {
      if (!request->pipeline().empty() && c.pipeline() != request->pipeline()) continue;
      const bool warm = c.state() == node::v1::MODEL_STATE_READY;
      auto* offer = response->add_offers();
      offer->set_orchestrator(node->id);
      offer->set_address(node->connection->address());
      offer->set_pipeline(c.pipeline());
      offer->set_model_id(c.model_id());
      offer->set_warm(warm);
      switch (c.state()) {
        case node::v1::MODEL_STATE_READY:
          offer->set_state("ready");
          break;
        case node::v1::MODEL_STATE_LOADING:
          offer->set_state("loading");
          break;
        case node::v1::MODEL_STATE_FAILED:
          offer->set_state("failed");
          break;
        case node::v1::MODEL_STATE_UNLOADED:
          offer->set_state("unloaded");
          break;
        default:
          offer->set_state("cold");
          break;
      }
      offer->set_capacity(c.capacity());
      offer->set_in_use(c.in_use());
      offer->set_price_per_unit(c.price_per_unit());
      offer->set_unit(c.unit());

      auto [it, fresh] = caps.try_emplace({c.pipeline(), c.model_id()});
      v1::Capability& agg = it->second;
      if (fresh) {
        agg.set_pipeline(c.pipeline());
        agg.set_model_id(c.model_id());
        agg.set_unit(c.unit());
        agg.set_min_price_per_unit(c.price_per_unit());
      }
      agg.set_orchestrators(agg.orchestrators() + 1);
      agg.set_warm_orchestrators(agg.warm_orchestrators() + (warm ? 1 : 0));
      agg.set_capacity(agg.capacity() + c.capacity());
      agg.set_in_use(agg.in_use() + c.in_use());
      agg.set_min_price_per_unit(std::min(agg.min_price_per_unit(), c.price_per_unit()));
    }
  }
  for (auto& [key, cap] : caps) *response->add_capabilities() = std::move(cap);
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GatewayService::TextToImage(grpc::CallbackServerContext* context,
                                                      const v1::TextToImageRequest* request,
                                                      v1::ImageResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->prompt().empty()) return Invalid(context, "prompt is required");
  return Route(context, request, response, "text-to-image", request->model_id(),
               &Stub::async_interface::TextToImage);
}

grpc::ServerUnaryReactor* GatewayService::ImageToImage(grpc::CallbackServerContext* context,
                                                       const v1::ImageToImageRequest* request,
                                                       v1::ImageResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->image().empty()) return Invalid(context, "image is required (PNG or JPEG bytes)");
  return Route(context, request, response, "image-to-image", request->model_id(),
               &Stub::async_interface::ImageToImage);
}

grpc::ServerUnaryReactor* GatewayService::ImageToVideo(grpc::CallbackServerContext* context,
                                                       const v1::ImageToVideoRequest* request,
                                                       v1::VideoResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->image().empty()) return Invalid(context, "image is required (PNG or JPEG bytes)");
  return Route(context, request, response, "image-to-video", request->model_id(),
               &Stub::async_interface::ImageToVideo);
}

grpc::ServerUnaryReactor* GatewayService::AudioToText(grpc::CallbackServerContext* context,
                                                      const v1::AudioToTextRequest* request,
                                                      v1::TextResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->audio().empty()) return Invalid(context, "audio is required");
  return Route(context, request, response, "audio-to-text", request->model_id(),
               &Stub::async_interface::AudioToText);
}

grpc::ServerUnaryReactor* GatewayService::SegmentAnything2(
    grpc::CallbackServerContext* context, const v1::SegmentAnything2Request* request,
    v1::MasksResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->image().empty()) return Invalid(context, "image is required (PNG or JPEG bytes)");
  return Route(context, request, response, "segment-anything-2", request->model_id(),
               &Stub::async_interface::SegmentAnything2);
}

grpc::ServerUnaryReactor* GatewayService::ImageToText(grpc::CallbackServerContext* context,
                                                      const v1::ImageToTextRequest* request,
                                                      v1::ImageToTextResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->image().empty()) return Invalid(context, "image is required (PNG or JPEG bytes)");
  return Route(context, request, response, "image-to-text", request->model_id(),
               &Stub::async_interface::ImageToText);
}

grpc::ServerUnaryReactor* GatewayService::TextToSpeech(grpc::CallbackServerContext* context,
                                                       const v1::TextToSpeechRequest* request,
                                                       v1::AudioResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (request->text().empty()) return Invalid(context, "text is required");
  return Route(context, request, response, "text-to-speech", request->model_id(),
               &Stub::async_interface::TextToSpeech);
}

grpc::ServerUnaryReactor* GatewayService::GetUsage(grpc::CallbackServerContext* context,
                                                   const v1::GetUsageRequest* request,
                                                   v1::GetUsageResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  UsageLedger* ledger = billing_ != nullptr ? billing_->ledger() : nullptr;
  if (ledger == nullptr) {
    return FinishNow(context, grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                           "this gateway keeps no usage ledger (set usage_ledger "
                                           "in its config, docs/metering.md)"));
  }
  if (request->since_unix() < 0 || request->until_unix() < 0 ||
      (request->until_unix() != 0 && request->until_unix() <= request->since_unix())) {
    return FinishNow(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                           absl::StrCat("since_unix (", request->since_unix(),
                                                        ") and until_unix (", request->until_unix(),
                                                        ") must be >= 0 and since before until")));
  }
  const std::string caller = ApiKeyIdOf(context);
  UsageQuery query;
  query.api_key_id = caller;
  if (!request->api_key_id().empty() && request->api_key_id() != caller) {
    // Another key's usage, or everyone's: operators only, and only with keys configured (an
    // open gateway cannot tell an operator from anyone else).
    const auto& admins = config_.usage_admin_key_ids;
    if (auth_ == nullptr || caller.empty() ||
        std::find(admins.begin(), admins.end(), caller) == admins.end()) {
      return FinishNow(context,
                       grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                    absl::StrCat("API key '", caller,
                                                 "' may only read its own usage (another key's "
                                                 "needs a key listed in usage_admin_key_ids)")));
    }
    query.all_keys = request->api_key_id() == "*";
    query.api_key_id = request->api_key_id();
  }
  if (request->since_unix() > 0) query.since = absl::FromUnixSeconds(request->since_unix());
  if (request->until_unix() > 0) query.until = absl::FromUnixSeconds(request->until_unix());
  auto totals = ledger->Totals(query);
  if (!totals.ok()) return FinishNow(context, ToGrpcStatus(totals.status()));
  for (const auto& t : *totals) {
    auto* out = response->add_totals();
    out->set_api_key_id(t.api_key_id);
    out->set_pipeline(t.pipeline);
    out->set_model_id(t.model_id);
    out->set_unit(t.unit);
    out->set_jobs(t.jobs);
    out->set_units(t.units);
    out->set_amount(t.amount);
    out->set_disputed_jobs(t.disputed_jobs);
    response->set_jobs(response->jobs() + t.jobs);
    response->set_amount(response->amount() + t.amount);
  }
  return FinishNow(context, grpc::Status::OK);
}

}  // namespace switchyard::gateway
