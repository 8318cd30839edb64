// Accepts orchestrator registrations (node protocol) and keeps Membership in step with them:
// a node is routed to while its stream is open, and dropped the moment the stream ends.
#pragma once

#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
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

  // Gateway shutdown: ends every open registration stream with UNAVAILABLE ("gateway shutting
  // down"; the orchestrators reconnect with backoff) and refuses new ones the same way, so the gRPC
  // server's shutdown does not wait out its grace period for streams that never end on their own.
  void Shutdown();

 private:
  class Stream;  // one orchestrator's registration stream (registry_service.cc)
  void Untrack(Stream* stream);

  std::string gateway_id_;
  int heartbeat_interval_ms_;
  Membership* membership_;
  std::string secret_;
  std::mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<Stream*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::gateway
