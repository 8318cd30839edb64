#include "gateway/routing/snapshot.h"

#include "common/grpc_services.h"

namespace switchyard::gateway {

NodeConnection::NodeConnection(std::string address, int64_t max_message_bytes,
                               const GrpcClientSecurity& security)
    : address_(std::move(address)), max_message_bytes_(max_message_bytes) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // A node's connection is shared with the jobs running on it: its last reference may go in a
  // job's callback, on a gRPC thread (ReleasedOffGrpcThreads says why that must not free it).
  channel_ = ReleasedOffGrpcThreads(security.CreateChannel(address_, args));
  stub_ = node::v1::Orchestrator::NewStub(channel_);
}

}  // namespace switchyard::gateway
