// What the gateway knows of its orchestrators at one moment: an immutable Snapshot of NodeViews,
// published by the control plane (gateway/membership/membership.h) and read without a lock by the job path
// (gateway/routing/router.h, gateway/routing/route_index.h). Its own header so routing and membership both depend
// on it rather than on each other.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/tls.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::gateway {

// The gateway's connection to one orchestrator address, shared by every snapshot that lists it
// and by the jobs in flight on it.
class NodeConnection {
 public:
  // `security`: plaintext or TLS (the gateway's orchestrator_tls), for this node's channel.
  NodeConnection(std::string address, int64_t max_message_bytes,
                 const GrpcClientSecurity& security = GrpcClientSecurity());
  const std::string& address() const { return address_; }
  // The channel's max message size, each way: gRPC refuses a larger answer here as
  // RESOURCE_EXHAUSTED.
  int64_t max_message_bytes() const { return max_message_bytes_; }
  node::v1::Orchestrator::Stub* stub() { return stub_.get(); }
  // The channel to the node, for other services it serves (e.g. the KServe inference proxy).
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  // Jobs this gateway has in flight on the node (its own count, fresher than the node's reports).
  std::atomic<int>& in_flight() { return in_flight_; }

 private:
  std::string address_;
  int64_t max_message_bytes_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<node::v1::Orchestrator::Stub> stub_;
  std::atomic<int> in_flight_{0};
};
using NodeConnectionPtr = std::shared_ptr<NodeConnection>;

enum class NodeSource { kRegistered, kStatic };

class NodeStats;    // gateway/routing/node_health.h
struct RouteIndex;  // gateway/routing/route_index.h

// One orchestrator as seen at one moment.
struct NodeView {
  std::string id;
  NodeSource source = NodeSource::kRegistered;
  node::v1::NodeStatus status;
  NodeConnectionPtr connection;
  // The router's mutable health and latency record for this node (atomics only, so it is
  // updated through a const view). Attached by PublishLocked and carried by every later view of
  // the same node id (Update copies the view; a re-registration inherits it from the previous
  // snapshot). May be null in hand-built views: the router then neither ejects nor measures it.
  std::shared_ptr<NodeStats> stats;
  // The registration secret this node presented when it registered ("" for none or a static
  // node). The gateway sends it back on admin calls to the node (CloseTranscodeSession): the node
  // has it configured, and no other secret of the gateway's goes to an address a node chose.
  std::string credential;
};

struct Snapshot {
  uint64_t version = 0;
  std::vector<std::shared_ptr<const NodeView>> nodes;
  // (pipeline, model) -> positions in `nodes`, built at publish time (IndexSnapshot in
  // gateway/routing/route_index.h) and shared with the previous snapshot when only loads changed. Null in
  // hand-built snapshots: the router then indexes `nodes` itself, per call.
  std::shared_ptr<const RouteIndex> index;
};
using SnapshotPtr = std::shared_ptr<const Snapshot>;

}  // namespace switchyard::gateway
