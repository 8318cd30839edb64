#include "orchestrator/orchestrator_server.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/daemon.h"
#include "common/grpc_services.h"
#include "common/media/hardware.h"
#include "common/status.h"
#include "runner/blas_info.h"
#include "runner/torch_model.h"

namespace switchyard::orchestrator {

OrchestratorServer::OrchestratorServer(OrchestratorConfig config) : config_(std::move(config)) {}

OrchestratorServer::~OrchestratorServer() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::unique_ptr<OrchestratorServer>> OrchestratorServer::Create(
    OrchestratorConfig config) {
  auto threads = runner::ConfigureTorchThreads(config.intra_op_threads, config.inter_op_threads);
  if (!threads.ok()) return threads;
  if (const runner::BlasInfo blas = runner::DescribeBlas(); blas.reference) {
    spdlog::warn(
        "BLAS: {}: libtorch's float32 matrix products (the linear layers of LLMs and Whisper, "
        "1x1 convolutions) run several times slower than on an optimized BLAS; install "
        "libopenblas0-openmp (scripts/install-deps does; docs/operations.md)",
        runner::BlasSummary(blas));
  } else {
    spdlog::info("BLAS: {}", runner::BlasSummary(blas));
  }
  std::unique_ptr<OrchestratorServer> s(new OrchestratorServer(std::move(config)));
  s->metrics_ = std::make_unique<Metrics>("orchestrator");
  s->models_ =
      std::make_unique<ModelManager>(s->config_.models, &s->board_, s->config_.memory_budget_mb);
  {
    auto* queued = &s->metrics_->HistogramFamily(
        "queue_seconds", "Time jobs waited in a model's queue before their forward pass.");
    auto* compute = &s->metrics_->HistogramFamily(
        "compute_seconds", "Forward-pass time of the jobs a model ran (a batch's for each job).");
    s->models_->SetJobObserver([queued, compute](const std::string& pipeline,
                                                 const std::string& model, absl::Duration q,
                                                 absl::Duration c) {
      const prometheus::Labels labels{{"pipeline", pipeline}, {"model", model}};
      queued->Add(labels, Metrics::LatencyBuckets()).Observe(absl::ToDoubleSeconds(q));
      compute->Add(labels, Metrics::LatencyBuckets()).Observe(absl::ToDoubleSeconds(c));
    });
  }
  if (s->config_.node_id.empty()) s->config_.node_id = DefaultNodeId(s->config_);
  {
    const bool from_file = !s->config_.identity_key_file.empty();
    auto key = from_file ? NodeKey::LoadOrCreate(s->config_.identity_key_file) : NodeKey::Generate();
    if (!key.ok()) return key.status();
    s->identity_ = *std::move(key);
    if (from_file) {
      spdlog::info("node identity {} (key {})", NodeKeyHex(s->identity_->public_key()),
                   s->config_.identity_key_file.string());
    } else {
      spdlog::warn(
          "node identity {} is new and in memory only (no identity_key_file): a gateway that "
          "bound node id '{}' to an earlier key refuses it (docs/security.md)",
          NodeKeyHex(s->identity_->public_key()), s->config_.node_id);
    }
  }
  s->service_ = std::make_unique<OrchestratorService>(s->config_, s->models_.get(), &s->board_);
  s->service_->set_identity(s->identity_.get());  // signs each job's receipt
  s->missed_jobs_ = std::make_unique<MissedJobsBoard>(
      [svc = s->service_.get()] {
        MissedJobsBoard::Routes offered;
        const node::v1::NodeStatus status = svc->BuildStatus();
        for (const auto& cap : status.capabilities()) {
          offered.emplace(cap.pipeline(), cap.model_id());
        }
        return offered;
      },
      s->metrics_.get());
  if (s->config_.prewarm) {
    Prewarmer::Options options;
    options.min_jobs = s->config_.prewarm_min_jobs;
    s->prewarmer_ = std::make_unique<Prewarmer>(s->models_.get(), options, s->metrics_.get());
  }
  if (AdminAuth::FromConfig(s->config_).open()) {
    // Kept open so that the default single-machine setup (no secrets anywhere) still works.
    spdlog::warn(
        "no registration_secret, registration_secrets or admin_token configured: the admin calls "
        "LoadModel, UnloadModel and CloseTranscodeSession are open to anyone who can reach {} "
        "(docs/security.md)",
        s->config_.listen);
  }
  s->inference_ = std::make_unique<InferenceService>(
      s->models_.get(), [svc = s->service_.get()] { return !svc->BuildStatus().draining(); },
      &s->board_);
  s->inference_->set_test_inflate_units(s->config_.test_inflate_units);

  s->service_->set_transcode_realtime_histogram(
      &s->metrics_
           ->HistogramFamily(
               "transcode_realtime_ratio",
               "Seconds of input video transcoded per second of compute, per segment.")
           .Add({}, prometheus::Histogram::BucketBoundaries{0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20}));

  // Before the server starts: GetStatus reads the hardware list from the gRPC threads.
  if (s->config_.transcode.enabled) {
    const media::VideoHardware& hw = media::ProbeVideoHardware();
    const std::vector<std::string> names = hw.Names();
    if (s->config_.transcode.hw_decode == "cuda" && media::SharedCudaDevice() == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(s->config_.file.string(),
                       ": transcode.hw_decode is \"cuda\" but this machine has no "
                       "CUDA device FFmpeg can open (",
                       hw.detail, "); use \"auto\" or \"none\""));
    }
    if (s->config_.transcode.hw_encode == "nvenc" && !hw.nvenc_h264) {
      return absl::FailedPreconditionError(
          absl::StrCat(s->config_.file.string(),
                       ": transcode.hw_encode is \"nvenc\" but this machine has no "
                       "NVENC encoder that opens (",
                       hw.detail, "); use \"auto\" or \"none\""));
    }
    if (names.empty()) {
      spdlog::info("video hardware: none, transcoding in software ({})", hw.detail);
    } else {
      // NVDEC decodes when hw_decode allows, NVENC encodes when hw_encode allows and the GPU has
      // one (an H100/H200 has none: libx264 there).
      spdlog::info("video hardware: {} (decode on the GPU: {}, encode on the GPU: {}){}{}",
                   absl::StrJoin(names, ", "),
                   s->config_.transcode.hw_decode == "none" ? "off" : "on",
                   s->config_.transcode.hw_encode != "none" && hw.nvenc_h264 ? "on" : "off",
                   hw.detail.empty() ? "" : "; ", hw.detail);
    }
    s->service_->set_hardware(names);
  }
  EnableStandardGrpcServices();
  auto credentials = MakeGrpcServerCredentials(s->config_.tls);
  if (!credentials.ok()) return credentials.status();
  auto gateway_security = GrpcClientSecurity::Create(s->config_.gateway_tls);
  if (!gateway_security.ok()) return gateway_security.status();
  s->gateway_security_ = *std::move(gateway_security);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(s->config_.listen, *credentials, &s->port_);
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(s->metrics_->InterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
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
  if (auto st = s->StartHttp(); !st.ok()) return st;
  spdlog::info("orchestrator {} serving on port {} (advertised as {}; {}; to gateways: {})",
               s->config_.node_id, s->port_, s->advertise_address_,
               !s->config_.tls.enabled()            ? "plaintext"
               : s->config_.tls.require_client_cert ? "TLS, client certificates required"
                                                    : "TLS",
               s->config_.gateway_tls.enabled ? "TLS" : "plaintext");
  return s;
}

void OrchestratorServer::Start() {
  for (const auto& gw : config_.gateways) {
    auto client = std::make_unique<RegistrationClient>(
        gw, [this] { return service_->BuildStatus(); }, &board_,
        std::chrono::milliseconds(config_.heartbeat_ms), config_.RegistrationSecretFor(gw),
        gateway_security_, identity_.get());
    client->set_on_missed_jobs([this, gw](const node::v1::MissedJobs& report) {
      missed_jobs_->Accept(gw, report).IgnoreError();  // logged there
    });
    if (prewarmer_ != nullptr) {
      client->set_on_warm_demand([this, gw](const node::v1::WarmDemand& demand) {
        prewarmer_->Accept(gw, demand).IgnoreError();  // logged there
      });
    }
    client->Start();
    registrations_.push_back(std::move(client));
  }
  models_->LoadWarmModels();
}

absl::Status OrchestratorServer::ReloadModels() {
  if (config_.file.empty()) return absl::FailedPreconditionError("no config file to re-read");
  auto fresh = LoadOrchestratorConfig(config_.file);
  if (!fresh.ok()) return fresh.status();
  // Only the models are reloaded: the rest is bound into sockets, threads and registrations.
  // Compared with the file's own values, so command-line overrides do not read as changes.
  std::vector<std::string> ignored;
  if (fresh->memory_budget_mb != config_.memory_budget_mb) ignored.push_back("memory_budget_mb");
  if (fresh->heartbeat_ms != config_.heartbeat_ms) ignored.push_back("heartbeat_ms");
  if (!(fresh->transcode == config_.transcode)) ignored.push_back("transcode");
  if (!ignored.empty()) {
    spdlog::warn("reload: changes to {} take effect at the next restart",
                 absl::StrJoin(ignored, ", "));
  }
  ModelManager::ReloadSummary r = models_->Reconcile(fresh->models);
  spdlog::info("reload: models added [{}], removed [{}], reloaded [{}], updated [{}], {} unchanged",
               absl::StrJoin(r.added, ", "), absl::StrJoin(r.removed, ", "),
               absl::StrJoin(r.reloaded, ", "), absl::StrJoin(r.updated, ", "), r.unchanged);
  models_->LoadWarmModels();  // new and reloaded warm models; failures show as FAILED
  return absl::OkStatus();
}

absl::Status OrchestratorServer::CheckHealth(std::chrono::milliseconds budget) {
  return ProbeGrpcServer(server_.get(), budget);
}

absl::Status OrchestratorServer::StartHttp() {
  if (config_.http_listen.empty()) return absl::OkStatus();
  auto& models =
      metrics_->GaugeFamily("models", "Configured models (and the transcoder), by state.");
  auto& in_use =
      metrics_->GaugeFamily("jobs_in_use", "Jobs running or queued, by pipeline and model.");
  auto& capacity =
      metrics_->GaugeFamily("capacity", "Jobs that can run at once, by pipeline and model.");
  metrics_->OnScrape([this, &models, &in_use, &capacity] {
    std::lock_guard<std::mutex> lock(scrape_mu_);
    const node::v1::NodeStatus status = service_->BuildStatus();
    std::map<std::string, int> by_state;
    for (const char* state : {"cold", "loading", "ready", "failed", "unloaded"})
      by_state[state] = 0;
    for (const auto& cap : status.capabilities()) {
      const std::string state = ModelStateName(cap.state());
      by_state[state]++;
      const std::pair<std::string, std::string> key{cap.pipeline(), cap.model_id()};
      auto it = model_gauges_.find(key);
      if (it == model_gauges_.end()) {
        auto* g = &in_use.Add({{"pipeline", cap.pipeline()}, {"model", cap.model_id()}});
        it = model_gauges_.emplace(key, g).first;
        capacity.Add({{"pipeline", cap.pipeline()}, {"model", cap.model_id()}}).Set(cap.capacity());
      }
      it->second->Set(cap.in_use());
    }
    for (const auto& [state, n] : by_state) models.Add({{"state", state}}).Set(n);
  });
  std::map<std::string, http::Handler> routes;
  // What the gateways say about the jobs this node missed, and why (docs/operations.md, "Why
  // does my node get no work?").
  routes["/status"] = [this](const http::Request& req, http::Reply reply) {
    http::Response r;
    if (req.method != "GET") {
      r.status = 405;
      r.headers["Allow"] = "GET";
      r.body = "use GET\n";
      return reply(std::move(r));
    }
    r.body = absl::StrCat("orchestrator ", advertise_address_, "\n", missed_jobs_->Describe());
    reply(std::move(r));
  };
  AddOperatorRoutes(
      metrics_.get(),
      [this] {
        const node::v1::NodeStatus status = service_->BuildStatus();
        http::Response r;
        if (status.draining()) {
          r.status = 503;
          r.body = "not ready: draining\n";
          return r;
        }
        int ready = 0, loading = 0;
        for (const auto& cap : status.capabilities()) {
          ready += cap.state() == node::v1::MODEL_STATE_READY ? 1 : 0;
          loading += cap.state() == node::v1::MODEL_STATE_LOADING ? 1 : 0;
        }
        r.body = absl::StrCat("ready: ", ready, " ready, ", loading, " loading\n");
        return r;
      },
      &routes);
  http::ServerOptions options;
  options.listen = config_.http_listen;
  options.tls = config_.http_tls;
  // Only GET probes and metrics here: no request has a body worth reading. The connection caps
  // keep ServerOptions' defaults (1024 in all, 64 per client address).
  options.max_body_bytes = 64 << 10;
  auto http = http::Server::Create(options, std::move(routes));
  if (!http.ok()) return http.status();
  http_ = *std::move(http);
  spdlog::info("orchestrator {} (/healthz, /readyz, /metrics, /status) on port {}",
               config_.http_tls.enabled() ? "HTTPS" : "HTTP", http_->port());
  return absl::OkStatus();
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
