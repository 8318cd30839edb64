// The gateway's control plane for orchestrators: who is registered (or statically polled), what
// each offers and how loaded it is. Every change publishes a new immutable Snapshot that the job
// path reads without taking a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::gateway {

// The gateway's connection to one orchestrator address, shared by every snapshot that lists it
// and by the jobs in flight on it.
class NodeConnection {
 public:
  NodeConnection(std::string address, int64_t max_message_bytes);
  const std::string& address() const { return address_; }
  node::v1::Orchestrator::Stub* stub() { return stub_.get(); }
  // The channel to the node, for other services it serves (e.g. the KServe inference proxy).
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  // Jobs this gateway has in flight on the node (its own count, fresher than the node's reports).
  std::atomic<int>& in_flight() { return in_flight_; }

 private:
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<node::v1::Orchestrator::Stub> stub_;
  std::atomic<int> in_flight_{0};
};
using NodeConnectionPtr = std::shared_ptr<NodeConnection>;

enum class NodeSource { kRegistered, kStatic };

// One orchestrator as seen at one moment.
struct NodeView {
  std::string id;
  NodeSource source = NodeSource::kRegistered;
  node::v1::NodeStatus status;
  NodeConnectionPtr connection;
};

struct Snapshot {
  uint64_t version = 0;
  std::vector<std::shared_ptr<const NodeView>> nodes;
};
using SnapshotPtr = std::shared_ptr<const Snapshot>;

class Membership {
 public:
  explicit Membership(int64_t max_message_bytes = 256 << 20);

  // Adds or replaces a node from a Hello (or a successful poll). Returns a token that Update and
  // Remove must present, so a stale stream cannot touch a node that has re-registered since.
  uint64_t Register(const node::v1::NodeStatus& status, NodeSource source);
  // Applies an update from the node's current registration; ignored if `token` is stale.
  void Update(const node::v1::NodeStatus& status, uint64_t token);
  // Removes the node if `token` is still its current registration. Takes effect for every job
  // that reads the snapshot after this returns.
  void Remove(const std::string& node_id, uint64_t token);

  // Lock-free read for the job path.
  SnapshotPtr snapshot() const { return snapshot_.load(std::memory_order_acquire); }

 private:
  struct Entry {
    uint64_t token = 0;
    std::shared_ptr<const NodeView> view;
  };
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  NodeConnectionPtr ConnectionFor(const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t max_message_bytes_;
  std::mutex mu_;
  std::map<std::string, Entry> nodes_ ABSL_GUARDED_BY(mu_);
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<SnapshotPtr> snapshot_;
};

}  // namespace switchyard::gateway
