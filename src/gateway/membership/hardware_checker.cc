#include "gateway/membership/hardware_checker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/hardware_challenge.h"
#include "common/logging.h"
#include "common/secure_random.h"
#include "common/status.h"
#include "gateway/routing/node_health.h"

namespace switchyard::gateway {
namespace {

// Every answer's deadline: a node slower than a GPU still answers, and is judged by its time.
constexpr absl::Duration kAnswerDeadline = absl::Seconds(120);
// After a failed call (the node was busy or unreachable), the next try.
constexpr absl::Duration kRetryAfterError = absl::Seconds(30);

bool ClaimsGpu(const node::v1::NodeStatus& status) {
  return std::find(status.hardware().begin(), status.hardware().end(), "cuda") !=
         status.hardware().end();
}

std::string ClaimKey(const node::v1::NodeStatus& status) {
  return absl::StrJoin(status.hardware(), ",");
}

}  // namespace

const char* HardwareVerdictName(HardwareVerdict verdict) {
  switch (verdict) {
    case HardwareVerdict::kUnchecked:
      return "unchecked";
    case HardwareVerdict::kOk:
      return "ok";
    case HardwareVerdict::kTooSlow:
      return "too_slow";
    case HardwareVerdict::kWrong:
      return "wrong";
    case HardwareVerdict::kUnanswered:
      return "unanswered";
  }
  return "unchecked";
}

HardwareJudgement JudgeHardwareAnswer(bool claims_gpu, bool answered, bool digests_ok,
                                      absl::Duration answer_time, absl::Duration gpu_max,
                                      int previous_slow_streak) {
  if (!answered) return {HardwareVerdict::kUnanswered, previous_slow_streak, false};
  if (!digests_ok) return {HardwareVerdict::kWrong, 0, false};
  if (claims_gpu && answer_time > gpu_max) {
    const int streak = previous_slow_streak + 1;
    if (streak < 2) return {HardwareVerdict::kUnchecked, streak, true};
    return {HardwareVerdict::kTooSlow, streak, false};
  }
  return {HardwareVerdict::kOk, 0, false};
}

HardwareChecker::HardwareChecker(VerificationConfig::Hardware options, Deps deps)
    : options_(options), deps_(std::move(deps)) {}

absl::StatusOr<std::unique_ptr<HardwareChecker>> HardwareChecker::Create(
    VerificationConfig::Hardware options, Deps deps, bool start_thread) {
  if (!deps.snapshot || !deps.random || !deps.now) {
    return absl::InvalidArgumentError("hardware checker: snapshot, random and now are required");
  }
  if (options.interval_s < 10 || options.gpu_max_ms < 1 || options.failed_capacity < 1) {
    return absl::InvalidArgumentError("hardware checker: invalid options");
  }
  std::unique_ptr<HardwareChecker> c(new HardwareChecker(options, std::move(deps)));
  if (c->deps_.metrics != nullptr) {
    c->checks_ = &c->deps_.metrics->CounterFamily(
        "hardware_checks_total",
        "Known-answer hardware checks by node, claimed class (gpu, cpu) and result: ok, "
        "too_slow (slower than the claimed class allows; routed as what it performs like), "
        "wrong (a wrong answer), unanswered, retry (a first slow GPU answer, checked again).");
  }
  if (start_thread) c->thread_ = std::thread([p = c.get()] { p->Loop(); });
  return c;
}

HardwareChecker::~HardwareChecker() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
    if (in_flight_ != nullptr) in_flight_->TryCancel();
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void HardwareChecker::Loop() {
  while (true) {
    {
      MutexLock lock(&mu_);
      wake_.WaitFor(&mu_, std::chrono::seconds(1),
                    [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; });
      if (stop_) return;
    }
    CheckDue();
  }
}

std::optional<HardwareCheckRecord> HardwareChecker::Lookup(const std::string& node_id) const {
  MutexLock lock(&mu_);
  auto it = records_.find(node_id);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

int HardwareChecker::CheckDue() {
  const SnapshotPtr snapshot = deps_.snapshot();
  if (snapshot == nullptr) return 0;
  int checked = 0;
  for (const auto& node : snapshot->nodes) {
    HardwareCheckRecord previous;
    {
      MutexLock lock(&mu_);
      if (stop_) return checked;
      auto it = records_.find(node->id);
      if (it != records_.end()) previous = it->second;
      const bool due = it == records_.end() || deps_.now() >= it->second.next_check ||
                       it->second.claim_key != ClaimKey(node->status) ||
                       it->second.stats != node->stats.get();
      if (!due || node->status.draining()) continue;
    }
    HardwareCheckRecord record = Check(*node, previous);
    ++checked;
    MutexLock lock(&mu_);
    records_[node->id] = std::move(record);
  }
  // Nodes gone from the snapshot are forgotten.
  MutexLock lock(&mu_);
  for (auto it = records_.begin(); it != records_.end();) {
    const bool known = std::any_of(snapshot->nodes.begin(), snapshot->nodes.end(),
                                   [&](const auto& n) { return n->id == it->first; });
    it = known ? std::next(it) : records_.erase(it);
  }
  return checked;
}

HardwareCheckRecord HardwareChecker::Check(const NodeView& node,
                                           const HardwareCheckRecord& previous) {
  const bool gpu = ClaimsGpu(node.status);
  HardwareCheckRecord record;
  record.claimed = gpu ? "gpu" : "cpu";
  record.claim_key = ClaimKey(node.status);
  record.stats = node.stats.get();
  record.slow_streak = previous.claim_key == record.claim_key ? previous.slow_streak : 0;

  node::v1::HardwareChallengeRequest request;
  request.set_seed(SecureRandomBytes(32));
  request.set_matrices(gpu ? deps_.gpu_matrices : deps_.cpu_matrices);
  request.set_size(gpu ? deps_.gpu_size : deps_.cpu_size);
  node::v1::HardwareChallengeResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoSeconds(kAnswerDeadline));
  {
    MutexLock lock(&mu_);
    if (stop_) context.TryCancel();
    in_flight_ = &context;
  }
  const absl::Time start = deps_.now();
  const grpc::Status status =
      node.connection != nullptr
          ? node.connection->stub()->HardwareChallenge(&context, request, &response)
          : grpc::Status(grpc::StatusCode::UNAVAILABLE, "no connection");
  const absl::Time end = deps_.now();
  {
    MutexLock lock(&mu_);
    in_flight_ = nullptr;
    if (stop_) return previous;  // cancelled by the destructor: no finding
  }
  record.checked = end;
  record.answer_ms = absl::ToDoubleMilliseconds(end - start);

  // One product, chosen now that the answer is in, recomputed here.
  bool digests_ok = false;
  int matrix = -1;
  if (status.ok() && response.digests_size() == request.matrices()) {
    matrix = static_cast<int>(deps_.random() % static_cast<uint64_t>(request.matrices()));
    digests_ok = response.digests(matrix) == ReferenceChallengeDigest(request, matrix);
  }
  const HardwareJudgement judged =
      JudgeHardwareAnswer(gpu, status.ok(), digests_ok, end - start,
                          absl::Milliseconds(options_.gpu_max_ms), record.slow_streak);
  record.verdict = judged.verdict;
  record.slow_streak = judged.slow_streak;

  const std::string work =
      absl::StrFormat("%d products of %dx%d", request.matrices(), request.size(), request.size());
  const bool fails_claim = judged.verdict == HardwareVerdict::kTooSlow ||
                           judged.verdict == HardwareVerdict::kWrong ||
                           (gpu && judged.verdict == HardwareVerdict::kUnanswered);
  const std::string routed =
      fails_claim ? absl::StrCat("routed as a CPU node: at most ", options_.failed_capacity,
                                 " job(s) at once per model")
                  : "routed as advertised";
  switch (judged.verdict) {
    case HardwareVerdict::kOk:
      record.detail = absl::StrFormat("answered %s right in %.0f ms on %s (%s); %s", work,
                                      record.answer_ms, LogSafe(response.device(), 64),
                                      gpu ? "a GPU's time" : "CPU class", routed);
      break;
    case HardwareVerdict::kTooSlow:
      record.detail = absl::StrFormat(
          "claims cuda but answered %s in %.0f ms, twice in a row (a GPU answers within %d ms); "
          "%s",
          work, record.answer_ms, options_.gpu_max_ms, routed);
      break;
    case HardwareVerdict::kWrong:
      record.detail =
          status.ok() && response.digests_size() != request.matrices()
              ? absl::StrFormat("answered %d digests for %s; %s", response.digests_size(), work,
                                routed)
              : absl::StrFormat("answered product %d of %s wrongly; %s", matrix, work, routed);
      break;
    case HardwareVerdict::kUnanswered:
      record.detail = absl::StrFormat("did not answer a challenge of %s: %s: %s; %s", work,
                                      GrpcCodeName(status.error_code()),
                                      LogSafe(status.error_message(), 200), routed);
      break;
    case HardwareVerdict::kUnchecked:
      record.detail = absl::StrFormat(
          "claims cuda; answered %s in %.0f ms (a GPU answers within %d ms); checking again "
          "before judging (a first answer may pay the GPU's start-up)",
          work, record.answer_ms, options_.gpu_max_ms);
      break;
  }
  // What routing does: the cap is on the node's health record, read by the router's hot path.
  if (node.stats != nullptr) {
    if (fails_claim) {
      node.stats->set_capacity_cap(options_.failed_capacity);
    } else if (judged.verdict == HardwareVerdict::kOk) {
      node.stats->set_capacity_cap(0);
    }
  }
  if (checks_ != nullptr) {
    checks_
        ->Add({{"orchestrator", node.id},
               {"claimed", record.claimed},
               {"result", judged.recheck_soon ? "retry" : HardwareVerdictName(judged.verdict)}})
        .Increment();
  }
  if (fails_claim) {
    spdlog::warn("hardware check: {} {}", node.id, record.detail);
  } else if (judged.verdict != previous.verdict || judged.recheck_soon) {
    spdlog::info("hardware check: {} {}", node.id, record.detail);
  }

  // The next check: at once after a first slow GPU answer, sooner after an error, else at the
  // interval, drawn in [0.75, 1.25] x interval so that gateways do not all check together.
  absl::Duration next;
  if (judged.recheck_soon) {
    next = absl::ZeroDuration();
  } else if (judged.verdict == HardwareVerdict::kUnanswered) {
    next = kRetryAfterError;
  } else {
    const double jitter = 0.75 + 0.5 * static_cast<double>(deps_.random() % 1000) / 1000.0;
    next = absl::Seconds(options_.interval_s) * jitter;
  }
  record.next_check = end + next;
  if (judged.recheck_soon) record.verdict = previous.verdict;  // not judged yet
  return record;
}

}  // namespace switchyard::gateway
