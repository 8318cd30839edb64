// Keeps this orchestrator registered with one gateway: a long-lived Registry.Register stream
// carrying a Hello, then an Update on every change of capabilities or load and at least every
// heartbeat. Reconnects with capped exponential backoff when the stream breaks.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/node_identity.h"
#include "common/tls.h"
#include "orchestrator/models/status_board.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::orchestrator {

class RegistrationClient {
 public:
  using StatusFn = std::function<node::v1::NodeStatus()>;

  // A non-empty `secret` is sent on each Register stream (x-switchyard-registration-secret).
  // The channel is plaintext or TLS as `security` says (the orchestrator's gateway_tls). With an
  // `identity` (not owned; outlives this), the hello carries its public key and the gateway's
  // challenge is answered with its signature before any update is sent.
  RegistrationClient(std::string gateway_address, StatusFn status, StatusBoard* board,
                     std::chrono::milliseconds heartbeat, std::string secret = "",
                     GrpcClientSecurity security = GrpcClientSecurity(),
                     const NodeKey* identity = nullptr);
  // Stops: cancels the stream (the gateway drops this node at once) and joins the thread.
  ~RegistrationClient();

  // Called on the stream's reader thread with each MissedJobs report from the gateway (untrusted:
  // the callee validates it). Set before Start.
  using MissedJobsFn = std::function<void(const node::v1::MissedJobs&)>;
  void set_on_missed_jobs(MissedJobsFn fn) { on_missed_jobs_ = std::move(fn); }
  // Told of every WarmDemand the gateway sends (untrusted: the callee validates it). Called on
  // the stream's reader thread: it must not block. Set before Start.
  using WarmDemandFn = std::function<void(const node::v1::WarmDemand&)>;
  void set_on_warm_demand(WarmDemandFn fn) { on_warm_demand_ = std::move(fn); }

  void Start();
  void Stop();
  bool connected() const { return connected_.load(); }

 private:
  void Run();
  // One registration stream, from connect to break. Returns true if it got as far as an ack.
  bool RunStream(node::v1::Registry::Stub& stub);

  std::string gateway_address_;
  StatusFn status_;
  StatusBoard* board_;
  std::chrono::milliseconds heartbeat_;
  std::string secret_;
  GrpcClientSecurity security_;
  const NodeKey* identity_;
  MissedJobsFn on_missed_jobs_;
  WarmDemandFn on_warm_demand_;
  std::string last_error_;  // of the last stream that got no ack (Run's thread only)
  std::atomic<bool> stopping_{false};
  std::atomic<bool> connected_{false};
  std::mutex ctx_mu_;
  grpc::ClientContext* active_ctx_ = nullptr;  // guarded by ctx_mu_
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  std::thread thread_;
};

}  // namespace switchyard::orchestrator
