// The gateway's control plane for orchestrators: who is registered (or statically polled), what
// each offers and how loaded it is. Every change publishes a new immutable Snapshot that the job
// path reads without taking a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "common/tls.h"
#include "gateway/routing/snapshot.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::gateway {

// Who holds a registration, for TryRegister.
struct Registrant {
  std::string peer;        // the registration stream's peer address, for logs
  std::string credential;  // NodeView::credential
};

class Membership {
 public:
  // Connections to nodes are opened with `security` (plaintext by default).
  explicit Membership(int64_t max_message_bytes = 256 << 20,
                      GrpcClientSecurity security = GrpcClientSecurity());
  const GrpcClientSecurity& security() const { return security_; }

  // Adds or replaces a node (a successful poll of a static node). Returns a token that Update and
  // Remove must present, so a stale stream cannot touch a node that has re-registered since.
  uint64_t Register(const node::v1::NodeStatus& status, NodeSource source) ABSL_LOCKS_EXCLUDED(mu_);
  // Register, but only if no live entry has the node's id (the id is then kept by its holder: a
  // node id cannot be taken over while its registration lives). Returns the new token, or 0 and
  // the holder's peer in `*holder_peer` (when not null). An entry lives until its stream ends
  // (Remove) or it is silent for the node timeout (ExpireSilent).
  uint64_t TryRegister(const node::v1::NodeStatus& status, NodeSource source,
                       const Registrant& registrant, std::string* holder_peer = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);
  // TryRegister for a stream whose node was expired for silence and is heard from again: it
  // comes back unless another registration has taken the id meanwhile (returns 0 then).
  uint64_t RegisterIfAbsent(const node::v1::NodeStatus& status, NodeSource source,
                            const Registrant& registrant = {}) {
    return TryRegister(status, source, registrant);
  }
  // Applies an update from the node's current registration. Returns false (and changes nothing)
  // if `token` is stale: the node re-registered elsewhere, or was expired for silence.
  bool Update(const node::v1::NodeStatus& status, uint64_t token) ABSL_LOCKS_EXCLUDED(mu_);
  // Removes the node if `token` is still its current registration. Takes effect for every job
  // that reads the snapshot after this returns.
  void Remove(const std::string& node_id, uint64_t token) ABSL_LOCKS_EXCLUDED(mu_);

  // Removes registered nodes whose last hello or update is older than `now - timeout` (a node
  // that stopped sending heartbeats: stalled, partitioned, or gone without closing its stream).
  // Statically polled nodes are the poller's business. Returns the ids removed.
  std::vector<std::string> ExpireSilent(absl::Time now, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Lock-free read for the job path.
  SnapshotPtr snapshot() const { return snapshot_.load(std::memory_order_acquire); }

 private:
  struct Entry {
    uint64_t token = 0;
    absl::Time last_heard;  // last hello or update (registered nodes)
    std::string peer;       // Registrant::peer
    std::shared_ptr<const NodeView> view;
  };
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  NodeConnectionPtr ConnectionFor(const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t RegisterLocked(const node::v1::NodeStatus& status, NodeSource source,
                          const Registrant& registrant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t max_message_bytes_;
  const GrpcClientSecurity security_;
  Mutex mu_;
  std::map<std::string, Entry> nodes_ ABSL_GUARDED_BY(mu_);
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<SnapshotPtr> snapshot_;
};

}  // namespace switchyard::gateway
