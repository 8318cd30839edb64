// Not built: scripts/check-thread-safety --expect-fail parses this file (CTest
// thread_safety_analysis_fails) to show that the check fails on each access below that is marked
// "thread-safety-error", and on nothing else.
#include "common/mutex.h"

namespace switchyard {
namespace {

class Counter {
 public:
  void Good() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    ++count_;
  }
  int Unguarded() const { return count_; }      // thread-safety-error
  void UnguardedWrite() { count_ = 0; }         // thread-safety-error
  void CallsLockedWithout() { ResetLocked(); }  // thread-safety-error
  bool WaitsRight() {
    MutexLock lock(&mu_);
    return cv_.WaitFor(&mu_, std::chrono::milliseconds(1),
                       [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ > 0; });
  }
  bool WaitsWithUnannotatedPredicate() {
    MutexLock lock(&mu_);
    return cv_.WaitFor(&mu_, std::chrono::milliseconds(1),
                       [this] { return count_ > 0; });  // thread-safety-error
  }
  void WaitsWithoutTheLock() {
    cv_.Wait(&mu_, [] { return true; });  // thread-safety-error
  }

 private:
  void ResetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { count_ = 0; }

  mutable Mutex mu_;
  CondVar cv_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace
}  // namespace switchyard
