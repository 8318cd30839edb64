#include "gateway/observability/call_tracker.h"

#include "absl/strings/match.h"

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
  MutexLock lock(&mu_);
  ++active_;
}

void ActiveCallTracker::Ended() {
  MutexLock lock(&mu_);
  if (--active_ == 0) idle_.SignalAll();
}

int ActiveCallTracker::active() const {
  MutexLock lock(&mu_);
  return active_;
}

bool ActiveCallTracker::WaitIdle(std::chrono::steady_clock::time_point deadline) const {
  MutexLock lock(&mu_);
  return idle_.WaitUntil(&mu_, deadline,
                         [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; });
}

}  // namespace switchyard::gateway
