#include "gateway/gateway_server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_services.h"

namespace switchyard::gateway {

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Create(GatewayConfig config) {
  std::unique_ptr<GatewayServer> s(new GatewayServer(std::move(config)));
  const auto& c = s->config_;
  s->membership_ = std::make_unique<Membership>(c.max_message_bytes);
  s->registry_ = std::make_unique<RegistryService>(c.gateway_id, c.heartbeat_interval_ms,
                                                   s->membership_.get());
  auto rng = std::make_shared<std::mt19937_64>(std::random_device{}());
  auto rng_mu = std::make_shared<std::mutex>();
  s->service_ = std::make_unique<GatewayService>(c, s->membership_.get(), [rng, rng_mu] {
    std::lock_guard<std::mutex> lock(*rng_mu);
    return (*rng)();
  });
  s->inference_ = std::make_unique<InferenceProxy>(c, s->membership_.get(), s->service_->router());

  EnableStandardGrpcServices();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(c.listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->registry_.get());
  builder.RegisterService(s->service_.get());
  builder.RegisterService(s->inference_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(c.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(c.max_message_bytes));
  // Keepalive pings on registration streams: a vanished orchestrator is noticed within ~2 s even
  // when its TCP connection is not closed.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", c.listen, " (address in use?)"));
  }
  s->poller_ = std::make_unique<StaticPoller>(c.static_orchestrators,
                                              std::chrono::milliseconds(c.poll_interval_ms),
                                              s->membership_.get(), c.max_message_bytes);
  s->poller_->Start();
  s->sweeper_ = std::thread([srv = s.get()] {
    const absl::Duration timeout = absl::Milliseconds(srv->config_.node_timeout_ms);
    // Sweep often enough that a silent node is gone within node_timeout_ms + one period.
    const auto period = std::chrono::milliseconds(std::max(20, srv->config_.node_timeout_ms / 8));
    std::unique_lock<std::mutex> lock(srv->sweep_mu_);
    while (!srv->sweep_cv_.wait_for(lock, period, [srv] { return srv->stop_sweeping_; })) {
      srv->membership_->ExpireSilent(absl::Now(), timeout);
    }
  });
  spdlog::info("gateway {} serving on port {} ({} static orchestrators)", c.gateway_id, s->port_,
               c.static_orchestrators.size());
  return s;
}

GatewayServer::~GatewayServer() { Shutdown(std::chrono::milliseconds(0)); }

void GatewayServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  if (sweeper_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(sweep_mu_);
      stop_sweeping_ = true;
    }
    sweep_cv_.notify_all();
    sweeper_.join();
  }
  if (poller_) poller_->Stop();
  SetGrpcServing(server_.get(), false);
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
  }
}

}  // namespace switchyard::gateway
