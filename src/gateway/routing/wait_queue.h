// Jobs that found every suitable orchestrator busy wait here, bounded, until a node may have room
// (a job finished, membership changed) or their deadline passes. Waiting at the gateway rather
// than piling onto orchestrator queues keeps capacity refusals cheap and lets the job go to
// whichever node frees up first.
#pragma once

#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "common/mutex.h"

namespace switchyard::gateway {

class WaitQueue {
 public:
  // Called once per park: `expired` when the deadline passed (or the queue is shutting down)
  // before a wake-up. Runs on the queue's thread; must not block.
  using Wake = std::function<void(bool expired)>;

  // `capacity` jobs may wait at once; `poll` is how often every waiting job is woken to look
  // again even without a signal (membership changes are not signalled).
  explicit WaitQueue(int capacity, absl::Duration poll = absl::Milliseconds(100));
  // Wakes every waiting job with expired = true, then joins the thread.
  ~WaitQueue();

  WaitQueue(const WaitQueue&) = delete;
  WaitQueue& operator=(const WaitQueue&) = delete;

  // Parks a job until Signal, the next poll, or `deadline`. False (and `wake` is not kept) when
  // the queue is full.
  bool Park(absl::Time deadline, Wake wake) ABSL_LOCKS_EXCLUDED(mu_);
  // A slot may have freed somewhere: wakes the longest-waiting job.
  void Signal() ABSL_LOCKS_EXCLUDED(mu_);

  int size() const ABSL_LOCKS_EXCLUDED(mu_);
  int capacity() const { return capacity_; }

 private:
  struct Waiter {
    absl::Time deadline;
    Wake wake;
  };
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  const int capacity_;
  const absl::Duration poll_;
  mutable Mutex mu_;
  CondVar cv_;
  std::deque<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  int signals_ ABSL_GUARDED_BY(mu_) = 0;
  bool waiters_added_ ABSL_GUARDED_BY(mu_) = false;  // since the loop last computed its wait
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace switchyard::gateway
