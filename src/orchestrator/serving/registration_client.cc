#include "orchestrator/serving/registration_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace switchyard::orchestrator {

RegistrationClient::RegistrationClient(std::string gateway_address, StatusFn status,
                                       StatusBoard* board, std::chrono::milliseconds heartbeat,
                                       std::string secret, GrpcClientSecurity security,
                                       const NodeKey* identity)
    : gateway_address_(std::move(gateway_address)),
      status_(std::move(status)),
      board_(board),
      heartbeat_(heartbeat),
      secret_(std::move(secret)),
      security_(std::move(security)),
      identity_(identity) {}

RegistrationClient::~RegistrationClient() { Stop(); }

void RegistrationClient::Start() {
  thread_ = std::thread([this] { Run(); });
}

void RegistrationClient::Stop() {
  if (stopping_.exchange(true)) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(ctx_mu_);
    if (active_ctx_ != nullptr) active_ctx_->TryCancel();
  }
  board_->Wake();
  sleep_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RegistrationClient::Run() {
  grpc::ChannelArguments args;
  // Keepalives let both sides notice a peer that vanished without closing the connection. Not
  // tight: a ping unanswered for a second (a busy gateway, a congested link) would end the
  // registration and drop this node from routing until it registered again, while the gateway
  // already stops routing to a node it has not heard from for node_timeout_ms.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto channel = security_.CreateChannel(gateway_address_, args);
  auto stub = node::v1::Registry::NewStub(channel);
  auto backoff = std::chrono::milliseconds(100);
  while (!stopping_.load()) {
    bool acked = RunStream(*stub);
    connected_ = false;
    if (stopping_.load()) break;
    if (acked) backoff = std::chrono::milliseconds(100);
    std::unique_lock<std::mutex> lock(sleep_mu_);
    sleep_cv_.wait_for(lock, backoff, [this] { return stopping_.load(); });
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
}

bool RegistrationClient::RunStream(node::v1::Registry::Stub& stub) {
  grpc::ClientContext ctx;
  if (!secret_.empty()) ctx.AddMetadata("x-switchyard-registration-secret", secret_);
  {
    std::lock_guard<std::mutex> lock(ctx_mu_);
    if (stopping_.load()) return false;
    active_ctx_ = &ctx;
  }
  auto stream = stub.Register(&ctx);
  std::atomic<bool> broken{false};
  std::atomic<bool> acked{false};
  std::atomic<int64_t> heartbeat_ms{heartbeat_.count()};

  node::v1::NodeMessage hello;
  *hello.mutable_hello() = status_();
  if (identity_ != nullptr) {
    hello.mutable_hello()->mutable_identity()->set_public_key(identity_->public_key());
  }
  uint64_t seen = board_->version();
  std::thread reader;
  // The signed answer to the gateway's challenge, made by the reader and written by this thread
  // (one writer per stream). Empty: none due.
  std::mutex proof_mu;
  std::string proof;
  std::atomic<bool> proof_due{false};
  const bool hello_sent = stream->Write(hello);
  if (hello_sent) {
    reader = std::thread([&] {
      node::v1::GatewayMessage msg;
      while (stream->Read(&msg)) {
        if (msg.has_challenge() && identity_ != nullptr && !acked.load()) {
          const auto& challenge = msg.challenge();
          absl::StatusOr<std::string> signature = identity_->Sign(RegistrationProofMessage(
              challenge.gateway_id(), challenge.nonce(), hello.hello().node_id(),
              identity_->public_key(), hello.hello().address()));
          if (!signature.ok()) {
            spdlog::error("cannot answer gateway {}'s challenge: {}", gateway_address_,
                          signature.status().ToString());
            break;
          }
          {
            std::lock_guard<std::mutex> lock(proof_mu);
            proof = *std::move(signature);
          }
          proof_due = true;
          board_->Wake();
        }
        if (msg.has_missed_jobs() && on_missed_jobs_) on_missed_jobs_(msg.missed_jobs());
        if (msg.has_warm_demand() && on_warm_demand_) on_warm_demand_(msg.warm_demand());
        if (msg.has_ack() && !acked.exchange(true)) {
          // The gateway expires nodes it does not hear from; send at least as often as it asks.
          const int asked = msg.ack().heartbeat_interval_ms();
          if (asked > 0) {
            heartbeat_ms.store(std::min<int64_t>(heartbeat_ms.load(), asked));
            board_->Wake();
          }
          connected_ = true;
          spdlog::info("registered with gateway {} ({})", gateway_address_, msg.ack().gateway_id());
        }
      }
      broken = true;
      board_->Wake();
    });
    while (!stopping_.load() && !broken.load()) {
      seen = board_->WaitForChange(seen, std::chrono::milliseconds(heartbeat_ms.load()), [&] {
        return stopping_.load() || broken.load() || proof_due.load();
      });
      if (stopping_.load() || broken.load()) break;
      if (proof_due.exchange(false)) {
        node::v1::NodeMessage answer;
        {
          std::lock_guard<std::mutex> lock(proof_mu);
          answer.mutable_proof()->set_signature(proof);
        }
        if (!stream->Write(answer)) break;
        continue;
      }
      // With an identity the gateway takes no update before it has acked the proof.
      if (identity_ != nullptr && !acked.load()) continue;
      node::v1::NodeMessage update;
      *update.mutable_update() = status_();
      if (!stream->Write(update)) break;
    }
  }
  // A stream the gateway ended (the reader saw it, or the hello could not be sent) is not
  // cancelled, so Finish returns the gateway's own status (e.g. UNAUTHENTICATED: wrong secret).
  if (hello_sent && !broken.load()) ctx.TryCancel();
  if (reader.joinable()) reader.join();
  grpc::Status status = stream->Finish();
  {
    std::lock_guard<std::mutex> lock(ctx_mu_);
    active_ctx_ = nullptr;
  }
  if (!stopping_.load()) {
    if (acked.load()) {
      last_error_.clear();
      spdlog::warn("registration stream to gateway {} broke: {}", gateway_address_,
                   status.error_message());
    } else if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
               status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      // Not a network blip: say so where an operator looks, at every retry.
      spdlog::warn("gateway {} refused registration: {}", gateway_address_, status.error_message());
    } else if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      // Another live registration holds this node id: an impostor or a second node left with the
      // same node_id, or this node's own previous run whose stream has not ended yet (a quick
      // restart). Retried with backoff: the last gets in once the old stream ends or times out.
      spdlog::warn("gateway {} refused registration as node '{}' (retrying): {}", gateway_address_,
                   hello.hello().node_id(), status.error_message());
    } else if (security_.tls() && status.error_message() != last_error_) {
      // With TLS a refused handshake (untrusted certificate, no client certificate where the
      // gateway requires one) looks like this too: say it once, where an operator looks.
      spdlog::warn("gateway {} not reachable over TLS: {}", gateway_address_,
                   status.error_message());
    } else {
      spdlog::debug("gateway {} not reachable: {}", gateway_address_, status.error_message());
    }
    if (!acked.load()) last_error_ = status.error_message();
  }
  return acked.load();
}

}  // namespace switchyard::orchestrator
