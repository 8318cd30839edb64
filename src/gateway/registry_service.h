// Accepts orchestrator registrations (node protocol) and keeps Membership in step with them:
// a node is routed to while its stream is open, and dropped the moment the stream ends.
#pragma once

#include <string>

#include "gateway/membership.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::gateway {

class RegistryService final : public node::v1::Registry::CallbackService {
 public:
  // A non-empty `secret` must arrive as kSecretMetadata on every Register stream; empty: open.
  RegistryService(std::string gateway_id, int heartbeat_interval_ms, Membership* membership,
                  std::string secret = "")
      : gateway_id_(std::move(gateway_id)),
        heartbeat_interval_ms_(heartbeat_interval_ms),
        membership_(membership),
        secret_(std::move(secret)) {}

  static constexpr const char* kSecretMetadata = "x-switchyard-registration-secret";

  grpc::ServerBidiReactor<node::v1::NodeMessage, node::v1::GatewayMessage>* Register(
      grpc::CallbackServerContext* context) override;

 private:
  std::string gateway_id_;
  int heartbeat_interval_ms_;
  Membership* membership_;
  std::string secret_;
};

}  // namespace switchyard::gateway
