#include "gateway/routing/missed_jobs.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "gateway/routing/node_health.h"
#include "gateway/routing/route_index.h"

namespace switchyard::gateway {
namespace {

// Median price per unit of the route's winners in the last hour, each node's price weighted by
// its wins; nullopt when none won.
std::optional<double> MedianWinningPrice(const Snapshot& snapshot, const RouteIndex& index,
                                         const node::v1::NodeCapability& cap, uint64_t route,
                                         absl::Time now) {
  const RouteIndex::Candidates* candidates = index.Find(cap.pipeline(), cap.model_id());
  if (candidates == nullptr) return std::nullopt;
  std::vector<std::pair<double, int64_t>> wins;  // (price, wins)
  int64_t total = 0;
  for (const RouteCandidate& c : *candidates) {
    const NodeView& node = *snapshot.nodes[c.node];
    if (node.stats == nullptr) continue;
    const int64_t won = node.stats->CountsOf(route, now).won_last_hour;
    if (won <= 0) continue;
    wins.emplace_back(node.status.capabilities(static_cast<int>(c.cap)).price_per_unit(), won);
    total += won;
  }
  if (total == 0) return std::nullopt;
  std::sort(wins.begin(), wins.end());
  int64_t seen = 0;
  for (const auto& [price, won] : wins) {
    seen += won;
    if (2 * seen >= total) return price;
  }
  return wins.back().first;
}

}  // namespace

bool BuildMissedJobs(const Snapshot& snapshot, const std::string& node_id,
                     const std::string& gateway_id, absl::Time now, node::v1::MissedJobs* out) {
  out->Clear();
  const NodeView* self = nullptr;
  for (const auto& view : snapshot.nodes) {
    if (view->id == node_id) self = view.get();
  }
  if (self == nullptr || self->stats == nullptr) return false;
  std::shared_ptr<const RouteIndex> built;
  const RouteIndex* index = snapshot.index.get();
  if (index == nullptr) {
    built = BuildRouteIndex(snapshot);
    index = built.get();
  }
  out->set_gateway_id(gateway_id);
  for (const node::v1::NodeCapability& cap : self->status.capabilities()) {
    if (out->routes_size() >= kMaxMissedRoutes) break;
    const uint64_t route = RouteKey(cap.pipeline(), cap.model_id());
    const NodeStats::RouteCounts counts = self->stats->CountsOf(route, now);
    int64_t missed = 0;
    for (int r = 0; r < kMissReasons; ++r) missed += counts.missed_total[r];
    if (missed == 0 && counts.won_total == 0) continue;
    node::v1::MissedJobs::Route* r = out->add_routes();
    r->set_pipeline(cap.pipeline());
    r->set_model_id(cap.model_id());
    r->set_won_total(counts.won_total);
    r->set_won_last_hour(counts.won_last_hour);
    for (int i = 0; i < kMissReasons; ++i) {
      if (counts.missed_total[i] == 0) continue;
      node::v1::MissedJobs::Count* c = r->add_missed();
      c->set_reason(static_cast<node::v1::MissedJobs::Reason>(i + 1));
      c->set_total(counts.missed_total[i]);
      c->set_last_hour(counts.missed_last_hour[i]);
    }
    if (std::optional<double> median = MedianWinningPrice(snapshot, *index, cap, route, now)) {
      r->set_median_winning_price(*median);
    }
  }
  return out->routes_size() > 0;
}

}  // namespace switchyard::gateway
