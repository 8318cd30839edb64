// The per-(pipeline, model) candidate index that Membership builds when it publishes a Snapshot,
// so that the router's decision cost does not grow with the number of nodes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "gateway/routing/snapshot.h"

namespace switchyard::gateway {

// One capability of one node: positions in Snapshot::nodes and in that node's capabilities.
// Positions (not pointers) let a snapshot whose nodes changed only their loads or states reuse
// the previous snapshot's index unchanged.
struct RouteCandidate {
  uint32_t node = 0;
  uint32_t cap = 0;
};

struct RouteIndex {
  using Candidates = std::vector<RouteCandidate>;
  // pipeline -> model -> candidates. Two levels so lookups take the request's strings as they
  // are (heterogeneous absl::string_view lookup, no key to build).
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, Candidates>> routes;

  // Null when no node offers pipeline + model.
  const Candidates* Find(absl::string_view pipeline, absl::string_view model) const;
};

// Builds the index of `snapshot` from scratch: O(nodes x capabilities).
std::shared_ptr<const RouteIndex> BuildRouteIndex(const Snapshot& snapshot);

// Sets snapshot.index: `previous`'s index when every node is at the same position with the same
// (pipeline, model) list (O(nodes) pointer comparisons), otherwise a fresh BuildRouteIndex.
void IndexSnapshot(Snapshot& snapshot, const Snapshot* previous);

// A copy of `view` with stats attached: those of the node with the same id in `previous` (a
// re-registration keeps its health record and latency history), or new ones.
std::shared_ptr<const NodeView> AttachNodeStats(const std::shared_ptr<const NodeView>& view,
                                                const Snapshot& previous);

}  // namespace switchyard::gateway
