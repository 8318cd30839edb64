// Standard services on every gRPC port: health checking (grpc.health.v1.Health) and server
// reflection (grpc.reflection.v1alpha.ServerReflection), so grpcurl, grpc_health_probe and load
// balancers work against both daemons.
#pragma once

#include <grpcpp/grpcpp.h>

namespace switchyard {

// Process-wide: call before the first grpc::ServerBuilder is created. Idempotent.
void EnableStandardGrpcServices();

// Marks every service of `server` SERVING or NOT_SERVING (draining) in its health service.
void SetGrpcServing(grpc::Server* server, bool serving);

}  // namespace switchyard
