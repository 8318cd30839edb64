#include "gateway/observability/recent_errors.h"

#include <algorithm>
#include <utility>

namespace switchyard::gateway {

RecentErrors::RecentErrors(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {}

void RecentErrors::Add(JobFailure failure) {
  MutexLock lock(&mu_);
  if (ring_.size() < capacity_) {
    ring_.push_back(std::move(failure));
    return;
  }
  ring_[next_] = std::move(failure);
  next_ = (next_ + 1) % capacity_;
}

std::vector<JobFailure> RecentErrors::Newest() const {
  MutexLock lock(&mu_);
  std::vector<JobFailure> out;
  out.reserve(ring_.size());
  // Until the ring is full, next_ stays 0 and the newest is at the back; after, the newest is
  // just before next_.
  const size_t n = ring_.size();
  const size_t newest = ring_.size() < capacity_ ? n - 1 : (next_ + n - 1) % n;
  for (size_t i = 0; i < n; ++i) out.push_back(ring_[(newest + n - i) % n]);
  return out;
}

JobLog::JobLog(size_t max_errors, absl::Duration window)
    : jobs_(window), failures_(window), errors_(max_errors) {}

void JobLog::RecordSuccess(absl::Time now) {
  jobs_.Add(now);
  jobs_total_.fetch_add(1, std::memory_order_relaxed);
}

void JobLog::RecordFailure(JobFailure failure) {
  jobs_.Add(failure.time);
  failures_.Add(failure.time);
  jobs_total_.fetch_add(1, std::memory_order_relaxed);
  failures_total_.fetch_add(1, std::memory_order_relaxed);
  if (failure.message.size() > kMaxMessageBytes) {
    failure.message.resize(kMaxMessageBytes);
    failure.message += "...";
  }
  errors_.Add(std::move(failure));
}

double JobLog::Rate(const SlidingCounter& counter, absl::Time now, absl::Time since) const {
  const absl::Duration span = std::max(absl::Seconds(1), std::min(counter.window(), now - since));
  return static_cast<double>(counter.Sum(now)) / absl::ToDoubleSeconds(span);
}

double JobLog::JobsPerSecond(absl::Time now, absl::Time since) const {
  return Rate(jobs_, now, since);
}

double JobLog::FailuresPerSecond(absl::Time now, absl::Time since) const {
  return Rate(failures_, now, since);
}

}  // namespace switchyard::gateway
