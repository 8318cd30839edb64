#include "common/grpc_services.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <utility>

namespace switchyard {

void EnableStandardGrpcServices() {
  static std::once_flag once;
  std::call_once(once, [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  });
}

void SetGrpcServing(grpc::Server* server, bool serving) {
  if (server == nullptr) return;
  if (auto* health = server->GetHealthCheckService(); health != nullptr) {
    health->SetServingStatus(serving);
  }
}

std::shared_ptr<grpc::Channel> ReleasedOffGrpcThreads(std::shared_ptr<grpc::Channel> channel) {
  if (channel == nullptr) return channel;
  grpc::Channel* raw = channel.get();
  // The deleter runs where the wrapper's last reference goes, maybe on a gRPC callback thread.
  // Calls' ClientContexts hold the channel itself (shared_from_this), not the wrapper.
  return std::shared_ptr<grpc::Channel>(raw, [real = std::move(channel)](grpc::Channel*) mutable {
    std::thread([real = std::move(real)]() mutable {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (real.use_count() > 1 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      real.reset();
    }).detach();
  });
}

}  // namespace switchyard
