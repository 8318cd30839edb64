#include "gateway/membership/registry_service.h"

#include <spdlog/spdlog.h>

#include <openssl/crypto.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/node_identity.h"
#include "common/secure_random.h"
#include "common/status.h"
#include "common/tsan_handoff.h"
#include "gateway/billing/api_keys.h"
#include "gateway/routing/missed_jobs.h"

namespace switchyard::gateway {

class RegistryService::Stream final
    : public grpc::ServerBidiReactor<node::v1::NodeMessage, node::v1::GatewayMessage> {
 public:
  Stream(RegistryService* registry, std::string gateway_id, int heartbeat_ms,
         Membership* membership, std::string peer, Presented presented)
      : registry_(registry),
        membership_(membership),
        peer_(std::move(peer)),
        presented_(std::move(presented)) {
    challenge_.mutable_challenge()->set_gateway_id(gateway_id);
    ack_.mutable_ack()->set_gateway_id(std::move(gateway_id));
    ack_.mutable_ack()->set_heartbeat_interval_ms(heartbeat_ms);
    // gRPC may call OnCancel on another thread as soon as the stream is handed to it; gRPC core
    // orders that after this constructor, invisibly to ThreadSanitizer.
    tsan::HandOff(this);
  }

  void Begin() { StartRead(&in_); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // stream closed or broken: stop routing to the node now
      Leave();
      FinishOnce(grpc::Status::OK);
      return;
    }
    if (in_.has_hello()) {
      const auto& hello = in_.hello();
      absl::Status valid = Validate(hello);
      if (!valid.ok()) {
        spdlog::warn("refused registration from {}: {}", peer_, valid.ToString());
        FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(valid.message())));
        return;
      }
      if (absl::Status auth = registry_->AuthorizeNode(hello.node_id(), presented_); !auth.ok()) {
        spdlog::warn("refused registration of node '{}' from {}: {}", hello.node_id(), peer_,
                     std::string(auth.message()));
        FinishOnce(ToGrpcStatus(auth));
        return;
      }
      NodeKeys* keys = registry_->node_keys_;
      if (keys != nullptr && keys->mode() != NodeIdentityConfig::Mode::kOff) {
        const std::string& key = hello.identity().public_key();
        if (hello.has_identity() && key.size() != kNodePublicKeyBytes) {
          FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  absl::StrCat("identity.public_key is ", key.size(),
                                               " bytes; an Ed25519 key is ",
                                               kNodePublicKeyBytes)));
          return;
        }
        if (absl::Status allowed = keys->Check(hello.node_id(), key); !allowed.ok()) {
          spdlog::warn("refused registration from {}: {}", peer_, std::string(allowed.message()));
          FinishOnce(ToGrpcStatus(allowed));
          return;
        }
        if (!key.empty()) {
          // Acked once the node has signed a fresh challenge with the key (kProof below).
          Leave();  // a second hello on this stream
          pending_hello_ = hello;
          nonce_ = SecureRandomBytes(kRegistrationNonceBytes);
          challenge_.mutable_challenge()->set_nonce(nonce_);
          Send(&challenge_);
          StartRead(&in_);
          return;
        }
      }
      if (!Admit(hello)) return;
    } else if (in_.has_proof()) {
      if (!pending_hello_.has_value()) {
        FinishOnce(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "an identity proof answers a challenge: send a hello with "
                                "identity.public_key first"));
        return;
      }
      node::v1::NodeStatus hello = *std::move(pending_hello_);
      pending_hello_.reset();
      const std::string& key = hello.identity().public_key();
      absl::Status proven = VerifyNodeSignature(
          key,
          RegistrationProofMessage(challenge_.challenge().gateway_id(), nonce_, hello.node_id(),
                                   key, hello.address()),
          in_.proof().signature());
      if (!proven.ok()) {
        spdlog::warn("refused registration of node '{}' from {}: its identity proof failed: {}",
                     hello.node_id(), peer_, std::string(proven.message()));
        FinishOnce(grpc::Status(
            grpc::StatusCode::UNAUTHENTICATED,
            absl::StrCat("registration refused: the identity proof failed: ", proven.message())));
        return;
      }
      if (absl::Status bound = registry_->node_keys_->Bind(hello.node_id(), key); !bound.ok()) {
        spdlog::warn("refused registration from {}: {}", peer_, std::string(bound.message()));
        FinishOnce(ToGrpcStatus(bound));
        return;
      }
      if (!Admit(hello)) return;
      spdlog::info("orchestrator {} proved its identity key {}", hello.node_id(),
                   NodeKeyHex(key).substr(0, 16));
    } else if (in_.has_update()) {
      uint64_t token = 0;
      bool same_node = false;
      {
        MutexLock lock(&leave_mu_);
        token = token_;
        same_node = in_.update().node_id() == node_id_;
      }
      if (token == 0 || !same_node) {
        FinishOnce(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "send a hello before updates, with the same node_id"));
        return;
      }
      if (!membership_->Update(in_.update(), token)) {
        // Expired for silence (a stalled process, a slow network) and now heard from again:
        // route to it again at once, unless it has registered anew on another stream.
        if (absl::Status valid = Validate(in_.update()); !valid.ok()) {
          FinishOnce(
              grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(valid.message())));
          return;
        }
        std::string holder;
        bool taken = false;
        {
          MutexLock lock(&leave_mu_);
          if (token_ != 0) {
            const uint64_t fresh =
                membership_->TryRegister(in_.update(), NodeSource::kRegistered,
                                         Registrant{peer_, presented_.secret}, &holder);
            if (fresh != 0) {
              token_ = fresh;
              spdlog::info("orchestrator {} is heard from again; routed to again", node_id_);
            } else {
              token_ = 0;  // another registration holds the id now: this stream has lost it
              taken = true;
            }
          }
        }
        if (taken) {
          RefuseTakenId(in_.update().node_id(), holder);
          return;
        }
      }
      MaybeSendMissedJobs();
      MaybeSendWarmDemand();
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool) override {
    const node::v1::GatewayMessage* next = nullptr;
    {
      MutexLock lock(&mu_);
      if (queued_ != nullptr && !finished_) {
        next = queued_;  // write_pending_ stays set
      } else {
        write_pending_ = false;
        if (finish_deferred_) {
          finish_deferred_ = false;
          Finish(deferred_status_);
        }
      }
      queued_ = nullptr;
    }
    if (next != nullptr) StartWrite(next);
  }

  void OnCancel() override {
    tsan::TakeOver(this);  // gRPC runs OnCancel on its own thread: see the constructor
    Leave();
  }

  void OnDone() override {
    registry_->Untrack(this);
    Leave();
    delete this;
  }

  // Finish must not overlap a pending write; defer it to OnWriteDone if one is in flight.
  void FinishOnce(grpc::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    if (write_pending_) {
      finish_deferred_ = true;
      deferred_status_ = std::move(status);
    } else {
      Finish(std::move(status));
    }
  }

 private:
  static absl::Status Validate(const node::v1::NodeStatus& s) {
    if (s.node_id().empty()) return absl::InvalidArgumentError("hello has no node_id");
    // Node ids go into logs, metrics labels and the ledger: bounded, printable, no spaces.
    if (s.node_id().size() > kMaxNodeIdBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("node_id is ", s.node_id().size(), " bytes; at most ", kMaxNodeIdBytes));
    }
    for (unsigned char ch : s.node_id()) {
      if (ch < 0x21 || ch > 0x7e) {
        return absl::InvalidArgumentError(
            "node_id must be printable ASCII without spaces or control characters");
      }
    }
    // A price that is not a finite number >= 0 could only be billed wrongly (metering.h).
    for (const auto& c : s.capabilities()) {
      if (!metering::ValidPrice(c.price_per_unit())) {
        return absl::InvalidArgumentError(
            absl::StrCat("hello from ", s.node_id(), ": ", LogSafe(c.pipeline()), "/",
                         LogSafe(c.model_id()), ": price_per_unit is not a finite number >= 0"));
      }
    }
    return ValidateHostPort(s.address(), absl::StrCat("hello from ", s.node_id(), ": address"));
  }

  // One write at a time: a message sent while another is in flight (an ack right after a
  // challenge) goes out from OnWriteDone.
  void Send(const node::v1::GatewayMessage* msg) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      MutexLock lock(&mu_);
      if (finished_) return;
      if (write_pending_) {
        queued_ = msg;
        return;
      }
      write_pending_ = true;
    }
    StartWrite(msg);
  }

  // At most every kMissedJobsInterval, on an update from the node: the jobs it missed (node.proto
  // MissedJobs). Skipped while another write is in flight (the next update tries again), so
  // missed_ is never changed under a write. Runs in OnReadDone only (one read at a time).
  void MaybeSendMissedJobs() ABSL_LOCKS_EXCLUDED(mu_, leave_mu_) {
    const absl::Time now = absl::Now();
    if (now - last_missed_ < kMissedJobsInterval) return;
    std::string node_id;
    {
      MutexLock lock(&leave_mu_);
      node_id = node_id_;
    }
    node::v1::MissedJobs report;
    if (!BuildMissedJobs(*membership_->snapshot(), node_id, ack_.ack().gateway_id(), now,
                         &report)) {
      return;
    }
    {
      MutexLock lock(&mu_);
      if (finished_ || write_pending_) return;
      write_pending_ = true;
    }
    last_missed_ = now;
    *missed_.mutable_missed_jobs() = std::move(report);
    StartWrite(&missed_);
  }

  // At most every kWarmDemandInterval, on an update from the node: the routes it offers cold
  // whose jobs found no warm node with room (node.proto WarmDemand). Skipped while another write
  // is in flight, like MaybeSendMissedJobs (the next update tries again).
  void MaybeSendWarmDemand() ABSL_LOCKS_EXCLUDED(mu_, leave_mu_) {
    const WarmDemandTracker* demand = registry_->warm_demand_;
    if (demand == nullptr) return;
    const absl::Time now = absl::Now();
    if (now - last_demand_ < kWarmDemandInterval) return;
    std::string node_id;
    {
      MutexLock lock(&leave_mu_);
      node_id = node_id_;
    }
    SnapshotPtr snapshot = membership_->snapshot();
    const NodeView* self = nullptr;
    for (const auto& view : snapshot->nodes) {
      if (view->id == node_id) self = view.get();
    }
    node::v1::WarmDemand report;
    if (self == nullptr || !demand->BuildFor(*self, ack_.ack().gateway_id(), &report)) return;
    {
      MutexLock lock(&mu_);
      if (finished_ || write_pending_) return;
      write_pending_ = true;
    }
    last_demand_ = now;
    *demand_.mutable_warm_demand() = std::move(report);
    StartWrite(&demand_);
  }

  // Registers the node (this stream holds its id until it ends) and acks; false when the id is
  // held by another live registration (the stream is then finished).
  bool Admit(const node::v1::NodeStatus& hello) {
    std::string holder;
    uint64_t token = 0;
    {
      MutexLock lock(&leave_mu_);
      if (token_ != 0) membership_->Remove(node_id_, token_);  // a second hello on this stream
      token_ = 0;
      token = membership_->TryRegister(hello, NodeSource::kRegistered,
                                       Registrant{peer_, presented_.secret}, &holder);
      node_id_ = hello.node_id();
      token_ = token;
    }
    if (token == 0) {
      RefuseTakenId(hello.node_id(), holder);
      return false;
    }
    Send(&ack_);
    return true;
  }

  // The id is held by another live registration: refuse, and log both ends so that an operator
  // sees an impostor (or a restarted node waiting for its old stream to end or time out).
  void RefuseTakenId(const std::string& node_id, const std::string& holder) {
    spdlog::warn(
        "refused registration of node '{}' from {}: the id is held by the live registration "
        "from {} (until that stream ends or is silent for node_timeout_ms)",
        node_id, peer_, holder);
    FinishOnce(grpc::Status(
        grpc::StatusCode::ALREADY_EXISTS,
        absl::StrCat("node id '", node_id,
                     "' is registered by another live orchestrator; an id is kept by its "
                     "registration until that stream ends or is silent for the node timeout")));
  }

  void Leave() ABSL_LOCKS_EXCLUDED(leave_mu_) {
    MutexLock lock(&leave_mu_);
    if (token_ != 0) membership_->Remove(node_id_, token_);
    token_ = 0;
  }

  RegistryService* registry_;
  Membership* membership_;
  std::string peer_;
  const Presented presented_;
  node::v1::NodeMessage in_;
  node::v1::GatewayMessage ack_;
  node::v1::GatewayMessage challenge_;  // its nonce: nonce_
  node::v1::GatewayMessage missed_;     // MaybeSendMissedJobs' latest report
  absl::Time last_missed_ = absl::InfinitePast();
  node::v1::GatewayMessage demand_;  // MaybeSendWarmDemand's latest report
  absl::Time last_demand_ = absl::InfinitePast();
  // A hello with a key, waiting for its proof, and the challenge's nonce. Touched only in
  // OnReadDone (one read at a time).
  std::optional<node::v1::NodeStatus> pending_hello_;
  std::string nonce_;
  // OnCancel (Leave) may run on another thread while OnReadDone runs.
  Mutex leave_mu_;
  std::string node_id_ ABSL_GUARDED_BY(leave_mu_);
  uint64_t token_ ABSL_GUARDED_BY(leave_mu_) = 0;
  Mutex mu_;
  bool write_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_deferred_ ABSL_GUARDED_BY(mu_) = false;
  const node::v1::GatewayMessage* queued_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::Status deferred_status_ ABSL_GUARDED_BY(mu_);
};

namespace {

// Answers a refused registration at once, before reading anything.
class RefusedReactor final
    : public grpc::ServerBidiReactor<node::v1::NodeMessage, node::v1::GatewayMessage> {
 public:
  explicit RefusedReactor(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

// Compares in time independent of where the strings differ, so the secret cannot be guessed
// byte by byte from response times.
bool SecretMatches(absl::string_view got, const std::string& want) {
  return got.size() == want.size() && CRYPTO_memcmp(got.data(), want.data(), want.size()) == 0;
}

// The names a client certificate gives its holder: every subject alternative name and the CN.
std::vector<std::string> CertIdentities(const grpc::CallbackServerContext* context) {
  std::vector<std::string> out;
  const std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return out;
  for (const char* property : {"x509_subject_alternative_name", "x509_common_name"}) {
    for (const grpc::string_ref& value : auth->FindPropertyValues(property)) {
      out.emplace_back(value.data(), value.size());
    }
  }
  return out;
}

constexpr const char* kShuttingDown = "gateway shutting down";

}  // namespace

grpc::ServerBidiReactor<node::v1::NodeMessage, node::v1::GatewayMessage>* RegistryService::Register(
    grpc::CallbackServerContext* context) {
  const auto& md = context->client_metadata();
  auto it = md.find(kSecretMetadata);
  const bool present = it != md.end();
  Presented presented;
  if (present) presented.secret.assign(it->second.data(), it->second.size());
  // Refused before the hello is read: an unknown client cannot make the gateway read a message.
  std::string why;
  if (!node_auth_.node_secrets.empty()) {
    // Per-node secrets: this one must be some node's (whose, is checked against the hello).
    if (!present) {
      why = "no registration secret (x-switchyard-registration-secret)";
    } else if (node_secret_hashes_.count(Sha256Hex(presented.secret)) == 0) {
      why = "wrong registration secret";
    }
  } else if (!secret_.empty()) {
    if (!present) {
      why = "no registration secret (x-switchyard-registration-secret)";
    } else if (!SecretMatches(presented.secret, secret_)) {
      why = "wrong registration secret";
    }
  }
  if (why.empty() && node_auth_.node_id_from_client_cert) {
    presented.cert_identities = CertIdentities(context);
    if (presented.cert_identities.empty()) why = "no client certificate naming the node";
  }
  if (!why.empty()) {
    spdlog::warn("refused registration from {}: {}", context->peer(), why);
    return new RefusedReactor(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                           absl::StrCat("registration refused: ", why)));
  }
  Stream* stream;
  {
    MutexLock lock(&mu_);
    if (shutting_down_) {
      return new RefusedReactor(grpc::Status(grpc::StatusCode::UNAVAILABLE, kShuttingDown));
    }
    stream = new Stream(this, gateway_id_, heartbeat_interval_ms_, membership_, context->peer(),
                        std::move(presented));
    streams_.insert(stream);
  }
  // Outside mu_: a reaction to the read may run (and end in Untrack) before this returns.
  stream->Begin();
  return stream;
}

absl::Status RegistryService::AuthorizeNode(const std::string& node_id,
                                            const Presented& presented) const {
  if (!node_auth_.node_secrets.empty()) {
    auto it = node_auth_.node_secrets.find(node_id);
    if (it == node_auth_.node_secrets.end()) {
      return absl::PermissionDeniedError(
          absl::StrCat("registration refused: node id '", node_id,
                       "' is not in the gateway's node_secrets_file"));
    }
    if (!SecretMatches(Sha256Hex(presented.secret), it->second)) {
      return absl::UnauthenticatedError(absl::StrCat(
          "registration refused: the registration secret is not node '", node_id, "''s"));
    }
  }
  if (node_auth_.node_id_from_client_cert) {
    bool named = false;
    for (const std::string& identity : presented.cert_identities) {
      named = named || identity == node_id;
    }
    if (!named) {
      return absl::UnauthenticatedError(absl::StrCat(
          "registration refused: the client certificate names ",
          absl::StrJoin(presented.cert_identities, ", "), ", not node '", node_id, "'"));
    }
  }
  return absl::OkStatus();
}

void RegistryService::Shutdown() {
  MutexLock lock(&mu_);
  shutting_down_ = true;
  // A stream stays in streams_ (so alive) until its OnDone has taken mu_ in Untrack.
  for (Stream* stream : streams_) {
    stream->FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, kShuttingDown));
  }
}

void RegistryService::Untrack(Stream* stream) {
  MutexLock lock(&mu_);
  streams_.erase(stream);
}

}  // namespace switchyard::gateway
