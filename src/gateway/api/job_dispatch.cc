#include "gateway/api/job_dispatch.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/pipelines.h"
#include "common/status.h"
#include "gateway/api/client_cancelled.h"
#include "gateway/api/inference_proxy.h"

namespace switchyard::gateway {

std::string NewHexId(const std::function<uint64_t()>& random) {
  const uint64_t high = random();
  const uint64_t low = random();
  return absl::StrFormat("%016x%016x", high, low);
}

CallIdentity CallIdentity::Of(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                              std::string api_key_id, const std::function<uint64_t()>& random) {
  CallIdentity id;
  id.api_key_id = std::move(api_key_id);
  auto it = metadata.find("x-request-id");
  if (it != metadata.end() && !it->second.empty() && it->second.size() <= 128) {
    id.request_id.assign(it->second.data(), it->second.size());
    id.job_id = absl::StrCat(id.request_id, "~", NewHexId(random));
  } else {
    id.request_id = NewHexId(random);
    id.job_id = id.request_id;
  }
  return id;
}

void AddReceiptMetadata(const AttemptPlan& plan, grpc::ClientContext* context) {
  if (!plan.gateway_id.empty()) context->AddMetadata(kGatewayIdMetadata, plan.gateway_id);
  if (plan.identity != nullptr) context->AddMetadata(kJobIdMetadata, plan.identity->job_id);
}

JobDispatchPtr JobDispatch::Create(const DispatchEnv& env, DispatchPolicy policy,
                                   RouteRequest route, CallIdentity identity,
                                   absl::Time client_deadline,
                                   std::unique_ptr<DispatchTransport> transport) {
  JobDispatchPtr job(
      new JobDispatch(env, policy, std::move(route), std::move(identity), client_deadline));
  job->owned_transport_ = std::move(transport);
  job->transport_ = job->owned_transport_.get();
  return job;
}

JobDispatchPtr JobDispatch::Create(const DispatchEnv& env, DispatchPolicy policy,
                                   RouteRequest route, CallIdentity identity,
                                   absl::Time client_deadline, DispatchTransport* transport) {
  JobDispatchPtr job(
      new JobDispatch(env, policy, std::move(route), std::move(identity), client_deadline));
  job->transport_ = transport;
  return job;
}

JobDispatch::JobDispatch(const DispatchEnv& env, DispatchPolicy policy, RouteRequest route,
                         CallIdentity identity, absl::Time client_deadline)
    : env_(env),
      policy_(policy),
      route_(std::move(route)),
      identity_(std::move(identity)),
      start_(env.now()),
      deadline_(client_deadline) {
  if (deadline_ == absl::InfiniteFuture()) {
    deadline_ = start_ + absl::Milliseconds(env_.config->default_timeout_ms);
  }
}

void JobDispatch::Start() {
  if (policy_.is_job) env_.router->RecordJob();
  Attempt();
}

std::string JobDispatch::Describe() const {
  return absl::StrCat(route_.pipeline, *policy_.what ? " " : "", policy_.what, " '",
                      LogSafe(route_.model_id), "'");
}

absl::StatusOr<RouteChoice> JobDispatch::Pick() const {
  SnapshotPtr snapshot = env_.snapshot();
  if (!policy_.any_pipeline) return env_.router->Pick(*snapshot, route_);
  Router* router = env_.router;
  auto node = PickInferenceNode(*snapshot, route_.model_id, route_.excluded,
                                [router](const std::string& id) { return router->IsEjected(id); });
  if (!node.ok()) return node.status();
  RouteChoice choice{*node, false};
  for (const auto& cap : (*node)->status.capabilities()) {
    if (cap.model_id() == route_.model_id && cap.pipeline() != pipelines::kTranscode) {
      choice.warm = cap.state() == node::v1::MODEL_STATE_READY;
      break;
    }
  }
  return choice;
}

void JobDispatch::Attempt() {
  if (transport_->ClientCancelled()) return Finish(ClientCancelled());
  if (DeadlinePassed()) return FinishDeadline();
  auto choice = Pick();
  if (!choice.ok()) {
    // Every node that could take it refused for capacity: wait for room. A job already waiting
    // for room goes on waiting when no node is routable at the moment it wakes (its node
    // dropped for a late heartbeat, or restarting): one is routed to again as soon as it is
    // heard from, and the job's deadline still bounds the wait.
    if (policy_.waits_for_room && (!refused_.empty() || waiting_for_room_)) return Park();
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
  if (!choice->warm) {
    RecordDemand(WarmDemandTracker::Kind::kColdStart);
  } else if (choice->full) {
    RecordDemand(WarmDemandTracker::Kind::kQueued);
  }
  committed_ = false;
  AttemptPlan plan;
  plan.node = node_;
  plan.attempt = attempts_;
  plan.deadline = deadline_;
  if (policy_.attempt_timeout) {
    plan.deadline = std::min(
        deadline_, env_.now() + absl::Milliseconds(env_.config->AttemptTimeoutMs(route_.pipeline)));
  }
  plan.identity = &identity_;
  plan.tenant = tenant_;
  plan.gateway_id = env_.config->gateway_id;
  attempt_start_ = env_.now();
  if (policy_.is_job && node_->connection != nullptr) node_->connection->in_flight().fetch_add(1);
  auto self = shared_from_this();
  transport_->StartAttempt(
      plan, [self](AttemptResult result) { self->OnAttemptDone(std::move(result)); });
}

void JobDispatch::Settle(const SettleUnits& units) {
  if (settled_ || !policy_.is_job || env_.billing == nullptr) return;
  settled_ = true;
  JobBilling::Job job;
  job.job_id = identity_.job_id;
  job.request_id = identity_.request_id;
  job.api_key_id = identity_.api_key_id;
  job.pipeline = route_.pipeline;
  job.model_id = route_.model_id;
  job.orchestrator = node_->id;
  job.reported_units = units.reported_units;
  job.reported_price_per_unit = units.reported_price_per_unit;
  // node_ is the view the node was picked from: the price it advertised then is the one paid.
  job.advertised_price_per_unit =
      AdvertisedPrice(*node_, policy_.any_pipeline ? "" : route_.pipeline, route_.model_id);
  job.max_price_per_unit = route_.max_price_per_unit;
  job.max_total_price = route_.max_total_price;
  job.counted = units.counted;
  job.receipts = units.receipts;
  job.receipt = units.receipt ? &*units.receipt : nullptr;
  job.reported_model_id = units.reported_model_id;
  job.request_sha256 = units.request_sha256;
  job.result_sha256 = units.result_sha256;
  job.gateway_id = env_.config->gateway_id;
  job.status_key = node_->status.identity().public_key();
  disputed_ = !env_.billing->Settle(job);
}

void JobDispatch::Succeed(const SettleUnits* units, absl::Duration latency) {
  // The units are checked and the job recorded before the client gets the response; a node
  // that misreported them is not paid and is penalised like a failed attempt (the client still
  // gets the result: the work was done).
  if (units != nullptr) Settle(*units);
  if (policy_.is_job) {
    env_.router->ReportAttempt(*node_, route_.model_id,
                               disputed_ ? AttemptOutcome::kNodeFailure : AttemptOutcome::kSuccess,
                               latency, !warm_);
    spdlog::info("[{}] {} done on {} in {:.0f} ms (attempts {})", LogSafe(identity_.request_id),
                 Describe(), node_->id, absl::ToDoubleMilliseconds(env_.now() - start_), attempts_);
  }
  Finish(grpc::Status::OK);
}

void JobDispatch::OnAttemptDone(AttemptResult result) {
  grpc::Status status = std::move(result.status);
  const grpc::StatusCode code = status.error_code();
  if (policy_.is_job) {
    if (node_->connection != nullptr) node_->connection->in_flight().fetch_sub(1);
    // A slot freed on that node, unless the node refused the job for capacity: then it held no
    // slot, and waking a waiting job would only send it to be refused in turn (waiting jobs
    // would keep waking each other, hammering a full node with attempts until it had room).
    if (code != grpc::StatusCode::RESOURCE_EXHAUSTED && env_.room != nullptr) env_.room->Signal();
  }
  const absl::Duration latency = env_.now() - attempt_start_;
  if (status.ok()) {
    ThreadPool* settle_threads = env_.settle_threads;
    if (result.units && settle_threads != nullptr && policy_.is_job && !settled_) {
      // The ledger's write waits (a disk flush, or a round trip to PostgreSQL): not on this gRPC
      // callback thread, which every other call needs too.
      settle_threads->Post([self = shared_from_this(), units = std::move(*result.units), latency] {
        self->Succeed(&units, latency);
      });
      return;
    }
    return Succeed(result.units ? &*result.units : nullptr, latency);
  }
  const bool cancelled = transport_->ClientCancelled();
  if (code == grpc::StatusCode::RESOURCE_EXHAUSTED && !cancelled && result.tenant_limited) {
    return OnTenantLimited(std::move(status));
  }
  // DEADLINE_EXCEEDED before the job's own deadline: the attempt timed out on that node. (Without
  // a per-try timeout the attempt's deadline is the job's: DEADLINE_EXCEEDED is then final.)
  const bool attempt_timed_out = policy_.attempt_timeout &&
                                 code == grpc::StatusCode::DEADLINE_EXCEEDED && !DeadlinePassed() &&
                                 !cancelled;
  if (attempt_timed_out) {
    status = grpc::Status(
        code, absl::StrCat("attempt timed out after ",
                           env_.config->AttemptTimeoutMs(route_.pipeline), " ms on ", node_->id));
  }
  if (code == grpc::StatusCode::CANCELLED && !cancelled) {
    // Reported as the node's failure, not as if the client had cancelled.
    status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          absl::StrCat("the call was cancelled on ", node_->id, " (",
                                       status.error_message(), "); it may be shutting down"));
  }
  // CANCELLED that the client did not ask for came from the node's side: its gRPC server shut
  // down under the call (a call arriving just as it stops is failed by gRPC core with CANCELLED
  // "CANCELLED", grpc/grpc#41785; one still running when its shutdown grace ends is cancelled).
  // The node did not do the job: another one may.
  const bool node_cancelled = code == grpc::StatusCode::CANCELLED && !cancelled;
  AttemptOutcome outcome = AttemptOutcome::kClientError;
  if (code == grpc::StatusCode::UNAVAILABLE || attempt_timed_out || node_cancelled) {
    outcome = AttemptOutcome::kNodeFailure;
  } else if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    outcome = AttemptOutcome::kRefused;
  }
  // A node that took the job and failed ends the wait for room: from here the job fails over
  // (or reports that failure) like one that never waited.
  if (outcome != AttemptOutcome::kRefused) waiting_for_room_ = false;
  if (!cancelled && policy_.is_job) {
    env_.router->ReportAttempt(*node_, route_.model_id, outcome, latency, !warm_);
  }
  spdlog::warn("[{}] {} attempt {} on {} failed: {}: {}", LogSafe(identity_.request_id), Describe(),
               attempts_, node_->id, GrpcCodeName(code),
               LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
  if (cancelled) return Finish(ClientCancelled());
  // Not retryable: the client's error, out of time, or part of the answer already sent.
  if (outcome == AttemptOutcome::kClientError || DeadlinePassed() || committed_) {
    return Finish(std::move(status));
  }
  last_status_ = status;
  route_.excluded.insert(node_->id);
  if (outcome == AttemptOutcome::kRefused) {
    RecordDemand(WarmDemandTracker::Kind::kRefused);
    refused_.insert(node_->id);
    return Retry("refused");
  }
  ++failures_;
  if (failures_ >= env_.config->max_attempts) return Finish(std::move(status));
  Retry("node_failure");
}

void JobDispatch::Retry(const char* reason) {
  if (!policy_.is_job || env_.router->TryRetry()) {
    if (policy_.is_job && env_.metrics != nullptr)
      env_.metrics->RecordRetry(route_.pipeline, reason);
    return Attempt();
  }
  // Another node may have room later: a job that waits does; the others report the refusal.
  if (last_status_.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && policy_.waits_for_room) {
    return Park();
  }
  Finish(grpc::Status(last_status_.error_code(),
                      absl::StrCat(last_status_.error_message(),
                                   " (not retried: the gateway's retry budget is spent)")));
}

// A per-key limit on one node: another node may take the call, but waiting in the queue for
// room would not help (the key's own sessions hold it), so with no other node the client gets
// the node's RESOURCE_EXHAUSTED, which names the limit, at once.
void JobDispatch::OnTenantLimited(grpc::Status status) {
  if (policy_.is_job) {
    env_.router->ReportAttempt(*node_, route_.model_id, AttemptOutcome::kClientError,
                               env_.now() - attempt_start_, !warm_);
  }
  spdlog::info("[{}] {} attempt {} on {} refused: {}", LogSafe(identity_.request_id), Describe(),
               attempts_, node_->id, LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
  waiting_for_room_ = false;
  last_status_ = status;
  route_.excluded.insert(node_->id);
  if (DeadlinePassed() || (policy_.is_job && !env_.router->TryRetry())) {
    return Finish(std::move(status));
  }
  Attempt();
}

// Waits in the gateway queue until a node may have room, then tries the refusing nodes again.
void JobDispatch::Park() {
  const bool first_wait = !parked_since_.has_value();
  if (!parked_since_) parked_since_ = env_.now();
  park_start_ = env_.now();
  auto self = shared_from_this();
  if (env_.room == nullptr ||
      !env_.room->Park(deadline_, [self](bool expired) { self->OnWake(expired); })) {
    RecordDemand(WarmDemandTracker::Kind::kRefused);
    return Finish(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("every orchestrator for ", route_.pipeline, " '", route_.model_id,
                     "' is busy and the gateway's queue is full (",
                     env_.room != nullptr ? env_.room->capacity() : 0, " jobs waiting)")));
  }
  // Counted once per job. The wake may already run on another thread: it changes the route's
  // excluded nodes only, not the pipeline and model read here.
  if (first_wait) RecordDemand(WarmDemandTracker::Kind::kWaited);
}

void JobDispatch::RecordDemand(WarmDemandTracker::Kind kind) {
  // KServe calls name a model under no pipeline: nodes are told of their routes' demand only.
  if (env_.demand == nullptr || !policy_.is_job || policy_.any_pipeline) return;
  env_.demand->Record(route_.pipeline, route_.model_id, kind);
}

void JobDispatch::OnWake(bool expired) {
  if (env_.metrics != nullptr) {
    env_.metrics->RecordQueueWait(route_.pipeline, env_.now() - park_start_);
  }
  if (expired) return FinishDeadline();
  for (const auto& id : refused_) route_.excluded.erase(id);
  refused_.clear();
  waiting_for_room_ = true;
  Attempt();
}

void JobDispatch::FinishDeadline() {
  std::string why = "deadline exceeded";
  if (parked_since_) {
    why =
        absl::StrCat("deadline exceeded while waiting ",
                     static_cast<int64_t>(absl::ToDoubleMilliseconds(env_.now() - *parked_since_)),
                     " ms at the gateway for an orchestrator with room");
  }
  if (attempts_ > 0) absl::StrAppend(&why, " (last attempt: ", last_status_.error_message(), ")");
  Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, why));
}

void JobDispatch::Finish(grpc::Status status) {
  if (finished_) return;
  finished_ = true;
  const grpc::StatusCode code = status.error_code();
  if (!status.ok() && code != grpc::StatusCode::CANCELLED) {
    spdlog::info("[{}] {} answered {}: {}", LogSafe(identity_.request_id), Describe(),
                 GrpcCodeName(code), LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
  } else if (!status.ok()) {
    spdlog::debug("[{}] {} {}", LogSafe(identity_.request_id), Describe(),
                  LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
  }
  if (policy_.is_job && env_.job_log != nullptr) {
    if (status.ok()) {
      env_.job_log->RecordSuccess(env_.now());
    } else if (code != grpc::StatusCode::CANCELLED) {
      env_.job_log->RecordFailure({env_.now(), identity_.request_id, route_.pipeline,
                                   route_.model_id, node_ ? node_->id : "", GrpcCodeName(code),
                                   status.error_message(), attempts_});
    }
  }
  if (policy_.is_job && env_.metrics != nullptr) {
    env_.metrics->RecordJob(route_.pipeline, route_.model_id, code, env_.now() - start_);
  }
  transport_->Finish(std::move(status),
                     FinishInfo{identity_.request_id, node_ ? node_->id : "", attempts_});
}

}  // namespace switchyard::gateway
