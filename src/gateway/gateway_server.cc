#include "gateway/gateway_server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <random>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/daemon.h"
#include "common/grpc_services.h"
#include "common/secure_random.h"
#include "common/status.h"
#include "gateway/api/explain_http.h"
#include "gateway/api/livepeer_api.h"
#include "gateway/api/openai_api.h"
#include "gateway/api/peer_gateways.h"
#include "gateway/billing/postgres_usage_ledger.h"
#include "gateway/billing/redis_quota.h"
#include "gateway/billing/usage_http.h"
#include "gateway/observability/status_page.h"
#include "gateway/routing/redis_affinity.h"

namespace switchyard::gateway {
namespace {

// The public HTTP port's check of the API key, made as soon as a request's headers are read: a
// request without a known key gets 401 before its body is read or any validation answers. Only
// whether the key exists is checked here; its rate and concurrency quotas stay with the gRPC API
// the request is forwarded to (with the same Authorization header). The probes stay open.
http::Authorizer ApiKeyAuthorizer(ApiKeyAuth* auth) {
  return [auth](const http::Request& req) -> std::optional<http::Response> {
    if (req.path == "/healthz" || req.path == "/readyz") return std::nullopt;
    std::string key;
    if (auto it = req.headers.find("authorization"); it != req.headers.end()) {
      absl::string_view value = absl::StripAsciiWhitespace(it->second);
      if (value.size() > 7 && absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
        key = std::string(absl::StripAsciiWhitespace(value.substr(7)));
      }
    }
    // The OpenAI-compatible API's paths answer in OpenAI's error shape.
    auto refuse = [&req](const std::string& message) {
      return IsOpenAiPath(req.path)
                 ? OpenAiError(401, message, "invalid_request_error", "", "invalid_api_key")
                 : http::Error(401, message);
    };
    if (key.empty()) return refuse("API key required: send 'Authorization: Bearer <key>'");
    if (auto st = auth->store().Authenticate(key); !st.ok()) {
      return refuse(std::string(st.message()));
    }
    return std::nullopt;
  };
}

// The connection to state.redis shared by stream affinity and spot-check verdicts.
RedisClientOptions StateRedis(const GatewayConfig& c) {
  RedisClientOptions options;
  options.address = c.state.redis_address;
  options.password = c.state.redis_password;
  options.timeout = absl::Milliseconds(c.state.redis_timeout_ms);
  options.tls = c.state.redis_tls;
  return options;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Create(GatewayConfig config) {
  std::unique_ptr<GatewayServer> s(new GatewayServer(std::move(config)));
  const auto& c = s->config_;
  s->metrics_ = std::make_unique<Metrics>("gateway");
  if (!c.api_keys_file.empty()) {
    QuotaBackendPtr quotas;  // null: this gateway's memory
    if (!c.state.redis_address.empty()) {
      RedisQuotaOptions options;
      options.address = c.state.redis_address;
      options.password = c.state.redis_password;
      options.key_prefix = c.state.redis_key_prefix;
      options.tls = c.state.redis_tls;
      options.timeout = absl::Milliseconds(c.state.redis_timeout_ms);
      options.lease_ttl = absl::Milliseconds(c.state.redis_lease_ttl_ms);
      options.on_unavailable =
          c.state.on_unavailable == "deny" ? QuotaOnUnavailable::kDeny : QuotaOnUnavailable::kLocal;
      auto redis = RedisQuotaBackend::Create(options, s->metrics_.get());
      if (!redis.ok()) return redis.status();
      // The gateway starts without Redis too: state.on_unavailable applies until it answers.
      if (auto st = (*redis)->Ping(); st.ok()) {
        spdlog::info("API key quotas shared through Redis at {} (key prefix '{}')", options.address,
                     options.key_prefix);
      } else {
        spdlog::warn(
            "API key quotas: Redis at {} does not answer yet ({}); state.on_unavailable "
            "is \"{}\" until it does",
            options.address, st.ToString(), c.state.on_unavailable);
      }
      quotas = *std::move(redis);
    }
    auto auth = ApiKeyAuth::Create(c.api_keys_file, nullptr, std::move(quotas));
    if (!auth.ok()) return auth.status();
    s->auth_ = *std::move(auth);
  } else {
    spdlog::warn(
        "no api_keys_file configured: the gateway's API is open to anyone who can reach "
        "it (docs/security.md)");
    if (!c.state.redis_address.empty()) {
      spdlog::warn(
          "state.redis is set but there are no API keys (api_keys_file): no quotas to "
          "share, only stream affinity");
    }
  }
  if (c.registration_secret.empty() && c.node_secrets.empty() && !c.node_id_from_client_cert) {
    spdlog::warn(
        "no registration_secret configured: any orchestrator may register "
        "(docs/security.md)");
  }
  auto orchestrator_security = GrpcClientSecurity::Create(c.orchestrator_tls);
  if (!orchestrator_security.ok()) return orchestrator_security.status();
  s->membership_ =
      std::make_unique<Membership>(c.max_message_bytes, *std::move(orchestrator_security));
  auto node_keys = NodeKeys::Create(c.node_identity);
  if (!node_keys.ok()) return node_keys.status();
  s->node_keys_ = *std::move(node_keys);
  s->registry_ = std::make_unique<RegistryService>(
      c.gateway_id, c.heartbeat_interval_ms, s->membership_.get(), c.registration_secret,
      NodeAuth{c.node_secrets, c.node_id_from_client_cert}, s->node_keys_.get());
  // Request and stream ids are drawn from this source: OpenSSL's CSPRNG, so no client can
  // rebuild it from the ids it sees (docs/security.md).
  s->service_ =
      std::make_unique<GatewayService>(c, s->membership_.get(), [] { return SecureRandomU64(); });
  s->registry_->set_warm_demand(s->service_->warm_demand());
  if (!c.state.redis_address.empty()) {
    // Streams' segments reach one orchestrator whichever gateway receives them.
    RedisAffinityOptions options;
    options.redis = StateRedis(c);
    options.key_prefix = c.state.redis_key_prefix;
    options.ttl = absl::Milliseconds(c.stream_idle_timeout_ms);
    auto affinity = RedisStreamAffinity::Create(options, s->metrics_.get());
    if (!affinity.ok()) return affinity.status();
    if (auto st = (*affinity)->Ping(); !st.ok()) {
      spdlog::warn(
          "stream affinity: Redis at {} does not answer yet ({}); streams follow this gateway's "
          "own table until it does",
          options.redis.address, st.ToString());
    }
    s->service_->set_affinity_store(*std::move(affinity));
  }
  s->job_metrics_ = std::make_unique<JobMetrics>(s->metrics_.get());
  s->service_->set_job_metrics(s->job_metrics_.get());
  if (!c.usage_ledger_postgres.dsn.empty()) {
    const PostgresLedgerConfig& pg = c.usage_ledger_postgres;
    PostgresLedgerOptions options;
    options.dsn = pg.dsn;
    options.password = pg.password;
    options.journal = pg.journal;
    options.connect_timeout = absl::Milliseconds(pg.connect_timeout_ms);
    options.statement_timeout = absl::Milliseconds(pg.statement_timeout_ms);
    options.retry_interval = absl::Milliseconds(pg.retry_interval_ms);
    options.commit = pg.commit_local ? PostgresLedgerOptions::Commit::kLocal
                                     : PostgresLedgerOptions::Commit::kPostgres;
    // Logs where it records (and whether PostgreSQL answers) itself.
    auto ledger = PostgresUsageLedger::Create(std::move(options), s->metrics_.get());
    if (!ledger.ok()) return ledger.status();
    s->ledger_ = *std::move(ledger);
  } else if (!c.usage_ledger.empty()) {
    auto ledger = SqliteUsageLedger::Open(c.usage_ledger);
    if (!ledger.ok()) return ledger.status();
    s->ledger_ = *std::move(ledger);
    spdlog::info("usage ledger: {}", s->ledger_->Describe());
  }
  s->billing_ = std::make_unique<JobBilling>(s->ledger_.get(), s->metrics_.get());
  // Receipts are checked against the key each node id is bound to (docs/security.md).
  s->billing_->set_bound_key(
      [keys = s->node_keys_.get()](const std::string& node_id) { return keys->BoundKey(node_id); });
  s->service_->set_billing(s->billing_.get());
  if (c.verification.max_in_flight > 0) {
    // Spot checks of answered jobs (docs/security.md, "Spot checks").
    SpotChecker::Deps deps;
    deps.router = s->service_->router();
    deps.snapshot = [m = s->membership_.get()] { return m->snapshot(); };
    deps.ledger = s->ledger_.get();
    deps.metrics = s->metrics_.get();
    deps.random = [] { return SecureRandomU64(); };
    if (!c.state.redis_address.empty()) {
      // Gateways sharing a Redis count mismatches together and share ejections.
      RedisSharedVerdictsOptions options;
      options.redis = StateRedis(c);
      options.key_prefix = c.state.redis_key_prefix;
      auto shared = RedisSharedVerdicts::Create(std::move(options));
      if (!shared.ok()) return shared.status();
      s->shared_verdicts_ = *std::move(shared);
      deps.shared = s->shared_verdicts_.get();
    }
    auto checker = SpotChecker::Create(c.verification, std::move(deps));
    if (!checker.ok()) return checker.status();
    s->service_->set_spot_checker(*std::move(checker));
  }
  if (c.verification.hardware.enabled) {
    // Known-answer checks of the hardware nodes claim (docs/security.md, "Hardware claims").
    HardwareChecker::Deps deps;
    deps.snapshot = [m = s->membership_.get()] { return m->snapshot(); };
    deps.metrics = s->metrics_.get();
    deps.random = [] { return SecureRandomU64(); };
    deps.gateway_id = c.gateway_id;
    deps.node_key = [keys = s->node_keys_.get()](const std::string& id) {
      return keys->BoundKey(id);
    };
    if (!c.state.redis_address.empty()) {
      // Gateways sharing a Redis share their failed findings (shared_hardware_findings.h).
      RedisHardwareFindingsOptions options;
      options.redis = StateRedis(c);
      options.key_prefix = c.state.redis_key_prefix;
      auto shared = RedisHardwareFindings::Create(std::move(options));
      if (!shared.ok()) return shared.status();
      s->shared_hardware_ = *std::move(shared);
      deps.shared = s->shared_hardware_.get();
    }
    auto checker = HardwareChecker::Create(c.verification.hardware, std::move(deps));
    if (!checker.ok()) return checker.status();
    s->hardware_checker_ = *std::move(checker);
    s->service_->set_hardware_checker(s->hardware_checker_.get());
  }
  s->inference_ = std::make_unique<InferenceProxy>(c, s->membership_.get(), s->service_->router());
  s->service_->set_auth(s->auth_.get());
  s->inference_->set_auth(s->auth_.get());
  s->inference_->set_job_metrics(s->job_metrics_.get());
  s->inference_->set_billing(s->billing_.get());
  s->inference_->set_room(s->service_->room());
  s->inference_->set_job_log(s->service_->job_log());

  EnableStandardGrpcServices();
  auto credentials = MakeGrpcServerCredentials(c.tls);
  if (!credentials.ok()) return credentials.status();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(c.listen, *credentials, &s->port_);
  builder.RegisterService(s->registry_.get());
  builder.RegisterService(s->service_.get());
  builder.RegisterService(s->inference_.get());
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(s->metrics_->InterceptorFactory());
    s->calls_ = std::make_unique<ActiveCallTracker>(
        std::vector<std::string>{"/switchyard.node.v1.Registry/", "/grpc.health.v1.Health/Watch"});
    creators.push_back(s->calls_->InterceptorFactory());
    if (s->auth_) creators.push_back(s->auth_->InterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(c.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(c.max_message_bytes));
  // Keepalive pings end the registration stream (and connection) of an orchestrator that vanished
  // without closing its TCP connection. Routing does not wait for them: a node silent for
  // node_timeout_ms is dropped first. The same settings apply to every app client, so they are
  // generous: a 1 s ack deadline cut off clients that were only briefly slow (a busy host, a
  // congested link) and failed their next call with UNAVAILABLE "Socket closed".
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", c.listen, " (address in use?)"));
  }
  if (auto st = s->StartHttp(); !st.ok()) return st;
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
  spdlog::info("gateway {} serving on port {} ({}; {} static orchestrators; to orchestrators: {})",
               c.gateway_id, s->port_,
               !c.tls.enabled()            ? "plaintext"
               : c.tls.require_client_cert ? "TLS, client certificates required"
                                           : "TLS",
               c.static_orchestrators.size(), c.orchestrator_tls.enabled ? "TLS" : "plaintext");
  return s;
}

absl::Status GatewayServer::StartHttp() {
  if (config_.http_listen.empty() && config_.admin_listen.empty()) return absl::OkStatus();
  auto& orchestrators = metrics_->GaugeFamily(
      "orchestrators", "Orchestrators the gateway knows, by whether it routes to them.");
  auto& routable = orchestrators.Add({{"state", "ready"}});
  auto& draining = orchestrators.Add({{"state", "draining"}});
  auto& in_flight =
      metrics_->GaugeFamily("jobs_in_flight", "Jobs this gateway has running on orchestrators.")
          .Add({});
  auto& offers = metrics_->GaugeFamily(
      "model_offers", "Orchestrators offering each pipeline and model, by the model's state.");
  metrics_->OnScrape([this, &routable, &draining, &in_flight, &offers] {
    job_metrics_->SyncEjections(service_->router()->ejections_total());
    std::lock_guard<std::mutex> lock(scrape_mu_);
    auto snapshot = membership_->snapshot();
    int ready = 0, leaving = 0, flying = 0;
    std::map<std::tuple<std::string, std::string, std::string>, int> counts;
    for (const auto& node : snapshot->nodes) {
      (node->status.draining() ? leaving : ready)++;
      if (node->connection) flying += node->connection->in_flight().load();
      for (const auto& cap : node->status.capabilities()) {
        counts[{cap.pipeline(), cap.model_id(), ModelStateName(cap.state())}]++;
      }
    }
    routable.Set(ready);
    draining.Set(leaving);
    in_flight.Set(flying);
    // Offers that disappeared read 0 rather than vanishing mid-series.
    for (auto& [key, gauge] : offer_gauges_) gauge->Set(0);
    for (const auto& [key, n] : counts) {
      auto it = offer_gauges_.find(key);
      if (it == offer_gauges_.end()) {
        auto& g = offers.Add({{"pipeline", std::get<0>(key)},
                              {"model", std::get<1>(key)},
                              {"state", std::get<2>(key)}});
        it = offer_gauges_.emplace(key, &g).first;
      }
      it->second->Set(n);
    }
  });
  // /healthz, /readyz and /metrics: the probes go on both ports, the metrics on the admin one.
  std::map<std::string, http::Handler> admin_routes;
  AddOperatorRoutes(
      metrics_.get(),
      [this] {
        auto snapshot = membership_->snapshot();
        int ready = 0;
        for (const auto& node : snapshot->nodes) ready += node->status.draining() ? 0 : 1;
        http::Response r;
        r.status = ready > 0 && !shut_down_ ? 200 : 503;
        r.body = ready > 0
                     ? absl::StrCat("ready: ", ready, " orchestrator", ready == 1 ? "" : "s", "\n")
                     : "not ready: no orchestrator to route to\n";
        return r;
      },
      &admin_routes);
  // The operators' status page (/status, /status.json, /).
  AddStatusRoutes({config_.gateway_id, membership_.get(), service_->router(), service_->job_log(),
                   absl::Now(), hardware_checker_.get()},
                  &admin_routes);

  http::ServerOptions options;
  options.tls = config_.http_tls;
  // The body limit is the gRPC API's: an HTTP request becomes one gRPC message of about its size.
  options.max_body_bytes = static_cast<size_t>(config_.max_message_bytes);
  options.max_connections = config_.http_max_connections;
  options.max_connections_per_ip = config_.http_max_connections_per_ip;

  if (!config_.http_listen.empty()) {
    // The Livepeer AI API, answered through this gateway's own gRPC API (in-process channel).
    auto channel = ReleasedOffGrpcThreads(server_->InProcessChannel(grpc::ChannelArguments()));
    live_ = std::make_shared<LiveVideoSessions>(v1::Gateway::NewStub(channel), config_.live_video);
    if (!config_.state.peers.empty()) {
      // Async results and served media held by other gateways (docs/operations.md).
      PeerGatewaysOptions peer_options;
      peer_options.self_id = config_.state.gateway_id;
      peer_options.peers = config_.state.peers;
      peer_options.secret = config_.state.internal_secret;
      peer_options.timeout = absl::Milliseconds(config_.state.peer_timeout_ms);
      peer_options.tls = config_.state.peer_tls;
      auto peers = PeerGateways::Create(std::move(peer_options));
      if (!peers.ok()) return peers.status();
      peers_ = *std::move(peers);
      spdlog::info("async results and served media: this gateway is '{}', {} peer gateway(s) {}",
                   config_.state.gateway_id, config_.state.peers.size(),
                   config_.state.peer_tls.enabled ? "over HTTPS (state.peer_tls)" : "over HTTP");
    }
    std::map<std::string, http::Handler> routes =
        LivepeerApiRoutes(channel, live_, auth_.get(), peers_);
    // The OpenAI-compatible API (/v1/...), the same way (docs/openai-api.md).
    routes.merge(OpenAiApiRoutes(channel));
    // GET /usage: the caller's usage from the ledger (docs/metering.md).
    routes["/usage"] =
        UsageHttpRoute(ReleasedOffGrpcThreads(server_->InProcessChannel(grpc::ChannelArguments())));
    // GET /explain: how the router judges every node for a pipeline and model (operators' keys;
    // docs/operations.md, "Why does my node get no work?").
    routes["/explain"] = ExplainHttpRoute(
        ReleasedOffGrpcThreads(server_->InProcessChannel(grpc::ChannelArguments())));
    for (const char* probe : {"/healthz", "/readyz"}) routes[probe] = admin_routes.at(probe);
    http::ServerOptions public_options = options;
    public_options.listen = config_.http_listen;
    if (auth_) public_options.authorize = ApiKeyAuthorizer(auth_.get());
    auto http = http::Server::Create(public_options, std::move(routes));
    if (!http.ok()) return http.status();
    http_ = *std::move(http);
    spdlog::info(
        "gateway {} (Livepeer AI API, OpenAI API /v1, /usage, /explain, /healthz, /readyz) on port "
        "{}{}",
        config_.http_tls.enabled() ? "HTTPS" : "HTTP", http_->port(),
        auth_ ? ", API key checked before the body is read" : "");
  }
  if (!config_.admin_listen.empty()) {
    http::ServerOptions admin_options = options;
    admin_options.listen = config_.admin_listen;
    admin_options.max_body_bytes = 64 << 10;  // only GETs there
    auto admin = http::Server::Create(admin_options, std::move(admin_routes));
    if (!admin.ok()) {
      return absl::Status(admin.status().code(),
                          absl::StrCat("admin_listen: ", admin.status().message()));
    }
    admin_http_ = *std::move(admin);
    spdlog::info("gateway operators' {} (/status, /metrics, /healthz, /readyz) on port {}",
                 config_.http_tls.enabled() ? "HTTPS" : "HTTP", admin_http_->port());
  }
  return absl::OkStatus();
}

GatewayServer::~GatewayServer() { Shutdown(std::chrono::milliseconds(0)); }

void GatewayServer::SetStaticOrchestrators(const std::vector<std::string>& addresses) {
  if (poller_) poller_->SetAddresses(addresses);
}

absl::Status GatewayServer::ReloadApiKeys() { return auth_ ? auth_->Reload() : absl::OkStatus(); }

absl::Status GatewayServer::ReloadNodeKeys() { return node_keys_->Reload(); }

absl::Status GatewayServer::CheckHealth(std::chrono::milliseconds budget) {
  return ProbeGrpcServer(server_.get(), budget);
}

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
  if (live_) live_->Stop();    // each session says why it ended, then its thread is joined
  if (peers_) peers_->Stop();  // fetches from other gateways answered before the HTTP server goes
  SetGrpcServing(server_.get(), false);
  if (!server_) return;
  const auto deadline = std::chrono::system_clock::now() + grace;
  // Server::Shutdown refuses new calls at once and blocks until every call has ended, the
  // registration streams included, which end only when this side closes them. So it runs on a
  // thread while this one waits for the client calls (jobs) and then closes the streams: jobs keep
  // their retries on other nodes until they are done, and the gateway exits as soon as they are.
  std::thread shutdown([this, deadline] { server_->Shutdown(deadline); });
  if (calls_ && !calls_->WaitIdle(std::chrono::steady_clock::now() + grace)) {
    spdlog::warn("shutdown: {} call(s) still running after the {} ms grace period; cancelled",
                 calls_->active(), grace.count());
  }
  registry_->Shutdown();
  shutdown.join();
  server_->Wait();
}

}  // namespace switchyard::gateway
