// A thread that does one rendition's work, fed by the decoding thread through a short bounded
// queue (the decoder waits when it is full, so memory stays a few frames per rendition).
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "orchestrator/transcode/rendition.h"

namespace switchyard::orchestrator::transcode {

// The first error is kept; later work is dropped. The destructor closes the queue and joins.
class RenditionWorker {
 public:
  using Process = std::function<absl::Status(RenditionWork&)>;
  // `any_failed` (outliving the worker) is set when this worker fails.
  RenditionWorker(Process process, std::atomic<bool>* any_failed);
  ~RenditionWorker();
  RenditionWorker(const RenditionWorker&) = delete;
  RenditionWorker& operator=(const RenditionWorker&) = delete;

  // Blocks while the queue is full. Returns false once this worker has failed.
  bool Post(RenditionWork work);
  // Waits until everything posted has been done; returns the first error.
  absl::Status Drain();

 private:
  static constexpr size_t kMaxQueued = 4;

  void Loop();

  Process process_;
  std::atomic<bool>* any_failed_;
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<RenditionWork> queue_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  bool status_ok_ = true;  // status_.ok(), read and written by the worker thread only
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: started once everything above is ready
};

}  // namespace switchyard::orchestrator::transcode
