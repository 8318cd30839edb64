#include "gateway/router.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace switchyard::gateway {

Router::Router(std::function<uint64_t()> random) : random_(std::move(random)) {}

absl::StatusOr<RouteChoice> Router::Pick(const Snapshot& snapshot,
                                         const RouteRequest& request) const {
  int offered = 0;
  int best_tier = std::numeric_limits<int>::max();
  double best_load = std::numeric_limits<double>::max();
  int ties = 0;
  RouteChoice choice;
  std::string why_not;
  for (const auto& node : snapshot.nodes) {
    for (const auto& cap : node->status.capabilities()) {
      if (cap.pipeline() != request.pipeline || cap.model_id() != request.model_id) continue;
      ++offered;
      if (node->status.draining()) {
        why_not = absl::StrCat(node->id, " is draining");
        continue;
      }
      if (request.excluded.count(node->id) != 0) {
        why_not = absl::StrCat(node->id, " already failed this job");
        continue;
      }
      if (cap.state() == node::v1::MODEL_STATE_FAILED) {
        why_not = absl::StrCat(node->id, " failed to load it: ", cap.error());
        continue;
      }
      if (cap.no_room()) {  // cold or unloaded, and no memory to load it now
        why_not = absl::StrCat(node->id, " has no memory to load it now");
        continue;
      }
      const int capacity = std::max(1, cap.capacity());
      // The gateway's own in-flight count is fresher than the node's last report.
      const int in_use = std::max(cap.in_use(), node->connection->in_flight().load());
      const bool warm = cap.state() == node::v1::MODEL_STATE_READY;
      const int tier = warm ? (in_use < capacity ? 0 : 1) : 2;
      const double load = static_cast<double>(in_use) / capacity;
      if (tier < best_tier || (tier == best_tier && load < best_load)) {
        best_tier = tier;
        best_load = load;
        ties = 1;
        choice = RouteChoice{node, warm};
      } else if (tier == best_tier && load == best_load) {
        // Reservoir sampling keeps each tied node equally likely without a second pass.
        ++ties;
        if (random_() % static_cast<uint64_t>(ties) == 0) choice = RouteChoice{node, warm};
      }
    }
  }
  if (offered == 0) {
    return absl::NotFoundError(absl::StrCat("no orchestrator offers model '", request.model_id,
                                            "' for pipeline ", request.pipeline));
  }
  if (choice.node == nullptr) {
    return absl::UnavailableError(absl::StrCat("no orchestrator can take ", request.pipeline, " '",
                                               request.model_id, "' now (", why_not, ")"));
  }
  return choice;
}

}  // namespace switchyard::gateway
