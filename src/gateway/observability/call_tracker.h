// Counts the gRPC calls in progress on a server, except the long-lived streams that never end on
// their own (orchestrators' registration streams, health watches). A shutdown waits on it for the
// jobs still running and then closes those streams itself, rather than sitting out its whole grace
// period because they are open (gRPC's Server::Shutdown waits for every call).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace switchyard::gateway {

class ActiveCallTracker {
 public:
  // Calls whose full method name ("/package.Service/Method") starts with one of
  // `untracked_prefixes` are not counted.
  explicit ActiveCallTracker(std::vector<std::string> untracked_prefixes);

  // Add to a ServerBuilder with experimental().SetInterceptorCreators. gRPC destroys the
  // interceptor when its call ends, however it ends; that is when the call stops counting.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  int active() const ABSL_LOCKS_EXCLUDED(mu_);
  // True as soon as no counted call is in progress; false when `deadline` passes first.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  class Interceptor;
  class Factory;
  bool Tracked(const char* method) const;
  void Started() ABSL_LOCKS_EXCLUDED(mu_);
  void Ended() ABSL_LOCKS_EXCLUDED(mu_);

  const std::vector<std::string> untracked_prefixes_;
  mutable Mutex mu_;
  mutable CondVar idle_;  // signalled when active_ drops to 0
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace switchyard::gateway
