// The missed-job report a gateway sends each orchestrator over its registration stream
// (node.proto MissedJobs): the routing decisions on the node's routes that went elsewhere, and
// why, from the counters Router::Pick keeps in NodeStats.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "gateway/routing/snapshot.h"
#include "switchyard/node/v1/node.pb.h"

namespace switchyard::gateway {

// Routes per report (a node offering more is reported for its first kMaxMissedRoutes).
inline constexpr int kMaxMissedRoutes = 64;
// How often a registration stream sends a report at most (piggybacked on the node's updates).
inline constexpr absl::Duration kMissedJobsInterval = absl::Seconds(5);

// Fills `out` with `node_id`'s counters in `snapshot` (cumulative and last hour), per route it
// offers with at least one decision, and each route's median winning price over the last hour
// (the prices of the route's nodes weighted by the decisions each won). False when there is
// nothing to report (unknown node, no stats, no decisions). O(routes x route size).
bool BuildMissedJobs(const Snapshot& snapshot, const std::string& node_id,
                     const std::string& gateway_id, absl::Time now, node::v1::MissedJobs* out);

}  // namespace switchyard::gateway
