#include "gateway/routing/warm_demand.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace switchyard::gateway {

WarmDemandTracker::Entry::Entry(std::string p, std::string m, absl::Duration window)
    : pipeline(std::move(p)),
      model_id(std::move(m)),
      counts{SlidingCounter(window), SlidingCounter(window), SlidingCounter(window),
             SlidingCounter(window)} {}

WarmDemandTracker::WarmDemandTracker(absl::Duration window, std::function<absl::Time()> now)
    : window_(window), now_(std::move(now)) {}

std::string WarmDemandTracker::KeyOf(absl::string_view pipeline, absl::string_view model_id) {
  return absl::StrCat(pipeline, std::string(1, '\0'), model_id);
}

void WarmDemandTracker::Record(absl::string_view pipeline, absl::string_view model_id, Kind kind) {
  const absl::Time now = now_();
  MutexLock lock(&mu_);
  std::string key = KeyOf(pipeline, model_id);
  auto it = routes_.find(key);
  if (it == routes_.end()) {
    if (routes_.size() >= kMaxRoutes) {
      auto oldest = routes_.begin();
      for (auto r = routes_.begin(); r != routes_.end(); ++r) {
        if (r->second->last < oldest->second->last) oldest = r;
      }
      routes_.erase(oldest);
    }
    it = routes_
             .emplace(std::move(key), std::make_unique<Entry>(std::string(pipeline),
                                                              std::string(model_id), window_))
             .first;
  }
  it->second->counts[static_cast<int>(kind)].Add(now);
  it->second->last = now;
}

WarmDemandTracker::Demand WarmDemandTracker::DemandLocked(const Entry& e, absl::Time now) const {
  Demand d{e.pipeline, e.model_id, {}};
  if (now - e.last > window_) return d;  // nothing in the window: skip the counters
  for (int k = 0; k < kKinds; ++k) d.counts[k] = e.counts[k].Sum(now);
  return d;
}

WarmDemandTracker::Demand WarmDemandTracker::Of(absl::string_view pipeline,
                                                absl::string_view model_id) const {
  const absl::Time now = now_();
  MutexLock lock(&mu_);
  auto it = routes_.find(KeyOf(pipeline, model_id));
  if (it == routes_.end()) return Demand{std::string(pipeline), std::string(model_id), {}};
  return DemandLocked(*it->second, now);
}

bool WarmDemandTracker::BuildFor(const NodeView& node, const std::string& gateway_id,
                                 node::v1::WarmDemand* out) const {
  const absl::Time now = now_();
  out->Clear();
  MutexLock lock(&mu_);
  if (routes_.empty()) return false;
  for (const auto& cap : node.status.capabilities()) {
    if (out->routes_size() >= kMaxWarmDemandRoutes) break;
    const bool cold =
        cap.state() == node::v1::MODEL_STATE_COLD || cap.state() == node::v1::MODEL_STATE_UNLOADED;
    if (!cold || cap.no_room()) continue;
    auto it = routes_.find(KeyOf(cap.pipeline(), cap.model_id()));
    if (it == routes_.end()) continue;
    const Demand d = DemandLocked(*it->second, now);
    if (d.total() <= 0) continue;
    auto* r = out->add_routes();
    r->set_pipeline(d.pipeline);
    r->set_model_id(d.model_id);
    r->set_queued(d.counts[static_cast<int>(Kind::kQueued)]);
    r->set_cold_starts(d.counts[static_cast<int>(Kind::kColdStart)]);
    r->set_refused(d.counts[static_cast<int>(Kind::kRefused)]);
    r->set_waited(d.counts[static_cast<int>(Kind::kWaited)]);
  }
  if (out->routes_size() == 0) return false;
  out->set_gateway_id(gateway_id);
  out->set_window_ms(static_cast<int32_t>(absl::ToInt64Milliseconds(window_)));
  return true;
}

}  // namespace switchyard::gateway
