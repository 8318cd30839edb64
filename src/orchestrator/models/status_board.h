// A change counter that registration streams wait on, so load and model-state changes reach the
// gateways as soon as they happen (and heartbeats otherwise).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace switchyard::orchestrator {

class StatusBoard {
 public:
  void Changed() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++version_;
    }
    cv_.notify_all();
  }
  // Waits until the version differs from `seen`, `timeout` passes or `stop` returns true (checked
  // on every wake-up; call Wake() after setting it). Returns the current version.
  template <typename StopFn>
  uint64_t WaitForChange(uint64_t seen, std::chrono::milliseconds timeout, StopFn stop) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return version_ != seen || stop(); });
    return version_;
  }
  void Wake() { cv_.notify_all(); }
  uint64_t version() {
    std::lock_guard<std::mutex> lock(mu_);
    return version_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t version_ = 0;
};

}  // namespace switchyard::orchestrator
