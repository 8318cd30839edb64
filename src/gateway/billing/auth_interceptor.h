// API key checks for the gateway's client-facing gRPC API (switchyard.v1.Gateway and KServe's
// GRPCInferenceService). A server interceptor admits each call when its initial metadata arrives
// and holds the key's concurrency slot until the call ends, however it ends (gRPC destroys the
// interceptor with the call). gRPC C++ interceptors cannot fail a call themselves, so each
// service method asks Check() for the verdict before doing any work.
//
// When admission waits for a round trip (quotas in Redis), it runs on threads of its own and the
// call proceeds from there once admitted or refused: gRPC runs interceptors on its callback
// threads, and every call in the process waits while those (two on a two-core host) wait. One
// such admission at a time runs where it is (a lone call pays no thread hop).
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "common/thread_pool.h"
#include "gateway/billing/api_keys.h"

namespace switchyard::gateway {

class ApiKeyAuth {
 public:
  // Loads `file`; an error (naming file and field) if it cannot be read or is invalid. The keys'
  // quotas live in `quotas` when given (e.g. Redis, shared by several gateways), else in this
  // gateway's memory timed by `clock`.
  static absl::StatusOr<std::unique_ptr<ApiKeyAuth>> Create(std::filesystem::path file,
                                                            ApiKeyStore::Clock clock = nullptr,
                                                            QuotaBackendPtr quotas = nullptr);

  // Re-reads the file (SIGHUP). On error the old keys stay in force and the error is returned.
  absl::Status Reload();

  // The verdict for a call to a checked method: OK, UNAUTHENTICATED or RESOURCE_EXHAUSTED.
  // OK for methods the interceptor does not check.
  grpc::Status Check(const grpc::ServerContextBase* context) const;

  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  // Threads that run admissions waiting for a round trip (quotas in Redis); at most this many
  // admissions wait at once, the others queue.
  static constexpr int kAdmissionThreads = 8;

  // The id of the API key a call was admitted with ("" when it was not, or is not checked); the
  // key its jobs are charged to in the usage ledger.
  std::string KeyIdOf(const grpc::ServerContextBase* context) const;

  // Whether calls to this method (e.g. "/switchyard.v1.Gateway/Upscale") need a key. Health,
  // reflection, the orchestrators' Registry and KServe's Server{Live,Ready,Metadata} do not.
  static bool Checked(const char* method);
  // The key a client presented: "authorization: Bearer <key>", else "x-api-key: <key>".
  static std::string PresentedKey(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);

  ApiKeyStore& store() { return store_; }

 private:
  class Interceptor;
  class Factory;
  ApiKeyAuth(std::filesystem::path file, ApiKeyStore::Clock clock, QuotaBackendPtr quotas);

  void SetVerdict(const grpc::ServerContextBase* context, absl::Status status);
  void ClearVerdict(const grpc::ServerContextBase* context);
  void SetKeyId(const grpc::ServerContextBase* context, std::string key_id);
  void ClearKeyId(const grpc::ServerContextBase* context);

  std::filesystem::path file_;
  ApiKeyStore store_;
  // Runs admissions that wait for a round trip (null when the quotas are in memory). Declared
  // after store_: destroyed first, so the admissions still queued finish before the store goes.
  ThreadPoolPtr admissions_;
  std::atomic<int> inline_admissions_{0};  // waiting ones running on gRPC's threads now
  mutable Mutex mu_;
  // Refusals of calls still open, by their server context.
  absl::flat_hash_map<const grpc::ServerContextBase*, grpc::Status> refused_ ABSL_GUARDED_BY(mu_);
  // Key ids of admitted calls still open, by their server context.
  absl::flat_hash_map<const grpc::ServerContextBase*, std::string> admitted_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::gateway
