// What the gateway remembers about finished jobs for its status page: the last N failures (a
// bounded ring buffer, so a storm of errors costs fixed memory) and a jobs-per-second rate over a
// sliding window. Fed by GatewayService when a job answers its client; read by the status page.
//
// Threading: every method is safe to call concurrently. Recording a finish is a few lock-free
// adds; a failure also takes the ring's mutex (failures are the rare case).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "gateway/routing/node_health.h"

namespace switchyard::gateway {

// One job that answered its client with an error.
struct JobFailure {
  absl::Time time;
  std::string request_id;
  std::string pipeline;
  std::string model_id;
  std::string orchestrator;  // the last node tried; empty when none was (e.g. no node offers it)
  std::string code;          // gRPC status code name, e.g. "UNAVAILABLE"
  std::string message;
  int attempts = 0;
};

// The last `capacity` failures; older ones are overwritten.
class RecentErrors {
 public:
  explicit RecentErrors(size_t capacity);
  void Add(JobFailure failure) ABSL_LOCKS_EXCLUDED(mu_);
  // Newest first.
  std::vector<JobFailure> Newest() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  mutable Mutex mu_;
  std::vector<JobFailure> ring_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;  // where the next failure goes once the ring is full
};

// Finished jobs and failures: totals since start and counts over a sliding window.
class JobLog {
 public:
  static constexpr size_t kDefaultErrors = 50;
  explicit JobLog(size_t max_errors = kDefaultErrors, absl::Duration window = absl::Seconds(10));

  void RecordSuccess(absl::Time now);
  // Messages longer than kMaxMessageBytes are cut: an orchestrator's error text is not bounded.
  void RecordFailure(JobFailure failure);
  static constexpr size_t kMaxMessageBytes = 1024;

  // Jobs (or failures) per second over the window ending at `now`. `since` is when counting
  // started: a gateway up for less than the window divides by its uptime (at least one second)
  // instead, so the rate is not understated just after a start.
  double JobsPerSecond(absl::Time now, absl::Time since) const;
  double FailuresPerSecond(absl::Time now, absl::Time since) const;
  uint64_t jobs_total() const { return jobs_total_.load(std::memory_order_relaxed); }
  uint64_t failures_total() const { return failures_total_.load(std::memory_order_relaxed); }
  absl::Duration window() const { return jobs_.window(); }
  const RecentErrors& errors() const { return errors_; }

 private:
  double Rate(const SlidingCounter& counter, absl::Time now, absl::Time since) const;
  SlidingCounter jobs_;
  SlidingCounter failures_;
  std::atomic<uint64_t> jobs_total_{0};
  std::atomic<uint64_t> failures_total_{0};
  RecentErrors errors_;
};

}  // namespace switchyard::gateway
