// A fixed set of threads running posted tasks in order of posting: for work that waits (a network
// round trip, a disk flush) and must not wait on gRPC's callback threads, of which a process has
// few (two on a two-core host) and which every callback-API call needs to make progress.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mutex.h"

namespace switchyard {

class ThreadPool;
using ThreadPoolPtr = std::unique_ptr<ThreadPool>;

class ThreadPool {
 public:
  // `threads` in 1..256; `name` (at most 15 bytes, Linux's limit) names them for ps/top/gdb.
  static absl::StatusOr<ThreadPoolPtr> Create(std::string name, int threads);
  // Runs every task already posted, then joins the threads.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `task`; it runs on one of the pool's threads. Posting while the destructor runs is
  // the caller's bug (the task may never run).
  void Post(std::function<void()> task) ABSL_LOCKS_EXCLUDED(mu_);

  int threads() const { return static_cast<int>(threads_.size()); }
  // Tasks posted and not yet started.
  size_t queued() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit ThreadPool(std::string name) : name_(std::move(name)) {}
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  const std::string name_;
  mutable Mutex mu_;
  CondVar wake_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace switchyard
