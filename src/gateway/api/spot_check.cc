#include "gateway/api/spot_check.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/media/image_codec.h"
#include "common/media/video_compare.h"
#include "common/pipelines.h"

namespace switchyard::gateway {

SpotComparison CompareSpotResults(const SpotResult& a, const SpotResult& b,
                                  const VerificationPipeline& tolerance) {
  SpotComparison c;
  c.min_psnr_db = std::numeric_limits<double>::infinity();
  if (a.images.size() != b.images.size()) {
    c.detail = absl::StrCat(a.images.size(), " images against ", b.images.size());
    return c;
  }
  if (a.videos.size() != b.videos.size()) {
    c.detail = absl::StrCat(a.videos.size(), " videos against ", b.videos.size());
    return c;
  }
  if (a.rest != b.rest) {
    c.detail = "the results differ beyond their images (masks, scores, text, sizes or seeds)";
    return c;
  }
  for (size_t i = 0; i < a.images.size(); ++i) {
    if (a.images[i] == b.images[i]) continue;
    auto x = media::DecodeImage(a.images[i], kMaxSpotCheckPixels);
    auto y = media::DecodeImage(b.images[i], kMaxSpotCheckPixels);
    if (!x.ok() || !y.ok()) {
      c.detail = absl::StrCat("image ", i,
                              " does not decode: ", (!x.ok() ? x.status() : y.status()).message());
      return c;
    }
    if (x->width != y->width || x->height != y->height) {
      c.detail = absl::StrCat("image ", i, " is ", x->width, "x", x->height, " against ", y->width,
                              "x", y->height);
      return c;
    }
    int max_diff = 0;
    double squares = 0;
    for (size_t p = 0; p < x->pixels.size(); ++p) {
      const int d = std::abs(static_cast<int>(x->pixels[p]) - static_cast<int>(y->pixels[p]));
      max_diff = std::max(max_diff, d);
      squares += static_cast<double>(d) * d;
    }
    const double mse = x->pixels.empty() ? 0 : squares / static_cast<double>(x->pixels.size());
    const double psnr =
        mse == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(255.0 * 255.0 / mse);
    c.max_abs_diff = std::max(c.max_abs_diff, max_diff);
    c.min_psnr_db = std::min(c.min_psnr_db, psnr);
  }
  for (size_t i = 0; i < a.videos.size(); ++i) {
    if (a.videos[i] == b.videos[i]) continue;
    media::VideoCompareLimits limits;
    limits.max_frame_pixels = kMaxSpotCheckPixels;
    limits.max_frames = kMaxSpotCheckFrames;
    auto v = media::CompareVideos(a.videos[i], b.videos[i], limits);
    if (!v.ok()) {
      c.detail = absl::StrCat("video ", i, ": ", v.status().message());
      return c;
    }
    if (v->frames_a != v->frames_b) {
      c.detail = absl::StrCat("video ", i, " has ", v->frames_a, " frames against ", v->frames_b);
      return c;
    }
    if (!v->SameShape()) {
      c.detail = absl::StrCat("video ", i, ": ", v->difference);
      return c;
    }
    if (v->frames_a == 0) {
      c.detail = absl::StrCat("video ", i, " has no frames");
      return c;
    }
    c.min_psnr_db = std::min(c.min_psnr_db, v->psnr_db);
  }
  c.match = c.max_abs_diff <= tolerance.max_abs_diff &&
            (tolerance.min_psnr_db <= 0 || c.min_psnr_db >= tolerance.min_psnr_db);
  if (!c.match) {
    c.detail = absl::StrFormat(
        "pixels differ: max abs difference %d (allowed %d), PSNR %.2f dB (at least %.2f)",
        c.max_abs_diff, tolerance.max_abs_diff, c.min_psnr_db, tolerance.min_psnr_db);
  }
  return c;
}

SpotVerdict JudgeSpotCheck(bool first_matches_checker, std::optional<bool> third_matches_first,
                           std::optional<bool> third_matches_checker) {
  if (first_matches_checker) return SpotVerdict::kAgree;
  if (!third_matches_first.has_value() || !third_matches_checker.has_value()) {
    return SpotVerdict::kUnresolved;
  }
  if (*third_matches_first && !*third_matches_checker) return SpotVerdict::kCheckerWrong;
  if (*third_matches_checker && !*third_matches_first) return SpotVerdict::kFirstWrong;
  return SpotVerdict::kUnresolved;
}

const char* SpotVerdictName(SpotVerdict verdict) {
  switch (verdict) {
    case SpotVerdict::kAgree:
      return "agree";
    case SpotVerdict::kFirstWrong:
      return "first_wrong";
    case SpotVerdict::kCheckerWrong:
      return "checker_wrong";
    case SpotVerdict::kUnresolved:
      return "unresolved";
  }
  return "unresolved";
}

// One check: the re-run on a checker, the comparison, and the tie-break on a third node. Kept
// alive by its re-runs' callbacks; tells its owner once when it ends (Finished).
class SpotChecker::Check : public std::enable_shared_from_this<SpotChecker::Check> {
 public:
  Check(SpotChecker* owner, Job job)
      : owner_(owner),
        job_(std::move(job)),
        tolerance_(owner->config_.For(job_.pipeline)),
        rid_(LogSafe(job_.request_id)) {}

  void Begin() {
    auto checker = owner_->PickOther(job_.pipeline, job_.model_id, {job_.first.node});
    if (checker == nullptr) {
      owner_->Record(job_.first.node, "skipped_no_node");
      return End();
    }
    auto self = shared_from_this();
    RunOn(checker, [self](absl::StatusOr<SpotResult> r) { self->OnChecker(std::move(r)); });
  }

 private:
  void RunOn(std::shared_ptr<const NodeView> node, Done then) {
    nodes_.push_back(node);
    contexts_.push_back(std::make_unique<grpc::ClientContext>());
    grpc::ClientContext* context = contexts_.back().get();
    context->set_deadline(
        absl::ToChronoTime(owner_->deps_.now() + absl::Milliseconds(owner_->config_.timeout_ms)));
    context->AddMetadata("x-request-id", absl::StrCat("verify-", job_.request_id.substr(0, 100)));
    if (!owner_->Track(context)) {
      return then(absl::CancelledError("the gateway is shutting down"));
    }
    if (node->connection != nullptr) node->connection->in_flight().fetch_add(1);
    SpotChecker* owner = owner_;
    job_.run(*node, context,
             [owner, node, context, then = std::move(then)](absl::StatusOr<SpotResult> r) {
               if (node->connection != nullptr) node->connection->in_flight().fetch_sub(1);
               owner->Untrack(context);
               if (r.ok()) r->node = node->id;
               then(std::move(r));
             });
  }

  void OnChecker(absl::StatusOr<SpotResult> result) {
    const std::string checker = nodes_.back()->id;
    if (!result.ok()) {
      spdlog::info("[{}] spot check of {} '{}' from {}: the re-run on {} failed: {}", rid_,
                   job_.pipeline, LogSafe(job_.model_id), job_.first.node, checker,
                   LogSafe(result.status().ToString(), kLogSafeMaxErrorBytes));
      owner_->Record(checker, "error");
      return End();
    }
    checker_ = *std::move(result);
    const SpotComparison cmp = CompareSpotResults(job_.first, checker_, tolerance_);
    if (cmp.match) {
      spdlog::debug("[{}] spot check of {} '{}': {} agrees with {}", rid_, job_.pipeline,
                    LogSafe(job_.model_id), job_.first.node, checker);
      owner_->Record(job_.first.node, "match");
      return End();
    }
    detail_ = cmp.detail;
    auto third = owner_->PickOther(job_.pipeline, job_.model_id, {job_.first.node, checker});
    if (third == nullptr) return Conclude(SpotVerdict::kUnresolved, "no third node to ask");
    auto self = shared_from_this();
    RunOn(third, [self](absl::StatusOr<SpotResult> r) { self->OnThird(std::move(r)); });
  }

  void OnThird(absl::StatusOr<SpotResult> result) {
    if (!result.ok()) {
      return Conclude(SpotVerdict::kUnresolved,
                      absl::StrCat("the tie-break on ", nodes_.back()->id, " failed: ",
                                   LogSafe(result.status().ToString(), kLogSafeMaxErrorBytes)));
    }
    third_ = *std::move(result);
    const bool with_first = CompareSpotResults(third_, job_.first, tolerance_).match;
    const bool with_checker = CompareSpotResults(third_, checker_, tolerance_).match;
    Conclude(JudgeSpotCheck(false, with_first, with_checker),
             absl::StrCat(third_.node, " agrees with ",
                          with_first && with_checker ? "both"
                          : with_first               ? job_.first.node
                          : with_checker             ? checker_.node
                                                     : "neither"));
  }

  void Conclude(SpotVerdict verdict, const std::string& how) {
    const std::string& first = job_.first.node;
    const std::string& checker = checker_.node;
    auto receipt = [](const SpotResult& r) {
      return r.receipt_json.empty() ? std::string("(none)") : r.receipt_json;
    };
    spdlog::warn(
        "[{}] spot check of {} '{}': the results of {} (answered) and {} (checker) differ: {}; "
        "{}: {}. Receipts: {}: {}; {}: {}{}",
        rid_, job_.pipeline, LogSafe(job_.model_id), first, checker, detail_, how,
        SpotVerdictName(verdict), first, receipt(job_.first), checker, receipt(checker_),
        third_.node.empty() ? std::string()
                            : absl::StrCat("; ", third_.node, ": ", receipt(third_)));
    switch (verdict) {
      case SpotVerdict::kFirstWrong:
        owner_->Record(checker, "match");
        owner_->Record(first, "mismatch");
        owner_->Blame(first, job_.model_id);
        break;
      case SpotVerdict::kCheckerWrong:
        owner_->Record(first, "match");
        owner_->Record(checker, "mismatch");
        owner_->Blame(checker, job_.model_id);
        break;
      case SpotVerdict::kAgree:  // not reached: Conclude follows a mismatch
      case SpotVerdict::kUnresolved:
        owner_->Record(first, "unresolved");
        owner_->Record(checker, "unresolved");
        break;
    }
    End();
  }

  void End() {
    if (ended_) return;
    ended_ = true;
    owner_->Finished(this);  // the owner may be gone after this: nothing of it is used below
  }

  SpotChecker* const owner_;
  const Job job_;
  const VerificationPipeline tolerance_;
  const std::string rid_;
  std::vector<std::shared_ptr<const NodeView>> nodes_;  // the checker, then the third
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts_;
  SpotResult checker_;
  SpotResult third_;
  std::string detail_;
  bool ended_ = false;
};

absl::StatusOr<std::unique_ptr<SpotChecker>> SpotChecker::Create(const VerificationConfig& config,
                                                                 Deps deps) {
  if (deps.router == nullptr || !deps.snapshot || !deps.random || !deps.now) {
    return absl::InvalidArgumentError(
        "a spot checker needs a router, snapshots, a random source "
        "and a clock");
  }
  if (deps.shared_poll < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("a spot checker's shared_poll must be >= 0");
  }
  return std::unique_ptr<SpotChecker>(new SpotChecker(config, std::move(deps)));
}

SpotChecker::SpotChecker(const VerificationConfig& config, Deps deps)
    : config_(config), deps_(std::move(deps)) {
  if (deps_.metrics != nullptr) {
    checks_ = &deps_.metrics->CounterFamily(
        "verification_total",
        "Spot checks of results by node and result: match, mismatch (the node was blamed), "
        "unresolved, error (the re-run failed), skipped_busy, skipped_no_node.");
  }
  if (deps_.shared != nullptr && deps_.shared_poll > absl::ZeroDuration()) {
    poller_ = std::thread([this] { PollShared(); });
  }
}

SpotChecker::~SpotChecker() {
  stop_poll_.Stop();
  if (poller_.joinable()) poller_.join();
  MutexLock lock(&mu_);
  closing_ = true;
  for (grpc::ClientContext* context : contexts_) context->TryCancel();
  // Cancelled re-runs end at once; the wait is bounded all the same (a re-run's deadline).
  idle_cv_.WaitFor(&mu_, std::chrono::milliseconds(config_.timeout_ms + 5000),
                   [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; });
  if (in_flight_ != 0) spdlog::error("{} spot checks still running at shutdown", in_flight_);
}

bool SpotChecker::Deterministic(const std::string& pipeline, const std::string& model_id,
                                bool seeded) const {
  if (!VerifiablePipeline(pipeline)) return false;
  const auto& models = config_.deterministic_models;
  if (std::find(models.begin(), models.end(), model_id) != models.end()) return true;
  if (pipeline == pipelines::kUpscale || pipeline == pipelines::kSegmentAnything2 ||
      pipeline == pipelines::kTranscode) {
    return true;
  }
  const bool listed = config_.pipelines.count(pipeline) != 0;
  if (pipeline == pipelines::kImageToImage || pipeline == pipelines::kTextToImage ||
      pipeline == pipelines::kImageToVideo) {
    return seeded && (listed || pipeline == pipelines::kImageToImage);
  }
  return listed;
}

bool SpotChecker::Sample(const std::string& pipeline, const std::string& model_id, bool seeded) {
  if (config_.max_in_flight == 0 || !Deterministic(pipeline, model_id, seeded)) return false;
  const double rate = config_.For(pipeline).sample_rate;
  if (rate <= 0) return false;
  if (rate >= 1) return true;
  const double u = static_cast<double>(deps_.random() >> 11) * 0x1.0p-53;
  return u < rate;
}

void SpotChecker::Start(Job job) {
  {
    MutexLock lock(&mu_);
    if (closing_) return;
    if (in_flight_ < config_.max_in_flight) {
      ++in_flight_;
    } else {
      ++counts_["skipped_busy"];
      if (checks_ != nullptr) {
        checks_->Add({{"node", job.first.node}, {"result", "skipped_busy"}}).Increment();
      }
      return;
    }
  }
  std::make_shared<Check>(this, std::move(job))->Begin();
}

std::shared_ptr<const NodeView> SpotChecker::PickOther(
    const std::string& pipeline, const std::string& model_id,
    const std::set<std::string>& excluded) const {
  const SnapshotPtr snapshot = deps_.snapshot();
  if (snapshot == nullptr) return nullptr;
  RouteRequest route;
  route.pipeline = pipeline;
  route.model_id = model_id;
  route.excluded = excluded;
  // Explain counts nothing: a check is not a routing decision the nodes' missed-job counters
  // should see.
  const RouteExplanation explained = deps_.router->Explain(*snapshot, route);
  const CandidateExplanation* pick = nullptr;
  for (const CandidateExplanation& c : explained.candidates) {
    if (c.filter != RouteFilter::kNone || excluded.count(c.node_id) != 0) continue;
    if (pick == nullptr || c.best) pick = &c;
    if (c.best) break;
  }
  if (pick == nullptr) return nullptr;
  for (const auto& node : snapshot->nodes) {
    if (node->id == pick->node_id && node->connection != nullptr) return node;
  }
  return nullptr;
}

void SpotChecker::Record(const std::string& node, const std::string& result) {
  {
    MutexLock lock(&mu_);
    ++counts_[result];
  }
  if (checks_ != nullptr) checks_->Add({{"node", node}, {"result", result}}).Increment();
}

std::shared_ptr<const NodeView> SpotChecker::Find(const std::string& node) const {
  const SnapshotPtr snapshot = deps_.snapshot();
  if (snapshot == nullptr) return nullptr;
  for (const auto& n : snapshot->nodes) {
    if (n->id == node) return n;
  }
  return nullptr;
}

void SpotChecker::Blame(const std::string& node, const std::string& model_id) {
  int64_t blamed = 0;
  {
    MutexLock lock(&mu_);
    blamed = ++blamed_[node];
  }
  // With shared verdicts the count is every gateway's; when Redis cannot count it, this
  // gateway's own count decides (logged).
  const char* counted_by = "";
  if (deps_.shared != nullptr) {
    absl::StatusOr<int64_t> total = deps_.shared->AddBlame(node);
    if (total.ok()) {
      blamed = *total;
      counted_by = " by all gateways";
    } else {
      spdlog::warn(
          "spot checks: cannot count a mismatch of orchestrator {} with the other gateways ({}); "
          "counted by this gateway only",
          node, total.status().ToString());
    }
  }
  // Every eject_after mismatches: a node back from an ejection is ejected again. A shared count
  // reaches each multiple once, on one gateway, which ejects it for all.
  const bool eject = blamed % config_.eject_after == 0;
  const std::shared_ptr<const NodeView> view = Find(node);
  // The routing penalty: a wrong result counts as a failed attempt in the node's health.
  if (view != nullptr) {
    deps_.router->ReportAttempt(*view, model_id, AttemptOutcome::kNodeFailure,
                                absl::ZeroDuration());
  }
  spdlog::warn("orchestrator {} blamed for {} spot-check mismatch{}{} ({} eject it)", node, blamed,
               blamed == 1 ? "" : "es", counted_by, config_.eject_after);
  if (!eject) return;
  const absl::Time until = deps_.now() + absl::Seconds(config_.eject_seconds);
  {
    MutexLock lock(&mu_);
    ejected_.insert(node);
    absl::Time& banned = banned_until_[node];
    banned = std::max(banned, until);
  }
  if (view != nullptr) deps_.router->Ban(*view, absl::Seconds(config_.eject_seconds));
  spdlog::error(
      "orchestrator {} ejected for {} s: {} of its results were proven wrong by spot checks{}",
      node, config_.eject_seconds, blamed, counted_by);
  if (deps_.shared != nullptr) {
    if (absl::Status st = deps_.shared->Eject(node, until); !st.ok()) {
      spdlog::warn("spot checks: cannot share the ejection of orchestrator {}: {}", node,
                   st.ToString());
    }
  }
  DisputeRows(node);
}

int SpotChecker::ApplySharedEjections() {
  if (deps_.shared == nullptr) return 0;
  const absl::Time now = deps_.now();
  absl::StatusOr<std::vector<SharedVerdicts::Ejection>> ejections = deps_.shared->Ejected(now);
  {
    MutexLock lock(&mu_);
    if (!ejections.ok()) {
      if (!shared_down_) {
        spdlog::warn("spot checks: cannot read the other gateways' ejections ({}); retrying",
                     ejections.status().ToString());
      }
      shared_down_ = true;
      return 0;
    }
    if (shared_down_) spdlog::info("spot checks: the other gateways' ejections readable again");
    shared_down_ = false;
    // Ejections that ended are forgotten (bounded by the nodes ejected at once).
    std::erase_if(banned_until_, [now](const auto& entry) { return entry.second <= now; });
  }
  int applied = 0;
  for (const SharedVerdicts::Ejection& e : *ejections) {
    if (e.until <= now) continue;
    {
      MutexLock lock(&mu_);
      auto it = banned_until_.find(e.node);
      if (it != banned_until_.end() && it->second >= e.until) continue;
    }
    const std::shared_ptr<const NodeView> view = Find(e.node);
    if (view == nullptr) continue;  // not registered here (yet): a later poll bans it
    deps_.router->Ban(*view, e.until - now);
    {
      MutexLock lock(&mu_);
      banned_until_[e.node] = e.until;
      ejected_.insert(e.node);
    }
    ++applied;
    spdlog::error(
        "orchestrator {} ejected for {} s: another gateway's spot checks proved its results wrong",
        e.node, absl::ToInt64Seconds(e.until - now));
    DisputeRows(e.node);
  }
  return applied;
}

void SpotChecker::PollShared() {
  while (!stop_poll_.WaitFor(absl::ToChronoMilliseconds(deps_.shared_poll))) {
    ApplySharedEjections();
  }
}

void SpotChecker::DisputeRows(const std::string& node) {
  if (deps_.ledger == nullptr) return;
  auto disputed = deps_.ledger->DisputeOrchestrator(node, "verification", absl::InfinitePast());
  if (disputed.ok()) {
    spdlog::error("orchestrator {}: {} paid ledger rows disputed (\"verification\")", node,
                  *disputed);
  } else {
    spdlog::error("orchestrator {}: cannot dispute its ledger rows: {}", node,
                  disputed.status().ToString());
  }
}

void SpotChecker::Finished(Check*) {
  MutexLock lock(&mu_);
  if (--in_flight_ == 0) idle_cv_.SignalAll();
}

bool SpotChecker::Track(grpc::ClientContext* context) {
  MutexLock lock(&mu_);
  if (closing_) return false;
  contexts_.insert(context);
  return true;
}

void SpotChecker::Untrack(grpc::ClientContext* context) {
  MutexLock lock(&mu_);
  contexts_.erase(context);
}

int SpotChecker::Blamed(const std::string& node) const {
  MutexLock lock(&mu_);
  auto it = blamed_.find(node);
  return it == blamed_.end() ? 0 : it->second;
}

bool SpotChecker::Ejected(const std::string& node) const {
  MutexLock lock(&mu_);
  return ejected_.count(node) != 0;
}

int64_t SpotChecker::Count(const std::string& result) const {
  MutexLock lock(&mu_);
  auto it = counts_.find(result);
  return it == counts_.end() ? 0 : it->second;
}

bool SpotChecker::WaitIdle(absl::Duration timeout) {
  MutexLock lock(&mu_);
  return idle_cv_.WaitFor(&mu_, absl::ToChronoMilliseconds(timeout),
                          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; });
}

}  // namespace switchyard::gateway
