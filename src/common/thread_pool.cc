#include "common/thread_pool.h"

#include <pthread.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace switchyard {

absl::StatusOr<ThreadPoolPtr> ThreadPool::Create(std::string name, int threads) {
  if (threads < 1 || threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("thread pool '", name, "': threads must be 1..256, not ", threads));
  }
  if (name.empty() || name.size() > 15) {
    return absl::InvalidArgumentError(
        absl::StrCat("thread pool '", name, "': the name must be 1..15 bytes"));
  }
  ThreadPoolPtr pool(new ThreadPool(std::move(name)));
  for (int i = 0; i < threads; ++i) pool->threads_.emplace_back([p = pool.get()] { p->Loop(); });
  return pool;
}

ThreadPool::~ThreadPool() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  wake_.SignalAll();
  for (auto& thread : threads_) thread.join();
}

void ThreadPool::Post(std::function<void()> task) {
  {
    MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }
  wake_.Signal();
}

size_t ThreadPool::queued() const {
  MutexLock lock(&mu_);
  return tasks_.size();
}

void ThreadPool::Loop() {
  pthread_setname_np(pthread_self(), name_.c_str());
  while (true) {
    std::function<void()> task;
    {
      MutexLock lock(&mu_);
      wake_.Wait(&mu_,
                 [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !tasks_.empty(); });
      // Stopping, the queue is still emptied first: a posted task may be what lets a caller go
      // on (a gRPC call waiting for its interceptor to proceed).
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace switchyard
