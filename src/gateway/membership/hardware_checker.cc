#include "gateway/membership/hardware_checker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/hardware_challenge.h"
#include "common/logging.h"
#include "common/secure_random.h"
#include "common/status.h"
#include "gateway/routing/node_health.h"

namespace switchyard::gateway {
namespace {

// Every answer's deadline: a node slower than a GPU still answers, and is judged by its time.
constexpr absl::Duration kAnswerDeadline = absl::Seconds(120);
// After a failed call (the node was busy or unreachable), the next try; after a busy refusal
// drawn in [0.5, 1.5] x this, so that gateways that met at a node do not meet there again.
constexpr absl::Duration kRetryAfterError = absl::Seconds(30);

// The largest answer the node's channel takes (0 without one: nothing is refused for its size).
int64_t MaxAnswerBytes(const NodeView& node) {
  return node.connection != nullptr ? node.connection->max_message_bytes() : 0;
}

bool ClaimsGpu(const node::v1::NodeStatus& status) {
  return std::find(status.hardware().begin(), status.hardware().end(), "cuda") !=
         status.hardware().end();
}

// The video claims of kVideoHardwareClaims the node advertises, in that order (each once).
std::vector<std::string> VideoClaims(const node::v1::NodeStatus& status) {
  std::vector<std::string> claims;
  for (const char* claim : kVideoHardwareClaims) {
    if (std::find(status.hardware().begin(), status.hardware().end(), claim) !=
        status.hardware().end()) {
      claims.emplace_back(claim);
    }
  }
  return claims;
}

bool Fails(HardwareVerdict v) {
  return v == HardwareVerdict::kTooSlow || v == HardwareVerdict::kWrong ||
         v == HardwareVerdict::kUnanswered;
}

std::string ClaimKey(const node::v1::NodeStatus& status) {
  return absl::StrJoin(status.hardware(), ",");
}

std::optional<HardwareVerdict> FailedVerdict(const std::string& name) {
  if (name == "too_slow") return HardwareVerdict::kTooSlow;
  if (name == "wrong") return HardwareVerdict::kWrong;
  if (name == "unanswered") return HardwareVerdict::kUnanswered;
  return std::nullopt;
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

ChallengeRefusal ClassifyChallengeStatus(const grpc::Status& status, int64_t max_receive_bytes) {
  if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) return ChallengeRefusal::kOther;
  const std::string text = status.error_message();  // returned by value: kept for the view below
  if (text == kChallengeBusyMessage) return ChallengeRefusal::kBusy;
  // gRPC's message size filter, refusing an answer as it comes (1.51: "Received message larger
  // than max (%u vs. %d)").
  absl::string_view message = text;
  if (!absl::ConsumePrefix(&message, "Received message larger than max (") ||
      !absl::ConsumeSuffix(&message, ")")) {
    return ChallengeRefusal::kOther;
  }
  const std::pair<absl::string_view, absl::string_view> sizes =
      absl::StrSplit(message, absl::MaxSplits(" vs. ", 1));
  int64_t size = 0, max = 0;
  return absl::SimpleAtoi(sizes.first, &size) && absl::SimpleAtoi(sizes.second, &max) &&
                 max == max_receive_bytes && size > max
             ? ChallengeRefusal::kOversized
             : ChallengeRefusal::kOther;
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
    : options_(options),
      deps_(std::move(deps)),
      instance_(absl::BytesToHexString(SecureRandomBytes(8))) {}

absl::StatusOr<std::unique_ptr<HardwareChecker>> HardwareChecker::Create(
    VerificationConfig::Hardware options, Deps deps, bool start_thread) {
  if (!deps.snapshot || !deps.random || !deps.now) {
    return absl::InvalidArgumentError("hardware checker: snapshot, random and now are required");
  }
  if (options.interval_s < 10 || options.gpu_max_ms < 1 || options.failed_capacity < 1 ||
      deps.shared_poll < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("hardware checker: invalid options");
  }
  std::unique_ptr<HardwareChecker> c(new HardwareChecker(options, std::move(deps)));
  if (c->deps_.metrics != nullptr) {
    c->checks_ = &c->deps_.metrics->CounterFamily(
        "hardware_checks_total",
        "Known-answer hardware checks by node, claimed class (gpu, cpu) and result: ok, "
        "too_slow (slower than the claimed class allows; routed as what it performs like), "
        "wrong (a wrong answer), unanswered, retry (a first slow GPU answer, checked again).");
    if (c->deps_.shared != nullptr) {
      c->shared_applied_ = &c->deps_.metrics->CounterFamily(
          "shared_hardware_findings_applied_total",
          "Another gateway's failed hardware finding (shared through Redis) that began to cap a "
          "node here, by node and the finding's verdict (too_slow, wrong, unanswered); a change "
          "of the finding applied (another gateway, another verdict) counts again, a renewal "
          "does not. This gateway's own findings are not counted.");
      c->shared_cleared_ = &c->deps_.metrics->CounterFamily(
          "shared_hardware_findings_cleared_total",
          "Another gateway's hardware finding that stopped capping a node here (its gateway "
          "found the node ok, the finding ended, or the node's claim or key changed), by node "
          "and the finding's verdict.");
    }
  }
  if (start_thread) c->thread_ = std::thread([p = c.get()] { p->Loop(); });
  if (c->deps_.shared != nullptr && c->deps_.shared_poll > absl::ZeroDuration()) {
    c->poller_ = std::thread([p = c.get()] { p->PollShared(); });
  }
  return c;
}

HardwareChecker::~HardwareChecker() {
  stop_poll_.Stop();
  if (poller_.joinable()) poller_.join();
  {
    MutexLock lock(&mu_);
    stop_ = true;
    if (in_flight_ != nullptr) in_flight_->TryCancel();
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void HardwareChecker::BeginCall(grpc::ClientContext* context) {
  MutexLock lock(&mu_);
  if (stop_) context->TryCancel();
  in_flight_ = context;
}

bool HardwareChecker::EndCall() {
  MutexLock lock(&mu_);
  in_flight_ = nullptr;
  return stop_;
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
  auto shared = foreign_.find(node_id);
  // This gateway's own failed finding comes first (it can tell the most about it), except an
  // unanswered challenge when another gateway measured the node.
  const bool own_first = it != records_.end() && it->second.capped &&
                         (it->second.verdict != HardwareVerdict::kUnanswered ||
                          (shared != foreign_.end() && shared->second.verdict == "unanswered"));
  if (shared == foreign_.end() || own_first) {
    if (it == records_.end()) return std::nullopt;
    return it->second;
  }
  const HardwareFinding& f = shared->second;
  HardwareCheckRecord record = it != records_.end() ? it->second : HardwareCheckRecord{};
  if (it == records_.end()) {
    record.claim_key = f.claim_key;
    record.claimed =
        absl::StrContains(absl::StrCat(",", f.claim_key, ","), ",cuda,") ? "gpu" : "cpu";
    record.checked = f.checked;
  }
  record.verdict = FailedVerdict(f.verdict).value_or(HardwareVerdict::kUnchecked);
  record.shared_by = f.gateway;
  record.detail = absl::StrFormat(
      "another gateway (%s) found it %s: %s; routed as a CPU node: at most %d job(s) at once per "
      "model until that gateway finds it ok or its finding ends",
      LogSafe(f.gateway), f.verdict, LogSafe(f.detail, RedisHardwareFindings::kMaxDetailBytes),
      options_.failed_capacity);
  return record;
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
    std::string finding;
    HardwareCheckRecord record = Check(*node, previous, &finding);
    ++checked;
    // The key this gateway binds to the node, named in a finding it shares.
    const std::string key = deps_.shared != nullptr && deps_.node_key && !finding.empty()
                                ? absl::BytesToHexString(deps_.node_key(node->id))
                                : std::string();
    MutexLock lock(&mu_);
    const bool judged = !stop_ && record.checked != previous.checked;
    records_[node->id] = record;
    // What routing does: the cap is on the node's health record, read by the router's hot path.
    SyncCapLocked(*node);
    if (judged) ShareLocked(*node, record, finding, key);
  }
  // Nodes gone from the snapshot are forgotten (a finding of theirs in Redis ends by itself).
  MutexLock lock(&mu_);
  for (auto it = records_.begin(); it != records_.end();) {
    const bool known = std::any_of(snapshot->nodes.begin(), snapshot->nodes.end(),
                                   [&](const auto& n) { return n->id == it->first; });
    if (!known) recorded_.erase(it->first);
    it = known ? std::next(it) : records_.erase(it);
  }
  return checked;
}

const HardwareFinding* HardwareChecker::ForeignLocked(const NodeView& node) const {
  auto it = foreign_.find(node.id);
  if (it == foreign_.end() || it->second.claim_key != ClaimKey(node.status)) return nullptr;
  return &it->second;
}

void HardwareChecker::SyncCapLocked(const NodeView& node) {
  if (node.stats == nullptr) return;
  auto it = records_.find(node.id);
  // A record of an earlier registration (other NodeStats) caps nothing: it is checked anew.
  const bool own = it != records_.end() && it->second.capped &&
                   it->second.stats == static_cast<const void*>(node.stats.get());
  node.stats->set_capacity_cap(own || ForeignLocked(node) != nullptr ? options_.failed_capacity
                                                                     : 0);
}

void HardwareChecker::ShareLocked(const NodeView& node, const HardwareCheckRecord& record,
                                  const std::string& finding, const std::string& node_key_hex) {
  if (deps_.shared == nullptr) return;
  if (!finding.empty()) {
    HardwareFinding f;
    f.node = node.id;
    f.instance = instance_;
    f.gateway = deps_.gateway_id;
    f.verdict = HardwareVerdictName(record.verdict);
    f.claim_key = record.claim_key;
    f.node_key = node_key_hex;
    f.detail = finding;
    f.checked = record.checked;
    // Renewed by every failed re-check (at most 1.25 x interval_s later, 30 s when unanswered, 45 s
    // when busy): the finding lasts while this gateway keeps finding it, and ends soon after it
    // stops.
    f.until = record.checked + 2 * absl::Seconds(options_.interval_s);
    to_clear_.erase(node.id);
    to_record_[node.id] = std::move(f);
    recorded_.insert(node.id);  // from now on there may be one in Redis
  } else if (record.verdict == HardwareVerdict::kOk) {
    // Only this gateway's own finding goes: another gateway's stands until that gateway finds
    // the node ok (shared_hardware_findings.h says why).
    to_record_.erase(node.id);
    if (recorded_.count(node.id) != 0) to_clear_.insert(node.id);
  }
}

HardwareCheckRecord HardwareChecker::Check(const NodeView& node,
                                           const HardwareCheckRecord& previous,
                                           std::string* finding) {
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
  BeginCall(&context);
  const absl::Time start = deps_.now();
  const grpc::Status status =
      node.connection != nullptr
          ? node.connection->stub()->HardwareChallenge(&context, request, &response)
          : grpc::Status(grpc::StatusCode::UNAVAILABLE, "no connection");
  const absl::Time end = deps_.now();
  if (EndCall()) return previous;  // cancelled by the destructor: no finding
  record.checked = end;
  record.answer_ms = absl::ToDoubleMilliseconds(end - start);

  // An answer over the channel's limit was refused unread: a wrong one (no honest answer comes
  // near it), not a missing one.
  const ChallengeRefusal refusal = ClassifyChallengeStatus(status, MaxAnswerBytes(node));
  const bool oversized = refusal == ChallengeRefusal::kOversized;
  // One product, chosen now that the answer is in, recomputed here.
  bool digests_ok = false;
  int matrix = -1;
  if (status.ok() && response.digests_size() == request.matrices()) {
    matrix = static_cast<int>(deps_.random() % static_cast<uint64_t>(request.matrices()));
    digests_ok = response.digests(matrix) == ReferenceChallengeDigest(request, matrix);
  }
  const HardwareJudgement judged =
      JudgeHardwareAnswer(gpu, status.ok() || oversized, digests_ok, end - start,
                          absl::Milliseconds(options_.gpu_max_ms), record.slow_streak);
  record.slow_streak = judged.slow_streak;

  // The video claims, after a judged compute answer (not while a slow GPU is checked again, nor
  // when the node did not answer at all: it is asked again in 30 s).
  const std::vector<std::string> video_claims = VideoClaims(node.status);
  VideoOutcome video;
  if (!video_claims.empty() && !judged.recheck_soon &&
      judged.verdict != HardwareVerdict::kUnanswered) {
    video = CheckVideo(node, video_claims);
    if (video.cancelled) return previous;
    record.checked = deps_.now();
  }
  // The record's verdict: the compute challenge's, unless that passed and a video claim failed.
  record.verdict = judged.verdict;
  for (const auto& [verdict, found] : video.claims) {
    if (!Fails(record.verdict) && Fails(verdict)) record.verdict = verdict;
  }

  const std::string work =
      absl::StrFormat("%d products of %dx%d", request.matrices(), request.size(), request.size());
  bool video_fails = false;
  for (const auto& c : video.claims) video_fails = video_fails || Fails(c.first);
  const bool fails_claim = judged.verdict == HardwareVerdict::kTooSlow ||
                           judged.verdict == HardwareVerdict::kWrong ||
                           (gpu && judged.verdict == HardwareVerdict::kUnanswered) || video_fails;
  const std::string routed =
      fails_claim ? absl::StrCat("routed as a CPU node: at most ", options_.failed_capacity,
                                 " job(s) at once per model")
                  : "routed as advertised";
  // What was found (shared with the other gateways as is), then what routing does about it.
  std::string found;
  switch (judged.verdict) {
    case HardwareVerdict::kOk:
      found = absl::StrFormat("answered %s right in %.0f ms on %s (%s)", work, record.answer_ms,
                              LogSafe(response.device(), 64), gpu ? "a GPU's time" : "CPU class");
      break;
    case HardwareVerdict::kTooSlow:
      found = absl::StrFormat(
          "claims cuda but answered %s in %.0f ms, twice in a row (a GPU answers within %d ms)",
          work, record.answer_ms, options_.gpu_max_ms);
      break;
    case HardwareVerdict::kWrong:
      if (oversized) {
        found = absl::StrFormat("answered more than %d bytes to a challenge of %s",
                                MaxAnswerBytes(node), work);
      } else if (response.digests_size() != request.matrices()) {
        found = absl::StrFormat("answered %d digests for %s", response.digests_size(), work);
      } else {
        found = absl::StrFormat("answered product %d of %s wrongly", matrix, work);
      }
      break;
    case HardwareVerdict::kUnanswered:
      found =
          absl::StrFormat("did not answer a challenge of %s: %s: %s", work,
                          GrpcCodeName(status.error_code()), LogSafe(status.error_message(), 200));
      break;
    case HardwareVerdict::kUnchecked:
      found = absl::StrFormat(
          "claims cuda; answered %s in %.0f ms (a GPU answers within %d ms); checking again "
          "before judging (a first answer may pay the GPU's start-up)",
          work, record.answer_ms, options_.gpu_max_ms);
      break;
  }
  // Each video claim's finding after the compute one's.
  for (size_t i = 0; i < video.claims.size(); ++i) {
    const auto& [verdict, what] = video.claims[i];
    record.video.push_back(absl::StrCat(video_claims[i], " ", HardwareVerdictName(verdict)));
    absl::StrAppend(&found, "; ", video_claims[i], ": ", what);
  }
  // A refusal because the node runs another challenge is not shared at first: with several
  // gateways that is most likely another gateway's (they all check a node when it registers), and
  // this gateway asks again soon. Refused kBusyChecksShared times in a row, it no longer looks
  // like gateways meeting there: it is shared as any other unanswered claim is (else a node could
  // refuse one gateway's challenges for ever, and only that gateway would cap it).
  const bool busy =
      record.verdict == HardwareVerdict::kUnanswered &&
      (refusal == ChallengeRefusal::kBusy ||
       ClassifyChallengeStatus(video.status, MaxAnswerBytes(node)) == ChallengeRefusal::kBusy);
  record.busy_streak = busy ? previous.busy_streak + 1 : 0;
  const bool busy_too_long = busy && record.busy_streak >= kBusyChecksShared;
  if (busy_too_long) {
    found = absl::StrCat("refused ", record.busy_streak,
                         " challenges in a row as busy (RESOURCE_EXHAUSTED); ", found);
  }
  record.detail =
      judged.verdict == HardwareVerdict::kUnchecked ? found : absl::StrCat(found, "; ", routed);
  // Whether this gateway's finding caps the node (CheckDue sets the cap): a failed claim does, an
  // ok lifts it, anything else (a CPU node that did not answer, a first slow answer) leaves it.
  const bool same_stats = previous.stats == static_cast<const void*>(node.stats.get());
  record.capped =
      fails_claim || (record.verdict != HardwareVerdict::kOk && same_stats && previous.capped);
  if (fails_claim && (!busy || busy_too_long)) *finding = found;
  if (checks_ != nullptr) {
    checks_
        ->Add({{"orchestrator", node.id},
               {"claimed", record.claimed},
               {"result", judged.recheck_soon ? "retry" : HardwareVerdictName(judged.verdict)}})
        .Increment();
    // One count per video claim judged, `claimed` one of kVideoHardwareClaims' fixed names.
    for (size_t i = 0; i < video.claims.size(); ++i) {
      checks_
          ->Add({{"orchestrator", node.id},
                 {"claimed", video_claims[i]},
                 {"result", HardwareVerdictName(video.claims[i].first)}})
          .Increment();
    }
  }
  if (fails_claim) {
    spdlog::warn("hardware check: {} {}", node.id, record.detail);
  } else if (record.verdict != previous.verdict || judged.recheck_soon) {
    spdlog::info("hardware check: {} {}", node.id, record.detail);
  }

  // The next check: at once after a first slow GPU answer, sooner after an error (drawn after a
  // busy refusal), else at the interval, drawn in [0.75, 1.25] x interval so that gateways do not
  // all check together.
  absl::Duration next;
  if (judged.recheck_soon) {
    next = absl::ZeroDuration();
  } else if (busy) {
    next = kRetryAfterError * (0.5 + static_cast<double>(deps_.random() % 1000) / 1000.0);
  } else if (record.verdict == HardwareVerdict::kUnanswered) {
    next = kRetryAfterError;
  } else {
    const double jitter = 0.75 + 0.5 * static_cast<double>(deps_.random() % 1000) / 1000.0;
    next = absl::Seconds(options_.interval_s) * jitter;
  }
  record.next_check = end + next;
  if (judged.recheck_soon) record.verdict = previous.verdict;  // not judged yet
  return record;
}

HardwareChecker::VideoOutcome HardwareChecker::CheckVideo(const NodeView& node,
                                                          const std::vector<std::string>& claims) {
  VideoOutcome out;
  const media::VideoChallengeShape& shape = deps_.video;
  node::v1::VideoChallengeRequest request;
  request.set_seed(SecureRandomBytes(32));
  // The clips to decode and their frames' digests, made here with the software codecs before the
  // node's clock starts. A clip this gateway cannot make (FFmpeg without libx265) leaves its
  // claim unchecked, not failed.
  struct Decode {
    const char* claim;
    const char* encoder;
    AVCodecID codec;
    std::string* clip;
    std::vector<std::string> expected;
    std::string unavailable;  // why this gateway could not make the clip ("" when made)
  };
  Decode decodes[] = {{"nvdec-h264", "libx264", AV_CODEC_ID_H264, request.mutable_h264(), {}, {}},
                      {"nvdec-hevc", "libx265", AV_CODEC_ID_HEVC, request.mutable_hevc(), {}, {}}};
  const auto claimed = [&](const char* claim) {
    return std::find(claims.begin(), claims.end(), claim) != claims.end();
  };
  for (Decode& d : decodes) {
    if (!claimed(d.claim)) continue;
    auto clip = media::EncodeVideoChallengeClip(request.seed(), d.encoder, shape.width,
                                                shape.height, shape.frames, 1);
    auto digests = clip.ok() ? media::VideoChallengeDigests(*clip, d.codec, false, {})
                             : absl::StatusOr<std::vector<std::string>>(clip.status());
    if (!digests.ok()) {
      d.unavailable = std::string(digests.status().message());
      continue;
    }
    *d.clip = *std::move(clip);
    d.expected = *std::move(digests);
  }
  if (claimed("nvenc-h264")) {
    request.set_encode_frames(shape.frames);
    request.set_encode_width(shape.width);
    request.set_encode_height(shape.height);
  }
  node::v1::VideoChallengeResponse response;
  if (request.h264().empty() && request.hevc().empty() && request.encode_frames() == 0) {
    out.status = grpc::Status::OK;
  } else {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoSeconds(kAnswerDeadline));
    BeginCall(&context);
    const absl::Time start = deps_.now();
    out.status = node.connection != nullptr
                     ? node.connection->stub()->VideoChallenge(&context, request, &response)
                     : grpc::Status(grpc::StatusCode::UNAVAILABLE, "no connection");
    out.answer_ms = absl::ToDoubleMilliseconds(deps_.now() - start);
    if (EndCall()) {
      out.cancelled = true;
      return out;
    }
  }
  // Each claim judged on its part of the answer (from the node: bounded by the sizes compared
  // and by CheckVideoChallengeEncoding's limits). An answer over the channel's limit, refused
  // unread, is wrong for every claim.
  const bool oversized =
      ClassifyChallengeStatus(out.status, MaxAnswerBytes(node)) == ChallengeRefusal::kOversized;
  for (const std::string& claim : claims) {
    HardwareVerdict verdict = HardwareVerdict::kOk;
    std::string found;
    const Decode* d = nullptr;
    for (const Decode& x : decodes) {
      if (claim == x.claim) d = &x;
    }
    if (d != nullptr && !d->unavailable.empty()) {
      verdict = HardwareVerdict::kUnchecked;
      found = absl::StrCat("not checked: this gateway cannot make a ", d->encoder,
                           " clip: ", LogSafe(d->unavailable, 200));
    } else if (oversized) {
      verdict = HardwareVerdict::kWrong;
      found = absl::StrFormat("answered more than %d bytes to the video challenge",
                              MaxAnswerBytes(node));
    } else if (!out.status.ok()) {
      verdict = HardwareVerdict::kUnanswered;
      found = absl::StrFormat("did not answer the video challenge: %s: %s",
                              GrpcCodeName(out.status.error_code()),
                              LogSafe(out.status.error_message(), 200));
    } else if (d != nullptr) {
      const auto& got =
          d->codec == AV_CODEC_ID_H264 ? response.h264_digests() : response.hevc_digests();
      const int expected = static_cast<int>(d->expected.size());
      int first_wrong = -1;
      if (got.size() == expected) {
        for (int i = 0; i < expected && first_wrong < 0; ++i) {
          if (got.Get(i) != d->expected[static_cast<size_t>(i)]) first_wrong = i;
        }
      }
      if (got.size() != expected) {
        verdict = HardwareVerdict::kWrong;
        found = absl::StrFormat("answered %d frame digests for a %d-frame %s clip", got.size(),
                                expected, avcodec_get_name(d->codec));
      } else if (first_wrong >= 0) {
        verdict = HardwareVerdict::kWrong;
        found = absl::StrFormat("decoded frame %d of a %d-frame %s clip wrongly", first_wrong,
                                expected, avcodec_get_name(d->codec));
      } else {
        found = absl::StrFormat("decoded a %d-frame %dx%d %s clip right", expected, shape.width,
                                shape.height, avcodec_get_name(d->codec));
      }
    } else {  // nvenc-h264
      const media::EncodedAnswerCheck check =
          media::CheckVideoChallengeEncoding(request.seed(), shape, response.encoded_h264());
      if (!check.ok) {
        verdict = HardwareVerdict::kWrong;
        found = absl::StrCat("encoded the challenge's frames wrongly: ", check.problem);
      } else {
        found = absl::StrFormat("encoded %d frames of %dx%d at %.1f dB", check.frames, shape.width,
                                shape.height, check.psnr_db);
      }
    }
    if (verdict == HardwareVerdict::kOk && out.answer_ms > options_.video_max_ms) {
      verdict = HardwareVerdict::kTooSlow;
      absl::StrAppend(&found,
                      absl::StrFormat(" but took %.0f ms (NVDEC/NVENC answers within %d ms)",
                                      out.answer_ms, options_.video_max_ms));
    }
    out.claims.emplace_back(verdict, std::move(found));
  }
  if (out.status.ok() && !response.device().empty()) {
    spdlog::debug("hardware check: {} answered the video challenge in {:.0f} ms on {}", node.id,
                  out.answer_ms, LogSafe(response.device(), 64));
  }
  return out;
}

void HardwareChecker::SharedDownLocked(const absl::Status& why) {
  if (!shared_down_) {
    spdlog::warn(
        "hardware check: cannot share findings with the other gateways ({}); each keeps its own "
        "until Redis answers",
        why.ToString());
  }
  shared_down_ = true;
}

int HardwareChecker::SyncShared() {
  if (deps_.shared == nullptr) return 0;
  MutexLock sync(&sync_mu_);
  const absl::Time now = deps_.now();
  std::map<std::string, HardwareFinding> records;
  std::set<std::string> clears;
  {
    MutexLock lock(&mu_);
    records.swap(to_record_);
    clears.swap(to_clear_);
  }
  // After one failure the rest waits for the next poll (Redis is down: no timeout per node).
  absl::Status failed;
  for (const std::string& node : clears) {
    const absl::Status st = failed.ok() ? deps_.shared->Clear(node, instance_) : failed;
    MutexLock lock(&mu_);
    if (st.ok()) {
      if (to_record_.count(node) == 0) recorded_.erase(node);
    } else if (!absl::IsInvalidArgument(st)) {
      failed = st;
      if (to_record_.count(node) == 0) to_clear_.insert(node);  // unless failed again since
    }
  }
  for (auto& [node, finding] : records) {
    const absl::Status st = !failed.ok()           ? failed
                            : finding.until <= now ? absl::OkStatus()
                                                   : deps_.shared->Record(finding, now);
    if (st.ok() || absl::IsInvalidArgument(st)) continue;  // not shareable: stays ours
    failed = st;
    MutexLock lock(&mu_);
    // Kept for the next poll, unless a later check found the node ok or failing again meanwhile.
    if (to_clear_.count(node) == 0) to_record_.emplace(node, std::move(finding));
  }
  absl::StatusOr<std::vector<HardwareFinding>> read =
      failed.ok() ? deps_.shared->Read(now) : absl::StatusOr<std::vector<HardwareFinding>>(failed);

  // The other gateways' findings that apply here: to a node registered here, for the claim it
  // still advertises, bound here to the key its finder saw; the latest per node.
  const SnapshotPtr snapshot = deps_.snapshot();
  std::map<std::string, HardwareFinding> applies;
  if (read.ok() && snapshot != nullptr) {
    std::map<std::string, const NodeView*> nodes;
    for (const auto& n : snapshot->nodes) nodes[n->id] = n.get();
    std::map<std::string, std::string> keys;  // node -> its key here, hex
    for (HardwareFinding& f : *read) {
      if (f.instance == instance_ || f.until <= now) continue;
      auto node = nodes.find(f.node);
      if (node == nodes.end() || f.claim_key != ClaimKey(node->second->status)) continue;
      if (deps_.node_key) {
        auto key = keys.find(f.node);
        if (key == keys.end()) {
          key = keys.emplace(f.node, absl::BytesToHexString(deps_.node_key(f.node))).first;
        }
        if (key->second != f.node_key) continue;
      }
      auto [it, added] = applies.emplace(f.node, f);
      if (!added && it->second.checked < f.checked) it->second = std::move(f);
    }
  }

  MutexLock lock(&mu_);
  if (!read.ok()) {
    SharedDownLocked(read.status());
    // What was read before stays until it ends: an outage does not lift a cap.
    applies = foreign_;
    std::erase_if(applies, [now](const auto& e) { return e.second.until <= now; });
  } else if (shared_down_) {
    spdlog::info("hardware check: sharing findings with the other gateways again");
    shared_down_ = false;
  }
  for (const auto& [node, f] : applies) {
    auto old = foreign_.find(node);
    if (old == foreign_.end() || old->second.instance != f.instance ||
        old->second.verdict != f.verdict) {
      spdlog::warn(
          "hardware check: {} routed as a CPU node (at most {} job(s) at once per model): another "
          "gateway ({}) found it {}: {}",
          node, options_.failed_capacity, LogSafe(f.gateway), f.verdict,
          LogSafe(f.detail, RedisHardwareFindings::kMaxDetailBytes));
      // The node is registered here (only such findings apply): the label set is bounded as
      // hardware_checks_total's is; the verdict is one of three (Decode checks it).
      if (shared_applied_ != nullptr) {
        shared_applied_->Add({{"orchestrator", node}, {"verdict", f.verdict}}).Increment();
      }
    }
  }
  for (const auto& [node, f] : foreign_) {
    if (applies.count(node) == 0) {
      spdlog::info(
          "hardware check: {}: the finding of another gateway ({}) no longer applies (it found "
          "the node ok, the finding ended or the node's claim changed)",
          node, LogSafe(f.gateway));
      if (shared_cleared_ != nullptr) {
        shared_cleared_->Add({{"orchestrator", node}, {"verdict", f.verdict}}).Increment();
      }
    }
  }
  foreign_ = std::move(applies);
  if (snapshot != nullptr) {
    for (const auto& n : snapshot->nodes) SyncCapLocked(*n);
  }
  return read.ok() ? static_cast<int>(foreign_.size()) : -1;
}

void HardwareChecker::PollShared() {
  while (!stop_poll_.WaitFor(absl::ToChronoMilliseconds(deps_.shared_poll))) SyncShared();
}

}  // namespace switchyard::gateway
