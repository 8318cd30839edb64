// The caller's cancellation check, shared by the stages of one segment transcode.
#pragma once

#include <atomic>
#include <functional>
#include <thread>

namespace switchyard::orchestrator::transcode {

// The caller's check runs only on the thread that runs the transcode (the gRPC handler's): on a
// synchronous gRPC server ServerContext::IsCancelled plucks the call's own completion queue, so
// only the handler's thread should touch it. Rendition threads read what the check last answered
// there (checked before every decoded frame).
class Cancellation {
 public:
  explicit Cancellation(const std::function<bool()>& cancelled) : cancelled_(cancelled) {}
  Cancellation(const Cancellation&) = delete;
  Cancellation& operator=(const Cancellation&) = delete;

  bool Cancelled() const {
    if (std::this_thread::get_id() != owner_thread_) return seen_.load();
    if (seen_.load()) return true;
    if (!cancelled_ || !cancelled_()) return false;
    seen_.store(true);
    return true;
  }

 private:
  const std::function<bool()>& cancelled_;
  const std::thread::id owner_thread_ = std::this_thread::get_id();
  mutable std::atomic<bool> seen_{false};
};

}  // namespace switchyard::orchestrator::transcode
