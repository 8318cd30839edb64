#include "orchestrator/serving/transcode_sessions.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace switchyard::orchestrator {
namespace {

// Marks a refusal as the per-tenant cap (a status payload, so the message stays free text).
constexpr char kTenantLimitPayload[] = "switchyard/transcode-tenant-limit";

// How a session is named in logs: its stream id, and the tenant when there is one.
// The stream id is the client's (passed on by the gateway), and so may be the tenant: cut and
// escaped, so a stream id cannot forge or flood this node's log lines or error messages.
std::string Describe(const std::string& tenant, const std::string& stream_id) {
  if (tenant.empty()) return absl::StrCat("stream '", LogSafe(stream_id), "'");
  return absl::StrCat("stream '", LogSafe(stream_id), "' of '", LogSafe(tenant), "'");
}

}  // namespace

bool IsTenantLimit(const absl::Status& status) {
  return absl::IsResourceExhausted(status) && status.GetPayload(kTenantLimitPayload).has_value();
}

bool SameLadder(const std::vector<RenditionSpec>& a, const std::vector<RenditionSpec>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const RenditionSpec& x = a[i];
    const RenditionSpec& y = b[i];
    if (x.name != y.name || x.width != y.width || x.height != y.height ||
        x.bitrate_bps != y.bitrate_bps || x.fps_num != y.fps_num || x.fps_den != y.fps_den ||
        x.gop_seconds != y.gop_seconds || x.preset != y.preset || x.profile != y.profile ||
        x.intra_only != y.intra_only) {
      return false;
    }
  }
  return true;
}

TranscodeSessions::TranscodeSessions(TranscodeSessionsOptions options,
                                     std::function<void()> on_change,
                                     std::function<absl::Time()> now)
    : options_(options), on_change_(std::move(on_change)), now_(std::move(now)) {
  if (options_.sweep_interval > absl::ZeroDuration()) {
    sweeper_ = std::thread([this] { Sweep(); });
  }
}

TranscodeSessions::~TranscodeSessions() {
  stop_.Stop();
  if (sweeper_.joinable()) sweeper_.join();
}

void TranscodeSessions::Sweep() {
  while (!stop_.WaitFor(absl::ToChronoNanoseconds(options_.sweep_interval))) CloseIdle();
}

int TranscodeSessions::in_use() const {
  MutexLock lock(&mu_);
  return static_cast<int>(sessions_.size()) + one_off_running_;
}

int TranscodeSessions::open_sessions() const {
  MutexLock lock(&mu_);
  return static_cast<int>(sessions_.size());
}

int TranscodeSessions::open_sessions(const std::string& tenant) const {
  MutexLock lock(&mu_);
  return OpenSessionsLocked(tenant);
}

int TranscodeSessions::OpenSessionsLocked(const std::string& tenant) const {
  int n = 0;
  for (auto it = sessions_.lower_bound(Key(tenant, "")); it != sessions_.end(); ++it) {
    if (it->first.first != tenant) break;
    ++n;
  }
  return n;
}

absl::StatusOr<TranscodeResult> TranscodeSessions::Transcode(
    const std::string& tenant, const std::string& stream_id, int64_t sequence,
    std::string_view segment, const std::vector<RenditionSpec>& ladder,
    const TranscodeOptions& options, const std::function<bool()>& cancelled) {
  const auto full = [this] {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", options_.capacity, " transcode slots are busy"));
  };
  if (stream_id.empty()) {
    {
      MutexLock lock(&mu_);
      if (static_cast<int>(sessions_.size()) + one_off_running_ >= options_.capacity) {
        return full();
      }
      ++one_off_running_;
    }
    if (on_change_) on_change_();
    TranscodeOptions counted = options;
    counted.segments_in_flight = ++segments_running_;
    auto result = TranscodeSegment(segment, ladder, counted, cancelled);
    --segments_running_;
    {
      MutexLock lock(&mu_);
      --one_off_running_;
    }
    if (on_change_) on_change_();
    return result;
  }

  const Key key(tenant, stream_id);
  std::shared_ptr<Session> s;
  bool opened = false;
  {
    MutexLock lock(&mu_);
    auto it = sessions_.find(key);
    if (it == sessions_.end()) {
      if (static_cast<int>(sessions_.size()) + one_off_running_ >= options_.capacity) {
        return full();
      }
      // One key may not take the whole node: its idle streams would keep every other key out
      // until they time out.
      if (!tenant.empty() && options_.max_sessions_per_tenant > 0 &&
          OpenSessionsLocked(tenant) >= options_.max_sessions_per_tenant) {
        absl::Status limited = absl::ResourceExhaustedError(
            absl::StrCat("API key '", tenant, "' already has ", options_.max_sessions_per_tenant,
                         " open transcode session(s) here, the most one key may hold "
                         "(transcode.max_sessions_per_key); end a stream or let one go idle"));
        limited.SetPayload(kTenantLimitPayload, absl::Cord("1"));
        return limited;
      }
      it = sessions_.emplace(key, std::make_shared<Session>()).first;
      opened = true;
    }
    s = it->second;
    s->last_used = now_();
    ++s->running;
  }
  if (opened) {
    spdlog::info("transcode session for {} opened", Describe(tenant, stream_id));
    if (on_change_) on_change_();
  }
  absl::StatusOr<TranscodeResult> result = absl::UnknownError("not run");
  {
    MutexLock run(&s->run_mu);
    if (s->session == nullptr || !SameLadder(s->session->ladder(), ladder) ||
        s->session->options().container != options.container ||
        s->session->options().audio_codec != options.audio_codec ||
        s->session->options().audio_bitrate_bps != options.audio_bitrate_bps) {
      if (s->session != nullptr) {
        spdlog::info("{} changed its ladder, container or audio: new session",
                     Describe(tenant, stream_id));
      }
      s->session.reset();
      auto created = TranscodeSession::Create(ladder, options);
      if (created.ok()) {
        s->session = *std::move(created);
      } else {
        result = created.status();
      }
    }
    if (s->session != nullptr) {
      const int in_flight = ++segments_running_;
      result = s->session->Transcode(sequence, segment, cancelled, in_flight);
      --segments_running_;
    }
  }
  bool dropped = false;
  {
    MutexLock run(&s->run_mu);
    MutexLock lock(&mu_);
    --s->running;
    s->last_used = now_();
    // A stream whose ladder was refused, or none of whose segments has succeeded (a bad first
    // segment), has nothing worth keeping: give the slot back now rather than at the idle
    // timeout, so failed attempts cannot pin the node's slots.
    auto it = sessions_.find(key);
    const bool nothing_kept = s->session == nullptr || s->session->segments_done() == 0;
    if (nothing_kept && s->running == 0 && it != sessions_.end() && it->second == s) {
      sessions_.erase(it);
      dropped = true;
    }
  }
  if (dropped && on_change_) on_change_();
  return result;
}

bool TranscodeSessions::Close(const std::string& tenant, const std::string& stream_id) {
  {
    MutexLock lock(&mu_);
    // A segment still running keeps its Session alive through its shared_ptr; the slot is freed
    // now and a later segment of the stream opens a new session.
    if (sessions_.erase(Key(tenant, stream_id)) == 0) return false;
  }
  spdlog::info("transcode session for {} closed", Describe(tenant, stream_id));
  if (on_change_) on_change_();
  return true;
}

int TranscodeSessions::CloseIdle() {
  std::vector<Key> closed;
  {
    MutexLock lock(&mu_);
    const absl::Time now = now_();
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (it->second->running == 0 && now - it->second->last_used > options_.idle_timeout) {
        closed.push_back(it->first);
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& [tenant, id] : closed) {
    spdlog::info("transcode session for {} closed after {} idle", Describe(tenant, id),
                 absl::FormatDuration(options_.idle_timeout));
  }
  if (!closed.empty() && on_change_) on_change_();
  return static_cast<int>(closed.size());
}

}  // namespace switchyard::orchestrator
