#include "gateway/routing/stream_affinity.h"

#include <utility>

namespace switchyard::gateway {

StreamAffinity::StreamAffinity(absl::Duration idle_timeout, size_t max_streams,
                               std::function<absl::Time()> now)
    : idle_timeout_(idle_timeout), max_streams_(max_streams), now_(std::move(now)) {}

std::string StreamAffinity::NodeOf(const std::string& tenant, const std::string& stream_id) {
  MutexLock lock(&mu_);
  auto it = streams_.find(Key(tenant, stream_id));
  if (it == streams_.end()) return "";
  const absl::Time now = now_();
  if (now - it->second.last_used > idle_timeout_) {
    streams_.erase(it);
    return "";
  }
  it->second.last_used = now;
  return it->second.node_id;
}

void StreamAffinity::Set(const std::string& tenant, const std::string& stream_id,
                         const std::string& node_id) {
  MutexLock lock(&mu_);
  const absl::Time now = now_();
  auto it = streams_.find(Key(tenant, stream_id));
  if (it != streams_.end()) {
    it->second = Entry{node_id, now};
    return;
  }
  if (streams_.size() >= max_streams_) MakeRoomLocked(now);
  if (max_streams_ == 0) return;
  streams_.emplace(Key(tenant, stream_id), Entry{node_id, now});
}

std::string StreamAffinity::Record(const std::string& tenant, const std::string& stream_id,
                                   const std::string& /*home*/, const std::string& node_id) {
  Set(tenant, stream_id, node_id);
  return node_id;
}

void StreamAffinity::MakeRoomLocked(absl::Time now) {
  for (auto it = streams_.begin(); it != streams_.end();) {
    if (now - it->second.last_used > idle_timeout_) {
      it = streams_.erase(it);
    } else {
      ++it;
    }
  }
  while (!streams_.empty() && streams_.size() >= max_streams_) {
    auto oldest = streams_.begin();
    for (auto it = streams_.begin(); it != streams_.end(); ++it) {
      if (it->second.last_used < oldest->second.last_used) oldest = it;
    }
    streams_.erase(oldest);
  }
}

std::optional<std::string> StreamAffinity::Forget(const std::string& tenant,
                                                  const std::string& stream_id) {
  MutexLock lock(&mu_);
  auto it = streams_.find(Key(tenant, stream_id));
  if (it == streams_.end()) return std::nullopt;
  std::string node = std::move(it->second.node_id);
  streams_.erase(it);
  return node;
}

size_t StreamAffinity::size() const {
  MutexLock lock(&mu_);
  return streams_.size();
}

}  // namespace switchyard::gateway
