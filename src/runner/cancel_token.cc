#include "runner/cancel_token.h"

#include <thread>
#include <utility>

namespace switchyard::runner {

void CancelToken::Cancel() {
  absl::MutexLock lock(&mu_);
  if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
  for (auto& [id, wake] : wakes_) wake();
}

CancelToken::Registration CancelToken::OnCancel(std::function<void()> wake) const {
  absl::MutexLock lock(&mu_);
  if (cancelled()) {
    wake();
    return Registration();
  }
  const uint64_t id = next_id_++;
  wakes_.emplace(id, std::move(wake));
  return Registration(this, id);
}

void CancelToken::Release(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  wakes_.erase(id);
}

CancelWatcher& CancelWatcher::Default() {
  // Never destroyed: the thread outlives every call, and no exit path has to join it.
  static CancelWatcher* const watcher = new CancelWatcher(absl::Milliseconds(10));
  return *watcher;
}

CancelWatcher::CancelWatcher(absl::Duration interval)
    : interval_(interval), thread_(std::make_unique<std::thread>([this] { Loop(); })) {}

CancelWatcher::~CancelWatcher() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_->join();
}

CancelWatcher::Watch CancelWatcher::Start(std::function<bool()> probe, CancelToken& token) {
  if (!probe) return Watch();
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  entries_.emplace(id, Entry{std::move(probe), &token});
  return Watch(this, id);
}

void CancelWatcher::Release(uint64_t id) {
  absl::MutexLock lock(&mu_);
  entries_.erase(id);
}

void CancelWatcher::Loop() {
  absl::MutexLock lock(&mu_);
  auto stopping_or_watched = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !entries_.empty();
  };
  while (!stopping_) {
    // Probes and cancellations run under the lock, so that a Watch being reset waits for them.
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second.probe()) {
        it->second.token->Cancel();
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
    if (entries_.empty()) {
      mu_.Await(absl::Condition(&stopping_or_watched));
    } else {
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_);
    }
  }
}

CancelWatcher::Watch WatchForCancel(std::function<bool()> is_cancelled, CancelToken& token) {
  return CancelWatcher::Default().Start(std::move(is_cancelled), token);
}

}  // namespace switchyard::runner
