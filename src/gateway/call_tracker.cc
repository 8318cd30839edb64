#include "gateway/call_tracker.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace switchyard::gateway {

class ActiveCallTracker::Interceptor final : public grpc::experimental::Interceptor {
 public:
  explicit Interceptor(ActiveCallTracker* tracker) : tracker_(tracker) { tracker_->Started(); }
  ~Interceptor() override { tracker_->Ended(); }
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    methods->Proceed();
  }

 private:
  ActiveCallTracker* tracker_;
};

class ActiveCallTracker::Factory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(ActiveCallTracker* tracker) : tracker_(tracker) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    // nullptr: no interceptor for this call (gRPC skips it).
    return tracker_->Tracked(info->method()) ? new Interceptor(tracker_) : nullptr;
  }

 private:
  ActiveCallTracker* tracker_;
};

ActiveCallTracker::ActiveCallTracker(std::vector<std::string> untracked_prefixes)
    : untracked_prefixes_(std::move(untracked_prefixes)) {}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ActiveCallTracker::InterceptorFactory() {
  return std::make_unique<Factory>(this);
}

bool ActiveCallTracker::Tracked(const char* method) const {
  if (method == nullptr) return true;
  for (const std::string& prefix : untracked_prefixes_) {
    if (absl::StartsWith(method, prefix)) return false;
  }
  return true;
}

void ActiveCallTracker::Started() {
  absl::MutexLock lock(&mu_);
  ++active_;
}

void ActiveCallTracker::Ended() {
  absl::MutexLock lock(&mu_);
  --active_;
}

int ActiveCallTracker::active() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

bool ActiveCallTracker::WaitIdle(std::chrono::steady_clock::time_point deadline) const {
  const absl::Duration left = absl::FromChrono(deadline - std::chrono::steady_clock::now());
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return active_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), std::max(left, absl::ZeroDuration()));
}

}  // namespace switchyard::gateway
