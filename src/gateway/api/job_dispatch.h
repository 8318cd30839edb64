// The gateway's one dispatch engine: every client job (the public API's unary pipelines and
// transcode segments, the LLM stream, KServe calls) is driven by a JobDispatch. The driver knows
// nothing of gRPC's reactors: it picks an orchestrator, asks its transport to run one attempt
// there, classifies the attempt's outcome, feeds node health, decides whether to retry elsewhere
// or wait for room (the retry state, in the manner of Envoy's router RetryStateImpl: attempts
// used, the retry budget, excluded nodes, the per-try timeout), and settles the job exactly once
// (usage ledger, job log, metrics) before its transport answers the client.
//
// Where job kinds differ on purpose, DispatchPolicy says so, in one place.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/string_ref.h>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/receipt.h"
#include "common/thread_pool.h"
#include "gateway/billing/usage_ledger.h"
#include "gateway/gateway_config.h"
#include "gateway/membership/membership.h"
#include "gateway/observability/job_metrics.h"
#include "gateway/observability/recent_errors.h"
#include "gateway/routing/router.h"
#include "gateway/routing/wait_queue.h"
#include "gateway/routing/warm_demand.h"

namespace switchyard::gateway {

// A 128-bit id as 32 lowercase hex digits, from two draws of `random` (the service's id source:
// OpenSSL's CSPRNG in the daemon, a fixed sequence in tests). Request ids and generated stream
// ids: 64 bits from a PRNG whose state clients can rebuild would let them guess others' ids.
std::string NewHexId(const std::function<uint64_t()>& random);

// Who a job is and who pays for it.
struct CallIdentity {
  std::string request_id;  // the client's x-request-id (1..128 bytes), else a NewHexId
  // The usage ledger's key: the request id, with a suffix of the gateway's own when the client
  // chose it (a client's id need not be unique; a reused one must not look like a duplicate).
  std::string job_id;
  std::string api_key_id;  // the key the call was admitted with; "" without API keys

  static CallIdentity Of(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                         std::string api_key_id, const std::function<uint64_t()>& random);
};

// What differs between job kinds, on purpose. Everything else (outcome classes, retry state,
// waiting, deadlines, cancellation, settlement) is the same for every job.
struct DispatchPolicy {
  // In logs: "[id] <pipeline> '<model>' ..." with this after the pipeline ("" for none).
  const char* what = "";
  // A job proper: it feeds the retry budget (Router::RecordJob) and spends it on retries, counts
  // in the node's in-flight load, reports each attempt to node health and latency, is metered
  // when settled, and is counted in the job metrics and the job log. False only for KServe's
  // ModelReady/ModelMetadata: cheap lookups that hold no slot on the node.
  bool is_job = true;
  // When every suitable node refused for capacity (and the retry budget allows no more tries),
  // wait at the gateway (WaitQueue) for a node with room until the deadline. Unary jobs only: an
  // LLM stream and a KServe call answer RESOURCE_EXHAUSTED instead (docs/architecture.md).
  bool waits_for_room = false;
  // Each attempt is bounded by the pipeline's attempt_timeout_ms inside the job's deadline, and
  // its timing out is a node failure (retried elsewhere). Not for an LLM stream, whose length is
  // its output's; a KServe call is bounded by its deadline alone (docs/kserve.md).
  bool attempt_timeout = false;
  // The model is offered under any pipeline (KServe: PickInferenceNode chooses the node, and the
  // advertised price is the model's first offer); otherwise the router picks by the route.
  bool any_pipeline = false;
  // Streams (the LLM) may commit mid-attempt (JobDispatch::Commit): once a message reached the
  // client the job cannot move to another node, so a later failure is final. Unary jobs commit
  // only by succeeding.

  static DispatchPolicy Unary() { return {.waits_for_room = true, .attempt_timeout = true}; }
  static DispatchPolicy LlmStream() { return {}; }
  static DispatchPolicy KserveInfer() { return {.what = "ModelInfer", .any_pipeline = true}; }
  static DispatchPolicy KserveLookup(const char* what) {
    return {.what = what, .is_job = false, .any_pipeline = true};
  }
};

// What JobDispatch needs of the gateway's WaitQueue (a fake in tests).
class RoomWaiter {
 public:
  virtual ~RoomWaiter() = default;
  // WaitQueue::Park: false when the queue is full.
  virtual bool Park(absl::Time deadline, WaitQueue::Wake wake) = 0;
  virtual void Signal() = 0;
  virtual int capacity() const = 0;
};

class WaitQueueRoom final : public RoomWaiter {
 public:
  explicit WaitQueueRoom(WaitQueue* queue) : queue_(queue) {}
  bool Park(absl::Time deadline, WaitQueue::Wake wake) override {
    return queue_->Park(deadline, std::move(wake));
  }
  void Signal() override { queue_->Signal(); }
  int capacity() const override { return queue_->capacity(); }

 private:
  WaitQueue* queue_;
};

// The long-lived parts every job uses (the service's; they outlive its jobs).
struct DispatchEnv {
  const GatewayConfig* config = nullptr;  // max_attempts, default_timeout_ms, attempt_timeout_ms
  std::function<SnapshotPtr()> snapshot;  // the membership's current view
  Router* router = nullptr;
  RoomWaiter* room = nullptr;     // null: jobs never wait (they answer RESOURCE_EXHAUSTED)
  JobLog* job_log = nullptr;      // may be null
  JobMetrics* metrics = nullptr;  // may be null
  JobBilling* billing = nullptr;  // may be null: jobs are not metered
  // Where a successful job is settled and answered (JobBilling::settle_threads: the ledger's
  // write waits); null: on the thread its attempt ended on.
  ThreadPool* settle_threads = nullptr;
  // Told of every job that found no warm node with room (may be null: no demand-driven warm-up).
  WarmDemandTracker* demand = nullptr;
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// One attempt the transport is asked to run.
struct AttemptPlan {
  std::shared_ptr<const NodeView> node;
  int attempt = 0;      // 1 for the first
  absl::Time deadline;  // the job's deadline, or the per-try timeout when earlier
  const CallIdentity* identity = nullptr;
  std::string tenant;  // sent to the node when set (see JobDispatch::set_tenant)
  // This gateway's id: sent to the node with the job id for its receipt (common/receipt.h).
  std::string gateway_id = {};
};

// Sends the job and gateway ids a node signs into its receipt (common/receipt.h).
void AddReceiptMetadata(const AttemptPlan& plan, grpc::ClientContext* context);

// The units a successful attempt is settled with (docs/metering.md).
struct SettleUnits {
  int64_t reported_units = 0;  // as the orchestrator reported them (-1: not reported)
  double reported_price_per_unit = 0;
  absl::StatusOr<int64_t> counted = 0;  // the gateway's own count
  // The receipt check's inputs (JobBilling::Job): set for jobs whose responses carry a JobInfo
  // (not KServe's). The node's receipt (nullopt: none), the model it reported, and the digests
  // of the request sent and the result received.
  bool receipts = false;
  std::optional<v1::JobReceipt> receipt = std::nullopt;
  std::string reported_model_id = {};
  std::string request_sha256 = {};
  std::string result_sha256 = {};
};

// SettleUnits' receipt fields from a unary job's request and response (with its JobInfo).
template <typename Request, typename Response>
void SetReceiptInputs(const Request& request, const Response& response, SettleUnits* units) {
  units->receipts = true;
  if (response.job().has_receipt()) units->receipt = response.job().receipt();
  units->reported_model_id = response.job().model_id();
  units->request_sha256 = RequestDigest(request);
  ResultDigest digest;
  digest.AddWithoutJob(response);
  units->result_sha256 = digest.Finish();
}

struct AttemptResult {
  grpc::Status status;
  // RESOURCE_EXHAUSTED because the caller's key holds all the sessions one key may on that node
  // (its trailers say so), not for want of a free slot: waiting would not help.
  bool tenant_limited = false;
  // A successful attempt's units, when the transport settles at its end (unary jobs); a stream
  // settles on its last message instead (JobDispatch::Settle).
  std::optional<SettleUnits> units;
};

// The job's outcome as its transport needs it to answer the client.
struct FinishInfo {
  const std::string& request_id;
  std::string orchestrator;  // the last node tried; "" when none was
  int attempts = 0;
};

// The job's side that speaks to gRPC. JobDispatch calls it one call at a time (see JobDispatch).
class DispatchTransport {
 public:
  using Done = std::function<void(AttemptResult)>;
  virtual ~DispatchTransport() = default;
  // Starts the attempt; `done` is called exactly once when it ended (keeps the job alive).
  virtual void StartAttempt(const AttemptPlan& plan, Done done) = 0;
  // Answers the client; called exactly once.
  virtual void Finish(grpc::Status status, const FinishInfo& info) = 0;
  // The client cancelled or went away.
  virtual bool ClientCancelled() const = 0;
};

class JobDispatch;
using JobDispatchPtr = std::shared_ptr<JobDispatch>;

// Threading: not locked. Its transport calls it one call at a time: a unary job has at most one
// event outstanding (an attempt's end or a wake from the wait queue); the LLM relay calls it under
// its own mutex, and then gets its transport calls under that mutex too.
class JobDispatch : public std::enable_shared_from_this<JobDispatch> {
 public:
  // `client_deadline` is the client's (InfiniteFuture for none: the config's default_timeout_ms
  // from now applies). The transport is owned, or (raw) must outlive the job.
  static JobDispatchPtr Create(const DispatchEnv& env, DispatchPolicy policy, RouteRequest route,
                               CallIdentity identity, absl::Time client_deadline,
                               std::unique_ptr<DispatchTransport> transport);
  static JobDispatchPtr Create(const DispatchEnv& env, DispatchPolicy policy, RouteRequest route,
                               CallIdentity identity, absl::Time client_deadline,
                               DispatchTransport* transport);

  // Sent to the node with each attempt (transcode sessions are the key's own).
  void set_tenant(std::string tenant) { tenant_ = std::move(tenant); }

  // Runs the job until it finishes.
  void Start();
  // A message of the current attempt reached the client: the job cannot move any more.
  void Commit() { committed_ = true; }
  // Checks the current attempt's units and records the job, once (later calls do nothing); the
  // node is paid or, when the units disagree, penalised like a failed attempt when it ends.
  void Settle(const SettleUnits& units);

  const CallIdentity& identity() const { return identity_; }
  const RouteRequest& route() const { return route_; }
  int attempts() const { return attempts_; }
  bool finished() const { return finished_; }
  // The node of the current (or last) attempt; null before the first.
  const std::shared_ptr<const NodeView>& node() const { return node_; }
  absl::Time deadline() const { return deadline_; }

 private:
  JobDispatch(const DispatchEnv& env, DispatchPolicy policy, RouteRequest route,
              CallIdentity identity, absl::Time client_deadline);

  bool DeadlinePassed() const { return env_.now() >= deadline_; }
  absl::StatusOr<RouteChoice> Pick() const;
  void Attempt();
  void OnAttemptDone(AttemptResult result);
  // A successful attempt: settles it (when `units`), reports it to the router, answers the client.
  void Succeed(const SettleUnits* units, absl::Duration latency);
  void OnTenantLimited(grpc::Status status);
  // A retryable failure: try elsewhere if allowed (`reason` for the metrics).
  void Retry(const char* reason);
  void Park();
  // Counts the job as demand for warm capacity on its route (env_.demand).
  void RecordDemand(WarmDemandTracker::Kind kind);
  void OnWake(bool expired);
  void FinishDeadline();
  void Finish(grpc::Status status);
  std::string Describe() const;  // "<pipeline>[ what] '<model>'", log-safe

  const DispatchEnv& env_;
  const DispatchPolicy policy_;
  RouteRequest route_;
  const CallIdentity identity_;
  std::unique_ptr<DispatchTransport> owned_transport_;
  DispatchTransport* transport_ = nullptr;
  std::string tenant_;
  const absl::Time start_;
  absl::Time deadline_;

  // Retry state.
  int attempts_ = 0;
  int failures_ = 0;               // attempts that failed on the node's side (<= max_attempts)
  std::set<std::string> refused_;  // nodes that refused for capacity since the last wait
  bool waiting_for_room_ = false;  // woken from the wait queue; no node has failed the job since
  std::optional<absl::Time> parked_since_;
  absl::Time park_start_;  // when the job last parked
  grpc::Status last_status_;

  // The current attempt.
  std::shared_ptr<const NodeView> node_;
  bool warm_ = false;
  absl::Time attempt_start_;
  bool committed_ = false;

  bool settled_ = false;   // Settle ran (once)
  bool disputed_ = false;  // and the units or price did not match
  bool finished_ = false;
};

}  // namespace switchyard::gateway
