#include "gateway/routing/node_health.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <string_view>

namespace switchyard::gateway {
namespace {

// SlidingCounter's word: epoch in the high 40 bits, count in the low 24 (saturating).
constexpr int kCountBits = 24;
constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1;
constexpr uint64_t kEpochMask = (uint64_t{1} << (64 - kCountBits)) - 1;

}  // namespace

SlidingCounter::SlidingCounter(absl::Duration window)
    : window_(window),
      bucket_ns_(std::max<int64_t>(1, absl::ToInt64Nanoseconds(window) / kBuckets)) {
  for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
}

uint64_t SlidingCounter::EpochOf(absl::Time now) const {
  // +1 so that epoch 0 (an untouched bucket) never looks current.
  return (static_cast<uint64_t>(std::max<int64_t>(0, absl::ToUnixNanos(now)) / bucket_ns_) + 1) &
         kEpochMask;
}

void SlidingCounter::AddAt(uint64_t epoch, uint32_t n) {
  auto& bucket = buckets_[epoch % kBuckets];
  uint64_t old = bucket.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t old_epoch = old >> kCountBits;
    const uint64_t base = old_epoch == epoch ? (old & kCountMask) : 0;
    const uint64_t next = (epoch << kCountBits) | std::min(kCountMask, base + n);
    if (bucket.compare_exchange_weak(old, next, std::memory_order_relaxed)) return;
  }
}

int64_t SlidingCounter::Sum(absl::Time now) const {
  const uint64_t epoch = EpochOf(now);
  int64_t sum = 0;
  for (const auto& b : buckets_) {
    const uint64_t v = b.load(std::memory_order_relaxed);
    const uint64_t e = v >> kCountBits;
    if (e != 0 && e <= epoch && epoch - e < kBuckets) sum += static_cast<int64_t>(v & kCountMask);
  }
  return sum;
}

uint64_t ModelKey(absl::string_view model_id) {
  return std::hash<std::string_view>{}(std::string_view(model_id.data(), model_id.size())) | 1;
}

uint64_t RouteKey(absl::string_view pipeline, absl::string_view model_id) {
  const uint64_t p =
      std::hash<std::string_view>{}(std::string_view(pipeline.data(), pipeline.size()));
  const uint64_t m =
      std::hash<std::string_view>{}(std::string_view(model_id.data(), model_id.size()));
  return (p * 0x9e3779b97f4a7c15ULL ^ m) | 1;
}

NodeStats::RouteSlot* NodeStats::RouteSlotFor(uint64_t route_key) {
  for (auto& s : routes_) {
    uint64_t k = s.key.load(std::memory_order_acquire);
    if (k == 0 && s.key.compare_exchange_strong(k, route_key, std::memory_order_acq_rel)) {
      return &s;
    }
    if (k == route_key) return &s;
  }
  return nullptr;
}

uint64_t NodeStats::HourEpoch(absl::Time now) {
  static const SlidingCounter kHour;  // the route slots' window (SlidingCounter's default)
  return kHour.EpochOf(now);
}

void NodeStats::CountWin(uint64_t route_key, uint64_t hour_epoch) {
  RouteSlot* s = RouteSlotFor(route_key);
  if (s == nullptr) return;
  s->won.fetch_add(1, std::memory_order_relaxed);
  s->won_hour.AddAt(hour_epoch);
}

void NodeStats::CountMiss(uint64_t route_key, MissReason reason, uint64_t hour_epoch) {
  RouteSlot* s = RouteSlotFor(route_key);
  if (s == nullptr) return;
  const auto r = static_cast<size_t>(reason);
  s->missed[r].fetch_add(1, std::memory_order_relaxed);
  s->missed_hour[r].AddAt(hour_epoch);
}

NodeStats::RouteCounts NodeStats::CountsOf(uint64_t route_key, absl::Time now) const {
  RouteCounts out;
  for (const auto& s : routes_) {
    const uint64_t k = s.key.load(std::memory_order_acquire);
    if (k == 0) break;  // slots fill in order
    if (k != route_key) continue;
    out.won_total = s.won.load(std::memory_order_relaxed);
    out.won_last_hour = s.won_hour.Sum(now);
    for (int r = 0; r < kMissReasons; ++r) {
      out.missed_total[r] = s.missed[r].load(std::memory_order_relaxed);
      out.missed_last_hour[r] = s.missed_hour[r].Sum(now);
    }
    break;
  }
  return out;
}

const NodeStats::ModelSlot* NodeStats::FindSlot(uint64_t model_key) const {
  for (const auto& s : models_) {
    const uint64_t k = s.key.load(std::memory_order_acquire);
    if (k == model_key) return &s;
    if (k == 0) return nullptr;  // slots fill in order: no later slot holds it
  }
  return &overflow_;
}

NodeStats::ModelSlot* NodeStats::SlotFor(uint64_t model_key) {
  for (auto& s : models_) {
    uint64_t k = s.key.load(std::memory_order_acquire);
    if (k == 0 && s.key.compare_exchange_strong(k, model_key, std::memory_order_acq_rel)) {
      return &s;
    }
    if (k == model_key) return &s;  // ours, or another thread claimed it for the same model
  }
  return &overflow_;
}

NodeStats::Latency NodeStats::LatencyOf(uint64_t model_key) const {
  const ModelSlot* s = FindSlot(model_key);
  if (s == nullptr) return {};
  return Latency{std::bit_cast<double>(s->ewma_bits.load(std::memory_order_relaxed)),
                 s->samples.load(std::memory_order_relaxed),
                 s->last_ns.load(std::memory_order_relaxed)};
}

void NodeStats::RecordLatency(uint64_t model_key, double ms, double alpha, absl::Time now) {
  ModelSlot* s = SlotFor(model_key);
  s->last_ns.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
  if (s->samples.fetch_add(1, std::memory_order_relaxed) == 0) {
    s->ewma_bits.store(std::bit_cast<uint64_t>(ms), std::memory_order_relaxed);
    return;
  }
  uint64_t old = s->ewma_bits.load(std::memory_order_relaxed);
  for (;;) {
    const double next = std::bit_cast<double>(old) * (1 - alpha) + ms * alpha;
    if (s->ewma_bits.compare_exchange_weak(old, std::bit_cast<uint64_t>(next),
                                           std::memory_order_relaxed)) {
      return;
    }
  }
}

NodeHealth::NodeHealth(HealthOptions options, std::function<absl::Time()> now)
    : options_(options), now_(std::move(now)) {}

absl::Duration NodeHealth::EjectionTime(int level) const {
  absl::Duration d = options_.eject_base;
  for (int i = 0; i < level && d < options_.eject_max; ++i) d *= 2;
  return std::min(d, options_.eject_max);
}

void NodeHealth::RecordSuccess(const std::string& node_id, NodeStats& stats) {
  if (stats.consecutive_failures_.load(std::memory_order_relaxed) != 0) {
    stats.consecutive_failures_.store(0, std::memory_order_relaxed);
  }
  // The common case ends here, lock-free.
  if (stats.ejected_until_ns_.load(std::memory_order_relaxed) == 0 &&
      !stats.probation_.load(std::memory_order_relaxed)) {
    return;
  }
  MutexLock lock(&mu_);
  const bool was_ejected = stats.EjectedAt(now_());
  stats.ejected_until_ns_.store(0, std::memory_order_relaxed);
  stats.probation_.store(false, std::memory_order_relaxed);
  if (stats.BannedAt(now_())) return;  // an attempt that started before the ban
  ejected_.erase(node_id);
  if (was_ejected) spdlog::info("orchestrator {} succeeded again; no longer ejected", node_id);
}

bool NodeHealth::RecordFailure(const std::string& node_id, const std::shared_ptr<NodeStats>& stats,
                               size_t known_nodes) {
  const int failures = stats->consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
  const bool probation = stats->probation_.load(std::memory_order_relaxed);
  if (failures < options_.eject_after_failures && !probation) return false;
  const absl::Time now = now_();
  if (stats->EjectedAt(now)) return false;  // already out (an attempt that started before)

  MutexLock lock(&mu_);
  if (stats->EjectedAt(now)) return false;
  PurgeLocked(now);
  const auto allowed = static_cast<size_t>(
      std::floor(options_.max_ejected_fraction * static_cast<double>(known_nodes)));
  if (ejected_.size() >= allowed) {
    if (failures != options_.eject_after_failures) return false;  // said once per streak
    spdlog::warn("orchestrator {} failed {} times in a row but {} of {} nodes are ejected already",
                 node_id, failures, ejected_.size(), known_nodes);
    return false;
  }
  // The level decays by one per eject_max of quiet time since the previous ejection ended.
  int level = stats->level_.load(std::memory_order_relaxed);
  const int64_t last = stats->last_until_ns_.load(std::memory_order_relaxed);
  if (last != 0 && level > 0) {
    const int64_t quiet = absl::ToUnixNanos(now) - last;
    const int64_t step = std::max<int64_t>(1, absl::ToInt64Nanoseconds(options_.eject_max));
    level = static_cast<int>(std::max<int64_t>(0, level - std::max<int64_t>(0, quiet) / step));
  }
  const absl::Duration duration = EjectionTime(level);
  const absl::Time until = now + duration;
  stats->level_.store(level + 1, std::memory_order_relaxed);
  stats->ejected_until_ns_.store(absl::ToUnixNanos(until), std::memory_order_relaxed);
  stats->last_until_ns_.store(absl::ToUnixNanos(until), std::memory_order_relaxed);
  stats->probation_.store(true, std::memory_order_relaxed);
  ejected_[node_id] = Ejection{stats, until};
  ejections_total_.fetch_add(1, std::memory_order_relaxed);
  spdlog::warn("orchestrator {} ejected for {} after {} consecutive failures", node_id,
               absl::FormatDuration(duration), failures);
  return true;
}

void NodeHealth::Ban(const std::string& node_id, const std::shared_ptr<NodeStats>& stats,
                     absl::Time until) {
  MutexLock lock(&mu_);
  const int64_t until_ns = absl::ToUnixNanos(until);
  if (stats->banned_until_ns_.load(std::memory_order_relaxed) >= until_ns) return;
  stats->banned_until_ns_.store(until_ns, std::memory_order_relaxed);
  stats->probation_.store(true, std::memory_order_relaxed);
  auto& entry = ejected_[node_id];
  entry.stats = stats;
  entry.until = std::max(entry.until, until);
  ejections_total_.fetch_add(1, std::memory_order_relaxed);
}

void NodeHealth::PurgeLocked(absl::Time now) {
  absl::erase_if(ejected_, [now](const auto& e) { return e.second.until <= now; });
}

bool NodeHealth::IsEjected(const std::string& node_id) const {
  MutexLock lock(&mu_);
  auto it = ejected_.find(node_id);
  return it != ejected_.end() && it->second.stats->EjectedAt(now_());
}

int NodeHealth::EjectedCount() const {
  const absl::Time now = now_();
  MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [id, e] : ejected_) n += e.stats->EjectedAt(now) ? 1 : 0;
  return n;
}

RetryBudget::RetryBudget(RetryBudgetOptions options, std::function<absl::Time()> now)
    : options_(options), now_(std::move(now)), jobs_(options.window), retries_(options.window) {}

void RetryBudget::RecordJob() { jobs_.Add(now_()); }

bool RetryBudget::TryRetry() {
  MutexLock lock(&mu_);
  const absl::Time now = now_();
  const double allowed = options_.ratio * static_cast<double>(jobs_.Sum(now)) +
                         options_.min_per_second * absl::ToDoubleSeconds(options_.window);
  if (static_cast<double>(retries_.Sum(now)) >= allowed) return false;
  retries_.Add(now);
  return true;
}

}  // namespace switchyard::gateway
