// Health checking and reflection on both daemons' gRPC ports, through generic calls (the client
// stubs of those services are not installed with Debian's gRPC).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "support/cluster.h"

namespace switchyard::testing {
namespace {

std::string ToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return "";
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer FromString(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

// grpc.health.v1.Health/Check for the whole server (empty service name). Returns the response
// bytes: a HealthCheckResponse, "\x08\x01" for SERVING.
absl::StatusOr<std::string> HealthCheck(const std::string& address) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::ByteBuffer request = FromString("");
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = std::move(s);
                   done = true;
                   cv.notify_all();
                 });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return ToString(response);
}

// grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo with list_services: the raw
// response, which names every service.
absl::StatusOr<std::string> ListServices(const std::string& address) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue cq;
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  if (!cq.Next(&tag, &ok) || !ok) return absl::UnavailableError("cannot start the call");
  // ServerReflectionRequest { list_services = 7: "" }
  call->Write(FromString(std::string("\x3a\x00", 2)), reinterpret_cast<void*>(2));
  if (!cq.Next(&tag, &ok) || !ok) return absl::UnavailableError("cannot write");
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  if (!cq.Next(&tag, &ok) || !ok) return absl::UnavailableError("no answer");
  std::string out = ToString(response);
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return out;
}

TEST(GrpcServicesTest, BothDaemonsAnswerHealthChecksAndReflection) {
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;

  auto gw = HealthCheck(cluster.gateway_address());
  ASSERT_TRUE(gw.ok()) << gw.status();
  EXPECT_EQ(*gw, std::string("\x08\x01", 2)) << "gateway not SERVING";
  auto services = ListServices(cluster.gateway_address());
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_NE(services->find("switchyard.v1.Gateway"), std::string::npos) << *services;
  EXPECT_NE(services->find("grpc.health.v1.Health"), std::string::npos) << *services;
  EXPECT_NE(services->find("inference.GRPCInferenceService"), std::string::npos) << *services;

  const std::string orch = cluster.orchestrator_address(0);
  auto o = HealthCheck(orch);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(*o, std::string("\x08\x01", 2)) << "orchestrator not SERVING";
  auto orch_services = ListServices(orch);
  ASSERT_TRUE(orch_services.ok()) << orch_services.status();
  EXPECT_NE(orch_services->find("switchyard.node.v1.Orchestrator"), std::string::npos);
}

}  // namespace
}  // namespace switchyard::testing
