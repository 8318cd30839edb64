// switchyard-gateway configuration (JSON), documented in docs/configuration.md.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tls.h"
#include "gateway/live_video_options.h"
#include "gateway/membership/node_identity_config.h"
#include "gateway/routing/router.h"

namespace switchyard::gateway {

// State several gateways share (the `state` block; docs/operations.md "Several gateways"). Only
// API key quotas so far: in Redis when `state.redis` is set, else in this gateway's memory.
struct SharedStateConfig {
  std::string redis_address;   // HOST:PORT; empty: no Redis
  std::string redis_password;  // the first line of state.redis.password_file; empty: no AUTH
  std::string redis_key_prefix = "switchyard:";
  int redis_timeout_ms = 200;      // connect and each command
  int redis_lease_ttl_ms = 15000;  // a dead gateway's concurrency slots free after this long
  // state.redis.tls: {"ca_file", "cert_file", "key_file", "server_name"} (server_name is kept as
  // server_name_override). Not enabled: plain TCP.
  TlsClientConfig redis_tls;
  // When Redis cannot be reached: "local" (this gateway's own in-memory quotas) or "deny".
  std::string on_unavailable = "local";
  // Async results and served media held by another gateway (docs/operations.md "Several
  // gateways"): this gateway's short id, put in the ids it hands out; the peers' ids and base
  // URLs (http://HOST:PORT or https://HOST:PORT of their http_listen, all one scheme); the secret
  // their internal calls carry (the first line of state.internal_secret_file); each internal
  // call's timeout. Empty: no peers.
  std::string gateway_id;
  std::map<std::string, std::string> peers;
  std::string internal_secret;
  int peer_timeout_ms = 10000;
  // state.peer_tls: {"ca_file", "cert_file", "key_file", "server_name"} (server_name is kept as
  // server_name_override), enabled exactly when the peers are https://.
  TlsClientConfig peer_tls;
};

// The usage ledger in PostgreSQL (`usage_ledger: {"backend": "postgres", ...}`).
struct PostgresLedgerConfig {
  std::string dsn;       // postgresql://USER@HOST:PORT/DB; empty: not PostgreSQL
  std::string password;  // the first line of password_file; empty: none
  // Where jobs are recorded while PostgreSQL cannot be reached (SQLite); by default
  // usage-journal-<gateway_id>.db next to the config file. A relative path: relative to it.
  std::filesystem::path journal;
  int connect_timeout_ms = 2000;
  int statement_timeout_ms = 5000;
  int retry_interval_ms = 1000;  // the journal's replay
  // When a job counts as recorded (and its client is answered): "postgres" once PostgreSQL
  // committed its row; "local" once the gateway's journal has it on disk (as the embedded
  // ledger), copied into PostgreSQL right after by a background writer.
  bool commit_local = false;
};

// Spot checks of one pipeline (`verification.pipelines.<name>`; docs/security.md, "Spot checks").
struct VerificationPipeline {
  double sample_rate = -1;  // of this pipeline's answered jobs re-run elsewhere; < 0: the default
  // Images: the largest absolute difference of any channel of any pixel (0..255) and the lowest
  // PSNR (dB; 0: not checked) for two results to agree. Everything else in a result (masks,
  // scores, text) must be byte-identical.
  int max_abs_diff = 0;
  double min_psnr_db = 0;
};
// Transcodes' default min_psnr_db: encoders need not agree bit for bit (x264's output depends on
// its thread count), so two honest nodes' renditions are compared as decoded frames. Two encodes
// of one input at one bitrate differ far less than this; wrong content (another segment, frames
// shifted, blank or re-used frames) scores far below it.
inline constexpr double kDefaultTranscodeMinPsnrDb = 30;

// The `verification` block: spot checks of deterministic jobs (docs/security.md "Spot checks").
struct VerificationConfig {
  double sample_rate = 0.01;  // default share of answered jobs checked, per deterministic pipeline
  // Per pipeline: its rate and tolerances. upscale, segment-anything-2 and transcode are
  // deterministic by default; image-to-image (and any other pipeline listed here) is checked only
  // for requests that carry a seed (text-to-image, image-to-video) or for a model in
  // deterministic_models.
  std::map<std::string, VerificationPipeline> pipelines;
  // Models the operator declares deterministic: checked in any pipeline that can be compared.
  std::vector<std::string> deterministic_models;
  int eject_after = 3;                // mismatches a node is blamed for before it is ejected
  int64_t eject_seconds = 7 * 86400;  // how long such an ejection lasts
  int max_in_flight = 4;              // checks running at once; more are skipped (0: no checks)
  int timeout_ms = 60000;             // each re-run's deadline
  // Known-answer checks of the hardware nodes claim (`verification.hardware`; docs/security.md,
  // "Hardware claims"; gateway/membership/hardware_checker.h).
  struct Hardware {
    bool enabled = true;
    int64_t interval_s = 600;  // between checks of one node, each drawn in [0.75, 1.25] x this
    int gpu_max_ms = 500;      // a node claiming "cuda" answers the GPU challenge within this
    // A node claiming NVDEC/NVENC ("nvdec-h264", "nvdec-hevc", "nvenc-h264") answers the video
    // challenge within this (generous: it covers a cold NVDEC/NVENC session; a CPU may answer
    // as fast, docs/security.md says what the window tells).
    int video_max_ms = 2000;
    int failed_capacity = 1;   // jobs at once per model on a node whose claim failed
  } hardware;
  // The rate and tolerances for `pipeline` (its entry, else sample_rate and exact matching).
  VerificationPipeline For(const std::string& pipeline) const;
};

// Pipelines whose results a spot check can compare: unary jobs whose result is the same for the
// same request on an honest node (given a seed where the model samples), and transcodes (their
// renditions compared as decoded frames; not the segments of a stream, whose session keeps
// state on its node). Not llm or live video.
bool VerifiablePipeline(const std::string& pipeline);

struct GatewayConfig {
  std::filesystem::path file;
  std::string gateway_id = "gateway";
  std::string listen = "127.0.0.1:50051";         // public API and orchestrator registry
  std::vector<std::string> static_orchestrators;  // polled instead of registering
  int poll_interval_ms = 1000;
  int heartbeat_interval_ms = 250;  // asked of registered orchestrators
  int node_timeout_ms = 800;        // a registered node silent this long is no longer routed to
  int max_attempts = 3;             // orchestrators tried per job
  int default_timeout_ms = 120000;  // deadline for jobs whose client set none
  // Per-attempt timeout by pipeline ("default" for the rest): an attempt that takes longer is
  // abandoned and retried elsewhere while the job's own deadline allows.
  std::map<std::string, int> attempt_timeout_ms = {{"default", 60000}, {"transcode", 20000}};
  // Price caps per unit by "pipeline" or "pipeline/model" (the more specific wins), used when the
  // client sends none; absent: no cap.
  std::map<std::string, double> max_price_per_unit;
  int max_queued_jobs = 1000;  // jobs waiting at the gateway for a node with room
  // The public HTTP port (HOST:PORT): the Livepeer AI API, /usage, /healthz and /readyz; empty
  // disables it.
  std::string http_listen = "127.0.0.1:8935";
  // The operators' HTTP port (HOST:PORT): /status, /status.json, /, /metrics, /healthz and
  // /readyz, kept off the public port because they show every tenant's request ids and errors
  // and the orchestrators' addresses. Loopback by default; empty disables it.
  std::string admin_listen = "127.0.0.1:8934";
  // Open connections on each HTTP port at once, in all and per client address; 0: no cap.
  int http_max_connections = 1024;
  int http_max_connections_per_ip = 64;
  int stream_idle_timeout_ms = 60000;  // a stream's node is forgotten after this long unused
  RouterOptions routing;

  int AttemptTimeoutMs(const std::string& pipeline) const;
  double PriceCap(const std::string& pipeline, const std::string& model_id) const;
  int64_t max_message_bytes = 256 << 20;
  std::string log_level = "info";
  std::string log_format = "text";
  // App developers' API keys (docs/security.md); empty: no key needed (a warning at start).
  // A relative path is taken relative to the config file.
  std::filesystem::path api_keys_file;
  // Orchestrators must send this on Registry.Register (docs/security.md); empty: open. From
  // `registration_secret`, or the first line of `registration_secret_file`.
  std::string registration_secret;
  // Per-node registration secrets (docs/security.md): node id -> lowercase hex SHA-256 of that
  // node's secret, from `node_secrets_file` ({"nodes": [{"id", "sha256"}]}). Non-empty: only
  // these ids may register, each with its own secret; the shared secret is not accepted then.
  std::filesystem::path node_secrets_file;
  std::map<std::string, std::string> node_secrets;
  // With tls.require_client_cert: a registering node's client certificate must name its node id
  // (a subject alternative name or the CN).
  bool node_id_from_client_cert = false;
  // The usage ledger (SQLite, docs/metering.md); empty: none (jobs are still checked, not
  // recorded). A relative path is taken relative to the config file.
  std::filesystem::path usage_ledger;
  // `usage_ledger` as {"backend": "postgres", ...}: the ledger in PostgreSQL, shared by several
  // gateways (docs/operations.md "Several gateways"); usage_ledger (the path) is empty then.
  PostgresLedgerConfig usage_ledger_postgres;
  // API key ids that may read every key's usage (GetUsage with api_key_id "*" or another id).
  std::vector<std::string> usage_admin_key_ids;
  // TLS (docs/security.md): `tls` for the gRPC port (apps and orchestrators' registrations),
  // `http_tls` for http_listen, `orchestrator_tls` for every connection to an orchestrator
  // (registered or static). Absent: plaintext.
  TlsServerConfig tls;
  TlsServerConfig http_tls;
  TlsClientConfig orchestrator_tls;
  // POST /live-video-to-video sessions: the `live_video` block (max_sessions,
  // max_sessions_per_key, allowed_hosts into `egress`); the rest keeps LiveVideoOptions' defaults.
  LiveVideoOptions live_video;
  SharedStateConfig state;
  // Orchestrators' identity keys (docs/security.md, "Node identity"): the `node_identity` block.
  NodeIdentityConfig node_identity;
  // Spot checks of results (the `verification` block).
  VerificationConfig verification;
};

// A node_secrets_file: {"nodes": [{"id": "node-a", "sha256": "<64 hex digits>"}]} -> id -> hash.
// Errors name the file and the entry ("nodes.json: nodes[1].sha256: ...").
absl::StatusOr<std::map<std::string, std::string>> ParseNodeSecrets(
    const std::string& json_text, const std::filesystem::path& file);
absl::StatusOr<std::map<std::string, std::string>> LoadNodeSecrets(
    const std::filesystem::path& file);

absl::StatusOr<GatewayConfig> ParseGatewayConfig(const std::string& json_text,
                                                 const std::filesystem::path& file);
absl::StatusOr<GatewayConfig> LoadGatewayConfig(const std::filesystem::path& file);

}  // namespace switchyard::gateway
