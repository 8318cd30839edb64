// Standard services on every gRPC port: health checking (grpc.health.v1.Health) and server
// reflection (grpc.reflection.v1alpha.ServerReflection), so grpcurl, grpc_health_probe and load
// balancers work against both daemons.
#pragma once

#include <memory>

#include <grpcpp/grpcpp.h>

namespace switchyard {

// Process-wide: call before the first grpc::ServerBuilder is created. Idempotent.
void EnableStandardGrpcServices();

// Marks every service of `server` SERVING or NOT_SERVING (draining) in its health service.
void SetGrpcServing(grpc::Server* server, bool serving);

// `channel`, wrapped so that its last reference is never dropped on one of gRPC's callback
// threads. gRPC 1.51 runs callbacks on a shared completion queue's own threads, and every channel
// and server holds a reference to that queue: when a channel's last reference goes in a callback
// (a job's reactor, a ClientContext destroyed there), the queue can be deleted from one of its own
// threads while the others still use it, an abort in grpc_cq_internal_unref ("assertion failed:
// prior > 0") seen in tests and on a gateway's shutdown. When the wrapper's last reference goes,
// wherever that is, a thread of its own takes the channel and drops it once the contexts of the
// calls still ending (which hold it too) have let go (waiting at most 30 s). For channels shared
// with callbacks (a gateway's node connections and in-process bridges); a channel its owner drops
// on its own thread (the CLI's, an orchestrator's registration) needs none.
std::shared_ptr<grpc::Channel> ReleasedOffGrpcThreads(std::shared_ptr<grpc::Channel> channel);

}  // namespace switchyard
