// The orchestrator's gRPC service: runs the jobs gateways hand it.
#pragma once

#include <atomic>
#include <memory>

#include "orchestrator/model_manager.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/status_board.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::orchestrator {

class OrchestratorService final : public node::v1::Orchestrator::Service {
 public:
  OrchestratorService(const OrchestratorConfig& config, ModelManager* models, StatusBoard* board);

  grpc::Status Upscale(grpc::ServerContext* context, const v1::UpscaleRequest* request,
                       v1::ImageResponse* response) override;
  grpc::Status Transcode(grpc::ServerContext* context, const v1::TranscodeRequest* request,
                         v1::TranscodeResponse* response) override;
  grpc::Status GetStatus(grpc::ServerContext* context, const node::v1::GetStatusRequest* request,
                         node::v1::NodeStatus* response) override;

  // The node's status as advertised to gateways: identity, capabilities and load.
  node::v1::NodeStatus BuildStatus() const;

  // Set the address advertised to gateways (known once the server has bound its port).
  void set_advertise_address(std::string address) { advertise_address_ = std::move(address); }
  void set_draining(bool draining) {
    draining_ = draining;
    board_->Changed();
  }

 private:
  const OrchestratorConfig& config_;
  ModelManager* models_;
  StatusBoard* board_;
  std::string advertise_address_;
  std::atomic<bool> draining_{false};
  std::atomic<int> transcodes_in_use_{0};
};

}  // namespace switchyard::orchestrator
