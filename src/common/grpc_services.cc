#include "common/grpc_services.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <mutex>

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

}  // namespace switchyard
