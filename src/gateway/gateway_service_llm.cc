// The LLM RPC of the public service: server streaming of tokens, relayed from an orchestrator's
// LLM stream message by message.
//
// One LlmRelay per client call is both the server-side write reactor and the owner of the
// client-side read reactors (one per attempt). Flow control is strict ping-pong: a message read
// from the orchestrator is written to the client, and the next read starts only once that write
// is done, so at most one StartWrite and one StartRead are outstanding. The relay deletes itself
// once the server side is done (OnDone) and no orchestrator call is active.
#include <spdlog/spdlog.h>

#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/metering.h"
#include "common/status.h"
#include "common/tsan_handoff.h"
#include "gateway/client_cancelled.h"
#include "gateway/gateway_service.h"

namespace switchyard::gateway {
namespace {

using Stub = node::v1::Orchestrator::Stub;

bool RetryableCode(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

std::string LlmRequestId(const grpc::CallbackServerContext* context,
                         const std::function<uint64_t()>& random) {
  const auto& md = context->client_metadata();
  auto it = md.find("x-request-id");
  if (it != md.end() && !it->second.empty() && it->second.size() <= 128) {
    return std::string(it->second.data(), it->second.size());
  }
  return NewHexId(random);
}

class LlmRelay final : public grpc::ServerWriteReactor<v1::LLMResponse> {
 public:
  LlmRelay(grpc::CallbackServerContext* context, const v1::LLMRequest& request,
           const GatewayConfig& config, Membership* membership, Router* router, RouteRequest route,
           std::string request_id, JobMetrics* job_metrics, JobBilling* billing,
           std::string api_key_id, std::string job_id)
      : context_(context),
        request_(request),
        config_(config),
        membership_(membership),
        router_(router),
        request_id_(std::move(request_id)),
        job_metrics_(job_metrics),
        billing_(billing),
        api_key_id_(std::move(api_key_id)),
        job_id_(std::move(job_id)),
        route_(std::move(route)) {
    router_->RecordJob();
    StartAttempt();
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    Call* held = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_in_flight_ = false;
      held = std::exchange(held_, nullptr);
      if (!ok) {
        // The client is gone: stop the orchestrator and end the call, but only once the
        // orchestrator call is over. That call is a child of this one (it inherits deadline and
        // cancellation), and gRPC frees this call after Finish without waiting for its children:
        // a child finishing after that touched freed memory ('pure virtual method called' in
        // grpc_call_unref, seen in the soak). OnAttemptDone finishes it then.
        cancelled_ = true;
        if (current_ != nullptr && client_active_) {
          current_->context->TryCancel();
          pending_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
        } else {
          finish = TakeFinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
        }
      } else if (pending_status_) {
        finish = TakeFinishLocked(std::move(*pending_status_));
        pending_status_.reset();
      } else if (client_active_ && !finished_) {
        // The hold taken in OnMessage keeps the attempt's call alive until this read is started
        // (gRPC never runs reactions inline, so starting it under mu_ is safe).
        current_->StartRead(&current_->message);
      }
    }
    // Released after the read (if any) is started: from here the orchestrator call may end.
    if (held != nullptr) held->RemoveHold();
    if (finish) Finish(std::move(*finish));
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (current_ != nullptr && client_active_) current_->context->TryCancel();
  }

  void OnDone() override {
    bool del = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      server_done_ = true;
      if (client_active_ && current_ != nullptr) current_->context->TryCancel();
      // Not while an attempt's OnAttemptDone still runs (it may be in Finish): it deletes then.
      del = !client_active_ && in_attempt_done_ == 0;
    }
    if (del) delete this;
  }

 private:
  // One call to one orchestrator.
  struct Call final : public grpc::ClientReadReactor<v1::LLMResponse> {
    LlmRelay* relay = nullptr;
    std::shared_ptr<const NodeView> node;
    std::unique_ptr<grpc::ClientContext> context;
    v1::LLMResponse message;
    absl::Time start = absl::Now();
    bool warm = false;

    void OnReadDone(bool ok) override {
      tsan::TakeOver(this);  // handed over in StartAttempt
      if (ok) relay->OnMessage(this);
      // Not ok: the stream ended; OnDone follows with its status.
    }
    // Last statement: the relay may delete this attempt (and itself) in there.
    void OnDone(const grpc::Status& status) override {
      tsan::TakeOver(this);
      relay->OnAttemptDone(this, status);
    }
  };

  // Picks an orchestrator and starts a call there, or finishes the client's call.
  void StartAttempt() {
    grpc::Status error;
    Call* attempt = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      if (cancelled_ || context_->IsCancelled()) {
        error = ClientCancelled();
      } else {
        auto snapshot = membership_->snapshot();
        auto choice = router_->Pick(*snapshot, route_);
        if (!choice.ok()) {
          error = attempts_ > 0
                      ? grpc::Status(last_status_.error_code(),
                                     absl::StrCat(last_status_.error_message(), " (after ",
                                                  attempts_, " attempt", attempts_ == 1 ? "" : "s",
                                                  "; no other orchestrator available)"))
                      : ToGrpcStatus(choice.status());
        } else {
          ++attempts_;
          attempts_list_.push_back(std::make_unique<Call>());
          attempt = attempts_list_.back().get();
          attempt->relay = this;
          attempt->node = choice->node;
          attempt->warm = choice->warm;
          current_ = attempt;
          client_active_ = true;
          // The orchestrator call inherits the client's deadline and cancellation.
          attempt->context = grpc::ClientContext::FromCallbackServerContext(*context_);
          if (context_->deadline() == std::chrono::system_clock::time_point::max()) {
            attempt->context->set_deadline(std::chrono::system_clock::now() +
                                           std::chrono::milliseconds(config_.default_timeout_ms));
          }
          attempt->context->AddMetadata("x-request-id", request_id_);
          attempt->node->connection->in_flight().fetch_add(1);
          attempt->node->connection->stub()->async()->LLM(attempt->context.get(), &request_,
                                                          attempt);
          attempt->StartRead(&attempt->message);
          // gRPC runs the attempt's reactions on its own threads, ordered after StartCall
          // through its (uninstrumented) core: tell ThreadSanitizer (src/common/tsan_handoff.h).
          tsan::HandOff(attempt);
          attempt->StartCall();
          return;
        }
      }
      auto finish = TakeFinishLocked(error);
      if (!finish) return;
      error = *finish;
    }
    if (error.error_code() != grpc::StatusCode::CANCELLED) {
      spdlog::info("[{}] llm '{}' answered {}: {}", request_id_, route_.model_id,
                   GrpcCodeName(error.error_code()), error.error_message());
    }
    Finish(std::move(error));
  }

  void OnMessage(Call* attempt) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_ || cancelled_) {
        attempt->context->TryCancel();
        return;
      }
      forwarded_ = true;
      out_ = std::move(attempt->message);
      attempt->message.Clear();
      if (out_.has_job()) {
        // The last message: the units are checked and the job recorded before it is sent.
        SettleLocked(*attempt);
        auto* job = out_.mutable_job();
        job->set_request_id(request_id_);
        job->set_orchestrator(attempt->node->id);
        job->set_attempts(attempts_);
      } else {
        for (const auto& choice : out_.choices()) {
          if (!choice.delta().content().empty()) {
            ++content_messages_;
            break;
          }
        }
      }
      write_in_flight_ = true;
      // The next read of this attempt starts in OnWriteDone, outside its reactions. Without a
      // hold, the orchestrator's status could end the call in between (its last read done, the
      // status arriving), and that StartRead would use a call gRPC had already freed ('pure
      // virtual method called' in grpc_call_unref under steady LLM load, found by the soak).
      attempt->AddHold();
      held_ = attempt;
      StartWrite(&out_);
    }
  }

  void OnAttemptDone(Call* attempt, const grpc::Status& status) {
    bool retry = false, del = false;
    std::optional<grpc::Status> finish;
    {
      // The attempt's fields were set under mu_ (StartAttempt) and are read under it, on gRPC's
      // thread: an ordering ThreadSanitizer sees, unlike gRPC's own handoff of the call.
      std::lock_guard<std::mutex> lock(mu_);
      attempt->node->connection->in_flight().fetch_sub(1);
      client_active_ = false;
      ++in_attempt_done_;
      if (server_done_) {
        // The client's call is over: nothing to relay; deleted below.
      } else if (!finished_) {
        const bool deadline_left = std::chrono::system_clock::now() < context_->deadline();
        if (!status.ok()) {
          spdlog::warn("[{}] llm '{}' attempt {} on {} failed: {}: {}", request_id_,
                       route_.model_id, attempts_, attempt->node->id,
                       GrpcCodeName(status.error_code()), status.error_message());
        }
        const bool client_gone = cancelled_ || context_->IsCancelled();
        AttemptOutcome outcome = AttemptOutcome::kClientError;
        if (status.ok()) {
          // A node that misreported the units is penalised like a failed attempt.
          outcome = disputed_ ? AttemptOutcome::kNodeFailure : AttemptOutcome::kSuccess;
        } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
          outcome = AttemptOutcome::kNodeFailure;
        } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          outcome = AttemptOutcome::kRefused;
        }
        if (!client_gone) {
          router_->ReportAttempt(*attempt->node, route_.model_id, outcome,
                                 absl::Now() - attempt->start, !attempt->warm);
        }
        // Once a token reached the client the stream cannot move to another node.
        if (!status.ok() && RetryableCode(status.error_code()) && !forwarded_ &&
            attempts_ < config_.max_attempts && deadline_left && !client_gone &&
            router_->TryRetry()) {
          route_.excluded.insert(attempt->node->id);
          last_status_ = status;
          retry = true;
        } else if (write_in_flight_) {
          pending_status_ = status;  // finished once the last write is done
        } else {
          // A client that went away (OnWriteDone) left its status to be sent now.
          finish = TakeFinishLocked(pending_status_ ? *pending_status_ : status);
          pending_status_.reset();
        }
        if (status.ok() && !retry) {
          spdlog::info("[{}] llm '{}' done on {} in {:.0f} ms (attempts {})", request_id_,
                       route_.model_id, attempt->node->id,
                       absl::ToDoubleMilliseconds(absl::Now() - start_), attempts_);
        }
      }
    }
    if (finish) {
      Finish(std::move(*finish));
    } else if (retry) {
      StartAttempt();
    }
    // The server side may have reached OnDone meanwhile (after Finish, on another thread); it left
    // the relay to be deleted here, once nothing here uses it any more.
    {
      std::lock_guard<std::mutex> lock(mu_);
      --in_attempt_done_;
      del = server_done_ && !client_active_ && in_attempt_done_ == 0;
    }
    if (del) delete this;
  }

  // Checks the last message's units (prompt + completion tokens, against the usage it carries, the
  // request's max_tokens and the messages relayed) and records the job; see JobBilling::Settle.
  void SettleLocked(const Call& attempt) {
    if (billing_ == nullptr || settled_) return;
    settled_ = true;
    JobBilling::Job job;
    job.job_id = job_id_;
    job.request_id = request_id_;
    job.api_key_id = api_key_id_;
    job.pipeline = "llm";
    job.model_id = route_.model_id;
    job.orchestrator = attempt.node->id;
    job.reported_units = out_.job().units();
    job.reported_price_per_unit = out_.job().price_per_unit();
    // attempt.node is the view the router picked it from: its advertised price is the one paid.
    job.advertised_price_per_unit = AdvertisedPrice(*attempt.node, "llm", route_.model_id);
    job.max_price_per_unit = route_.max_price_per_unit;
    job.counted = metering::LlmUnits(
        out_.usage(), request_.has_max_tokens() ? request_.max_tokens() : 256, content_messages_);
    disputed_ = !billing_->Settle(job);
  }

  // Marks the call finished; returns the status to pass to Finish (nullopt if already done).
  std::optional<grpc::Status> TakeFinishLocked(grpc::Status status) {
    if (finished_) return std::nullopt;
    finished_ = true;
    if (job_metrics_ != nullptr) {
      job_metrics_->RecordJob("llm", route_.model_id, status.error_code(), absl::Now() - start_);
    }
    return status;
  }

  grpc::CallbackServerContext* context_;
  const v1::LLMRequest request_;  // a copy owned by the relay, for every attempt
  const GatewayConfig& config_;
  Membership* membership_;
  Router* router_;
  const std::string request_id_;
  const absl::Time start_ = absl::Now();
  JobMetrics* const job_metrics_;  // the service's, or null
  JobBilling* const billing_;      // the service's, or null (not metered)
  const std::string api_key_id_;
  const std::string job_id_;  // the usage ledger's key

  std::mutex mu_;
  RouteRequest route_;  // guarded by mu_ after construction
  int attempts_ = 0;
  grpc::Status last_status_;
  // Every attempt made, kept until the relay is deleted (an attempt may be the one whose OnDone
  // is running when the next one starts).
  std::vector<std::unique_ptr<Call>> attempts_list_;
  Call* current_ = nullptr;
  Call* held_ = nullptr;        // the attempt holding its call open for OnWriteDone's next read
  bool client_active_ = false;  // current_'s call has not reached OnDone
  bool write_in_flight_ = false;
  bool forwarded_ = false;    // a message reached the client: no more retries
  bool finished_ = false;     // Finish called (or decided)
  bool server_done_ = false;  // OnDone ran
  int in_attempt_done_ = 0;   // OnAttemptDone calls running: OnDone must not delete then
  bool cancelled_ = false;
  int64_t content_messages_ = 0;  // relayed messages that carried new text
  bool settled_ = false;          // the job's units were checked (once)
  bool disputed_ = false;         // and did not match
  std::optional<grpc::Status> pending_status_;
  v1::LLMResponse out_;
};

}  // namespace

grpc::ServerWriteReactor<v1::LLMResponse>* GatewayService::LLM(grpc::CallbackServerContext* context,
                                                               const v1::LLMRequest* request) {
  // The API key check first (MakeRoute's), so a caller without a valid key learns nothing else.
  auto route = MakeRoute(context, "llm", request->model());
  if (request->model().empty() && route.ok()) {
    class Invalid final : public grpc::ServerWriteReactor<v1::LLMResponse> {
     public:
      Invalid() {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "model is required (see ListCapabilities)"));
      }
      void OnDone() override { delete this; }
    };
    return new Invalid();
  }
  if (!route.ok()) {
    class Refused final : public grpc::ServerWriteReactor<v1::LLMResponse> {
     public:
      explicit Refused(grpc::Status status) { Finish(std::move(status)); }
      void OnDone() override { delete this; }
    };
    return new Refused(ToGrpcStatus(route.status()));
  }
  std::string request_id = LlmRequestId(context, random_);
  std::string job_id = LedgerJobId(context, request_id);
  return new LlmRelay(context, *request, config_, membership_, &router_, *std::move(route),
                      std::move(request_id), job_metrics_, billing_, ApiKeyIdOf(context),
                      std::move(job_id));
}

}  // namespace switchyard::gateway
