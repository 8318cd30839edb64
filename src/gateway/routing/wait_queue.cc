#include "gateway/routing/wait_queue.h"

#include <algorithm>
#include <vector>

#include "absl/time/clock.h"

namespace switchyard::gateway {

WaitQueue::WaitQueue(int capacity, absl::Duration poll)
    : capacity_(capacity), poll_(poll), thread_([this] { Loop(); }) {}

WaitQueue::~WaitQueue() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  thread_.join();
}

bool WaitQueue::Park(absl::Time deadline, Wake wake) {
  {
    MutexLock lock(&mu_);
    if (stopping_ || static_cast<int>(waiters_.size()) >= capacity_) return false;
    waiters_.push_back(Waiter{deadline, std::move(wake)});
    // The loop may be waiting for a later time than this deadline: it must look again.
    waiters_added_ = true;
  }
  cv_.SignalAll();
  return true;
}

void WaitQueue::Signal() {
  {
    MutexLock lock(&mu_);
    if (waiters_.empty()) return;
    ++signals_;
  }
  cv_.SignalAll();
}

int WaitQueue::size() const {
  MutexLock lock(&mu_);
  return static_cast<int>(waiters_.size());
}

void WaitQueue::Loop() {
  absl::Time next_poll = absl::Now() + poll_;
  for (;;) {
    std::vector<Waiter> ready;    // woken to try again
    std::vector<Waiter> expired;  // deadline passed
    {
      MutexLock lock(&mu_);
      absl::Time until = next_poll;
      for (const auto& w : waiters_) until = std::min(until, w.deadline);
      cv_.WaitFor(&mu_,
                  absl::ToChronoNanoseconds(std::max(absl::ZeroDuration(), until - absl::Now())),
                  [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                    return stopping_ || signals_ > 0 || waiters_added_;
                  });
      waiters_added_ = false;
      const absl::Time now = absl::Now();
      if (stopping_) {
        expired.assign(std::make_move_iterator(waiters_.begin()),
                       std::make_move_iterator(waiters_.end()));
        waiters_.clear();
      } else {
        for (auto it = waiters_.begin(); it != waiters_.end();) {
          if (it->deadline <= now) {
            expired.push_back(std::move(*it));
            it = waiters_.erase(it);
          } else {
            ++it;
          }
        }
        if (now >= next_poll) {  // everyone looks again
          ready.assign(std::make_move_iterator(waiters_.begin()),
                       std::make_move_iterator(waiters_.end()));
          waiters_.clear();
          next_poll = now + poll_;
        } else {
          for (; signals_ > 0 && !waiters_.empty(); --signals_) {
            ready.push_back(std::move(waiters_.front()));
            waiters_.pop_front();
          }
        }
        signals_ = 0;
      }
    }
    // Outside the lock: a woken job may park again at once.
    for (auto& w : expired) w.wake(true);
    for (auto& w : ready) w.wake(false);
    MutexLock lock(&mu_);
    if (stopping_ && waiters_.empty()) return;
  }
}

}  // namespace switchyard::gateway
