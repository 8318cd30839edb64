// Hop overhead (gateway routing issue): the same small no-op job (an 8x8 PNG through an identity
// "upscale" model) sent
//   1. straight to an orchestrator (Orchestrator.Upscale),
//   2. through a Switchyard gateway (Gateway.Upscale, routed to that orchestrator),
//   3. through Debian's nginx with grpc_pass to the same orchestrator (started here with a
//      generated config on loopback),
// at concurrency 1 and 64, in one run. Reports p50/p99 latency added over the direct path and
// throughput relative to it. Target: the gateway adds no more than nginx does.
//
//   build/bin/hop_bench [--seconds 5] [--nginx /usr/sbin/nginx]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "bench_stats.h"
#include "common/media/image_codec.h"
#include "gateway/gateway_server.h"
#include "orchestrator/orchestrator_server.h"
#include "runner/torch_model.h"
#include "switchyard/node/v1/node.grpc.pb.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace sy = switchyard;
namespace fs = std::filesystem;

namespace {

constexpr const char* kModel = "noop";

int FreePort() {
  // Bind-and-release through a throwaway gRPC server is overkill; the kernel picks one for a
  // socket and we hand it to nginx. A race with another process is harmless for a benchmark.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

// nginx in the foreground with a generated config; stopped (SIGQUIT, then SIGKILL) on scope exit.
class Nginx {
 public:
  static std::unique_ptr<Nginx> Start(const std::string& binary, const fs::path& dir,
                                      int upstream_port) {
    auto n = std::unique_ptr<Nginx>(new Nginx());
    n->port_ = FreePort();
    fs::create_directories(dir / "logs");
    const fs::path conf = dir / "nginx.conf";
    std::ofstream(conf) << "worker_processes auto;\n"
                        << "daemon off;\n"
                        << "pid " << (dir / "nginx.pid").string() << ";\n"
                        << "error_log " << (dir / "logs/error.log").string() << " warn;\n"
                        << "events { worker_connections 4096; }\n"
                        << "http {\n"
                        << "  access_log off;\n"
                        << "  client_body_temp_path " << (dir / "body").string() << ";\n"
                        << "  client_max_body_size 64m;\n"
                        << "  upstream orchestrator {\n"
                        << "    server 127.0.0.1:" << upstream_port << ";\n"
                        << "    keepalive 128;\n"
                        << "  }\n"
                        << "  server {\n"
                        << "    listen 127.0.0.1:" << n->port_ << " http2;\n"
                        << "    location / { grpc_pass grpc://orchestrator; }\n"
                        << "  }\n"
                        << "}\n";
    n->pid_ = fork();
    if (n->pid_ == 0) {
      execl(binary.c_str(), binary.c_str(), "-p", dir.c_str(), "-c", conf.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    if (n->pid_ < 0) return nullptr;
    return n;
  }
  ~Nginx() {
    if (pid_ <= 0) return;
    kill(pid_, SIGQUIT);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

std::shared_ptr<grpc::Channel> Channel(int port) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Switchyard gateway hop overhead vs nginx grpc_pass"};
  double seconds = 5;
  std::string nginx_binary = "/usr/sbin/nginx";
  app.add_option("--seconds", seconds, "Measuring time per path and concurrency");
  app.add_option("--nginx", nginx_binary, "nginx binary (Debian: apt-get install nginx-light)");
  CLI11_PARSE(app, argc, argv);
  if (!fs::exists(nginx_binary)) {
    std::cerr << nginx_binary << " not found: install Debian's nginx (apt-get install nginx-light)"
              << " or pass --nginx\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);  // per-job log lines would dominate a no-op job

  const fs::path dir = fs::temp_directory_path() / absl::StrCat("hop_bench.", getpid());
  fs::create_directories(dir);
  // The no-op model: identity on the image tensor.
  {
    torch::jit::Module m("noop");
    m.define("def forward(self, x):\n    return x\n");
    m.save((dir / "noop.pt").string());
  }

  sy::gateway::GatewayConfig gw_cfg;
  gw_cfg.listen = "127.0.0.1:0";
  gw_cfg.http_listen = "";
  gw_cfg.admin_listen = "";
  gw_cfg.log_level = "warn";
  auto gateway = sy::gateway::GatewayServer::Create(gw_cfg);
  if (!gateway.ok()) {
    std::cerr << gateway.status() << "\n";
    return 1;
  }

  sy::orchestrator::OrchestratorConfig cfg;
  cfg.node_id = "bench";
  cfg.listen = "127.0.0.1:0";
  cfg.http_listen = "";
  cfg.gateways = {absl::StrCat("127.0.0.1:", (*gateway)->port())};
  sy::orchestrator::ModelConfig model;
  model.id = kModel;
  model.pipeline = "upscale";
  model.path = dir / "noop.pt";
  model.warm = true;
  model.device = "cpu";
  model.instances = 2;
  model.queue_size = 256;
  cfg.models.push_back(model);
  cfg.transcode.enabled = false;
  // An identity model needs no op parallelism; keep the CPUs for gRPC and nginx.
  cfg.intra_op_threads = 1;
  cfg.inter_op_threads = 1;
  auto orch = sy::orchestrator::OrchestratorServer::Create(cfg);
  if (!orch.ok()) {
    std::cerr << orch.status() << "\n";
    return 1;
  }
  (*orch)->Start();

  auto nginx = Nginx::Start(nginx_binary, dir / "nginx", (*orch)->port());
  if (!nginx) {
    std::cerr << "cannot start nginx\n";
    return 1;
  }

  sy::media::RgbImage img{8, 8, std::vector<uint8_t>(8 * 8 * 3, 128)};
  const std::string png = *sy::media::EncodePng(img);
  auto direct = sy::node::v1::Orchestrator::NewStub(Channel((*orch)->port()));
  auto proxied = sy::node::v1::Orchestrator::NewStub(Channel(nginx->port()));
  auto gw = sy::v1::Gateway::NewStub(Channel((*gateway)->port()));

  auto upscale = [&](auto& stub) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    sy::v1::UpscaleRequest req;
    req.set_model_id(kModel);
    req.set_image(png);
    sy::v1::ImageResponse resp;
    return stub.Upscale(&ctx, req, &resp).ok();
  };
  // Wait (bounded) until the gateway routes and nginx answers.
  bool ready = false;
  for (int i = 0; i < 200 && !ready; ++i) {
    ready = upscale(*gw) && upscale(*proxied);
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!ready) {
    std::cerr << "gateway or nginx did not come up; nginx log in " << (dir / "nginx/logs") << "\n";
    return 1;
  }

  std::cout << "## Hop overhead: 8x8 PNG through an identity model, " << seconds
            << " s per cell\n\n"
               "| concurrency | path | jobs/s | vs direct | p50 ms | p99 ms | added p50 ms | "
               "added p99 ms |\n|---|---|---|---|---|---|---|---|\n";
  for (int concurrency : {1, 64}) {
    sy::bench::LoadResult d =
        sy::bench::MeasureClosedLoop(concurrency, seconds, 50, [&] { return upscale(*direct); });
    sy::bench::LoadResult g =
        sy::bench::MeasureClosedLoop(concurrency, seconds, 50, [&] { return upscale(*gw); });
    sy::bench::LoadResult n =
        sy::bench::MeasureClosedLoop(concurrency, seconds, 50, [&] { return upscale(*proxied); });
    auto row = [&](const char* path, const sy::bench::LoadResult& r) {
      std::printf("| %d | %s | %.0f | %.3f | %.3f | %.3f | %+.3f | %+.3f |%s\n", concurrency, path,
                  r.jobs_per_s, r.jobs_per_s / d.jobs_per_s, r.p50, r.p99, r.p50 - d.p50,
                  r.p99 - d.p99, r.failures ? " (failures!)" : "");
    };
    row("direct", d);
    row("gateway", g);
    row("nginx grpc_pass", n);
  }
  nginx.reset();
  (*orch)->Shutdown(std::chrono::milliseconds(1000));
  (*gateway)->Shutdown(std::chrono::milliseconds(1000));
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
