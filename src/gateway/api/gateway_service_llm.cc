// The LLM RPC of the public service: server streaming of tokens, relayed from an orchestrator's
// LLM stream message by message. JobDispatch decides where each attempt runs, whether a failure
// is retried (never once a message reached the client) and settles the job; the relay is its
// transport.
//
// One LlmRelay per client call is both the server-side write reactor and the owner of the
// client-side read reactors (one per attempt). Flow control is strict ping-pong: a message read
// from the orchestrator is written to the client, and the next read starts only once that write
// is done, so at most one StartWrite and one StartRead are outstanding. The relay deletes itself
// once the server side is done (OnDone) and no orchestrator call is active.
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/metering.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "common/tsan_handoff.h"
#include "gateway/api/gateway_service.h"
#include "gateway/api/unary_dispatch.h"

namespace switchyard::gateway {
namespace {

class LlmRelay final : public grpc::ServerWriteReactor<v1::LLMResponse>, private DispatchTransport {
 public:
  LlmRelay(grpc::CallbackServerContext* context, const v1::LLMRequest& request,
           const DispatchEnv& env, RouteRequest route, CallIdentity identity)
      : context_(context),
        request_(request),
        max_total_price_(route.max_total_price),
        settle_threads_(env.settle_threads) {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      job_ = JobDispatch::Create(env, DispatchPolicy::LlmStream(), std::move(route),
                                 std::move(identity), ClientDeadline(context),
                                 static_cast<DispatchTransport*>(this));
      job_->Start();
      finish = TakeFinishLocked();
    }
    if (finish) Finish(std::move(*finish));
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    Call* held = nullptr;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      held = std::exchange(held_, nullptr);
      if (!ok) {
        // The client is gone: stop the orchestrator and end the call, but only once the
        // orchestrator call is over. That call is a child of this one (it inherits deadline and
        // cancellation), and gRPC frees this call after Finish without waiting for its children:
        // a child finishing after that touched freed memory ('pure virtual method called' in
        // grpc_call_unref, seen in the soak). The job finishes when the attempt ends.
        cancelled_ = true;
        if (current_ != nullptr && client_active_) current_->context->TryCancel();
      } else if (!pending_status_ && client_active_ && !job_->finished()) {
        // The hold taken in OnMessage keeps the attempt's call alive until this read is started
        // (gRPC never runs reactions inline, so starting it under mu_ is safe).
        current_->StartRead(&current_->message);
      }
      // The job's answer, held back while this write was in flight.
      if (pending_status_) finish_now_ = std::exchange(pending_status_, std::nullopt);
      finish = TakeFinishLocked();
    }
    // Released after the read (if any) is started: from here the orchestrator call may end.
    if (held != nullptr) held->RemoveHold();
    if (finish) Finish(std::move(*finish));
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (current_ != nullptr && client_active_) current_->context->TryCancel();
  }

  void OnDone() override {
    bool del = false;
    {
      absl::MutexLock lock(&mu_);
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
    std::unique_ptr<grpc::ClientContext> context;
    v1::LLMResponse message;
    DispatchTransport::Done done;  // the job's: told once, when the call ends

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

  // DispatchTransport, called by the job under mu_.
  void StartAttempt(const AttemptPlan& plan, Done done) override {
    mu_.AssertHeld();
    attempts_list_.push_back(std::make_unique<Call>());
    Call* attempt = attempts_list_.back().get();
    attempt->relay = this;
    attempt->done = std::move(done);
    current_ = attempt;
    client_active_ = true;
    // The orchestrator call inherits the client's deadline and cancellation.
    attempt->context = grpc::ClientContext::FromCallbackServerContext(*context_);
    attempt->context->set_deadline(absl::ToChronoTime(plan.deadline));
    attempt->context->AddMetadata("x-request-id", plan.identity->request_id);
    AddReceiptMetadata(plan, attempt->context.get());
    result_digest_.Finish();  // a new attempt's messages: start over
    plan.node->connection->stub()->async()->LLM(attempt->context.get(), &request_, attempt);
    attempt->StartRead(&attempt->message);
    // gRPC runs the attempt's reactions on its own threads, ordered after StartCall through its
    // (uninstrumented) core: tell ThreadSanitizer (src/common/tsan_handoff.h).
    tsan::HandOff(attempt);
    attempt->StartCall();
  }

  void Finish(grpc::Status status, const FinishInfo&) override {
    mu_.AssertHeld();
    status = WithTotalCap(std::move(status), max_total_price_);
    if (write_in_flight_) {
      pending_status_ = std::move(status);  // finished once the last write is done
    } else {
      finish_now_ = std::move(status);
    }
  }

  bool ClientCancelled() const override {
    mu_.AssertHeld();
    // After OnDone the server context may be gone: not asked then.
    return server_done_ || cancelled_ || context_->IsCancelled();
  }

  void OnMessage(Call* attempt) {
    absl::MutexLock lock(&mu_);
    if (job_->finished() || cancelled_) {
      attempt->context->TryCancel();
      return;
    }
    job_->Commit();  // a message reaches the client: the stream cannot move any more
    out_ = std::move(attempt->message);
    attempt->message.Clear();
    // Every message of the attempt, as the node hashed them for its receipt.
    result_digest_.AddWithoutJob(out_);
    std::optional<SettleUnits> settle;
    if (out_.has_job()) {
      // The last message: the units (prompt + completion tokens, against the usage it carries,
      // the request's max_tokens and the messages relayed) and the receipt are checked and the
      // job recorded before it is sent.
      settle.emplace(SettleUnits{
          out_.job().units(), out_.job().price_per_unit(),
          metering::LlmUnits(out_.usage(), request_.has_max_tokens() ? request_.max_tokens() : 256,
                             content_messages_)});
      settle->receipts = true;
      if (out_.job().has_receipt()) settle->receipt = out_.job().receipt();
      settle->reported_model_id = out_.job().model_id();
      settle->request_sha256 = RequestDigest(request_);
      settle->result_sha256 = result_digest_.Finish();
    } else {
      for (const auto& choice : out_.choices()) {
        if (!choice.delta().content().empty()) {
          ++content_messages_;
          break;
        }
      }
    }
    // From here until OnWriteDone the message is "being written": a job answer arriving meanwhile
    // waits for it (pending_status_). The next read of this attempt starts in OnWriteDone, outside
    // its reactions. Without a hold, the orchestrator's status could end the call in between (its
    // last read done, the status arriving), and that StartRead would use a call gRPC had already
    // freed ('pure virtual method called' in grpc_call_unref under steady LLM load, found by the
    // soak). The hold also keeps the relay alive until OnWriteDone: it is deleted only once the
    // attempt's call is done.
    write_in_flight_ = true;
    attempt->AddHold();
    held_ = attempt;
    if (!settle) {
      StartWrite(&out_);
      return;
    }
    if (settle_threads_ == nullptr) {
      job_->Settle(*settle);
      WriteLastLocked();
      return;
    }
    // The ledger's write waits (a disk flush, or a round trip to PostgreSQL): on the settle
    // threads, not on this gRPC callback thread, which every other call of the process needs too.
    settle_threads_->Post([this, settle = *std::move(settle)] { SettleAndWriteLast(settle); });
  }

  // The last message, on a settle thread: the job is settled and the message written, unless the
  // client went or the job was answered meanwhile (then as a failed write: the attempt is
  // cancelled and released).
  void SettleAndWriteLast(const SettleUnits& settle) ABSL_LOCKS_EXCLUDED(mu_) {
    JobDispatch* job = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (!job_->finished() && !cancelled_ && !server_done_) job = job_.get();
    }
    // Outside mu_, so the relay's reactions (OnCancel, OnDone) never wait for the ledger. Nothing
    // else uses the job meanwhile: its attempt is held open (no OnAttemptDone), no write is in
    // flight (no OnWriteDone) and OnCancel/OnDone do not touch it; taking mu_ below orders this
    // with every later use.
    if (job != nullptr) job->Settle(settle);
    bool written = false;
    {
      absl::MutexLock lock(&mu_);
      if (job != nullptr && !job_->finished() && !cancelled_ && !server_done_) {
        WriteLastLocked();
        written = true;
      }
    }
    if (!written) OnWriteDone(false);
  }

  void WriteLastLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto* info = out_.mutable_job();
    info->set_request_id(job_->identity().request_id);
    info->set_orchestrator(job_->node()->id);
    info->set_attempts(job_->attempts());
    StartWrite(&out_);
  }

  void OnAttemptDone(Call* attempt, const grpc::Status& status) {
    std::optional<grpc::Status> finish;
    {
      // The attempt's fields were set under mu_ (StartAttempt) and are read under it, on gRPC's
      // thread: an ordering ThreadSanitizer sees, unlike gRPC's own handoff of the call.
      absl::MutexLock lock(&mu_);
      client_active_ = false;
      ++in_attempt_done_;
      // The job may start the next attempt (client_active_ again) or finish.
      DispatchTransport::Done done = std::move(attempt->done);
      AttemptResult result;
      result.status = status;
      done(std::move(result));
      finish = TakeFinishLocked();
    }
    if (finish) Finish(std::move(*finish));
    // The server side may have reached OnDone meanwhile (after Finish, on another thread); it
    // left the relay to be deleted here, once nothing here uses it any more.
    bool del = false;
    {
      absl::MutexLock lock(&mu_);
      --in_attempt_done_;
      del = server_done_ && !client_active_ && in_attempt_done_ == 0;
    }
    if (del) delete this;
  }

  // The status to pass to the server's Finish now, if the job has answered and no write is in
  // flight (nullopt otherwise, and once the server side is done).
  std::optional<grpc::Status> TakeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finish_now_ || server_done_) return std::nullopt;
    return std::exchange(finish_now_, std::nullopt);
  }

  using grpc::ServerWriteReactor<v1::LLMResponse>::Finish;

  grpc::CallbackServerContext* const context_;
  const v1::LLMRequest request_;  // a copy owned by the relay, for every attempt
  const double max_total_price_;  // x-max-total-price (0: none), for a refusal's message
  // Where the last message's job is settled (JobBilling::settle_threads); null: on the gRPC
  // thread that read it (no ledger).
  ThreadPool* const settle_threads_;

  mutable absl::Mutex mu_;
  // The job (its calls are made under mu_: it is not locked itself).
  JobDispatchPtr job_ ABSL_GUARDED_BY(mu_);
  // Every attempt made, kept until the relay is deleted (an attempt may be the one whose OnDone
  // is running when the next one starts).
  std::vector<std::unique_ptr<Call>> attempts_list_ ABSL_GUARDED_BY(mu_);
  Call* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  // The attempt holding its call open for OnWriteDone's next read.
  Call* held_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool client_active_ ABSL_GUARDED_BY(mu_) = false;  // current_'s call has not reached OnDone
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool server_done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone ran
  // OnAttemptDone calls running: OnDone must not delete then.
  int in_attempt_done_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // The current attempt's messages, for the receipt's result digest (common/receipt.h).
  ResultDigest result_digest_ ABSL_GUARDED_BY(mu_);
  // Relayed messages that carried new text (bounds the completion tokens billed).
  int64_t content_messages_ ABSL_GUARDED_BY(mu_) = 0;
  // The job's answer: held back while a write is in flight, then due.
  std::optional<grpc::Status> pending_status_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> finish_now_ ABSL_GUARDED_BY(mu_);
  v1::LLMResponse out_ ABSL_GUARDED_BY(mu_);
};

// A stream answered at once (refused or invalid).
class FinishedStream final : public grpc::ServerWriteReactor<v1::LLMResponse> {
 public:
  explicit FinishedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::LLMResponse>* GatewayService::LLM(grpc::CallbackServerContext* context,
                                                               const v1::LLMRequest* request) {
  using Pipeline = pipelines::PipelineOf<v1::LLMRequest>;
  // The API key check first (MakeRoute's), so a caller without a valid key learns nothing else.
  auto route = MakeRoute(context, Pipeline::kName, Pipeline::ModelId(*request));
  if (!route.ok()) return new FinishedStream(ToGrpcStatus(route.status()));
  if (Pipeline::ModelId(*request).empty()) {
    return new FinishedStream(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                           "model is required (see ListCapabilities)"));
  }
  // x-max-total-price: the cap per unit from the request's quoted tokens (docs/metering.md).
  if (absl::Status st = CapForTotal(*request, &*route); !st.ok()) {
    return new FinishedStream(ToGrpcStatus(st));
  }
  return new LlmRelay(context, *request, env_, *std::move(route), IdentityOf(context));
}

}  // namespace switchyard::gateway
