#include "gateway/billing/auth_interceptor.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace switchyard::gateway {

class ApiKeyAuth::Interceptor final : public grpc::experimental::Interceptor {
 public:
  // Admissions that wait for a round trip and run on gRPC's own thread, at most: one, so that a
  // call alone pays no thread hop while gRPC keeps its other threads (at least two) for the rest.
  static constexpr int kInlineAdmissions = 1;

  Interceptor(ApiKeyAuth* auth, grpc::experimental::ServerRpcInfo* info)
      : auth_(auth), info_(info) {}
  ~Interceptor() override {
    // The call is over: drop its verdict and key id.
    if (refused_) auth_->ClearVerdict(info_->server_context());
    if (admitted_) auth_->ClearKeyId(info_->server_context());
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      // The call's work is done: the concurrency slot goes back before the client hears so.
      // Released when the call is destroyed instead, a client's next call, sent as soon as it has
      // this answer, could find its only slot still taken (RESOURCE_EXHAUSTED; seen under ASan).
      lease_.reset();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      const auto* metadata = methods->GetRecvInitialMetadata();
      std::string key = metadata ? PresentedKey(*metadata) : std::string();
      if (auth_->admissions_ != nullptr &&
          auth_->inline_admissions_.fetch_add(1) >= kInlineAdmissions) {
        auth_->inline_admissions_--;
        // Off gRPC's thread; the call goes on (Proceed) from the admission thread. gRPC keeps
        // the call, this interceptor and `methods` until Proceed.
        auth_->admissions_->Post([this, methods, key = std::move(key)] {
          Admit(key);
          methods->Proceed();
        });
        return;
      }
      // In memory; or the only admission waiting on gRPC's threads: a hop to another thread
      // costs a wake-up (about 0.1 ms on a VM), worth paying only when this one could hold the
      // rest back.
      Admit(key);
      if (auth_->admissions_ != nullptr) auth_->inline_admissions_--;
    }
    methods->Proceed();
  }

  void Admit(const std::string& key) {
    auto lease = auth_->store_.Admit(key);
    if (lease.ok()) {
      admitted_ = true;
      lease_ = *std::move(lease);
      auth_->SetKeyId(info_->server_context(), lease_->key_id());
    } else {
      refused_ = true;
      spdlog::info("refused {} from {}: {}", info_->method(), info_->server_context()->peer(),
                   std::string(lease.status().message()));
      auth_->SetVerdict(info_->server_context(), lease.status());
    }
  }

 private:
  ApiKeyAuth* auth_;
  grpc::experimental::ServerRpcInfo* info_;
  std::unique_ptr<ApiKeyStore::Lease> lease_;  // the key's concurrency slot, while the call works
  bool admitted_ = false;
  bool refused_ = false;
};

class ApiKeyAuth::Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(ApiKeyAuth* auth) : auth_(auth) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return Checked(info->method()) ? new Interceptor(auth_, info) : nullptr;
  }

 private:
  ApiKeyAuth* auth_;
};

ApiKeyAuth::ApiKeyAuth(std::filesystem::path file, ApiKeyStore::Clock clock, QuotaBackendPtr quotas)
    : file_(std::move(file)),
      store_(quotas ? std::move(quotas) : InMemoryQuotaBackend::Create(std::move(clock))) {
  if (store_.AdmitWaits()) {
    auto pool = ThreadPool::Create("sy-admission", kAdmissionThreads);
    if (pool.ok()) admissions_ = *std::move(pool);  // valid arguments: cannot fail
  }
}

absl::StatusOr<std::unique_ptr<ApiKeyAuth>> ApiKeyAuth::Create(std::filesystem::path file,
                                                               ApiKeyStore::Clock clock,
                                                               QuotaBackendPtr quotas) {
  std::unique_ptr<ApiKeyAuth> auth(
      new ApiKeyAuth(std::move(file), std::move(clock), std::move(quotas)));
  SY_RETURN_IF_ERROR(auth->Reload());
  return auth;
}

absl::Status ApiKeyAuth::Reload() {
  auto entries = LoadApiKeys(file_);
  if (!entries.ok()) return entries.status();
  store_.Replace(*entries);
  spdlog::info("API keys: {} key(s) from {}", entries->size(), file_.string());
  return absl::OkStatus();
}

grpc::Status ApiKeyAuth::Check(const grpc::ServerContextBase* context) const {
  MutexLock lock(&mu_);
  auto it = refused_.find(context);
  return it == refused_.end() ? grpc::Status::OK : it->second;
}

void ApiKeyAuth::SetVerdict(const grpc::ServerContextBase* context, absl::Status status) {
  MutexLock lock(&mu_);
  refused_[context] = ToGrpcStatus(status);
}

void ApiKeyAuth::ClearVerdict(const grpc::ServerContextBase* context) {
  MutexLock lock(&mu_);
  refused_.erase(context);
}

void ApiKeyAuth::SetKeyId(const grpc::ServerContextBase* context, std::string key_id) {
  MutexLock lock(&mu_);
  admitted_[context] = std::move(key_id);
}

void ApiKeyAuth::ClearKeyId(const grpc::ServerContextBase* context) {
  MutexLock lock(&mu_);
  admitted_.erase(context);
}

std::string ApiKeyAuth::KeyIdOf(const grpc::ServerContextBase* context) const {
  MutexLock lock(&mu_);
  auto it = admitted_.find(context);
  return it == admitted_.end() ? std::string() : it->second;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ApiKeyAuth::InterceptorFactory() {
  return std::make_unique<Factory>(this);
}

bool ApiKeyAuth::Checked(const char* method) {
  if (method == nullptr) return false;
  absl::string_view m(method);
  if (absl::StartsWith(m, "/switchyard.v1.Gateway/")) return true;
  if (absl::StartsWith(m, "/inference.GRPCInferenceService/")) {
    // Liveness, readiness and the server's name are probes, like /healthz and /readyz.
    return !absl::StartsWith(m, "/inference.GRPCInferenceService/Server");
  }
  return false;
}

std::string ApiKeyAuth::PresentedKey(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    absl::string_view value(it->second.data(), it->second.size());
    value = absl::StripAsciiWhitespace(value);
    if (value.size() > 7 && absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
      return std::string(absl::StripAsciiWhitespace(value.substr(7)));
    }
  }
  if (auto it = metadata.find("x-api-key"); it != metadata.end()) {
    return std::string(
        absl::StripAsciiWhitespace(absl::string_view(it->second.data(), it->second.size())));
  }
  return "";
}

}  // namespace switchyard::gateway
