#include "gateway/routing/route_index.h"

#include <algorithm>

#include "gateway/routing/node_health.h"

namespace switchyard::gateway {
namespace {

// Whether two views of a node list the same (pipeline, model) pairs in the same order, so that
// candidate positions into either are interchangeable.
bool SameRoutes(const NodeView& a, const NodeView& b) {
  const auto& ca = a.status.capabilities();
  const auto& cb = b.status.capabilities();
  if (ca.size() != cb.size()) return false;
  for (int i = 0; i < ca.size(); ++i) {
    if (ca[i].pipeline() != cb[i].pipeline() || ca[i].model_id() != cb[i].model_id()) {
      return false;
    }
  }
  return true;
}

}  // namespace

const RouteIndex::Candidates* RouteIndex::Find(absl::string_view pipeline,
                                               absl::string_view model) const {
  auto p = routes.find(pipeline);
  if (p == routes.end()) return nullptr;
  auto m = p->second.find(model);
  return m == p->second.end() ? nullptr : &m->second;
}

std::shared_ptr<const RouteIndex> BuildRouteIndex(const Snapshot& snapshot) {
  auto index = std::make_shared<RouteIndex>();
  for (size_t n = 0; n < snapshot.nodes.size(); ++n) {
    const auto& caps = snapshot.nodes[n]->status.capabilities();
    for (int c = 0; c < caps.size(); ++c) {
      index->routes[caps[c].pipeline()][caps[c].model_id()].push_back(
          RouteCandidate{static_cast<uint32_t>(n), static_cast<uint32_t>(c)});
    }
  }
  return index;
}

void IndexSnapshot(Snapshot& snapshot, const Snapshot* previous) {
  if (previous != nullptr && previous->index != nullptr &&
      previous->nodes.size() == snapshot.nodes.size()) {
    bool same = true;
    for (size_t i = 0; i < snapshot.nodes.size() && same; ++i) {
      const auto& a = previous->nodes[i];
      const auto& b = snapshot.nodes[i];
      same = a == b || (a->id == b->id && SameRoutes(*a, *b));
    }
    if (same) {
      snapshot.index = previous->index;
      return;
    }
  }
  snapshot.index = BuildRouteIndex(snapshot);
}

std::shared_ptr<const NodeView> AttachNodeStats(const std::shared_ptr<const NodeView>& view,
                                                const Snapshot& previous) {
  auto copy = std::make_shared<NodeView>(*view);
  // Membership publishes its nodes in id order; anything else merely misses the carry-over.
  auto it = std::lower_bound(
      previous.nodes.begin(), previous.nodes.end(), view->id,
      [](const std::shared_ptr<const NodeView>& n, const std::string& id) { return n->id < id; });
  if (it != previous.nodes.end() && (*it)->id == view->id && (*it)->stats != nullptr) {
    copy->stats = (*it)->stats;
  } else {
    copy->stats = std::make_shared<NodeStats>();
  }
  return copy;
}

}  // namespace switchyard::gateway
