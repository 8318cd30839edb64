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
//
// Gateways sharing `state.redis` share their failed findings (shared_hardware_findings.h): a poll
// thread, every `shared_poll`, records this gateway's new findings (and removes those its later
// checks found ok) and caps here a node that another gateway found failing the claim it still
// advertises, as if this gateway had found it (counted in
// switchyard_gateway_shared_hardware_findings_applied_total, and ..._cleared_total when it stops
// applying). A node's refusal because it runs another challenge (most likely another gateway's)
// is shared only from the kBusyChecksShared-th check in a row it refuses. Without Redis, or while
// it cannot be reached, each gateway's findings are its own (logged once per outage).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/media/video_challenge.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "gateway/gateway_config.h"
#include "gateway/membership/shared_hardware_findings.h"
#include "gateway/routing/snapshot.h"

namespace switchyard::gateway {

enum class HardwareVerdict { kUnchecked, kOk, kTooSlow, kWrong, kUnanswered };

// The video claims a node can advertise in NodeStatus.hardware that the video challenge checks,
// each also a value of hardware_checks_total's `claimed` label (a fixed set: the label stays
// bounded whatever a node advertises).
inline constexpr const char* kVideoHardwareClaims[] = {"nvdec-h264", "nvdec-hevc", "nvenc-h264"};
// "unchecked", "ok", "too_slow", "wrong", "unanswered".
const char* HardwareVerdictName(HardwareVerdict verdict);

// What the last check of one node found.
struct HardwareCheckRecord {
  HardwareVerdict verdict = HardwareVerdict::kUnchecked;
  std::string claimed;  // "gpu" or "cpu" (the compute challenge's class)
  // The video claims the last check judged ("nvdec-h264 ok", "nvenc-h264 wrong"), empty when
  // the node advertises none.
  std::vector<std::string> video;
  std::string detail;   // a sentence: what was measured, what routing does about it
  double answer_ms = 0;
  int slow_streak = 0;  // GPU answers in a row slower than gpu_max_ms
  int busy_streak = 0;  // checks in a row the node refused as busy (kChallengeBusyMessage)
  absl::Time checked;
  absl::Time next_check;
  std::string claim_key;        // the hardware list the check judged: a new claim is checked anew
  const void* stats = nullptr;  // the NodeStats it capped: a re-registration is checked anew
  bool capped = false;          // this gateway's own finding caps the node
  // Not empty: the verdict and detail are another gateway's finding (shared through Redis), which
  // caps the node here; this names that gateway.
  std::string shared_by;
};

// A node's busy refusal is not shared with the other gateways (most likely it runs another
// gateway's challenge, which lasts seconds, and this gateway asks again in 15 to 45 s) until it
// refuses this many checks in a row: then it is shared as unanswered.
inline constexpr int kBusyChecksShared = 3;

// Pure: what a challenge call's status says beyond its code. kBusy: the node refused it while
// running another challenge (RESOURCE_EXHAUSTED with kChallengeBusyMessage). kOversized: gRPC
// refused the answer here, larger than the channel's `max_receive_bytes` (RESOURCE_EXHAUSTED
// "Received message larger than max (N vs. M)" with M that limit: a node's own refusal of our
// request names its limit, and a request over ours is refused before it is sent). kOther: any
// other status, ok included.
enum class ChallengeRefusal { kOther, kBusy, kOversized };
ChallengeRefusal ClassifyChallengeStatus(const grpc::Status& status, int64_t max_receive_bytes);

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
    // The video challenge of NVDEC/NVENC claims (the gateway encodes the clips with libx264 and
    // libx265, and decodes them and the node's encoding, single-threaded: tens of milliseconds).
    media::VideoChallengeShape video;
    // May be null: this gateway's findings are its own. Otherwise its failed findings are shared
    // through it and the other gateways' applied here, every `shared_poll` (0: only when the test
    // calls SyncShared).
    SharedHardwareFindings* shared = nullptr;
    absl::Duration shared_poll = absl::Seconds(2);
    std::string gateway_id = "gateway";  // named in the findings it shares
    // The identity key (raw) this gateway binds to a node id, "" for none. May be null. When set,
    // another gateway's finding applies only to a node bound to the key its finder saw: a node
    // that took another's id at one gateway cannot get the real one capped at the others.
    std::function<std::string(const std::string&)> node_key;
  };
  // Starts the checking thread unless `start_thread` is false (tests call CheckDue).
  static absl::StatusOr<std::unique_ptr<HardwareChecker>> Create(
      VerificationConfig::Hardware options, Deps deps, bool start_thread = true);
  ~HardwareChecker();  // stops and joins the thread

  // Checks, one after another, every node of the snapshot that is due. Returns how many.
  int CheckDue() ABSL_LOCKS_EXCLUDED(mu_);
  // The node's record as routing sees it: another gateway's finding when that caps the node here
  // (`shared_by` set) and this gateway's own finding does not, or is only `unanswered` while the
  // other gateway's is a measured one.
  std::optional<HardwareCheckRecord> Lookup(const std::string& node_id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // With shared findings: records this gateway's pending findings (and removes those its later
  // checks found ok), reads every gateway's and caps the nodes the others' apply to (the poll
  // thread's work). Returns how many nodes another gateway's finding caps here now; -1 when
  // Redis could not be read (the findings applied before stay until they end).
  int SyncShared() ABSL_LOCKS_EXCLUDED(mu_, sync_mu_);
  // This gateway process's id in the findings it shares (16 hex digits, new at every start).
  const std::string& instance() const { return instance_; }

 private:
  HardwareChecker(VerificationConfig::Hardware options, Deps deps);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  // A challenge's call in flight: registered so that the destructor can cancel it (cancelled at
  // once when already stopping); EndCall unregisters it and says whether the checker is stopping
  // (the answer then makes no finding).
  void BeginCall(grpc::ClientContext* context) ABSL_LOCKS_EXCLUDED(mu_);
  bool EndCall() ABSL_LOCKS_EXCLUDED(mu_);
  // Runs one challenge on `node` and returns the new record (previous: the node's last one).
  // `finding`: what it found, when the node failed its claim (else left empty).
  HardwareCheckRecord Check(const NodeView& node, const HardwareCheckRecord& previous,
                            std::string* finding);
  // The video challenge of the node's NVDEC/NVENC claims (`claims`, from kVideoHardwareClaims).
  struct VideoOutcome {
    bool cancelled = false;  // by the destructor: no finding
    grpc::Status status;
    double answer_ms = 0;
    // Per claim, in `claims`' order: its verdict and what was found.
    std::vector<std::pair<HardwareVerdict, std::string>> claims;
  };
  VideoOutcome CheckVideo(const NodeView& node, const std::vector<std::string>& claims);
  // Another gateway's finding that applies to `node` here (null: none).
  const HardwareFinding* ForeignLocked(const NodeView& node) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets the node's cap from this gateway's record and the others' findings.
  void SyncCapLocked(const NodeView& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What a check found, queued for the poll thread to share (or to remove, when ok).
  void ShareLocked(const NodeView& node, const HardwareCheckRecord& record,
                   const std::string& finding, const std::string& node_key_hex)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SharedDownLocked(const absl::Status& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PollShared();

  const VerificationConfig::Hardware options_;
  Deps deps_;
  prometheus::Family<prometheus::Counter>* checks_ = nullptr;
  // Other gateways' findings that began to apply here, and that stopped applying (with
  // deps_.shared and deps_.metrics; else null).
  prometheus::Family<prometheus::Counter>* shared_applied_ = nullptr;
  prometheus::Family<prometheus::Counter>* shared_cleared_ = nullptr;
  mutable Mutex mu_;
  std::map<std::string, HardwareCheckRecord> records_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The challenge in flight, cancelled by the destructor (a stopped node would hold it until its
  // deadline).
  grpc::ClientContext* in_flight_ ABSL_GUARDED_BY(mu_) = nullptr;
  CondVar wake_;
  std::thread thread_;

  // Shared findings (deps_.shared).
  const std::string instance_;
  // Another gateway's finding applied to each node it caps here (as of the last poll).
  std::map<std::string, HardwareFinding> foreign_ ABSL_GUARDED_BY(mu_);
  // This gateway's findings not yet recorded in Redis, and the nodes whose finding its later
  // check removes; each node in at most one of them.
  std::map<std::string, HardwareFinding> to_record_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> to_clear_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> recorded_ ABSL_GUARDED_BY(mu_);  // nodes with a finding of ours in Redis
  bool shared_down_ ABSL_GUARDED_BY(mu_) = false;  // the last use of Redis failed (logged once)
  Mutex sync_mu_ ABSL_ACQUIRED_BEFORE(mu_);        // one SyncShared at a time
  StopSignal stop_poll_;
  std::thread poller_;  // last: started after everything it reads
};

using HardwareCheckerPtr = std::unique_ptr<HardwareChecker>;

}  // namespace switchyard::gateway
