// Unit tests for the gateway's JSON configuration (gateway/gateway_config.h).
#include "gateway/gateway_config.h"

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "support/media_fixtures.h"
#include "support/tls_certs.h"

namespace switchyard::gateway {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;
using ::testing::HasSubstr;

const fs::path kFile = "/etc/switchyard/gateway.json";

absl::StatusOr<GatewayConfig> Parse(const Json& json) {
  return ParseGatewayConfig(json.dump(), kFile);
}

void ExpectError(const Json& json, const std::string& field) {
  auto c = Parse(json);
  ASSERT_FALSE(c.ok()) << "accepted: " << json.dump();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr(kFile.string())) << json.dump();
  EXPECT_THAT(c.status().message(), HasSubstr(field)) << json.dump();
}

TEST(GatewayConfigTest, Defaults) {
  auto c = Parse(Json::object());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->file, kFile);
  EXPECT_EQ(c->gateway_id, "gateway");
  EXPECT_EQ(c->listen, "127.0.0.1:50051");
  EXPECT_TRUE(c->static_orchestrators.empty());
  EXPECT_EQ(c->poll_interval_ms, 1000);
  EXPECT_EQ(c->heartbeat_interval_ms, 250);
  EXPECT_EQ(c->max_attempts, 3);
  EXPECT_EQ(c->default_timeout_ms, 120000);
  EXPECT_EQ(c->max_message_bytes, 256 << 20);
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->log_format, "text");
}

TEST(GatewayConfigTest, FullConfig) {
  auto c = Parse(Json::parse(R"({
    "gateway_id": "gw-1",
    "listen": "0.0.0.0:6000",
    "static_orchestrators": ["10.0.0.2:50061", "orch.local:50062"],
    "poll_interval_ms": 100,
    "heartbeat_interval_ms": 50,
    "max_attempts": 20,
    "default_timeout_ms": 100,
    "max_message_bytes": 1048576,
    "log": {"level": "warn", "format": "json"}
  })"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->gateway_id, "gw-1");
  EXPECT_EQ(c->listen, "0.0.0.0:6000");
  EXPECT_EQ(c->static_orchestrators,
            (std::vector<std::string>{"10.0.0.2:50061", "orch.local:50062"}));
  EXPECT_EQ(c->poll_interval_ms, 100);
  EXPECT_EQ(c->heartbeat_interval_ms, 50);
  EXPECT_EQ(c->max_attempts, 20);
  EXPECT_EQ(c->default_timeout_ms, 100);
  EXPECT_EQ(c->max_message_bytes, 1 << 20);
  EXPECT_EQ(c->log_level, "warn");
  EXPECT_EQ(c->log_format, "json");
}

TEST(GatewayConfigTest, InvalidJsonAndNonObject) {
  auto c = ParseGatewayConfig("{", kFile);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr(kFile.string()));
  EXPECT_EQ(ParseGatewayConfig("[1]", kFile).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GatewayConfigTest, UnknownField) {
  ExpectError(Json::parse(R"({"gateway": "x"})"), "gateway");
  EXPECT_THAT(Parse(Json::parse(R"({"gateway": "x"})")).status().message(),
              HasSubstr("unknown field"));
  ExpectError(Json::parse(R"({"log": {"lvl": "debug"}})"), "log.lvl");
}

TEST(GatewayConfigTest, WrongTypes) {
  ExpectError(Json::parse(R"({"gateway_id": 1})"), "gateway_id");
  ExpectError(Json::parse(R"({"max_attempts": "3"})"), "max_attempts");
  ExpectError(Json::parse(R"({"static_orchestrators": "10.0.0.2:50061"})"), "static_orchestrators");
  ExpectError(Json::parse(R"({"static_orchestrators": [1]})"), "static_orchestrators");
  ExpectError(Json::parse(R"({"log": "debug"})"), "log");
}

TEST(GatewayConfigTest, BadValues) {
  ExpectError(Json::parse(R"({"gateway_id": ""})"), "gateway_id");
  ExpectError(Json::parse(R"({"listen": "6000"})"), "listen");
  ExpectError(Json::parse(R"({"listen": "host:70000"})"), "listen");
  ExpectError(Json::parse(R"({"poll_interval_ms": 99})"), "poll_interval_ms");
  ExpectError(Json::parse(R"({"heartbeat_interval_ms": 49})"), "heartbeat_interval_ms");
  ExpectError(Json::parse(R"({"max_attempts": 0})"), "max_attempts");
  ExpectError(Json::parse(R"({"max_attempts": 21})"), "max_attempts");
  ExpectError(Json::parse(R"({"default_timeout_ms": 99})"), "default_timeout_ms");
  ExpectError(Json::parse(R"({"max_message_bytes": 1048575})"), "max_message_bytes");
  ExpectError(Json::parse(R"({"max_message_bytes": 2147483648})"), "max_message_bytes");
}

TEST(GatewayConfigTest, StaticOrchestratorsAreValidated) {
  ExpectError(Json::parse(R"({"static_orchestrators": ["10.0.0.2:50061", "10.0.0.3"]})"),
              "static_orchestrators[1]");
  ExpectError(Json::parse(R"({"static_orchestrators": ["10.0.0.2:x"]})"),
              "static_orchestrators[0]");
  ExpectError(Json::parse(R"({"static_orchestrators": [""]})"), "static_orchestrators[0]");
  EXPECT_TRUE(Parse(Json::parse(R"({"static_orchestrators": []})")).ok());
}

// The HTTP front door (docs/security.md): the operators' port on loopback by default, connection
// caps with safe defaults, and the values that make no sense refused.
TEST(GatewayConfigTest, AdminListenAndConnectionCaps) {
  auto d = Parse(Json::object());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->admin_listen, "127.0.0.1:8934");
  EXPECT_EQ(d->http_max_connections, 1024);
  EXPECT_EQ(d->http_max_connections_per_ip, 64);
  auto c = Parse(
      Json{{"admin_listen", ""}, {"http_max_connections", 0}, {"http_max_connections_per_ip", 8}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->admin_listen, "");
  EXPECT_EQ(c->http_max_connections, 0);
  EXPECT_EQ(c->http_max_connections_per_ip, 8);
  // Both ephemeral is fine (tests); one fixed address for both is not.
  EXPECT_TRUE(Parse(Json{{"http_listen", "127.0.0.1:0"}, {"admin_listen", "127.0.0.1:0"}}).ok());
  ExpectError(Json{{"http_listen", "0.0.0.0:8935"}, {"admin_listen", "0.0.0.0:8935"}},
              "admin_listen");
  ExpectError(Json{{"http_max_connections", -1}}, "http_max_connections");
  ExpectError(Json{{"http_max_connections_per_ip", -1}}, "http_max_connections_per_ip");
  ExpectError(Json{{"admin_listen", 8934}}, "admin_listen");
}

TEST(GatewayConfigTest, LoadFromFile) {
  TempDir dir;
  const fs::path file = dir.path() / "gw.json";
  WriteFile(file, R"({"gateway_id": "from-file", "max_attempts": 5})");
  auto c = LoadGatewayConfig(file);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->file, file);
  EXPECT_EQ(c->gateway_id, "from-file");
  EXPECT_EQ(c->max_attempts, 5);

  auto missing = LoadGatewayConfig(dir.path() / "none.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  WriteFile(file, R"({"max_attempts": 0})");
  auto bad = LoadGatewayConfig(file);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr(file.string()));
  EXPECT_THAT(bad.status().message(), HasSubstr("max_attempts"));
}

TEST(GatewayConfigTest, RoutingTimeoutsCapsAndQueue) {
  auto d = Parse(Json::object());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->heartbeat_interval_ms, 250);
  EXPECT_EQ(d->node_timeout_ms, 800);
  EXPECT_EQ(d->AttemptTimeoutMs("upscale"), 60000);
  EXPECT_EQ(d->AttemptTimeoutMs("transcode"), 20000);
  EXPECT_EQ(d->PriceCap("upscale", "x"), 0);
  EXPECT_EQ(d->max_queued_jobs, 1000);
  EXPECT_EQ(d->routing.eject_after_failures, 3);

  auto c = Parse(Json{{"node_timeout_ms", 2000},
                      {"attempt_timeout_ms", {{"default", 5000}, {"upscale", 1500}}},
                      {"max_price_per_unit", {{"upscale", 0.5}, {"upscale/esrgan", 0.1}}},
                      {"max_queued_jobs", 7},
                      {"routing",
                       {{"eject_after_failures", 2},
                        {"eject_base_ms", 200},
                        {"eject_max_ms", 5000},
                        {"max_ejected_fraction", 0.25},
                        {"retry_budget_ratio", 0.1},
                        {"retry_budget_min_per_second", 1.5},
                        {"new_node_share", 0.05}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node_timeout_ms, 2000);
  EXPECT_EQ(c->AttemptTimeoutMs("upscale"), 1500);
  EXPECT_EQ(c->AttemptTimeoutMs("llm"), 5000);
  EXPECT_EQ(c->PriceCap("upscale", "esrgan"), 0.1);  // the more specific key wins
  EXPECT_EQ(c->PriceCap("upscale", "other"), 0.5);
  EXPECT_EQ(c->PriceCap("llm", "esrgan"), 0);
  EXPECT_EQ(c->max_queued_jobs, 7);
  EXPECT_EQ(c->routing.eject_after_failures, 2);
  EXPECT_EQ(c->routing.eject_base, absl::Milliseconds(200));
  EXPECT_EQ(c->routing.eject_max, absl::Seconds(5));
  EXPECT_EQ(c->routing.max_ejected_fraction, 0.25);
  EXPECT_EQ(c->routing.retry_budget_ratio, 0.1);
  EXPECT_EQ(c->routing.retry_budget_min_per_second, 1.5);
  EXPECT_EQ(c->routing.new_node_share, 0.05);

  ExpectError(Json{{"node_timeout_ms", 400}}, "node_timeout_ms");  // < 2 heartbeats
  ExpectError(Json{{"attempt_timeout_ms", 5}}, "attempt_timeout_ms");
  ExpectError(Json{{"attempt_timeout_ms", {{"upscale", 1}}}}, "attempt_timeout_ms.upscale");
  ExpectError(Json{{"max_price_per_unit", {{"upscale", -1}}}}, "max_price_per_unit.upscale");
  ExpectError(Json{{"max_queued_jobs", -1}}, "max_queued_jobs");
  ExpectError(Json{{"routing", {{"eject_after_failures", 0}}}}, "routing.eject_after_failures");
  ExpectError(Json{{"routing", {{"eject_max_ms", 500}}}}, "routing.eject_max_ms");
  ExpectError(Json{{"routing", {{"max_ejected_fraction", 1.5}}}}, "routing.max_ejected_fraction");
  ExpectError(Json{{"routing", {{"new_node_share", -0.1}}}}, "routing.new_node_share");
  ExpectError(Json{{"routing", {{"surprise", 1}}}}, "routing.surprise");
}

}  // namespace
}  // namespace switchyard::gateway

namespace switchyard::gateway {
namespace {

// The config the README's quick start runs with must load.
// Issue 18, "Node id takeover": per-node registration secrets (node id -> SHA-256 of secret).
TEST(GatewayConfigTest, NodeSecretsFile) {
  TempDir tmp;
  const std::string a(64, 'a'), b(64, 'B');
  WriteFile(
      tmp.path() / "nodes.json",
      Json({{"nodes", {{{"id", "node-a"}, {"sha256", a}}, {{"id", "node-b"}, {"sha256", b}}}}})
          .dump());
  WriteFile(tmp.path() / "gateway.json", Json({{"node_secrets_file", "nodes.json"}}).dump());
  auto c = LoadGatewayConfig(tmp.path() / "gateway.json");  // relative to the config file
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node_secrets_file, tmp.path() / "nodes.json");
  ASSERT_EQ(c->node_secrets.size(), 2u);
  EXPECT_EQ(c->node_secrets.at("node-a"), a);
  EXPECT_EQ(c->node_secrets.at("node-b"), std::string(64, 'b'));  // lowercased
  EXPECT_TRUE(Parse(Json::object())->node_secrets.empty());

  auto secrets_error = [&](const Json& nodes, const std::string& field) {
    WriteFile(tmp.path() / "bad.json", nodes.dump());
    auto bad = ParseNodeSecrets(nodes.dump(), tmp.path() / "bad.json");
    ASSERT_FALSE(bad.ok()) << nodes.dump();
    EXPECT_THAT(bad.status().message(), HasSubstr("bad.json")) << bad.status();
    EXPECT_THAT(bad.status().message(), HasSubstr(field)) << bad.status();
  };
  secrets_error(Json::object(), "nodes");
  secrets_error(Json({{"nodes", Json::array()}}), "nodes");
  secrets_error(Json({{"nodes", {{{"id", "x"}, {"sha256", "abc"}}}}}), "nodes[0].sha256");
  secrets_error(Json({{"nodes", {{{"id", "x y"}, {"sha256", a}}}}}), "nodes[0].id");
  secrets_error(Json({{"nodes", {{{"id", "x"}, {"sha256", a}}, {{"id", "x"}, {"sha256", b}}}}}),
                "nodes[1].id");
  // One secret for two ids would let either register as the other.
  secrets_error(Json({{"nodes", {{{"id", "x"}, {"sha256", a}}, {{"id", "y"}, {"sha256", a}}}}}),
                "nodes[1].sha256");
  secrets_error(Json({{"nodes", {{{"id", "x"}, {"sha256", a}, {"rate", 1}}}}}), "rate");
  // Nesting is bounded like every JSON from a file.
  std::string deep(100, '[');
  auto too_deep = ParseNodeSecrets(absl::StrCat("{\"nodes\":", deep), tmp.path() / "deep.json");
  EXPECT_FALSE(too_deep.ok());
  ExpectError(Json({{"node_secrets_file", ""}}), "node_secrets_file");
  auto missing = Parse(Json({{"node_secrets_file", (tmp.path() / "none.json").string()}}));
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("none.json"));
  // The certificate binding needs client certificates to read the id from.
  ExpectError(Json({{"node_id_from_client_cert", true}}), "node_id_from_client_cert");
}

TEST(GatewayConfigTest, SharedStateRedis) {
  // Absent: quotas stay in this gateway's memory.
  auto d = Parse(Json::object());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->state.redis_address.empty());
  EXPECT_EQ(d->state.on_unavailable, "local");

  TempDir tmp;
  WriteFile(tmp.path() / "redis.pass", "s3cret\nignored second line\n");
  WriteFile(tmp.path() / "gateway.json",
            Json({{"state",
                   {{"redis",
                     {{"address", "10.0.0.5:6379"},
                      {"password_file", "redis.pass"},  // relative to the config file
                      {"key_prefix", "sy-prod:"},
                      {"timeout_ms", 50},
                      {"lease_ttl_ms", 3000},
                      {"tls", false}}},
                    {"on_unavailable", "deny"}}}})
                .dump());
  auto c = LoadGatewayConfig(tmp.path() / "gateway.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state.redis_address, "10.0.0.5:6379");
  EXPECT_EQ(c->state.redis_password, "s3cret");
  EXPECT_EQ(c->state.redis_key_prefix, "sy-prod:");
  EXPECT_EQ(c->state.redis_timeout_ms, 50);
  EXPECT_EQ(c->state.redis_lease_ttl_ms, 3000);
  EXPECT_EQ(c->state.on_unavailable, "deny");
  auto minimal = Parse(Json({{"state", {{"redis", {{"address", "[::1]:6379"}}}}}}));
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ(minimal->state.redis_key_prefix, "switchyard:");
  EXPECT_EQ(minimal->state.redis_timeout_ms, 200);
  EXPECT_EQ(minimal->state.redis_lease_ttl_ms, 15000);
  EXPECT_EQ(minimal->state.on_unavailable, "local");

  auto redis = [](Json fields) { return Json({{"state", {{"redis", std::move(fields)}}}}); };
  ExpectError(Json({{"state", 1}}), "state");
  ExpectError(Json({{"state", {{"memcached", 1}}}}), "memcached");
  ExpectError(Json({{"state", {{"on_unavailable", "deny"}}}}), "state.on_unavailable");
  ExpectError(Json({{"state", {{"redis", {{"address", "h:1"}}}, {"on_unavailable", "allow"}}}}),
              "state.on_unavailable");
  ExpectError(redis(Json::object()), "state.redis.address: is required");
  ExpectError(redis({{"address", "redis"}}), "state.redis.address");
  ExpectError(redis({{"address", "h:70000"}}), "state.redis.address");
  ExpectError(redis({{"address", "h:0"}}), "state.redis.address");
  ExpectError(redis({{"address", "h:1"}, {"colour", 1}}), "colour");
  ExpectError(redis({{"address", "h:1"}, {"timeout_ms", 0}}), "state.redis.timeout_ms");
  ExpectError(redis({{"address", "h:1"}, {"timeout_ms", "200"}}), "state.redis.timeout_ms");
  ExpectError(redis({{"address", "h:1"}, {"lease_ttl_ms", 100}}), "state.redis.lease_ttl_ms");
  ExpectError(redis({{"address", "h:1"}, {"timeout_ms", 1000}, {"lease_ttl_ms", 2000}}),
              "state.redis.lease_ttl_ms");
  ExpectError(redis({{"address", "h:1"}, {"key_prefix", "a b"}}), "state.redis.key_prefix");
  ExpectError(redis({{"address", "h:1"}, {"password_file", ""}}), "state.redis.password_file");
  ExpectError(redis({{"address", "h:1"}, {"password_file", (tmp.path() / "none").string()}}),
              "state.redis.password_file");
  // TLS needs its files: a bare true is refused, saying what to give instead.
  auto tls = Parse(redis({{"address", "h:1"}, {"tls", true}}));
  ASSERT_FALSE(tls.ok());
  EXPECT_THAT(tls.status().message(), HasSubstr("state.redis.tls"));
  EXPECT_THAT(tls.status().message(), HasSubstr("ca_file"));
  EXPECT_FALSE(minimal->state.redis_tls.enabled);
  EXPECT_FALSE(c->state.redis_tls.enabled);  // "tls": false
}

TEST(GatewayConfigTest, SharedStateRedisTls) {
  TempDir tmp;
  auto certs = ::switchyard::testing::MakeTestCerts(tmp.path());
  ASSERT_TRUE(certs.ok()) << certs.status();
  fs::create_directories(tmp.path() / "conf");
  // Relative paths are the config file's folder's, like password_file.
  fs::copy_file(certs->ca, tmp.path() / "conf" / "redis-ca.pem");
  fs::copy_file(certs->client_cert, tmp.path() / "conf" / "client.pem");
  fs::copy_file(certs->client_key, tmp.path() / "conf" / "client.key");
  const fs::path file = tmp.path() / "conf" / "gateway.json";
  auto load = [&](Json tls) {
    WriteFile(file,
              Json({{"state", {{"redis", {{"address", "10.0.0.5:6380"}, {"tls", tls}}}}}}).dump());
    return LoadGatewayConfig(file);
  };
  auto full = load({{"ca_file", "redis-ca.pem"},
                    {"cert_file", "client.pem"},
                    {"key_file", "client.key"},
                    {"server_name", "redis.internal"}});
  ASSERT_TRUE(full.ok()) << full.status();
  const TlsClientConfig& t = full->state.redis_tls;
  EXPECT_TRUE(t.enabled);
  EXPECT_EQ(t.ca_file, tmp.path() / "conf" / "redis-ca.pem");
  EXPECT_EQ(t.cert_file, tmp.path() / "conf" / "client.pem");
  EXPECT_EQ(t.key_file, tmp.path() / "conf" / "client.key");
  EXPECT_EQ(t.server_name_override, "redis.internal");
  auto ca_only = load({{"ca_file", certs->ca.string()}});  // absolute
  ASSERT_TRUE(ca_only.ok()) << ca_only.status();
  EXPECT_TRUE(ca_only->state.redis_tls.enabled);
  EXPECT_EQ(ca_only->state.redis_tls.ca_file, certs->ca);
  EXPECT_TRUE(ca_only->state.redis_tls.cert_file.empty());
  EXPECT_TRUE(ca_only->state.redis_tls.server_name_override.empty());

  // Each refusal names the field (and the file where there is one).
  WriteFile(tmp.path() / "conf" / "not-pem.pem", "hello\n");
  const struct {
    Json tls;
    std::vector<std::string> says;
  } refused[] = {
      {true, {"state.redis.tls", "ca_file"}},
      {"yes", {"state.redis.tls", "object"}},
      {Json::object(), {"state.redis.tls.ca_file", "required"}},
      {{{"ca_file", ""}}, {"state.redis.tls.ca_file", "empty"}},
      {{{"ca_file", "redis-ca.pem"}, {"colour", 1}}, {"colour"}},
      {{{"ca_file", "missing.pem"}}, {"state.redis.tls.ca_file", "missing.pem"}},
      {{{"ca_file", "not-pem.pem"}}, {"state.redis.tls.ca_file", "not-pem.pem", "no PEM"}},
      // The message names the one missing.
      {{{"ca_file", "redis-ca.pem"}, {"cert_file", "client.pem"}},
       {"state.redis.tls.key_file", "go together"}},
      {{{"ca_file", "redis-ca.pem"}, {"key_file", "client.key"}},
       {"state.redis.tls.cert_file", "go together"}},
      {{{"ca_file", "redis-ca.pem"}, {"cert_file", "not-pem.pem"}, {"key_file", "client.key"}},
       {"state.redis.tls.cert_file", "not-pem.pem"}},
      {{{"ca_file", "redis-ca.pem"}, {"cert_file", "client.pem"}, {"key_file", "missing.key"}},
       {"state.redis.tls.key_file", "missing.key"}},
      // The server's key with the client's certificate: not its key.
      {{{"ca_file", "redis-ca.pem"},
        {"cert_file", "client.pem"},
        {"key_file", certs->server_key.string()}},
       {"state.redis.tls.key_file", "does not match", "client.pem"}},
      {{{"ca_file", "redis-ca.pem"}, {"server_name", ""}}, {"state.redis.tls.server_name"}},
      {{{"ca_file", "redis-ca.pem"}, {"server_name", "a b"}}, {"state.redis.tls.server_name"}},
  };
  for (const auto& r : refused) {
    auto c = load(r.tls);
    ASSERT_FALSE(c.ok()) << "accepted: " << r.tls.dump();
    // NOT_FOUND for a file that cannot be read, as for the other TLS blocks (common/tls.h).
    EXPECT_THAT(c.status().code(),
                ::testing::AnyOf(absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound))
        << c.status();
    EXPECT_THAT(c.status().message(), HasSubstr(file.string())) << r.tls.dump();
    for (const auto& s : r.says) EXPECT_THAT(c.status().message(), HasSubstr(s)) << r.tls.dump();
  }
  // An unreadable file (not as root: root reads it anyway).
  if (::geteuid() != 0) {
    fs::permissions(tmp.path() / "conf" / "redis-ca.pem", fs::perms::none);
    auto unreadable = load({{"ca_file", "redis-ca.pem"}});
    ASSERT_FALSE(unreadable.ok());
    EXPECT_THAT(unreadable.status().message(), HasSubstr("state.redis.tls.ca_file"));
    EXPECT_THAT(unreadable.status().message(), HasSubstr("Permission denied"));
  }
}

TEST(GatewayConfigTest, UsageLedgerPostgres) {
  // A string stays the SQLite path.
  auto sqlite = Parse(Json({{"usage_ledger", "state/usage.db"}}));
  ASSERT_TRUE(sqlite.ok()) << sqlite.status();
  EXPECT_EQ(sqlite->usage_ledger, fs::path("/etc/switchyard/state/usage.db"));
  EXPECT_TRUE(sqlite->usage_ledger_postgres.dsn.empty());

  TempDir tmp;
  WriteFile(tmp.path() / "pg.pass", "pg-s3cret\nignored\n");
  fs::permissions(tmp.path() / "pg.pass", fs::perms::owner_read | fs::perms::owner_write);
  WriteFile(tmp.path() / "gateway.json",
            Json({{"gateway_id", "gw a/1"},
                  {"usage_ledger",
                   {{"backend", "postgres"},
                    {"dsn", "postgresql://switchyard@db.internal:5432/usage?sslmode=verify-full"},
                    {"password_file", "pg.pass"},  // relative to the config file
                    {"connect_timeout_ms", 300},
                    {"statement_timeout_ms", 1500},
                    {"retry_interval_ms", 250}}}})
                .dump());
  auto c = LoadGatewayConfig(tmp.path() / "gateway.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->usage_ledger.empty());
  const auto& pg = c->usage_ledger_postgres;
  EXPECT_EQ(pg.dsn, "postgresql://switchyard@db.internal:5432/usage?sslmode=verify-full");
  EXPECT_EQ(pg.password, "pg-s3cret");
  // One journal per gateway by default, next to the config, its id made a file name.
  EXPECT_EQ(pg.journal, tmp.path() / "usage-journal-gw_a_1.db");
  EXPECT_EQ(pg.connect_timeout_ms, 300);
  EXPECT_EQ(pg.statement_timeout_ms, 1500);
  EXPECT_EQ(pg.retry_interval_ms, 250);
  EXPECT_FALSE(pg.commit_local);  // default: committed in PostgreSQL before the response
  auto minimal = Parse(
      Json({{"usage_ledger", {{"backend", "postgres"}, {"dsn", "postgres://sy@127.0.0.1/usage"}}},
            {"gateway_id", "g2"}}));
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ(minimal->usage_ledger_postgres.journal,
            fs::path("/etc/switchyard/usage-journal-g2.db"));
  EXPECT_TRUE(minimal->usage_ledger_postgres.password.empty());
  EXPECT_EQ(minimal->usage_ledger_postgres.connect_timeout_ms, 2000);
  auto journal = Parse(Json({{"usage_ledger",
                              {{"backend", "postgres"},
                               {"dsn", "postgres://sy@127.0.0.1/usage"},
                               {"journal", "/var/lib/switchyard/journal.db"}}}}));
  ASSERT_TRUE(journal.ok()) << journal.status();
  EXPECT_EQ(journal->usage_ledger_postgres.journal, fs::path("/var/lib/switchyard/journal.db"));

  auto pg_with = [](Json fields) {
    Json ledger = {{"backend", "postgres"}, {"dsn", "postgresql://sy@127.0.0.1:5432/usage"}};
    ledger.update(fields);
    return Json({{"usage_ledger", ledger}});
  };
  ExpectError(Json({{"usage_ledger", 5}}), "usage_ledger");
  ExpectError(Json({{"usage_ledger", Json::array({"a"})}}), "usage_ledger");
  ExpectError(Json({{"usage_ledger", Json::object()}}), "usage_ledger.backend: is required");
  ExpectError(pg_with({{"backend", "mysql"}}), "usage_ledger.backend");
  ExpectError(pg_with({{"backend", 1}}), "usage_ledger.backend");
  ExpectError(pg_with({{"colour", 1}}), "colour");
  ExpectError(Json({{"usage_ledger", {{"backend", "postgres"}}}}), "usage_ledger.dsn: is required");
  ExpectError(pg_with({{"dsn", 5}}), "usage_ledger.dsn");
  ExpectError(pg_with({{"dsn", "host=127.0.0.1 dbname=usage"}}), "usage_ledger.dsn");
  ExpectError(pg_with({{"dsn", ""}}), "usage_ledger.dsn");
  for (const char* dsn : {"postgresql://sy:hunter2@127.0.0.1/usage",
                          "postgresql://sy@127.0.0.1/usage?password=hunter2"}) {
    auto secret = Parse(pg_with({{"dsn", dsn}}));
    ASSERT_FALSE(secret.ok()) << dsn;
    EXPECT_THAT(secret.status().message(), HasSubstr("password_file"));
    EXPECT_THAT(secret.status().message(), ::testing::Not(HasSubstr("hunter2")));
  }
  ExpectError(pg_with({{"password_file", ""}}), "usage_ledger.password_file");
  ExpectError(pg_with({{"password_file", (tmp.path() / "none").string()}}),
              "usage_ledger.password_file");
  WriteFile(tmp.path() / "empty.pass", "");
  fs::permissions(tmp.path() / "empty.pass", fs::perms::owner_read);
  ExpectError(pg_with({{"password_file", (tmp.path() / "empty.pass").string()}}),
              "usage_ledger.password_file");
  // Readable by every user: refused, naming the fix; the password is not in the message.
  WriteFile(tmp.path() / "open.pass", "open-secret\n");
  fs::permissions(tmp.path() / "open.pass",
                  fs::perms::owner_read | fs::perms::owner_write | fs::perms::others_read);
  auto open = Parse(pg_with({{"password_file", (tmp.path() / "open.pass").string()}}));
  ASSERT_FALSE(open.ok());
  EXPECT_THAT(open.status().message(), HasSubstr("chmod 600"));
  EXPECT_THAT(open.status().message(), ::testing::Not(HasSubstr("open-secret")));
  ExpectError(pg_with({{"journal", ""}}), "usage_ledger.journal");
  ExpectError(pg_with({{"journal", 3}}), "usage_ledger.journal");
  ExpectError(pg_with({{"connect_timeout_ms", 0}}), "usage_ledger.connect_timeout_ms");
  ExpectError(pg_with({{"connect_timeout_ms", "100"}}), "usage_ledger.connect_timeout_ms");
  ExpectError(pg_with({{"statement_timeout_ms", -5}}), "usage_ledger.statement_timeout_ms");
  ExpectError(pg_with({{"retry_interval_ms", 1e12}}), "usage_ledger.retry_interval_ms");
  ExpectError(pg_with({{"commit", "later"}}), "usage_ledger.commit");
  ExpectError(pg_with({{"commit", true}}), "usage_ledger.commit");
  auto local = Parse(pg_with({{"commit", "local"}}));
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_TRUE(local->usage_ledger_postgres.commit_local);
}

TEST(GatewayConfigTest, SharedStatePeers) {
  TempDir tmp;
  const std::string secret = (tmp.path() / "internal.secret").string();
  WriteFile(secret, "0123456789abcdef0123456789abcdef\nignored\n");
  WriteFile(tmp.path() / "short.secret", "short\n");
  auto state = [&](Json fields) {
    Json j = {{"gateway_id", "ga"},
              {"peers", {{"gb", "http://10.0.0.2:8935"}, {"gc", "http://gw-c.internal:8935/"}}},
              {"internal_secret_file", secret}};
    j.update(fields);
    return Json({{"http_listen", "127.0.0.1:8935"}, {"state", j}});
  };
  auto c = Parse(state(Json::object()));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state.gateway_id, "ga");
  EXPECT_EQ(c->state.peers.size(), 2u);
  EXPECT_EQ(c->state.peers.at("gc"), "http://gw-c.internal:8935");  // the trailing '/' dropped
  EXPECT_EQ(c->state.internal_secret, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(c->state.peer_timeout_ms, 10000);
  EXPECT_TRUE(c->state.redis_address.empty());  // peers need no Redis
  // Absent: no peers.
  EXPECT_TRUE(Parse(Json::object())->state.peers.empty());

  ExpectError(state({{"gateway_id", "GA"}}), "state.gateway_id");
  ExpectError(state({{"gateway_id", "a.b"}}), "state.gateway_id");
  ExpectError(state({{"gateway_id", std::string(17, 'a')}}), "state.gateway_id");
  ExpectError(Json({{"state", {{"peers", {{"gb", "http://h:1"}}}}}}), "state.gateway_id");
  ExpectError(state({{"peers", Json::object()}}), "state.peers");
  ExpectError(state({{"peers", {{"ga", "http://h:1"}}}}), "state.peers.ga");  // itself
  ExpectError(state({{"peers", {{"G.B", "http://h:1"}}}}), "state.peers");
  ExpectError(state({{"peers", {{"gb", "https://h:1"}}}}), "state.peers.gb");
  ExpectError(state({{"peers", {{"gb", "http://h:1/path"}}}}), "state.peers.gb");
  ExpectError(state({{"peers", {{"gb", "http://h"}}}}), "state.peers.gb");
  ExpectError(state({{"peers", {{"gb", "http://h:0"}}}}), "state.peers.gb");
  ExpectError(state({{"peers", {{"gb", 7}}}}), "state.peers.gb");
  ExpectError(state({{"internal_secret_file", (tmp.path() / "none").string()}}),
              "state.internal_secret_file");
  ExpectError(state({{"internal_secret_file", (tmp.path() / "short.secret").string()}}),
              "state.internal_secret_file");
  ExpectError(state({{"peer_timeout_ms", 50}}), "state.peer_timeout_ms");
  Json no_secret = state(Json::object());
  no_secret["state"].erase("internal_secret_file");
  ExpectError(no_secret, "state.internal_secret_file");
  Json no_http = state(Json::object());
  no_http["http_listen"] = "";
  ExpectError(no_http, "http_listen");
}

// HTTPS between gateways: https:// peers with state.peer_tls (read like state.redis.tls), all
// one scheme, and http_tls allowed only then.
TEST(GatewayConfigTest, SharedStatePeersTls) {
  TempDir tmp;
  auto certs = ::switchyard::testing::MakeTestCerts(tmp.path());
  ASSERT_TRUE(certs.ok()) << certs.status();
  fs::create_directories(tmp.path() / "conf");
  fs::copy_file(certs->ca, tmp.path() / "conf" / "peers-ca.pem");
  fs::copy_file(certs->client_cert, tmp.path() / "conf" / "client.pem");
  fs::copy_file(certs->client_key, tmp.path() / "conf" / "client.key");
  WriteFile(tmp.path() / "conf" / "internal.secret", "0123456789abcdef0123456789abcdef\n");
  WriteFile(tmp.path() / "conf" / "not-pem.pem", "hello\n");
  const fs::path file = tmp.path() / "conf" / "gateway.json";
  const Json http_tls = {{"cert_file", certs->server_cert.string()},
                         {"key_file", certs->server_key.string()}};
  // `state` fields over https:// peers with a CA; `root` fields over http_listen.
  auto load = [&](Json fields, Json root = Json::object()) {
    Json state = {
        {"gateway_id", "ga"},
        {"peers", {{"gb", "https://10.0.0.2:8935"}, {"gc", "https://gw-c.internal:8935/"}}},
        {"internal_secret_file", "internal.secret"},
        {"peer_tls", {{"ca_file", "peers-ca.pem"}}}};
    state.update(fields);
    Json j = {{"http_listen", "127.0.0.1:8935"}, {"state", state}};
    j.update(root);
    WriteFile(file, j.dump());
    return LoadGatewayConfig(file);
  };
  auto ca_only = load(Json::object());
  ASSERT_TRUE(ca_only.ok()) << ca_only.status();
  EXPECT_EQ(ca_only->state.peers.at("gb"), "https://10.0.0.2:8935");
  EXPECT_EQ(ca_only->state.peers.at("gc"), "https://gw-c.internal:8935");  // '/' dropped
  EXPECT_TRUE(ca_only->state.peer_tls.enabled);
  EXPECT_EQ(ca_only->state.peer_tls.ca_file, tmp.path() / "conf" / "peers-ca.pem");
  EXPECT_TRUE(ca_only->state.peer_tls.cert_file.empty());
  EXPECT_TRUE(ca_only->state.peer_tls.server_name_override.empty());
  EXPECT_FALSE(ca_only->state.redis_tls.enabled);  // the two blocks are separate

  // With a client certificate and a name, and with http_tls on this gateway's own listener (the
  // combination that plain-HTTP peers cannot have).
  auto full = load({{"peer_tls",
                     {{"ca_file", "peers-ca.pem"},
                      {"cert_file", "client.pem"},
                      {"key_file", "client.key"},
                      {"server_name", "gateways.internal"}}}},
                   {{"http_tls", http_tls}});
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full->http_tls.enabled());
  EXPECT_EQ(full->state.peer_tls.cert_file, tmp.path() / "conf" / "client.pem");
  EXPECT_EQ(full->state.peer_tls.key_file, tmp.path() / "conf" / "client.key");
  EXPECT_EQ(full->state.peer_tls.server_name_override, "gateways.internal");

  // Plain-HTTP peers: still fine without http_tls, and peer_tls: false is no TLS.
  auto plain = load({{"peers", {{"gb", "http://10.0.0.2:8935"}}}, {"peer_tls", false}});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->state.peer_tls.enabled);

  // Each refusal names the field (and the file).
  const struct {
    Json state;
    Json root;
    std::vector<std::string> says;
  } refused[] = {
      // https:// without peer_tls: nothing to verify the peers' certificates with.
      {{{"peer_tls", false}}, Json::object(), {"state.peers.gb", "state.peer_tls", "ca_file"}},
      // Mixed schemes, either way round: the secret would reach the http:// one in clear text.
      {{{"peers", {{"gb", "https://10.0.0.2:1"}, {"gc", "http://10.0.0.3:1"}}}},
       Json::object(),
       {"state.peers.gc", "https://", "clear text"}},
      {{{"peers", {{"gb", "http://10.0.0.2:1"}}}}, Json::object(), {"state.peers.gb", "https://"}},
      // http_tls with plain-HTTP peers: refused as before, saying what to do instead.
      {{{"peers", {{"gb", "http://10.0.0.2:1"}}}, {"peer_tls", false}},
       {{"http_tls", http_tls}},
       {"state", "http_tls", "https://", "state.peer_tls"}},
      {{{"peers", {{"gb", "ftp://10.0.0.2:1"}}}}, Json::object(), {"state.peers.gb", "https://"}},
      {{{"peers", {{"gb", "https://10.0.0.2"}}}}, Json::object(), {"state.peers.gb"}},
      {{{"peers", {{"gb", "https://h:1/path"}}}}, Json::object(), {"state.peers.gb"}},
      // The block itself, read like state.redis.tls.
      {{{"peer_tls", true}}, Json::object(), {"state.peer_tls", "ca_file"}},
      {{{"peer_tls", "yes"}}, Json::object(), {"state.peer_tls", "object"}},
      {{{"peer_tls", Json::object()}}, Json::object(), {"state.peer_tls.ca_file", "required"}},
      {{{"peer_tls", {{"ca_file", "peers-ca.pem"}, {"colour", 1}}}}, Json::object(), {"colour"}},
      {{{"peer_tls", {{"ca_file", "missing.pem"}}}},
       Json::object(),
       {"state.peer_tls.ca_file", "missing.pem"}},
      {{{"peer_tls", {{"ca_file", "not-pem.pem"}}}},
       Json::object(),
       {"state.peer_tls.ca_file", "not-pem.pem"}},
      {{{"peer_tls", {{"ca_file", "peers-ca.pem"}, {"cert_file", "client.pem"}}}},
       Json::object(),
       {"state.peer_tls.key_file", "go together"}},
      {{{"peer_tls",
         {{"ca_file", "peers-ca.pem"},
          {"cert_file", "client.pem"},
          {"key_file", certs->server_key.string()}}}},
       Json::object(),
       {"state.peer_tls.key_file", "does not match"}},
      {{{"peer_tls", {{"ca_file", "peers-ca.pem"}, {"server_name", "a b"}}}},
       Json::object(),
       {"state.peer_tls.server_name"}},
  };
  for (const auto& r : refused) {
    auto c = load(r.state, r.root);
    ASSERT_FALSE(c.ok()) << "accepted: " << r.state.dump() << r.root.dump();
    EXPECT_THAT(c.status().code(),
                ::testing::AnyOf(absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound))
        << c.status();
    EXPECT_THAT(c.status().message(), HasSubstr(file.string())) << r.state.dump();
    for (const auto& s : r.says) {
      EXPECT_THAT(c.status().message(), HasSubstr(s)) << r.state.dump() << r.root.dump();
    }
  }
  // peer_tls without peers: refused, naming it.
  WriteFile(file, Json({{"state", {{"peer_tls", {{"ca_file", "peers-ca.pem"}}}}}}).dump());
  auto alone = LoadGatewayConfig(file);
  ASSERT_FALSE(alone.ok());
  EXPECT_THAT(alone.status().message(), HasSubstr("state.peer_tls"));
  EXPECT_THAT(alone.status().message(), HasSubstr("state.peers"));
}

TEST(GatewayConfigTest, NodeIdentity) {
  auto d = Parse(Json::object());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->node_identity.mode, NodeIdentityConfig::Mode::kVerify);
  EXPECT_TRUE(d->node_identity.policy_file.empty());
  EXPECT_TRUE(d->node_identity.bindings_file.empty());
  auto c = Parse(Json({{"node_identity",
                        {{"mode", "require"},
                         {"policy_file", "node-policy.json"},  // relative to the config file
                         {"bindings_file", "/var/lib/switchyard/node-keys.json"}}}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node_identity.mode, NodeIdentityConfig::Mode::kRequire);
  EXPECT_EQ(c->node_identity.policy_file, "/etc/switchyard/node-policy.json");
  EXPECT_EQ(c->node_identity.bindings_file, "/var/lib/switchyard/node-keys.json");
  EXPECT_EQ(Parse(Json({{"node_identity", {{"mode", "off"}}}}))->node_identity.mode,
            NodeIdentityConfig::Mode::kOff);
  ExpectError(Json({{"node_identity", {{"mode", "strict"}}}}), "node_identity.mode");
  ExpectError(Json({{"node_identity", {{"mode", 1}}}}), "node_identity.mode");
  ExpectError(Json({{"node_identity", {{"policy_file", ""}}}}), "node_identity.policy_file");
  ExpectError(Json({{"node_identity", {{"bindings_file", ""}}}}), "node_identity.bindings_file");
  ExpectError(Json({{"node_identity", {{"allow", Json::array()}}}}), "node_identity");
  ExpectError(Json({{"node_identity", "verify"}}), "node_identity");
}

TEST(ShippedConfigs, GatewayJsonLoads) {
  auto c = LoadGatewayConfig(std::filesystem::path(SWITCHYARD_SOURCE_DIR) / "configs/gateway.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_LT(c->node_timeout_ms, 1000);  // a silent node leaves routing within a second
}

TEST(GatewayConfigTest, VerificationDefaultsOverridesAndRanges) {
  auto d = Parse(Json::object());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->verification.sample_rate, 0.01);
  EXPECT_EQ(d->verification.eject_after, 3);
  EXPECT_EQ(d->verification.max_in_flight, 4);
  EXPECT_TRUE(d->verification.pipelines.empty());
  EXPECT_EQ(d->verification.For("upscale").sample_rate, 0.01);
  EXPECT_EQ(d->verification.For("upscale").max_abs_diff, 0);

  auto c = Parse(Json::parse(R"({"verification": {
    "sample_rate": 0.05, "eject_after": 5, "eject_seconds": 600, "max_in_flight": 8,
    "timeout_ms": 2000, "deterministic_models": ["fixed-model"],
    "pipelines": {"upscale": {"sample_rate": 0.2, "max_abs_diff": 2, "min_psnr_db": 40},
                  "segment-anything-2": {}}}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  const VerificationConfig& v = c->verification;
  EXPECT_EQ(v.sample_rate, 0.05);
  EXPECT_EQ(v.eject_after, 5);
  EXPECT_EQ(v.eject_seconds, 600);
  EXPECT_EQ(v.max_in_flight, 8);
  EXPECT_EQ(v.timeout_ms, 2000);
  EXPECT_EQ(v.deterministic_models, std::vector<std::string>{"fixed-model"});
  EXPECT_EQ(v.For("upscale").sample_rate, 0.2);
  EXPECT_EQ(v.For("upscale").max_abs_diff, 2);
  EXPECT_EQ(v.For("upscale").min_psnr_db, 40);
  EXPECT_EQ(v.For("segment-anything-2").sample_rate, 0.05);  // the block's default
  EXPECT_EQ(v.For("image-to-image").sample_rate, 0.05);

  ExpectError({{"verification", {{"sample_rate", 1.5}}}}, "verification.sample_rate");
  ExpectError({{"verification", {{"sample_rate", -0.1}}}}, "verification.sample_rate");
  ExpectError({{"verification", {{"eject_after", 0}}}}, "verification.eject_after");
  ExpectError({{"verification", {{"eject_seconds", 0}}}}, "verification.eject_seconds");
  ExpectError({{"verification", {{"max_in_flight", -1}}}}, "verification.max_in_flight");
  ExpectError({{"verification", {{"timeout_ms", 5}}}}, "verification.timeout_ms");
  ExpectError({{"verification", {{"deterministic_models", {""}}}}},
              "verification.deterministic_models");
  ExpectError({{"verification", {{"unknown", 1}}}}, "verification.unknown");
  ExpectError({{"verification", {{"pipelines", 3}}}}, "verification.pipelines");
  ExpectError({{"verification", {{"pipelines", {{"llm", Json::object()}}}}}},
              "verification.pipelines.llm");
  ExpectError({{"verification", {{"pipelines", {{"nope", Json::object()}}}}}},
              "verification.pipelines.nope");
  // Transcodes are compared as decoded frames: PSNR at least 30 dB unless configured.
  auto transcode = Parse({{"verification", {{"pipelines", {{"transcode", Json::object()}}}}}});
  ASSERT_TRUE(transcode.ok()) << transcode.status();
  EXPECT_EQ(transcode->verification.For("transcode").min_psnr_db, kDefaultTranscodeMinPsnrDb);
  EXPECT_EQ(transcode->verification.For("transcode").sample_rate, 0.01);
  transcode = Parse({{"verification", {{"pipelines", {{"transcode", {{"min_psnr_db", 40}}}}}}}});
  ASSERT_TRUE(transcode.ok()) << transcode.status();
  EXPECT_EQ(transcode->verification.For("transcode").min_psnr_db, 40);
  EXPECT_EQ(Parse(Json::object())->verification.For("transcode").min_psnr_db,
            kDefaultTranscodeMinPsnrDb);
  EXPECT_EQ(Parse(Json::object())->verification.For("upscale").min_psnr_db, 0);
  ExpectError({{"verification", {{"pipelines", {{"upscale", {{"sample_rate", 2}}}}}}}},
              "verification.pipelines.upscale.sample_rate");
  ExpectError({{"verification", {{"pipelines", {{"upscale", {{"max_abs_diff", 256}}}}}}}},
              "verification.pipelines.upscale.max_abs_diff");
  ExpectError({{"verification", {{"pipelines", {{"upscale", {{"min_psnr_db", -1}}}}}}}},
              "verification.pipelines.upscale.min_psnr_db");
  ExpectError({{"verification", {{"pipelines", {{"upscale", {{"tolerance", 1}}}}}}}},
              "verification.pipelines.upscale.tolerance");
}

}  // namespace
}  // namespace switchyard::gateway
