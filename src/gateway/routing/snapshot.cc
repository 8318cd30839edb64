#include "gateway/routing/snapshot.h"

namespace switchyard::gateway {

NodeConnection::NodeConnection(std::string address, int64_t max_message_bytes,
                               const GrpcClientSecurity& security)
    : address_(std::move(address)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  channel_ = security.CreateChannel(address_, args);
  stub_ = node::v1::Orchestrator::NewStub(channel_);
}

}  // namespace switchyard::gateway
