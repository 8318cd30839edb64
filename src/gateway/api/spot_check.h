// Spot checks of results (docs/security.md, "Spot checks"; config `verification`): after a job of
// a deterministic pipeline was answered to its client, the gateway re-runs a sampled share of them
// on another node and compares the two results. When they differ, a third node (when there is
// one) breaks the tie: the node whose result the other two contradict is blamed. Each mismatch a
// node is blamed for counts against its routing health like a failed attempt; after
// `eject_after` of them it is ejected for `eject_seconds` (Router::Ban) and its paid ledger rows
// are disputed ("verification"). With no third node the mismatch is logged and counted as
// "unresolved" for both nodes, and neither is blamed: two nodes cannot tell which one cheated.
//
// Re-runs are not metered: no ledger row, the client is not charged, the checking node is not
// paid (its signed receipt is logged with the mismatch as evidence).
//
// Several gateways of one operator (config `state.redis`) count the mismatches together and share
// ejections (shared_verdicts.h): a poll thread bans, here, the nodes another gateway ejected and
// disputes their rows in this gateway's ledger.
//
// Threading: Sample and Start may be called from any thread; a check's steps run on the gRPC
// callback threads of its re-runs. At most `max_in_flight` checks run at once; more are skipped
// (counted). The destructor stops the poll thread, cancels the re-runs in flight and waits for
// them to end.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <grpcpp/client_context.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "common/receipt.h"
#include "gateway/api/shared_verdicts.h"
#include "gateway/billing/usage_ledger.h"
#include "gateway/gateway_config.h"
#include "gateway/routing/router.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::gateway {

// One node's result as a spot check compares it.
struct SpotResult {
  std::string node;
  // Encoded images (PNG or JPEG): compared by their decoded pixels, within the pipeline's
  // tolerance (exact bytes are a match without decoding).
  std::vector<std::string> images;
  // Encoded videos (transcode renditions): compared by their decoded frames (frame count,
  // timestamps, sizes; PSNR at least the pipeline's min_psnr_db), exact bytes a match without
  // decoding.
  std::vector<std::string> videos;
  // The rest of the result (masks, scores, text, media sizes; never the JobInfo), serialized:
  // compared byte for byte.
  std::string rest;
  std::string receipt_json;  // the node's signed receipt as JSON, "" when it sent none
};

// A unary job's result as a spot check compares it.
template <typename Response>
SpotResult SpotResultOf(std::string node, const Response& response) {
  SpotResult r;
  r.node = std::move(node);
  Response rest = response;
  rest.clear_job();
  if constexpr (std::is_same_v<Response, v1::ImageResponse>) {
    for (auto& media : *rest.mutable_images()) {
      r.images.push_back(std::move(*media.mutable_data()));
      media.clear_data();
      media.clear_content_type();  // the pixels are compared, not the encoding
    }
  } else if constexpr (std::is_same_v<Response, v1::TranscodeResponse>) {
    for (auto& rendition : *rest.mutable_renditions()) {
      r.videos.push_back(std::move(*rendition.mutable_data()));
      rendition.clear_data();  // the frames are compared, not the bitstream
    }
  }
  rest.SerializeToString(&r.rest);
  if (response.job().has_receipt()) r.receipt_json = ReceiptToJson(response.job().receipt()).dump();
  return r;
}

struct SpotComparison {
  bool match = false;
  std::string detail;      // what differs, for logs ("" on a match)
  int max_abs_diff = 0;    // over every image's pixels
  double min_psnr_db = 0;  // the lowest of the images' and videos' PSNR (infinity: identical)
};
// Most frames of one video a comparison decodes; a longer one is a mismatch ("more than").
inline constexpr int64_t kMaxSpotCheckFrames = 20000;
// Most pixels of one image a comparison decodes; a larger one is a mismatch ("too large").
inline constexpr int64_t kMaxSpotCheckPixels = int64_t{64} << 20;
// Compares two results: the same number of images, each of the same size with every channel
// within `tolerance.max_abs_diff` and a PSNR of at least `tolerance.min_psnr_db` (when set); the
// same number of videos, each with the same frames (count, timestamps, sizes) and a PSNR of at
// least `tolerance.min_psnr_db` (when set); and the rest byte-identical. An image or video that
// does not decode is a mismatch unless both results hold the same bytes.
SpotComparison CompareSpotResults(const SpotResult& a, const SpotResult& b,
                                  const VerificationPipeline& tolerance);

// Who is wrong, from the comparison of the first node's result with the checker's and, when they
// differ and a third node ran it, the third's with each of them.
enum class SpotVerdict {
  kAgree,         // the first and the checker agree
  kFirstWrong,    // the third agrees with the checker, not with the first
  kCheckerWrong,  // the third agrees with the first, not with the checker
  kUnresolved,    // no third result, or it agrees with both or neither
};
SpotVerdict JudgeSpotCheck(bool first_matches_checker, std::optional<bool> third_matches_first,
                           std::optional<bool> third_matches_checker);
const char* SpotVerdictName(SpotVerdict verdict);

class SpotChecker {
 public:
  using Done = std::function<void(absl::StatusOr<SpotResult>)>;
  // Runs the job's request again on `node` with `context` (its deadline set; cancelled by the
  // destructor); `done` gets the node's result, once.
  using RunOn = std::function<void(const NodeView& node, grpc::ClientContext* context, Done done)>;

  struct Deps {
    Router* router = nullptr;               // required: picks checkers, penalises and bans
    std::function<SnapshotPtr()> snapshot;  // required: the membership's current view
    UsageLedger* ledger = nullptr;          // may be null: no rows to dispute
    Metrics* metrics = nullptr;             // may be null
    std::function<uint64_t()> random;       // required: the sampling draws
    std::function<absl::Time()> now = [] { return absl::Now(); };
    // May be null: this gateway's verdicts are its own. Otherwise mismatches are counted with the
    // other gateways' and ejections shared; every `shared_poll` (0: only when the test calls
    // ApplySharedEjections) the others' ejections are applied here.
    SharedVerdicts* shared = nullptr;
    absl::Duration shared_poll = absl::Seconds(2);
  };
  // INVALID_ARGUMENT when a required dependency is missing.
  static absl::StatusOr<std::unique_ptr<SpotChecker>> Create(const VerificationConfig& config,
                                                             Deps deps);
  ~SpotChecker();
  SpotChecker(const SpotChecker&) = delete;
  SpotChecker& operator=(const SpotChecker&) = delete;

  // Whether an answered job of `pipeline` and `model_id` is to be checked: it is deterministic
  // (see VerificationConfig; `seeded`: the request fixed its seed) and wins the draw at its
  // pipeline's sample rate. Draws the random source only for deterministic jobs.
  bool Sample(const std::string& pipeline, const std::string& model_id, bool seeded);
  // Whether jobs of `pipeline` and `model_id` are deterministic by the config.
  bool Deterministic(const std::string& pipeline, const std::string& model_id, bool seeded) const;

  struct Job {
    std::string pipeline;
    std::string model_id;
    std::string request_id;  // for logs
    SpotResult first;        // the result the client got, and the node that sent it
    RunOn run;
  };
  // Starts the job's check (asynchronous), or skips it when max_in_flight checks run already or
  // no other node offers the model (counted in the metric).
  void Start(Job job) ABSL_LOCKS_EXCLUDED(mu_);

  // Mismatches `node` was blamed for, and whether they ejected it.
  int Blamed(const std::string& node) const ABSL_LOCKS_EXCLUDED(mu_);
  bool Ejected(const std::string& node) const ABSL_LOCKS_EXCLUDED(mu_);
  // Checks that ended, by result ("match", "mismatch", "unresolved", "error", "skipped_busy",
  // "skipped_no_node"), over every node; for tests and the status page.
  int64_t Count(const std::string& result) const ABSL_LOCKS_EXCLUDED(mu_);
  // Bans here the nodes the shared verdicts say are ejected (by any gateway) and this gateway has
  // not banned for as long yet, and disputes their rows in its ledger. Nodes not registered here
  // are left for a later poll. Returns how many nodes it banned.
  int ApplySharedEjections() ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until no check runs (tests); false on timeout.
  bool WaitIdle(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  class Check;
  SpotChecker(const VerificationConfig& config, Deps deps);
  // The node the router favours for the route among those not in `excluded` (null: none).
  std::shared_ptr<const NodeView> PickOther(const std::string& pipeline,
                                            const std::string& model_id,
                                            const std::set<std::string>& excluded) const;
  // Counts `result` for `node` (metric and totals).
  void Record(const std::string& node, const std::string& result) ABSL_LOCKS_EXCLUDED(mu_);
  // A mismatch `node` is blamed for: routing penalty, and the ejection and disputes at
  // eject_after.
  void Blame(const std::string& node, const std::string& model_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Disputes the paid ledger rows of an ejected node ("verification").
  void DisputeRows(const std::string& node);
  // The node's view in the current snapshot (null: not registered here).
  std::shared_ptr<const NodeView> Find(const std::string& node) const;
  void PollShared();
  void Finished(Check* check) ABSL_LOCKS_EXCLUDED(mu_);
  // Registers a re-run's context so the destructor can cancel it; false when closing.
  bool Track(grpc::ClientContext* context) ABSL_LOCKS_EXCLUDED(mu_);
  void Untrack(grpc::ClientContext* context) ABSL_LOCKS_EXCLUDED(mu_);

  const VerificationConfig config_;
  const Deps deps_;
  prometheus::Family<prometheus::Counter>* checks_ = nullptr;

  mutable Mutex mu_;
  CondVar idle_cv_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::set<grpc::ClientContext*> contexts_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> blamed_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> ejected_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> counts_ ABSL_GUARDED_BY(mu_);
  // Until when each node is banned here by a spot-check ejection (this gateway's or a shared one).
  std::map<std::string, absl::Time> banned_until_ ABSL_GUARDED_BY(mu_);
  bool shared_down_ ABSL_GUARDED_BY(mu_) = false;  // the last shared poll failed (logged once)
  StopSignal stop_poll_;
  std::thread poller_;  // last: started after everything it reads
};

}  // namespace switchyard::gateway
