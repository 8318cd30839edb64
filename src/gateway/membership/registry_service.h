// Accepts orchestrator registrations (node protocol) and keeps Membership in step with them:
// a node is routed to while its stream is open, and dropped the moment the stream ends.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "common/mutex.h"
#include "gateway/membership/membership.h"
#include "gateway/membership/node_keys.h"
#include "gateway/routing/warm_demand.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::gateway {

// Which node may register under which id (docs/security.md, "Node identity and admin calls").
struct NodeAuth {
  // Node id -> lowercase hex SHA-256 of that node's secret (the gateway's node_secrets_file).
  // Non-empty: only these ids may register, each with its own secret (kSecretMetadata); the
  // shared secret is then not accepted.
  std::map<std::string, std::string> node_secrets;
  // The client certificate's identity (a DNS/URI SAN or the CN) must equal the node id (needs a
  // gRPC port with tls.require_client_cert).
  bool node_id_from_client_cert = false;
};

class RegistryService final : public node::v1::Registry::CallbackService {
 public:
  // A non-empty `secret` must arrive as kSecretMetadata on every Register stream; empty: open
  // (unless `node_auth` lists per-node secrets). A node id is held by its live registration: a
  // second Register for it is refused with ALREADY_EXISTS until the first stream ends or the node
  // is silent for the gateway's node timeout.
  // With `node_keys` (not owned; outlives this; null: keys ignored), a hello that carries a
  // public key is answered with a RegistrationChallenge and acked only once the node's signature
  // of it verifies and node_keys lets that key use that id (NodeKeys::Check and Bind).
  RegistryService(std::string gateway_id, int heartbeat_interval_ms, Membership* membership,
                  std::string secret = "", NodeAuth node_auth = {}, NodeKeys* node_keys = nullptr)
      : gateway_id_(std::move(gateway_id)),
        heartbeat_interval_ms_(heartbeat_interval_ms),
        membership_(membership),
        secret_(std::move(secret)),
        node_auth_(std::move(node_auth)),
        node_keys_(node_keys) {
    for (const auto& [id, sha256] : node_auth_.node_secrets) node_secret_hashes_.insert(sha256);
  }

  // Demand for warm capacity to tell the registered nodes about (node.proto WarmDemand; not
  // owned, outlives this; null: none sent). Set before the service takes streams.
  void set_warm_demand(const WarmDemandTracker* demand) { warm_demand_ = demand; }

  static constexpr const char* kSecretMetadata = "x-switchyard-registration-secret";
  static constexpr size_t kMaxNodeIdBytes = 128;

  grpc::ServerBidiReactor<node::v1::NodeMessage, node::v1::GatewayMessage>* Register(
      grpc::CallbackServerContext* context) override;

  // Gateway shutdown: ends every open registration stream with UNAVAILABLE ("gateway shutting
  // down"; the orchestrators reconnect with backoff) and refuses new ones the same way, so the gRPC
  // server's shutdown does not wait out its grace period for streams that never end on their own.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  class Stream;  // one orchestrator's registration stream (registry_service.cc)
  // What a stream presented before its hello: its secret and its certificate's identities.
  struct Presented {
    std::string secret;
    std::vector<std::string> cert_identities;
  };
  void Untrack(Stream* stream) ABSL_LOCKS_EXCLUDED(mu_);
  // May a stream that presented `presented` register as `node_id`? UNAUTHENTICATED for a wrong or
  // missing per-node secret or certificate identity, PERMISSION_DENIED for an id not listed.
  absl::Status AuthorizeNode(const std::string& node_id, const Presented& presented) const;

  std::string gateway_id_;
  int heartbeat_interval_ms_;
  Membership* membership_;
  std::string secret_;
  const NodeAuth node_auth_;
  NodeKeys* const node_keys_;
  absl::flat_hash_set<std::string> node_secret_hashes_;  // of node_auth_.node_secrets
  const WarmDemandTracker* warm_demand_ = nullptr;
  Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<Stream*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::gateway
