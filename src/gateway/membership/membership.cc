#include "gateway/membership/membership.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "gateway/routing/route_index.h"

namespace switchyard::gateway {

Membership::Membership(int64_t max_message_bytes, GrpcClientSecurity security)
    : max_message_bytes_(max_message_bytes),
      security_(std::move(security)),
      snapshot_(std::make_shared<const Snapshot>()) {}

NodeConnectionPtr Membership::ConnectionFor(const std::string& address) {
  for (const auto& [id, entry] : nodes_) {
    if (entry.view->connection->address() == address) return entry.view->connection;
  }
  return std::make_shared<NodeConnection>(address, max_message_bytes_, security_);
}

uint64_t Membership::Register(const node::v1::NodeStatus& status, NodeSource source) {
  MutexLock lock(&mu_);
  return RegisterLocked(status, source, Registrant{});
}

uint64_t Membership::RegisterLocked(const node::v1::NodeStatus& status, NodeSource source,
                                    const Registrant& registrant) {
  auto view = std::make_shared<NodeView>();
  view->id = status.node_id();
  view->source = source;
  view->status = status;
  view->connection = ConnectionFor(status.address());
  view->credential = registrant.credential;
  Entry& e = nodes_[status.node_id()];
  bool fresh = e.view == nullptr;
  e.token = next_token_++;
  e.last_heard = absl::Now();
  e.peer = registrant.peer;
  e.view = std::move(view);
  PublishLocked();
  if (fresh) {
    spdlog::info("orchestrator {} joined at {} ({} capabilities)", status.node_id(),
                 status.address(), status.capabilities_size());
  }
  return e.token;
}

uint64_t Membership::TryRegister(const node::v1::NodeStatus& status, NodeSource source,
                                 const Registrant& registrant, std::string* holder_peer) {
  // Checked and inserted under one lock: two hellos racing for a free id cannot both get it.
  MutexLock lock(&mu_);
  auto it = nodes_.find(status.node_id());
  if (it != nodes_.end()) {
    if (holder_peer != nullptr) {
      *holder_peer =
          it->second.view->source == NodeSource::kStatic
              ? absl::StrCat("static orchestrator ", it->second.view->connection->address())
              : it->second.peer;
    }
    return 0;
  }
  return RegisterLocked(status, source, registrant);
}

bool Membership::Update(const node::v1::NodeStatus& status, uint64_t token) {
  MutexLock lock(&mu_);
  auto it = nodes_.find(status.node_id());
  if (it == nodes_.end() || it->second.token != token) return false;
  it->second.last_heard = absl::Now();
  auto view = std::make_shared<NodeView>(*it->second.view);
  view->status = status;
  if (status.address() != view->connection->address()) {
    view->connection = ConnectionFor(status.address());
  }
  it->second.view = std::move(view);
  PublishLocked();
  return true;
}

std::vector<std::string> Membership::ExpireSilent(absl::Time now, absl::Duration timeout) {
  MutexLock lock(&mu_);
  std::vector<std::string> expired;
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    const Entry& e = it->second;
    if (e.view->source == NodeSource::kRegistered && now - e.last_heard > timeout) {
      spdlog::warn("orchestrator {} silent for {:.0f} ms; no longer routed to", it->first,
                   absl::ToDoubleMilliseconds(now - e.last_heard));
      expired.push_back(it->first);
      it = nodes_.erase(it);
    } else {
      ++it;
    }
  }
  if (!expired.empty()) PublishLocked();
  return expired;
}

void Membership::Remove(const std::string& node_id, uint64_t token) {
  MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end() || it->second.token != token) return;
  nodes_.erase(it);
  PublishLocked();
  spdlog::info("orchestrator {} left; no longer routed to", node_id);
}

// O(nodes) per publish: the node list is copied (pointers only) and the route index is reused
// from the previous snapshot unless a node joined, left or changed its capability list
// (IndexSnapshot), so a heartbeat that only changes loads does not rebuild it.
void Membership::PublishLocked() {
  const SnapshotPtr previous = snapshot_.load(std::memory_order_acquire);
  auto snap = std::make_shared<Snapshot>();
  snap->version = ++version_;
  snap->nodes.reserve(nodes_.size());
  for (auto& [id, entry] : nodes_) {
    // A view fresh from Register has no stats yet: attach the node's (or new) ones before it is
    // published, so that every later view of the node shares them.
    if (entry.view->stats == nullptr) entry.view = AttachNodeStats(entry.view, *previous);
    snap->nodes.push_back(entry.view);
  }
  IndexSnapshot(*snap, previous.get());
  snapshot_.store(std::move(snap), std::memory_order_release);
}

}  // namespace switchyard::gateway
