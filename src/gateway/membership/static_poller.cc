#include "gateway/membership/static_poller.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace switchyard::gateway {

StaticPoller::StaticPoller(std::vector<std::string> addresses, std::chrono::milliseconds interval,
                           Membership* membership, int64_t max_message_bytes)
    : interval_(interval), membership_(membership), max_message_bytes_(max_message_bytes) {
  for (auto& a : addresses) {
    targets_.push_back(Target{
        std::make_shared<NodeConnection>(a, max_message_bytes, membership->security()), "", 0, ""});
  }
}

StaticPoller::~StaticPoller() { Stop(); }

void StaticPoller::Start() {
  // Also with no targets: a reload may add some.
  thread_ = std::thread([this] { Run(); });
}

void StaticPoller::SetAddresses(const std::vector<std::string>& addresses) {
  {
    MutexLock lock(&targets_mu_);
    std::vector<Target> next;
    for (const auto& a : addresses) {
      auto same = std::find_if(targets_.begin(), targets_.end(), [&](const Target& t) {
        return t.connection != nullptr && t.connection->address() == a;
      });
      if (same != targets_.end()) {
        next.push_back(std::move(*same));
        same->connection = nullptr;  // moved; not removed below
      } else {
        spdlog::info("static orchestrator {} added", a);
        next.push_back(
            Target{std::make_shared<NodeConnection>(a, max_message_bytes_, membership_->security()),
                   "", 0, ""});
      }
    }
    for (auto& t : targets_) {
      if (t.connection == nullptr) continue;
      spdlog::info("static orchestrator {} removed from the list", t.connection->address());
      if (t.token != 0) membership_->Remove(t.node_id, t.token);
    }
    targets_ = std::move(next);
  }
  {
    MutexLock lock(&mu_);
    poll_now_ = true;
  }
  cv_.SignalAll();
}

void StaticPoller::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void StaticPoller::Run() {
  for (;;) {
    {
      MutexLock targets_lock(&targets_mu_);
      for (auto& t : targets_) PollOnce(t);
    }
    MutexLock lock(&mu_);
    if (cv_.WaitFor(&mu_, interval_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || poll_now_;
        })) {
      if (stopping_) return;
      poll_now_ = false;
    }
  }
}

void StaticPoller::PollOnce(Target& t) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + interval_);
  node::v1::GetStatusRequest req;
  node::v1::NodeStatus status;
  grpc::Status st = t.connection->stub()->GetStatus(&ctx, req, &status);
  if (!st.ok() || status.node_id().empty()) {
    if (t.token == 0 && st.error_message() != t.last_error) {
      // Never answered (or not since it was dropped): say why once, e.g. a TLS handshake refused
      // (docs/security.md), not at every poll.
      spdlog::warn("static orchestrator {} not reachable: {}", t.connection->address(),
                   st.ok() ? std::string("empty node_id") : st.error_message());
    }
    t.last_error = st.error_message();
    if (t.token != 0) {
      spdlog::warn("static orchestrator {} ({}) stopped answering: {}", t.node_id,
                   t.connection->address(), st.error_message());
      membership_->Remove(t.node_id, t.token);
      t.token = 0;
    }
    return;
  }
  t.last_error.clear();
  // Route to the address we poll, whatever the node advertises.
  status.set_address(t.connection->address());
  if (t.token != 0 && status.node_id() == t.node_id) {
    membership_->Update(status, t.token);
  } else {
    if (t.token != 0) membership_->Remove(t.node_id, t.token);
    t.node_id = status.node_id();
    t.token = membership_->Register(status, NodeSource::kStatic);
  }
}

}  // namespace switchyard::gateway
