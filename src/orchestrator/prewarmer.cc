#include "orchestrator/prewarmer.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace switchyard::orchestrator {
namespace {

absl::Status CheckName(const char* what, const std::string& s) {
  if (s.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (s.size() > Prewarmer::kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", s.size(), " bytes; at most ", Prewarmer::kMaxNameBytes));
  }
  for (unsigned char ch : s) {
    if (ch < 0x20 || ch > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is not printable ASCII"));
    }
  }
  return absl::OkStatus();
}

// The route's jobs in the window, saturating (each count is checked >= 0).
int64_t JobsOf(const node::v1::WarmDemand::Route& r) {
  int64_t total = 0;
  for (int64_t n : {r.queued(), r.cold_starts(), r.refused(), r.waited()}) {
    total = n > INT64_MAX - total ? INT64_MAX : total + n;
  }
  return total;
}

}  // namespace

Prewarmer::Prewarmer(ModelManager* models, Options options, Metrics* metrics,
                     std::function<absl::Time()> now)
    : models_(models), options_(options), now_(std::move(now)) {
  if (metrics != nullptr) {
    prewarm_total_ = &metrics->CounterFamily(
        "prewarm_total",
        "Models this node was asked to warm up by gateways' demand (prewarm), by model and result "
        "(loaded, failed, no_room: would need evicting, not_cold: already loaded or failed).");
  }
  loader_ = std::thread([this] { Run(); });
}

Prewarmer::~Prewarmer() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  loader_.join();
}

absl::Status Prewarmer::Validate(const node::v1::WarmDemand& demand) {
  if (demand.routes_size() > kMaxRoutes) {
    return absl::InvalidArgumentError(
        absl::StrCat(demand.routes_size(), " routes; at most ", kMaxRoutes));
  }
  if (demand.window_ms() <= 0 || demand.window_ms() > 3'600'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("window_ms ", demand.window_ms(), " is not in 1..3600000"));
  }
  for (const auto& r : demand.routes()) {
    if (auto st = CheckName("pipeline", r.pipeline()); !st.ok()) return st;
    if (auto st = CheckName("model_id", r.model_id()); !st.ok()) return st;
    if (r.queued() < 0 || r.cold_starts() < 0 || r.refused() < 0 || r.waited() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("a negative count for ", r.pipeline(), " '", r.model_id(), "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status Prewarmer::Accept(const std::string& gateway, const node::v1::WarmDemand& demand) {
  if (absl::Status valid = Validate(demand); !valid.ok()) {
    spdlog::warn("ignored a malformed warm-up demand from gateway {}: {}", gateway,
                 std::string(valid.message()));
    return valid;
  }
  const absl::Time now = now_();
  bool queued_any = false;
  for (const auto& r : demand.routes()) {
    if (JobsOf(r) < options_.min_jobs) continue;
    // Only a model served here under that pipeline, and still cold with room to load: the
    // gateway's view may be a heartbeat old.
    const ModelConfig* config = models_->Find(r.model_id());
    if (config == nullptr || config->pipeline != r.pipeline()) continue;
    const node::v1::NodeCapability cap = models_->CapabilityOf(r.model_id());
    const bool cold =
        cap.state() == node::v1::MODEL_STATE_COLD || cap.state() == node::v1::MODEL_STATE_UNLOADED;
    if (!cold || cap.no_room()) continue;
    MutexLock lock(&mu_);
    if (queued_.contains(r.model_id())) continue;
    auto last = last_queued_.find(r.model_id());
    if (last != last_queued_.end() && now - last->second < options_.cooldown) continue;
    last_queued_[r.model_id()] = now;
    queued_.insert(r.model_id());
    queue_.push_back(r.model_id());
    queued_any = true;
    spdlog::info(
        "prewarm: loading {} '{}': gateway {} had {} job(s) without warm capacity in {} ms "
        "(queued {}, cold starts {}, refused {}, waited {})",
        r.pipeline(), r.model_id(), LogSafe(demand.gateway_id()), JobsOf(r), demand.window_ms(),
        r.queued(), r.cold_starts(), r.refused(), r.waited());
  }
  if (queued_any) cv_.SignalAll();
  return absl::OkStatus();
}

void Prewarmer::Count(const std::string& model_id, const char* result) {
  if (prewarm_total_ != nullptr) {
    prewarm_total_->Add({{"model", model_id}, {"result", result}}).Increment();
  }
}

void Prewarmer::Run() {
  for (;;) {
    std::string model_id;
    {
      MutexLock lock(&mu_);
      cv_.Wait(&mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      });
      if (stopping_) return;
      model_id = std::move(queue_.front());
      queue_.pop_front();
      loading_ = true;
    }
    const absl::Time start = now_();
    absl::StatusOr<bool> loaded = models_->Prewarm(model_id);
    if (loaded.ok() && *loaded) {
      spdlog::info("prewarm: {} is warm ({:.0f} ms)", model_id,
                   absl::ToDoubleMilliseconds(now_() - start));
      Count(model_id, "loaded");
    } else if (loaded.ok()) {
      Count(model_id, "not_cold");
    } else if (absl::IsResourceExhausted(loaded.status())) {
      spdlog::info("prewarm: not loading {}: {}", model_id, std::string(loaded.status().message()));
      Count(model_id, "no_room");
    } else if (absl::IsNotFound(loaded.status())) {
      // Removed by a config reload since it was queued: nothing to count against it.
    } else {
      spdlog::warn("prewarm: {} failed to load: {}", model_id, loaded.status().ToString());
      Count(model_id, "failed");
    }
    {
      MutexLock lock(&mu_);
      queued_.erase(model_id);
      loading_ = false;
    }
    cv_.SignalAll();
  }
}

bool Prewarmer::WaitIdle(absl::Duration timeout) {
  MutexLock lock(&mu_);
  return cv_.WaitFor(
      &mu_, absl::ToChronoNanoseconds(timeout),
      [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && !loading_; });
}

}  // namespace switchyard::orchestrator
