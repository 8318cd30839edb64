// Known-answer checks of the hardware orchestrators claim (docs/security.md, "Hardware claims").
// A node that advertises "cuda" gets the GPU challenge (8 products of 1024 x 1024: milliseconds
// of compute on a GPU, seconds on a few CPU cores); any other node the small CPU one. The
// answer must be right (one product, chosen after the answer came, is recomputed here) and, for
// a GPU claim, come within `gpu_max_ms` (two slow answers in a row: the first may pay the GPU's
// one-time start-up). A node whose claim fails is routed as what it performs like: at most
// `failed_capacity` jobs at once per model, whatever capacity it advertises; the finding is
// logged, counted (switchyard_gateway_hardware_checks_total) and shown in ListCapabilities and on
// the status page. Checks run on one thread of their own, one node at a time: at start, when a
// node (re-)registers or changes its claim, and every `interval_s` (+-25%) after.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "gateway/gateway_config.h"
#include "gateway/routing/snapshot.h"

namespace switchyard::gateway {

enum class HardwareVerdict { kUnchecked, kOk, kTooSlow, kWrong, kUnanswered };
// "unchecked", "ok", "too_slow", "wrong", "unanswered".
const char* HardwareVerdictName(HardwareVerdict verdict);

// What the last check of one node found.
struct HardwareCheckRecord {
  HardwareVerdict verdict = HardwareVerdict::kUnchecked;
  std::string claimed;  // "gpu" or "cpu"
  std::string detail;   // a sentence: what was measured, what routing does about it
  double answer_ms = 0;
  int slow_streak = 0;  // GPU answers in a row slower than gpu_max_ms
  absl::Time checked;
  absl::Time next_check;
  std::string claim_key;        // the hardware list the check judged: a new claim is checked anew
  const void* stats = nullptr;  // the NodeStats it capped: a re-registration is checked anew
};

// Pure: the verdict on one answer. `digests_ok`: the recomputed product matched (and the count
// was right). `previous_slow_streak`: the record's streak before this answer.
struct HardwareJudgement {
  HardwareVerdict verdict;
  int slow_streak;
  bool recheck_soon;  // a first slow GPU answer: check again at once before judging
};
HardwareJudgement JudgeHardwareAnswer(bool claims_gpu, bool answered, bool digests_ok,
                                      absl::Duration answer_time, absl::Duration gpu_max,
                                      int previous_slow_streak);

class HardwareChecker {
 public:
  struct Deps {
    std::function<SnapshotPtr()> snapshot;
    Metrics* metrics = nullptr;  // may be null
    std::function<uint64_t()> random;
    std::function<absl::Time()> now = [] { return absl::Now(); };
    // The workloads (tests make them small). GPU: 8 x 1024^3 multiply-adds (17 GFLOP): a few
    // milliseconds of compute on a data-centre GPU and well under 100 ms end to end (the digests
    // of 32 MB of products included); seconds on a few CPU cores. CPU: 4 x 256^3, a fraction of
    // a second anywhere. The gateway recomputes one product: up to 2^30 multiply-adds.
    int gpu_matrices = 8, gpu_size = 1024;
    int cpu_matrices = 4, cpu_size = 256;
  };
  // Starts the checking thread unless `start_thread` is false (tests call CheckDue).
  static absl::StatusOr<std::unique_ptr<HardwareChecker>> Create(
      VerificationConfig::Hardware options, Deps deps, bool start_thread = true);
  ~HardwareChecker();  // stops and joins the thread

  // Checks, one after another, every node of the snapshot that is due. Returns how many.
  int CheckDue() ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<HardwareCheckRecord> Lookup(const std::string& node_id) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  HardwareChecker(VerificationConfig::Hardware options, Deps deps);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  // Runs one challenge on `node` and returns the new record (previous: the node's last one).
  HardwareCheckRecord Check(const NodeView& node, const HardwareCheckRecord& previous);

  const VerificationConfig::Hardware options_;
  Deps deps_;
  prometheus::Family<prometheus::Counter>* checks_ = nullptr;
  mutable Mutex mu_;
  std::map<std::string, HardwareCheckRecord> records_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The challenge in flight, cancelled by the destructor (a stopped node would hold it until its
  // deadline).
  grpc::ClientContext* in_flight_ ABSL_GUARDED_BY(mu_) = nullptr;
  CondVar wake_;
  std::thread thread_;
};

using HardwareCheckerPtr = std::unique_ptr<HardwareChecker>;

}  // namespace switchyard::gateway
