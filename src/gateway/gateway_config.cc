#include "gateway/gateway_config.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/config.h"
#include "common/json_limits.h"
#include "common/pipelines.h"
#include "common/status.h"

namespace switchyard::gateway {

absl::StatusOr<std::map<std::string, std::string>> ParseNodeSecrets(
    const std::string& json_text, const std::filesystem::path& file) {
  auto json = ParseJson(json_text);
  if (!json.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": ", json.status().message()));
  }
  ConfigObject root(*json, file.string(), "");
  SY_RETURN_IF_ERROR(root.CheckKeys({"nodes"}));
  if (!root.Has("nodes") || !(*json)["nodes"].is_array() || (*json)["nodes"].empty()) {
    return root.Error("nodes", "is required: a non-empty array of {id, sha256} entries");
  }
  std::map<std::string, std::string> out;
  std::set<std::string> hashes;
  for (size_t i = 0; i < (*json)["nodes"].size(); ++i) {
    ConfigObject n((*json)["nodes"][i], file.string(), absl::StrCat("nodes[", i, "]"));
    SY_RETURN_IF_ERROR(n.CheckKeys({"id", "sha256"}));
    std::string id, sha256;
    SY_RETURN_IF_ERROR(n.Read("id", &id, /*required=*/true));
    SY_RETURN_IF_ERROR(n.Read("sha256", &sha256, /*required=*/true));
    if (id.empty() || id.size() > 128 ||
        !std::all_of(id.begin(), id.end(), [](char ch) { return ch > 0x20 && ch < 0x7f; })) {
      return n.Error("id", "must be 1..128 printable ASCII characters without spaces");
    }
    if (out.count(id) != 0) return n.Error("id", absl::StrCat("'", id, "' is repeated"));
    absl::AsciiStrToLower(&sha256);
    if (sha256.size() != 64 || !std::all_of(sha256.begin(), sha256.end(),
                                            [](char ch) { return absl::ascii_isxdigit(ch); })) {
      return n.Error("sha256",
                     "must be 64 hex digits (the secret's SHA-256; see docs/security.md)");
    }
    // One secret for two ids would let either node register as the other.
    if (!hashes.insert(sha256).second) {
      return n.Error("sha256", "is repeated (one secret, two ids)");
    }
    out[id] = sha256;
  }
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> LoadNodeSecrets(
    const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return absl::NotFoundError(absl::StrCat(file.string(), ": cannot open node secrets"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseNodeSecrets(text.str(), file);
}

namespace {

// A gateway id in shared ids: short, and nothing a path or an id could be split on.
bool IsPeerId(const std::string& id) {
  return !id.empty() && id.size() <= 16 && std::all_of(id.begin(), id.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
  });
}

// state.gateway_id, state.peers {"ID": "http://HOST:PORT" or "https://HOST:PORT"},
// state.internal_secret_file, state.peer_timeout_ms: all or none (peers without a secret would
// serve anyone who asks). state.peer_tls is read and matched with the schemes by CheckPeerTls.
absl::Status ReadPeers(const ConfigObject& state, const std::filesystem::path& file,
                       SharedStateConfig* out) {
  const bool any = state.Has("gateway_id") || state.Has("peers") ||
                   state.Has("internal_secret_file") || state.Has("peer_timeout_ms");
  if (!any) return absl::OkStatus();
  SY_RETURN_IF_ERROR(state.Read("gateway_id", &out->gateway_id, /*required=*/true));
  if (!IsPeerId(out->gateway_id)) {
    return state.Error("gateway_id", "must be 1..16 characters a-z, 0-9 and '-'");
  }
  if (!state.Has("peers")) return state.Error("peers", "is required with state.gateway_id");
  SY_RETURN_IF_ERROR(state.ReadMap(
      "peers", "gateway id -> \"http://HOST:PORT\" or \"https://HOST:PORT\"", &out->peers,
      [&](const ConfigObject& peers, const std::string& id,
          const std::string& url) -> absl::Status {
        if (!IsPeerId(id)) {
          return peers.Error(id, "a peer id must be 1..16 characters a-z, 0-9 and '-'");
        }
        if (id == out->gateway_id) {
          return peers.Error(id, "is this gateway's own state.gateway_id");
        }
        absl::string_view rest = url;
        if (!absl::ConsumePrefix(&rest, "http://") && !absl::ConsumePrefix(&rest, "https://")) {
          return peers.Error(id,
                             "must be \"http://HOST:PORT\" or \"https://HOST:PORT\" (the peer's "
                             "http_listen)");
        }
        absl::ConsumeSuffix(&rest, "/");
        SY_RETURN_IF_ERROR(
            ValidateHostPort(std::string(rest), absl::StrCat(file.string(), ": ", peers.Path(id))));
        if (absl::EndsWith(rest, ":0")) return peers.Error(id, "port 0 is no port");
        return absl::OkStatus();
      }));
  if (out->peers.empty()) return state.Error("peers", "must name at least one other gateway");
  if (out->peers.size() > 64) return state.Error("peers", "at most 64 peers");
  for (auto& [id, url] : out->peers) {
    if (absl::EndsWith(url, "/")) url.pop_back();
  }
  std::string secret_file;
  SY_RETURN_IF_ERROR(state.Read("internal_secret_file", &secret_file, /*required=*/true));
  const std::filesystem::path path = ResolveConfigPath(file, secret_file);
  std::ifstream in(path);
  if (!in || !std::getline(in, out->internal_secret)) {
    return state.Error(
        "internal_secret_file",
        absl::StrCat("cannot read a secret (first line) from '", path.string(), "'"));
  }
  absl::StripAsciiWhitespace(&out->internal_secret);
  if (out->internal_secret.size() < 16 ||
      !std::all_of(out->internal_secret.begin(), out->internal_secret.end(),
                   [](char ch) { return ch > 0x20 && ch < 0x7f; })) {
    return state.Error("internal_secret_file",
                       "the secret (first line) must be at least 16 printable ASCII characters, "
                       "no spaces (e.g. openssl rand -hex 32)");
  }
  SY_RETURN_IF_ERROR(state.Read("peer_timeout_ms", &out->peer_timeout_ms));
  if (out->peer_timeout_ms < 100 || out->peer_timeout_ms > 120000) {
    return state.Error("peer_timeout_ms", "must be 100..120000");
  }
  return absl::OkStatus();
}

// A TLS client block `block` of `parent` (`state.redis.tls`, `state.peer_tls`): absent or false
// (no TLS), or {"ca_file", "cert_file", "key_file", "server_name"}. The files are checked here
// (readable PEM, the key the certificate's) so that a bad one stops the gateway at start, not at
// its first connection.
absl::Status ReadClientTls(const ConfigObject& parent, const std::string& block,
                           const std::filesystem::path& file, TlsClientConfig* out) {
  *out = TlsClientConfig();
  if (!parent.Has(block)) return absl::OkStatus();
  const nlohmann::json& value = parent.json().at(block);
  if (value.is_boolean()) {
    if (!value.get<bool>()) return absl::OkStatus();
    return parent.Error(block,
                        "true is not enough: give an object {\"ca_file\": ..., \"cert_file\": ..., "
                        "\"key_file\": ..., \"server_name\": ...} (ca_file required: the CA the "
                        "server's certificate chains to; cert_file and key_file for mutual TLS)");
  }
  if (!value.is_object()) {
    return parent.Error(block,
                        "must be false or an object {\"ca_file\", \"cert_file\", "
                        "\"key_file\", \"server_name\"}");
  }
  ConfigObject tls = parent.Child(block);
  SY_RETURN_IF_ERROR(tls.CheckKeys({"ca_file", "cert_file", "key_file", "server_name"}));
  std::string ca, cert, key;
  SY_RETURN_IF_ERROR(tls.Read("ca_file", &ca, /*required=*/true));
  SY_RETURN_IF_ERROR(tls.Read("cert_file", &cert));
  SY_RETURN_IF_ERROR(tls.Read("key_file", &key));
  SY_RETURN_IF_ERROR(tls.Read("server_name", &out->server_name_override));
  for (const char* field : {"ca_file", "cert_file", "key_file", "server_name"}) {
    std::string v;
    SY_RETURN_IF_ERROR(tls.Read(field, &v));
    if (tls.Has(field) && v.empty()) return tls.Error(field, "must not be empty");
  }
  if (!out->server_name_override.empty() &&
      !std::all_of(out->server_name_override.begin(), out->server_name_override.end(), [](char ch) {
        return absl::ascii_isalnum(ch) || ch == '.' || ch == '-' || ch == ':' || ch == '_';
      })) {
    return tls.Error("server_name", "must be a DNS name or an IP address");
  }
  out->enabled = true;
  out->ca_file = ResolveConfigPath(file, ca);
  if (!cert.empty()) out->cert_file = ResolveConfigPath(file, cert);
  if (!key.empty()) out->key_file = ResolveConfigPath(file, key);
  return CheckTlsClientConfig(*out, absl::StrCat(file.string(), ": ", parent.Path(block)));
}

// state.peer_tls against the peers' schemes: https:// peers need it (the CA their certificates
// chain to), and with it every peer must be https://, so that the secret and clients' API keys
// never cross the network in clear text to one of them.
absl::Status CheckPeerTls(const ConfigObject& state, const SharedStateConfig& s) {
  if (s.peers.empty()) {
    if (s.peer_tls.enabled) {
      return state.Error("peer_tls", "needs state.peers (with https:// addresses)");
    }
    return absl::OkStatus();
  }
  const ConfigObject peers = state.Child("peers");
  for (const auto& [id, url] : s.peers) {
    const bool https = absl::StartsWith(url, "https://");
    if (https && !s.peer_tls.enabled) {
      return peers.Error(id,
                         "https:// peers need state.peer_tls (at least its ca_file: the CA the "
                         "peers' certificates chain to)");
    }
    if (!https && s.peer_tls.enabled) {
      return peers.Error(id,
                         "with state.peer_tls every peer must be https://; an http:// one would "
                         "get the shared secret and clients' API keys in clear text");
    }
  }
  return absl::OkStatus();
}

// The `state` block: {"redis": {"address", "password_file", "key_prefix", "timeout_ms",
// "lease_ttl_ms", "tls"}, "on_unavailable": "deny" | "local", "gateway_id", "peers",
// "internal_secret_file", "peer_timeout_ms", "peer_tls"}.
absl::Status ReadSharedState(const ConfigObject& root, const std::filesystem::path& file,
                             SharedStateConfig* out) {
  if (!root.Has("state")) return absl::OkStatus();
  ConfigObject state = root.Child("state");
  SY_RETURN_IF_ERROR(state.CheckKeys({"redis", "on_unavailable", "gateway_id", "peers",
                                      "internal_secret_file", "peer_timeout_ms", "peer_tls"}));
  SY_RETURN_IF_ERROR(ReadPeers(state, file, out));
  SY_RETURN_IF_ERROR(ReadClientTls(state, "peer_tls", file, &out->peer_tls));
  SY_RETURN_IF_ERROR(CheckPeerTls(state, *out));
  SY_RETURN_IF_ERROR(state.Read("on_unavailable", &out->on_unavailable));
  if (out->on_unavailable != "deny" && out->on_unavailable != "local") {
    return state.Error("on_unavailable",
                       "must be \"deny\" (refuse calls with UNAVAILABLE) or \"local\" (this "
                       "gateway's own in-memory quotas) while Redis cannot be reached");
  }
  if (!state.Has("redis")) {
    if (state.Has("on_unavailable")) {
      return state.Error("on_unavailable", "needs state.redis (without it quotas are local)");
    }
    return absl::OkStatus();
  }
  ConfigObject redis = state.Child("redis");
  SY_RETURN_IF_ERROR(redis.CheckKeys(
      {"address", "password_file", "key_prefix", "timeout_ms", "lease_ttl_ms", "tls"}));
  SY_RETURN_IF_ERROR(redis.Read("address", &out->redis_address, /*required=*/true));
  SY_RETURN_IF_ERROR(ValidateHostPort(out->redis_address,
                                      absl::StrCat(file.string(), ": ", redis.Path("address"))));
  if (absl::EndsWith(out->redis_address, ":0")) return redis.Error("address", "port 0 is no port");
  SY_RETURN_IF_ERROR(ReadClientTls(redis, "tls", file, &out->redis_tls));
  std::string password_file;
  SY_RETURN_IF_ERROR(redis.Read("password_file", &password_file));
  if (redis.Has("password_file")) {
    if (password_file.empty()) return redis.Error("password_file", "must not be empty");
    const std::filesystem::path path = ResolveConfigPath(file, password_file);
    std::ifstream in(path);
    if (!in || !std::getline(in, out->redis_password) || out->redis_password.empty()) {
      return redis.Error("password_file", absl::StrCat("cannot read a password (first line) from '",
                                                       path.string(), "'"));
    }
  }
  SY_RETURN_IF_ERROR(redis.Read("key_prefix", &out->redis_key_prefix));
  if (out->redis_key_prefix.size() > 256 ||
      !std::all_of(out->redis_key_prefix.begin(), out->redis_key_prefix.end(),
                   [](char ch) { return ch > 0x20 && ch < 0x7f; })) {
    return redis.Error("key_prefix", "must be at most 256 printable ASCII characters, no spaces");
  }
  SY_RETURN_IF_ERROR(redis.Read("timeout_ms", &out->redis_timeout_ms));
  if (out->redis_timeout_ms < 1 || out->redis_timeout_ms > 60000) {
    return redis.Error("timeout_ms", "must be 1..60000");
  }
  SY_RETURN_IF_ERROR(redis.Read("lease_ttl_ms", &out->redis_lease_ttl_ms));
  if (out->redis_lease_ttl_ms < 300 || out->redis_lease_ttl_ms > 3600000 ||
      out->redis_lease_ttl_ms < 3 * out->redis_timeout_ms) {
    return redis.Error("lease_ttl_ms",
                       "must be 300..3600000 and at least 3 times timeout_ms (a gateway renews "
                       "its leases every third of it)");
  }
  return absl::OkStatus();
}

// `usage_ledger` as an object: {"backend": "postgres", "dsn", "password_file", "journal",
// "connect_timeout_ms", "statement_timeout_ms", "retry_interval_ms", "commit"}. The DSN is checked
// for its shape and for a password here; libpq parses it fully when the gateway starts.
absl::Status ReadPostgresLedger(const ConfigObject& ledger, const std::filesystem::path& file,
                                const std::string& gateway_id, PostgresLedgerConfig* out) {
  SY_RETURN_IF_ERROR(
      ledger.CheckKeys({"backend", "dsn", "password_file", "journal", "connect_timeout_ms",
                        "statement_timeout_ms", "retry_interval_ms", "commit"}));
  std::string backend;
  SY_RETURN_IF_ERROR(ledger.Read("backend", &backend, /*required=*/true));
  if (backend != "postgres") {
    return ledger.Error("backend",
                        "must be \"postgres\" (for SQLite give usage_ledger as a path string)");
  }
  SY_RETURN_IF_ERROR(ledger.Read("dsn", &out->dsn, /*required=*/true));
  absl::string_view rest = out->dsn;
  if (!absl::ConsumePrefix(&rest, "postgresql://") && !absl::ConsumePrefix(&rest, "postgres://")) {
    return ledger.Error("dsn", "must be a postgresql://USER@HOST:PORT/DB connection URI");
  }
  const absl::string_view authority = rest.substr(0, rest.find_first_of("/?"));
  const size_t at = authority.rfind('@');
  if ((at != absl::string_view::npos &&
       authority.substr(0, at).find(':') != absl::string_view::npos) ||
      absl::StrContains(rest, "password=")) {
    // The DSN is logged and sits in a config file: the password goes in password_file.
    return ledger.Error("dsn", "must not carry a password: put it in password_file");
  }
  std::string password_file;
  SY_RETURN_IF_ERROR(ledger.Read("password_file", &password_file));
  if (ledger.Has("password_file")) {
    if (password_file.empty()) return ledger.Error("password_file", "must not be empty");
    const std::filesystem::path path = ResolveConfigPath(file, password_file);
    std::error_code ec;
    const auto perms = std::filesystem::status(path, ec).permissions();
    // As libpq does for ~/.pgpass: a password every local user can read is no secret.
    if (!ec && (perms & (std::filesystem::perms::others_read |
                         std::filesystem::perms::others_write)) != std::filesystem::perms::none) {
      return ledger.Error("password_file",
                          absl::StrCat("'", path.string(),
                                       "' is readable or writable by every user: chmod 600 it "
                                       "(or 640 with the gateway's group)"));
    }
    std::ifstream in(path);
    if (!in || !std::getline(in, out->password) || out->password.empty()) {
      out->password.clear();
      return ledger.Error(
          "password_file",
          absl::StrCat("cannot read a password (first line) from '", path.string(), "'"));
    }
  }
  std::string journal;
  SY_RETURN_IF_ERROR(ledger.Read("journal", &journal));
  if (ledger.Has("journal") && journal.empty()) {
    return ledger.Error("journal", "must not be empty (omit it for the default)");
  }
  if (journal.empty()) {
    // One journal per gateway by default, even when several share a config folder.
    std::string name = gateway_id;
    for (char& ch : name) {
      if (!absl::ascii_isalnum(ch) && ch != '-' && ch != '_' && ch != '.') ch = '_';
    }
    journal = absl::StrCat("usage-journal-", name, ".db");
  }
  out->journal = ResolveConfigPath(file, journal);
  std::string commit = "postgres";
  SY_RETURN_IF_ERROR(ledger.Read("commit", &commit));
  if (commit != "postgres" && commit != "local") {
    return ledger.Error("commit", "must be \"postgres\" or \"local\"");
  }
  out->commit_local = commit == "local";
  SY_RETURN_IF_ERROR(ledger.Read("connect_timeout_ms", &out->connect_timeout_ms));
  SY_RETURN_IF_ERROR(ledger.Read("statement_timeout_ms", &out->statement_timeout_ms));
  SY_RETURN_IF_ERROR(ledger.Read("retry_interval_ms", &out->retry_interval_ms));
  for (const auto& [key, value] :
       {std::pair<const char*, int>{"connect_timeout_ms", out->connect_timeout_ms},
        {"statement_timeout_ms", out->statement_timeout_ms},
        {"retry_interval_ms", out->retry_interval_ms}}) {
    if (value < 10 || value > 600000) return ledger.Error(key, "must be 10..600000");
  }
  return absl::OkStatus();
}

// The `node_identity` block: {"mode": "off" | "verify" | "require", "policy_file",
// "bindings_file"}; the files relative to the config file.
absl::Status ReadNodeIdentity(const ConfigObject& root, const std::filesystem::path& file,
                              NodeIdentityConfig* out) {
  if (!root.Has("node_identity")) return absl::OkStatus();
  ConfigObject block = root.Child("node_identity");
  SY_RETURN_IF_ERROR(block.CheckKeys({"mode", "policy_file", "bindings_file"}));
  std::string mode = "verify", policy_file, bindings_file;
  SY_RETURN_IF_ERROR(block.Read("mode", &mode));
  if (mode == "off") {
    out->mode = NodeIdentityConfig::Mode::kOff;
  } else if (mode == "verify") {
    out->mode = NodeIdentityConfig::Mode::kVerify;
  } else if (mode == "require") {
    out->mode = NodeIdentityConfig::Mode::kRequire;
  } else {
    return block.Error("mode", "must be \"off\", \"verify\" or \"require\"");
  }
  SY_RETURN_IF_ERROR(block.Read("policy_file", &policy_file));
  SY_RETURN_IF_ERROR(block.Read("bindings_file", &bindings_file));
  if (block.Has("policy_file") && policy_file.empty()) {
    return block.Error("policy_file", "must not be empty (omit it for no lists)");
  }
  if (block.Has("bindings_file") && bindings_file.empty()) {
    return block.Error("bindings_file", "must not be empty (omit it to keep bindings in memory)");
  }
  if (!policy_file.empty()) out->policy_file = ResolveConfigPath(file, policy_file);
  if (!bindings_file.empty()) out->bindings_file = ResolveConfigPath(file, bindings_file);
  return absl::OkStatus();
}

}  // namespace

// The top-level fields a config file may have.
// clang-format off
constexpr absl::string_view kGatewayConfigFields[] = {
    "gateway_id", "listen", "usage_ledger", "usage_admin_key_ids", "static_orchestrators",
    "poll_interval_ms", "heartbeat_interval_ms", "node_timeout_ms", "max_attempts",
    "default_timeout_ms", "attempt_timeout_ms", "max_price_per_unit", "max_queued_jobs", "routing",
    "max_message_bytes", "log", "stream_idle_timeout_ms", "http_listen", "admin_listen",
    "http_max_connections", "http_max_connections_per_ip", "api_keys_file", "registration_secret",
    "registration_secret_file", "node_secrets_file", "node_id_from_client_cert", "tls", "http_tls",
    "orchestrator_tls", "live_video", "state", "node_identity", "verification"};
// clang-format on

bool VerifiablePipeline(const std::string& name) {
  return name == pipelines::kUpscale || name == pipelines::kTextToImage ||
         name == pipelines::kImageToImage || name == pipelines::kImageToVideo ||
         name == pipelines::kSegmentAnything2 || name == pipelines::kAudioToText ||
         name == pipelines::kImageToText || name == pipelines::kTextToSpeech ||
         name == pipelines::kTranscode;
}

namespace {

absl::Status ReadVerification(const ConfigObject& root, VerificationConfig* out) {
  if (!root.Has("verification")) return absl::OkStatus();
  ConfigObject v = root.Child("verification");
  SY_RETURN_IF_ERROR(v.CheckKeys({"sample_rate", "pipelines", "deterministic_models", "eject_after",
                                  "eject_seconds", "max_in_flight", "timeout_ms", "hardware"}));
  if (v.Has("hardware")) {
    ConfigObject h = v.Child("hardware");
    SY_RETURN_IF_ERROR(
        h.CheckKeys({"enabled", "interval_s", "gpu_max_ms", "video_max_ms", "failed_capacity"}));
    SY_RETURN_IF_ERROR(h.Read("enabled", &out->hardware.enabled));
    SY_RETURN_IF_ERROR(h.Read("interval_s", &out->hardware.interval_s));
    if (out->hardware.interval_s < 10 || out->hardware.interval_s > 7 * 86400) {
      return h.Error("interval_s", "must be 10..604800 (seconds between checks of one node)");
    }
    SY_RETURN_IF_ERROR(h.Read("gpu_max_ms", &out->hardware.gpu_max_ms));
    if (out->hardware.gpu_max_ms < 1 || out->hardware.gpu_max_ms > 60000) {
      return h.Error("gpu_max_ms", "must be 1..60000");
    }
    SY_RETURN_IF_ERROR(h.Read("video_max_ms", &out->hardware.video_max_ms));
    if (out->hardware.video_max_ms < 1 || out->hardware.video_max_ms > 60000) {
      return h.Error("video_max_ms", "must be 1..60000");
    }
    SY_RETURN_IF_ERROR(h.Read("failed_capacity", &out->hardware.failed_capacity));
    if (out->hardware.failed_capacity < 1 || out->hardware.failed_capacity > 1024) {
      return h.Error("failed_capacity", "must be 1..1024");
    }
  }
  SY_RETURN_IF_ERROR(v.Read("sample_rate", &out->sample_rate));
  if (!(out->sample_rate >= 0 && out->sample_rate <= 1)) {
    return v.Error("sample_rate", "must be 0..1 (the share of jobs re-run on another node)");
  }
  SY_RETURN_IF_ERROR(v.Read("deterministic_models", &out->deterministic_models));
  if (out->deterministic_models.size() > 1000) {
    return v.Error("deterministic_models", "at most 1000 models");
  }
  for (const std::string& m : out->deterministic_models) {
    if (m.empty() || m.size() > 256) {
      return v.Error("deterministic_models", "each model id must be 1..256 bytes");
    }
  }
  SY_RETURN_IF_ERROR(v.Read("eject_after", &out->eject_after));
  if (out->eject_after < 1 || out->eject_after > 1000) {
    return v.Error("eject_after", "must be 1..1000 (mismatches before a node is ejected)");
  }
  SY_RETURN_IF_ERROR(v.Read("eject_seconds", &out->eject_seconds));
  if (out->eject_seconds < 1 || out->eject_seconds > 365 * 86400) {
    return v.Error("eject_seconds", "must be 1..31536000 (one year)");
  }
  SY_RETURN_IF_ERROR(v.Read("max_in_flight", &out->max_in_flight));
  if (out->max_in_flight < 0 || out->max_in_flight > 256) {
    return v.Error("max_in_flight", "must be 0..256 (0: no checks)");
  }
  SY_RETURN_IF_ERROR(v.Read("timeout_ms", &out->timeout_ms));
  if (out->timeout_ms < 100 || out->timeout_ms > 3600000) {
    return v.Error("timeout_ms", "must be 100..3600000");
  }
  if (!v.Has("pipelines")) return absl::OkStatus();
  ConfigObject pipes = v.Child("pipelines");
  if (!pipes.json().is_object()) {
    return pipes.Error("",
                       "must be an object: pipeline -> {sample_rate, max_abs_diff, min_psnr_db}");
  }
  for (const auto& item : pipes.json().items()) {
    const std::string& name = item.key();
    if (!VerifiablePipeline(name)) {
      return pipes.Error(name,
                         "is not a pipeline whose results can be spot-checked (upscale, "
                         "text-to-image, image-to-image, image-to-video, "
                         "segment-anything-2, audio-to-text, image-to-text, "
                         "text-to-speech, transcode)");
    }
    ConfigObject p = pipes.Child(name);
    SY_RETURN_IF_ERROR(p.CheckKeys({"sample_rate", "max_abs_diff", "min_psnr_db"}));
    VerificationPipeline vp = out->For(name);  // the defaults
    SY_RETURN_IF_ERROR(p.Read("sample_rate", &vp.sample_rate));
    SY_RETURN_IF_ERROR(p.Read("max_abs_diff", &vp.max_abs_diff));
    SY_RETURN_IF_ERROR(p.Read("min_psnr_db", &vp.min_psnr_db));
    if (!(vp.sample_rate >= 0 && vp.sample_rate <= 1))
      return p.Error("sample_rate", "must be 0..1");
    if (vp.max_abs_diff < 0 || vp.max_abs_diff > 255) {
      return p.Error("max_abs_diff", "must be 0..255 (per 8-bit channel)");
    }
    if (!(vp.min_psnr_db >= 0 && vp.min_psnr_db <= 200)) {
      return p.Error("min_psnr_db", "must be 0..200 (0: not checked)");
    }
    out->pipelines[name] = vp;
  }
  return absl::OkStatus();
}

}  // namespace

VerificationPipeline VerificationConfig::For(const std::string& pipeline) const {
  auto it = pipelines.find(pipeline);
  if (it != pipelines.end()) return it->second;
  VerificationPipeline p;
  p.sample_rate = sample_rate;
  if (pipeline == pipelines::kTranscode) p.min_psnr_db = kDefaultTranscodeMinPsnrDb;
  return p;
}

absl::StatusOr<GatewayConfig> ParseGatewayConfig(const std::string& json_text,
                                                 const std::filesystem::path& file) {
  auto parsed = ParseConfigJson(json_text, file, kGatewayConfigFields);
  if (!parsed.ok()) return parsed.status();
  ConfigObject root(*parsed, file.string(), "");
  GatewayConfig c;
  c.file = file;
  SY_RETURN_IF_ERROR(root.Read("gateway_id", &c.gateway_id));
  SY_RETURN_IF_ERROR(root.Read("listen", &c.listen));
  SY_RETURN_IF_ERROR(root.Read("static_orchestrators", &c.static_orchestrators));
  SY_RETURN_IF_ERROR(root.Read("poll_interval_ms", &c.poll_interval_ms));
  SY_RETURN_IF_ERROR(root.Read("heartbeat_interval_ms", &c.heartbeat_interval_ms));
  SY_RETURN_IF_ERROR(root.Read("node_timeout_ms", &c.node_timeout_ms));
  SY_RETURN_IF_ERROR(root.Read("max_attempts", &c.max_attempts));
  SY_RETURN_IF_ERROR(root.Read("max_queued_jobs", &c.max_queued_jobs));
  SY_RETURN_IF_ERROR(root.Read("stream_idle_timeout_ms", &c.stream_idle_timeout_ms));
  SY_RETURN_IF_ERROR(root.Read("http_listen", &c.http_listen));
  SY_RETURN_IF_ERROR(root.Read("admin_listen", &c.admin_listen));
  SY_RETURN_IF_ERROR(root.Read("http_max_connections", &c.http_max_connections));
  SY_RETURN_IF_ERROR(root.Read("http_max_connections_per_ip", &c.http_max_connections_per_ip));
  if (c.http_max_connections < 0) return root.Error("http_max_connections", "must be >= 0");
  if (c.http_max_connections_per_ip < 0) {
    return root.Error("http_max_connections_per_ip", "must be >= 0");
  }
  SY_RETURN_IF_ERROR(root.Read("usage_admin_key_ids", &c.usage_admin_key_ids));
  if (root.Has("usage_ledger") && root.Child("usage_ledger").json().is_object()) {
    SY_RETURN_IF_ERROR(ReadPostgresLedger(root.Child("usage_ledger"), file, c.gateway_id,
                                          &c.usage_ledger_postgres));
  } else {
    std::string ledger;
    SY_RETURN_IF_ERROR(root.Read("usage_ledger", &ledger));
    if (root.Has("usage_ledger") && ledger.empty()) {
      return root.Error("usage_ledger", "must not be empty (omit it to keep no ledger)");
    }
    std::filesystem::path path(ledger);
    if (!ledger.empty()) {
      c.usage_ledger = path.is_relative() && !file.empty() ? file.parent_path() / path : path;
    }
  }
  {
    std::string keys_file, secret_file;
    SY_RETURN_IF_ERROR(root.Read("api_keys_file", &keys_file));
    SY_RETURN_IF_ERROR(root.Read("registration_secret", &c.registration_secret));
    SY_RETURN_IF_ERROR(root.Read("registration_secret_file", &secret_file));
    if (root.Has("api_keys_file") && keys_file.empty()) {
      return root.Error("api_keys_file", "must not be empty (omit it to turn keys off)");
    }
    auto resolve = [&](const std::string& p) {
      std::filesystem::path path(p);
      return path.is_relative() && !file.empty() ? file.parent_path() / path : path;
    };
    if (!keys_file.empty()) c.api_keys_file = resolve(keys_file);
    if (root.Has("registration_secret") && c.registration_secret.empty()) {
      return root.Error("registration_secret", "must not be empty (omit it for open registration)");
    }
    if (!secret_file.empty()) {
      if (!c.registration_secret.empty()) {
        return root.Error("registration_secret_file", "give registration_secret or this, not both");
      }
      std::ifstream in(resolve(secret_file));
      if (!in || !std::getline(in, c.registration_secret) || c.registration_secret.empty()) {
        return root.Error("registration_secret_file",
                          absl::StrCat("cannot read a secret (first line) from '",
                                       resolve(secret_file).string(), "'"));
      }
    }
  }
  {
    std::string secrets_file;
    SY_RETURN_IF_ERROR(root.Read("node_secrets_file", &secrets_file));
    if (root.Has("node_secrets_file")) {
      if (secrets_file.empty()) {
        return root.Error("node_secrets_file", "must not be empty (omit it for none)");
      }
      std::filesystem::path path(secrets_file);
      c.node_secrets_file = path.is_relative() && !file.empty() ? file.parent_path() / path : path;
      auto secrets = LoadNodeSecrets(c.node_secrets_file);
      if (!secrets.ok()) return secrets.status();
      c.node_secrets = *std::move(secrets);
    }
  }
  SY_RETURN_IF_ERROR(root.Read("node_id_from_client_cert", &c.node_id_from_client_cert));
  SY_RETURN_IF_ERROR(ReadTlsServerConfig(root, "tls", &c.tls));
  if (c.node_id_from_client_cert && !c.tls.require_client_cert) {
    return root.Error("node_id_from_client_cert",
                      "needs tls with require_client_cert (a certificate to read the id from)");
  }
  SY_RETURN_IF_ERROR(ReadTlsServerConfig(root, "http_tls", &c.http_tls));
  SY_RETURN_IF_ERROR(ReadTlsClientConfig(root, "orchestrator_tls", &c.orchestrator_tls));
  if (!c.admin_listen.empty() && c.admin_listen == c.http_listen &&
      !absl::EndsWith(c.admin_listen, ":0")) {
    return root.Error("admin_listen", "must not be the same address as http_listen");
  }
  if (c.http_tls.enabled() && c.http_listen.empty()) {
    return root.Error("http_tls", "is set but http_listen is empty (no HTTP port)");
  }
  if (c.stream_idle_timeout_ms < 100) return root.Error("stream_idle_timeout_ms", "must be >= 100");
  SY_RETURN_IF_ERROR(root.ReadMap(
      "attempt_timeout_ms", "pipeline -> milliseconds", &c.attempt_timeout_ms,
      [](const ConfigObject& o, const std::string& pipeline, int ms) {
        return ms < 10 ? o.Error(pipeline, "must be >= 10 (milliseconds)") : absl::OkStatus();
      }));
  SY_RETURN_IF_ERROR(root.ReadMap(
      "max_price_per_unit", "\"pipeline\" or \"pipeline/model\" -> price", &c.max_price_per_unit,
      [](const ConfigObject& o, const std::string& key, double cap) {
        return cap <= 0 ? o.Error(key, "must be > 0") : absl::OkStatus();
      }));
  ConfigObject routing = root.Child("routing");
  SY_RETURN_IF_ERROR(routing.CheckKeys({"eject_after_failures", "eject_base_ms", "eject_max_ms",
                                        "max_ejected_fraction", "retry_budget_ratio",
                                        "retry_budget_min_per_second", "new_node_share"}));
  RouterOptions& r = c.routing;
  int eject_base_ms = static_cast<int>(absl::ToInt64Milliseconds(r.eject_base));
  int eject_max_ms = static_cast<int>(absl::ToInt64Milliseconds(r.eject_max));
  SY_RETURN_IF_ERROR(routing.Read("eject_after_failures", &r.eject_after_failures));
  SY_RETURN_IF_ERROR(routing.Read("eject_base_ms", &eject_base_ms));
  SY_RETURN_IF_ERROR(routing.Read("eject_max_ms", &eject_max_ms));
  SY_RETURN_IF_ERROR(routing.Read("max_ejected_fraction", &r.max_ejected_fraction));
  SY_RETURN_IF_ERROR(routing.Read("retry_budget_ratio", &r.retry_budget_ratio));
  SY_RETURN_IF_ERROR(routing.Read("retry_budget_min_per_second", &r.retry_budget_min_per_second));
  SY_RETURN_IF_ERROR(routing.Read("new_node_share", &r.new_node_share));
  if (r.eject_after_failures < 1) return routing.Error("eject_after_failures", "must be >= 1");
  if (eject_base_ms < 10) return routing.Error("eject_base_ms", "must be >= 10");
  if (eject_max_ms < eject_base_ms)
    return routing.Error("eject_max_ms", "must be >= eject_base_ms");
  if (r.max_ejected_fraction < 0 || r.max_ejected_fraction > 1) {
    return routing.Error("max_ejected_fraction", "must be 0..1");
  }
  if (r.retry_budget_ratio < 0 || r.retry_budget_ratio > 10) {
    return routing.Error("retry_budget_ratio", "must be 0..10");
  }
  if (r.retry_budget_min_per_second < 0) {
    return routing.Error("retry_budget_min_per_second", "must be >= 0");
  }
  if (r.new_node_share < 0 || r.new_node_share > 1) {
    return routing.Error("new_node_share", "must be 0..1");
  }
  r.eject_base = absl::Milliseconds(eject_base_ms);
  r.eject_max = absl::Milliseconds(eject_max_ms);
  {
    ConfigObject live = root.Child("live_video");
    SY_RETURN_IF_ERROR(live.CheckKeys({"allowed_hosts", "max_sessions", "max_sessions_per_key"}));
    std::vector<std::string> allowed_hosts;
    SY_RETURN_IF_ERROR(live.Read("allowed_hosts", &allowed_hosts));
    SY_RETURN_IF_ERROR(live.Read("max_sessions", &c.live_video.max_sessions));
    SY_RETURN_IF_ERROR(live.Read("max_sessions_per_key", &c.live_video.max_sessions_per_key));
    if (c.live_video.max_sessions < 1) return live.Error("max_sessions", "must be >= 1");
    if (c.live_video.max_sessions_per_key < 1) {
      return live.Error("max_sessions_per_key", "must be >= 1");
    }
    auto egress = EgressPolicy::Create(allowed_hosts);
    // The message names allowed_hosts[i] and the entry.
    if (!egress.ok()) return live.Error("", egress.status().message());
    c.live_video.egress = *std::move(egress);
  }
  SY_RETURN_IF_ERROR(ReadSharedState(root, file, &c.state));
  if (!c.state.peers.empty() && c.http_listen.empty()) {
    return root.Error("state", "peers: the internal calls go to http_listen, which is empty");
  }
  if (!c.state.peers.empty() && c.http_tls.enabled() && !c.state.peer_tls.enabled) {
    // This gateway's clients use HTTPS, and so do its peers' (one config for all): internal calls
    // in plain HTTP would carry the secret and clients' keys in clear text.
    return root.Error("state",
                      "peers: with http_tls (HTTPS on http_listen) the peers must be "
                      "\"https://HOST:PORT\" with state.peer_tls (the CA their certificates chain "
                      "to); plain-HTTP internal calls would carry the secret and clients' API keys "
                      "in clear text");
  }

  SY_RETURN_IF_ERROR(ReadNodeIdentity(root, file, &c.node_identity));
  SY_RETURN_IF_ERROR(ReadVerification(root, &c.verification));
  SY_RETURN_IF_ERROR(root.Read("default_timeout_ms", &c.default_timeout_ms));
  SY_RETURN_IF_ERROR(root.Read("max_message_bytes", &c.max_message_bytes));
  ConfigObject log = root.Child("log");
  SY_RETURN_IF_ERROR(log.CheckKeys({"level", "format"}));
  SY_RETURN_IF_ERROR(log.Read("level", &c.log_level));
  SY_RETURN_IF_ERROR(log.Read("format", &c.log_format));

  if (c.gateway_id.empty()) return root.Error("gateway_id", "must not be empty");
  SY_RETURN_IF_ERROR(ValidateHostPort(c.listen, absl::StrCat(file.string(), ": listen")));
  for (size_t i = 0; i < c.static_orchestrators.size(); ++i) {
    SY_RETURN_IF_ERROR(ValidateHostPort(
        c.static_orchestrators[i], absl::StrCat(file.string(), ": static_orchestrators[", i, "]")));
  }
  if (c.poll_interval_ms < 100) return root.Error("poll_interval_ms", "must be >= 100");
  if (c.heartbeat_interval_ms < 50) return root.Error("heartbeat_interval_ms", "must be >= 50");
  if (c.node_timeout_ms < 2 * c.heartbeat_interval_ms) {
    return root.Error("node_timeout_ms", "must be at least twice heartbeat_interval_ms");
  }
  if (c.max_queued_jobs < 0) return root.Error("max_queued_jobs", "must be >= 0");
  if (c.max_attempts < 1 || c.max_attempts > 20) return root.Error("max_attempts", "must be 1..20");
  if (c.default_timeout_ms < 100) return root.Error("default_timeout_ms", "must be >= 100");
  if (c.max_message_bytes < (1 << 20) || c.max_message_bytes > (1LL << 31) - 1) {
    return root.Error("max_message_bytes", "must be 1 MiB .. 2 GiB");
  }
  return c;
}

int GatewayConfig::AttemptTimeoutMs(const std::string& pipeline) const {
  auto it = attempt_timeout_ms.find(pipeline);
  if (it == attempt_timeout_ms.end()) it = attempt_timeout_ms.find("default");
  return it == attempt_timeout_ms.end() ? default_timeout_ms : it->second;
}

double GatewayConfig::PriceCap(const std::string& pipeline, const std::string& model_id) const {
  auto it = max_price_per_unit.find(absl::StrCat(pipeline, "/", model_id));
  if (it == max_price_per_unit.end()) it = max_price_per_unit.find(pipeline);
  return it == max_price_per_unit.end() ? 0 : it->second;
}

absl::StatusOr<GatewayConfig> LoadGatewayConfig(const std::filesystem::path& file) {
  auto json = LoadJsonFile(file);
  if (!json.ok()) return json.status();
  return ParseGatewayConfig(json->dump(), file);
}

}  // namespace switchyard::gateway
