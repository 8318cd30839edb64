#include "orchestrator/orchestrator_server.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_services.h"
#include "common/media/hardware.h"
#include "runner/torch_model.h"

namespace switchyard::orchestrator {

OrchestratorServer::OrchestratorServer(OrchestratorConfig config) : config_(std::move(config)) {}

OrchestratorServer::~OrchestratorServer() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::unique_ptr<OrchestratorServer>> OrchestratorServer::Create(
    OrchestratorConfig config) {
  auto threads = runner::ConfigureTorchThreads(config.intra_op_threads, config.inter_op_threads);
  if (!threads.ok()) return threads;
  std::unique_ptr<OrchestratorServer> s(new OrchestratorServer(std::move(config)));
  s->models_ =
      std::make_unique<ModelManager>(s->config_.models, &s->board_, s->config_.memory_budget_mb);
  s->service_ = std::make_unique<OrchestratorService>(s->config_, s->models_.get(), &s->board_);
  s->inference_ = std::make_unique<InferenceService>(
      s->models_.get(), [svc = s->service_.get()] { return !svc->BuildStatus().draining(); },
      &s->board_);

  EnableStandardGrpcServices();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(s->config_.listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  builder.RegisterService(s->inference_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(s->config_.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(s->config_.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", s->config_.listen, " (address in use?)"));
  }
  if (s->config_.advertise_address.empty()) {
    std::string host = s->config_.listen.substr(0, s->config_.listen.rfind(':'));
    if (host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
    s->advertise_address_ = absl::StrCat(host, ":", s->port_);
  } else {
    s->advertise_address_ = s->config_.advertise_address;
  }
  s->service_->set_advertise_address(s->advertise_address_);
  if (s->config_.transcode.enabled) {
    const media::VideoHardware& hw = media::ProbeVideoHardware();
    const std::vector<std::string> names = hw.Names();
    if (names.empty()) {
      spdlog::info("video hardware: none, transcoding in software ({})", hw.detail);
    } else {
      // NOT FINISHED: the transcoder decodes and encodes in software even where NVDEC/NVENC are
      // found; the hardware is advertised so operators and gateways can see it.
      spdlog::info("video hardware: {} (advertised; the transcoder does not use it yet){}{}",
                   absl::StrJoin(names, ", "), hw.detail.empty() ? "" : "; ", hw.detail);
    }
    s->service_->set_hardware(names);
  }
  spdlog::info("orchestrator {} serving on port {} (advertised as {})", s->config_.node_id,
               s->port_, s->advertise_address_);
  return s;
}

void OrchestratorServer::Start() {
  for (const auto& gw : config_.gateways) {
    auto client = std::make_unique<RegistrationClient>(
        gw, [this] { return service_->BuildStatus(); }, &board_,
        std::chrono::milliseconds(config_.heartbeat_ms));
    client->Start();
    registrations_.push_back(std::move(client));
  }
  models_->LoadWarmModels();
}

void OrchestratorServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  service_->set_draining(true);
  SetGrpcServing(server_.get(), false);      // health checkers see the drain before the port closes
  for (auto& r : registrations_) r->Stop();  // gateways drop us at once
  registrations_.clear();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
  }
}

}  // namespace switchyard::orchestrator
