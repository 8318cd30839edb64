#include "gateway/registry_service.h"

#include <spdlog/spdlog.h>

#include <openssl/crypto.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/tsan_handoff.h"

namespace switchyard::gateway {

class RegistryService::Stream final
    : public grpc::ServerBidiReactor<node::v1::NodeMessage, node::v1::GatewayMessage> {
 public:
  Stream(RegistryService* registry, std::string gateway_id, int heartbeat_ms,
         Membership* membership, std::string peer)
      : registry_(registry), membership_(membership), peer_(std::move(peer)) {
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
      {
        std::lock_guard<std::mutex> lock(leave_mu_);
        if (token_ != 0) membership_->Remove(node_id_, token_);
        node_id_ = hello.node_id();
        token_ = membership_->Register(hello, NodeSource::kRegistered);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        write_pending_ = true;
      }
      StartWrite(&ack_);
    } else if (in_.has_update()) {
      uint64_t token = 0;
      bool same_node = false;
      {
        std::lock_guard<std::mutex> lock(leave_mu_);
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
        std::lock_guard<std::mutex> lock(leave_mu_);
        if (token_ != 0) {
          const uint64_t fresh =
              membership_->RegisterIfAbsent(in_.update(), NodeSource::kRegistered);
          if (fresh != 0) {
            token_ = fresh;
            spdlog::info("orchestrator {} is heard from again; routed to again", node_id_);
          }
        }
      }
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool) override {
    std::lock_guard<std::mutex> lock(mu_);
    write_pending_ = false;
    if (finish_deferred_) {
      finish_deferred_ = false;
      Finish(deferred_status_);
    }
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
  void FinishOnce(grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
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
    return ValidateHostPort(s.address(), absl::StrCat("hello from ", s.node_id(), ": address"));
  }

  void Leave() {
    std::lock_guard<std::mutex> lock(leave_mu_);
    if (token_ != 0) membership_->Remove(node_id_, token_);
    token_ = 0;
  }

  RegistryService* registry_;
  Membership* membership_;
  std::string peer_;
  node::v1::NodeMessage in_;
  node::v1::GatewayMessage ack_;
  // node_id_ and token_ are guarded by leave_mu_: OnCancel (Leave) may run on another thread
  // while OnReadDone runs.
  std::mutex leave_mu_;
  std::string node_id_;
  uint64_t token_ = 0;
  std::mutex mu_;
  bool write_pending_ = false;
  bool finished_ = false;
  bool finish_deferred_ = false;
  grpc::Status deferred_status_;
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

constexpr const char* kShuttingDown = "gateway shutting down";

}  // namespace

grpc::ServerBidiReactor<node::v1::NodeMessage, node::v1::GatewayMessage>* RegistryService::Register(
    grpc::CallbackServerContext* context) {
  if (!secret_.empty()) {
    const auto& md = context->client_metadata();
    auto it = md.find(kSecretMetadata);
    const bool present = it != md.end();
    if (!present ||
        !SecretMatches(absl::string_view(it->second.data(), it->second.size()), secret_)) {
      const std::string why = present ? "wrong registration secret"
                                      : "no registration secret (x-switchyard-registration-secret)";
      spdlog::warn("refused registration from {}: {}", context->peer(), why);
      return new RefusedReactor(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                             absl::StrCat("registration refused: ", why)));
    }
  }
  Stream* stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) {
      return new RefusedReactor(grpc::Status(grpc::StatusCode::UNAVAILABLE, kShuttingDown));
    }
    stream = new Stream(this, gateway_id_, heartbeat_interval_ms_, membership_, context->peer());
    streams_.insert(stream);
  }
  // Outside mu_: a reaction to the read may run (and end in Untrack) before this returns.
  stream->Begin();
  return stream;
}

void RegistryService::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutting_down_ = true;
  // A stream stays in streams_ (so alive) until its OnDone has taken mu_ in Untrack.
  for (Stream* stream : streams_) {
    stream->FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, kShuttingDown));
  }
}

void RegistryService::Untrack(Stream* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.erase(stream);
}

}  // namespace switchyard::gateway
