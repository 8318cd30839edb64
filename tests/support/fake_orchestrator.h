// A fake orchestrator for hostile-node tests: a real gRPC server in the test's process that
// registers with a real gateway over the Registry stream, as an orchestrator daemon does, and
// sends a heartbeat every 100 ms until stopped. Subclasses override the Orchestrator methods
// they serve (each answers what the test wants a node to answer).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "switchyard/node/v1/node.grpc.pb.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::testing {

class FakeOrchestrator : public node::v1::Orchestrator::Service {
 public:
  explicit FakeOrchestrator(std::string node_id) : node_id_(std::move(node_id)) {}
  // Subclasses call Stop() in their own destructor, so no call runs on a half-destroyed object.
  ~FakeOrchestrator() override { Stop(); }

  // Starts the server on a loopback port.
  absl::Status Serve();
  // Sends the Hello and waits (bounded) for the gateway's answer: OK when acknowledged, else the
  // stream's status (the gateway refused the registration).
  absl::Status Register(const std::string& gateway, std::vector<node::v1::NodeCapability> caps);
  void Stop();

  const std::string& id() const { return node_id_; }

 private:
  absl::Status FinishStream();

  const std::string node_id_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  node::v1::NodeStatus status_;
  std::unique_ptr<node::v1::Registry::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<node::v1::NodeMessage, node::v1::GatewayMessage>>
      stream_;
  std::thread heartbeat_;
  std::atomic<bool> stop_{false};
};

// Waits (bounded by `timeout`) until the gateway behind `stub` lists the orchestrator `id`.
bool WaitUntilListed(v1::Gateway::Stub& stub, const std::string& id,
                     std::chrono::milliseconds timeout);

// A ready capability of `pipeline`/`model` at `price` per unit, capacity 4.
node::v1::NodeCapability FakeCapability(const std::string& pipeline, const std::string& model,
                                        double price, const std::string& unit);

}  // namespace switchyard::testing
