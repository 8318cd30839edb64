// The API key interceptor (gateway/billing/auth_interceptor.h) on a real gRPC callback server:
// admissions that wait for a round trip (quotas in Redis) run on the interceptor's own threads,
// so calls that wait to be admitted do not hold gRPC's callback threads, which every other call
// of the process needs. Every wait is bounded.
#include "gateway/billing/auth_interceptor.h"

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_services.h"
#include "common/mutex.h"
#include "support/media_fixtures.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {
namespace {

constexpr char kKey[] = "sk-auth-interceptor-test";

// Quotas whose admissions wait (as Redis's do) until the test opens the gate (or 20 s pass).
class GatedQuotas final : public QuotaBackend {
 public:
  absl::StatusOr<QuotaSlotPtr> Acquire(const std::string& key_id,
                                       const QuotaLimits& limits) override {
    MutexLock lock(&mu_);
    waiting_++;
    changed_.SignalAll();
    changed_.WaitFor(&mu_, std::chrono::seconds(20),
                     [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_; });
    waiting_--;
    admitted_++;
    return QuotaSlotPtr(new Slot);
  }
  void Retain(const std::set<std::string>&) override {}
  int InFlight(const std::string&) const override { return 0; }
  bool AcquireWaits() const override { return true; }

  void Open() {
    MutexLock lock(&mu_);
    open_ = true;
    changed_.SignalAll();
  }
  // Waits (bounded) until `n` admissions are waiting at once; returns how many are.
  int WaitForWaiting(int n) {
    MutexLock lock(&mu_);
    changed_.WaitFor(&mu_, std::chrono::seconds(10),
                     [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiting_ >= n; });
    return waiting_;
  }

 private:
  struct Slot final : QuotaSlot {};
  Mutex mu_;
  CondVar changed_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int admitted_ ABSL_GUARDED_BY(mu_) = 0;
};

// ListCapabilities, answered once the key's verdict is in (as the gateway's methods do).
class CheckedService final : public v1::Gateway::CallbackService {
 public:
  explicit CheckedService(ApiKeyAuth* auth) : auth_(auth) {}
  grpc::ServerUnaryReactor* ListCapabilities(grpc::CallbackServerContext* context,
                                             const v1::ListCapabilitiesRequest*,
                                             v1::ListCapabilitiesResponse*) override {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(auth_->Check(context));
    return reactor;
  }

 private:
  ApiKeyAuth* auth_;
};

TEST(AuthInterceptorTest, AdmissionsThatWaitDoNotHoldGrpcsThreads) {
  testing::TempDir dir;
  const auto keys = dir.path() / "keys.json";
  std::ofstream(keys) << absl::StrCat(R"({"keys": [{"id": "app", "sha256": ")", Sha256Hex(kKey),
                                      R"("}]})");
  auto quotas = std::make_unique<GatedQuotas>();
  GatedQuotas* gate = quotas.get();
  auto auth = ApiKeyAuth::Create(keys, nullptr, std::move(quotas));
  ASSERT_TRUE(auth.ok()) << auth.status();

  EnableStandardGrpcServices();  // grpc.health.v1.Health: a callback service nobody admits
  CheckedService service(auth->get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back((*auth)->InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(creators));
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto stub = v1::Gateway::NewStub(channel);

  // More calls waiting to be admitted than gRPC has callback threads (at most 16) and than the
  // interceptor has admission threads: the first wait on those, the rest queue.
  constexpr int kCalls = 24;
  struct Call {
    grpc::ClientContext context;
    v1::ListCapabilitiesRequest request;
    v1::ListCapabilitiesResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls;
  Mutex mu;
  CondVar done_cv;
  int done = 0;
  for (int i = 0; i < kCalls; ++i) {
    auto call = std::make_unique<Call>();
    call->context.AddMetadata("authorization", absl::StrCat("Bearer ", kKey));
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    Call* c = call.get();
    stub->async()->ListCapabilities(&c->context, &c->request, &c->response,
                                    [&, c](grpc::Status status) {
                                      MutexLock lock(&mu);
                                      c->status = std::move(status);
                                      done++;
                                      done_cv.SignalAll();
                                    });
    calls.push_back(std::move(call));
  }
  // The admission threads' and at most one on gRPC's (a lone call's admission stays there).
  const int waiting = gate->WaitForWaiting(ApiKeyAuth::kAdmissionThreads);
  EXPECT_GE(waiting, ApiKeyAuth::kAdmissionThreads);
  EXPECT_LE(waiting, ApiKeyAuth::kAdmissionThreads + 1);

  // Meanwhile a call that needs no key is served at once.
  grpc::GenericStub generic(channel);
  grpc::ClientContext health;
  health.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1), response;  // an empty HealthCheckRequest
  grpc::Status health_status;
  bool health_done = false;
  generic.UnaryCall(&health, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status status) {
                      MutexLock lock(&mu);
                      health_status = std::move(status);
                      health_done = true;
                      done_cv.SignalAll();
                    });
  {
    MutexLock lock(&mu);
    done_cv.WaitFor(&mu, std::chrono::seconds(10), [&] { return health_done; });
    ASSERT_TRUE(health_done);
  }
  EXPECT_TRUE(health_status.ok()) << health_status.error_message();

  // Once admitted, every waiting call goes on and is answered.
  gate->Open();
  {
    MutexLock lock(&mu);
    done_cv.WaitFor(&mu, std::chrono::seconds(20), [&] { return done == kCalls; });
    ASSERT_EQ(done, kCalls);
  }
  for (const auto& call : calls) EXPECT_TRUE(call->status.ok()) << call->status.error_message();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace
}  // namespace switchyard::gateway
