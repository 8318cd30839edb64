#include "support/fake_orchestrator.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "support/cluster.h"

namespace switchyard::testing {

absl::Status FakeOrchestrator::Serve() {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(this);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) return absl::InternalError("fake server did not start");
  return absl::OkStatus();
}

absl::Status FakeOrchestrator::Register(const std::string& gateway,
                                        std::vector<node::v1::NodeCapability> caps) {
  status_.set_node_id(node_id_);
  status_.set_address(absl::StrCat("127.0.0.1:", port_));
  for (auto& c : caps) *status_.add_capabilities() = std::move(c);
  stub_ =
      node::v1::Registry::NewStub(grpc::CreateChannel(gateway, grpc::InsecureChannelCredentials()));
  context_ = std::make_unique<grpc::ClientContext>();
  stream_ = stub_->Register(context_.get());
  node::v1::NodeMessage hello;
  *hello.mutable_hello() = status_;
  if (!stream_->Write(hello)) return FinishStream();
  // Read blocks: bounded by cancelling the stream if no answer comes in time.
  std::atomic<bool> answered{false};
  std::thread watchdog([&] {
    const auto end = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(10));
    while (!answered.load() && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!answered.load()) context_->TryCancel();
  });
  node::v1::GatewayMessage ack;
  const bool ok = stream_->Read(&ack);
  answered.store(true);
  watchdog.join();
  if (!ok || !ack.has_ack()) return FinishStream();
  heartbeat_ = std::thread([this] {
    node::v1::NodeMessage update;
    *update.mutable_update() = status_;
    while (!stop_.load()) {
      if (!stream_->Write(update)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  return absl::OkStatus();
}

void FakeOrchestrator::Stop() {
  stop_.store(true);
  if (context_ != nullptr) context_->TryCancel();
  if (heartbeat_.joinable()) heartbeat_.join();
  if (stream_ != nullptr) {
    stream_->Finish();
    stream_.reset();
  }
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_.reset();
  }
}

absl::Status FakeOrchestrator::FinishStream() {
  grpc::Status st = stream_->Finish();
  stream_.reset();
  return absl::Status(
      static_cast<absl::StatusCode>(st.error_code()),
      st.ok() ? "the gateway closed the stream without an ack" : st.error_message());
}

bool WaitUntilListed(v1::Gateway::Stub& stub, const std::string& id,
                     std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(2)));
    v1::ListCapabilitiesRequest req;
    v1::ListCapabilitiesResponse resp;
    if (stub.ListCapabilities(&ctx, req, &resp).ok()) {
      for (const auto& o : resp.orchestrators()) {
        if (o.id() == id) return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

node::v1::NodeCapability FakeCapability(const std::string& pipeline, const std::string& model,
                                        double price, const std::string& unit) {
  node::v1::NodeCapability c;
  c.set_pipeline(pipeline);
  c.set_model_id(model);
  c.set_state(node::v1::MODEL_STATE_READY);
  c.set_capacity(4);
  c.set_price_per_unit(price);
  c.set_unit(unit);
  c.set_free_memory_mb(-1);
  return c;
}

}  // namespace switchyard::testing
