#include "orchestrator/transcode/rendition_worker.h"

#include <utility>

namespace switchyard::orchestrator::transcode {

RenditionWorker::RenditionWorker(Process process, std::atomic<bool>* any_failed)
    : process_(std::move(process)), any_failed_(any_failed), thread_([this] { Loop(); }) {}

RenditionWorker::~RenditionWorker() {
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    cv_.SignalAll();
  }
  thread_.join();
}

bool RenditionWorker::Post(RenditionWork work) {
  absl::MutexLock lock(&mu_);
  while (queue_.size() >= kMaxQueued && status_.ok()) cv_.Wait(&mu_);
  if (!status_.ok()) return false;
  queue_.push_back(std::move(work));
  cv_.SignalAll();
  return true;
}

absl::Status RenditionWorker::Drain() {
  absl::MutexLock lock(&mu_);
  while ((!queue_.empty() || busy_) && status_.ok()) cv_.Wait(&mu_);
  return status_;
}

void RenditionWorker::Loop() {
  for (;;) {
    RenditionWork work;
    {
      absl::MutexLock lock(&mu_);
      while (!closed_ && queue_.empty()) cv_.Wait(&mu_);
      if (queue_.empty()) return;  // closed
      work = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    absl::Status status = status_ok_ ? process_(work) : absl::OkStatus();
    work = RenditionWork();  // drop the frame/packet reference outside the lock
    absl::MutexLock lock(&mu_);
    busy_ = false;
    if (!status.ok() && status_.ok()) {
      status_ = std::move(status);
      status_ok_ = false;
      any_failed_->store(true);
      queue_.clear();
    }
    cv_.SignalAll();
  }
}

}  // namespace switchyard::orchestrator::transcode
