// TLS on every listener and mutual TLS between gateways and orchestrators, on a local cluster
// (docs/security.md). Certificates are made with the openssl CLI in each test's temp dir.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/tls.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tls_certs.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

constexpr char kBoundary[] = "tlstestboundary";

std::string Form(const std::string& png) {
  return absl::StrCat("--", kBoundary,
                      "\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n"
                      "esrgan-slim-x4\r\n--",
                      kBoundary,
                      "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\n"
                      "Content-Type: image/png\r\n\r\n",
                      png, "\r\n--", kBoundary, "--\r\n");
}

nlohmann::json ServerTls(const TestCerts& c) {
  return {{"cert_file", c.server_cert.string()}, {"key_file", c.server_key.string()}};
}
nlohmann::json MutualServerTls(const TestCerts& c) {
  nlohmann::json tls = ServerTls(c);
  tls["client_ca_file"] = c.ca.string();
  tls["require_client_cert"] = true;
  return tls;
}
nlohmann::json ClientTls(const TestCerts& c, bool with_cert) {
  nlohmann::json tls = {{"ca_file", c.ca.string()}};
  if (with_cert) {
    tls["cert_file"] = c.client_cert.string();
    tls["key_file"] = c.client_key.string();
  }
  return tls;
}

GrpcClientSecurity Security(const TestCerts& c, bool with_cert) {
  TlsClientConfig tls;
  tls.enabled = true;
  tls.ca_file = c.ca;
  if (with_cert) {
    tls.cert_file = c.client_cert;
    tls.key_file = c.client_key;
  }
  auto s = GrpcClientSecurity::Create(tls);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : GrpcClientSecurity();
}

std::unique_ptr<v1::Gateway::Stub> Stub(const GrpcClientSecurity& security,
                                        const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return v1::Gateway::NewStub(security.CreateChannel(address, args));
}

// ListCapabilities with a short deadline: the orchestrators listed, or -1 with the error.
int ListedOrchestrators(v1::Gateway::Stub& stub, grpc::Status* status = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListCapabilitiesRequest req;
  v1::ListCapabilitiesResponse resp;
  grpc::Status st = stub.ListCapabilities(&ctx, req, &resp);
  if (status != nullptr) *status = st;
  return st.ok() ? resp.orchestrators_size() : -1;
}

grpc::Status Upscale(v1::Gateway::Stub& stub, const std::string& png, v1::ImageResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::UpscaleRequest req;
  req.set_model_id("esrgan-slim-x4");
  req.set_image(png);
  return stub.Upscale(&ctx, req, resp);
}

// Waits (bounded: 15 s) until `daemon`'s log contains `text`.
bool WaitForLog(Daemon& daemon, const std::string& text) {
  for (int i = 0; i < 300; ++i) {
    if (absl::StrContains(daemon.Log(), text)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// A gateway of its own (no HTTP port) polling `static_orchestrators`.
absl::Status StartStaticGateway(const TempDir& dir, const std::string& name,
                                const nlohmann::json& extra, Daemon* daemon) {
  nlohmann::json cfg = {{"gateway_id", name},
                        {"listen", "127.0.0.1:0"},
                        {"http_listen", ""},
                        {"admin_listen", ""},
                        {"poll_interval_ms", 200},
                        {"log", {{"level", "debug"}}}};
  cfg.update(extra);
  const auto cfg_path = dir.path() / (name + ".json");
  const auto port_path = dir.path() / (name + ".port");
  WriteFile(cfg_path, cfg.dump(2));
  auto st = daemon->Start(BinaryPath("switchyard-gateway").string(),
                          {"--config", cfg_path.string(), "--port-file", port_path.string()});
  if (!st.ok()) return st;
  return daemon->WaitForPort(port_path, std::chrono::seconds(20));
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(ModelDir() / "esrgan-slim-x4.pt"))
        << "models are not prepared; run scripts/prepare-models";
    auto certs = MakeTestCerts(tmp_.path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    png_ = MakeTestImage(tmp_, 16, 12, "png");
  }

  TempDir tmp_;
  TestCerts certs_;
  std::string png_;
};

TEST_F(TlsTest, EveryListenerOverTls) {
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {"esrgan-slim-x4"};
  options.gateway_config = {{"tls", ServerTls(certs_)},
                            {"http_tls", ServerTls(certs_)},
                            {"orchestrator_tls", ClientTls(certs_, false)}};
  options.orchestrator_config = {{"tls", ServerTls(certs_)},
                                 {"http_tls", ServerTls(certs_)},
                                 {"gateway_tls", ClientTls(certs_, false)}};
  options.gateway_security = Security(certs_, false);
  LocalCluster cluster;
  // Listed: the orchestrator registered over TLS, and this test's client reached the gateway.
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(absl::StrContains(cluster.gateway().Log(),
                                "(TLS; 0 static orchestrators; to "
                                "orchestrators: TLS)"))
      << cluster.Logs();

  // A job through gRPC: client -> gateway and gateway -> orchestrator, both TLS.
  auto stub = cluster.GatewayStub();
  v1::ImageResponse resp;
  grpc::Status ok = Upscale(*stub, png_, &resp);
  ASSERT_TRUE(ok.ok()) << ok.error_message() << cluster.Logs();
  EXPECT_EQ(resp.images_size(), 1);

  // A plaintext gRPC client gets nowhere on the TLS port.
  grpc::Status plain;
  EXPECT_EQ(ListedOrchestrators(*Stub(GrpcClientSecurity(), cluster.gateway_address()), &plain),
            -1);
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.error_message();
  // Nor does one that trusts another CA.
  TlsClientConfig other;
  other.enabled = true;
  other.ca_file = certs_.other_ca;
  auto untrusting = GrpcClientSecurity::Create(other);
  ASSERT_TRUE(untrusting.ok());
  EXPECT_EQ(ListedOrchestrators(*Stub(*untrusting, cluster.gateway_address())), -1);

  // A job through HTTPS (the Livepeer API on the gateway's HTTP port).
  HttpCall call;
  call.method = "POST";
  call.path = "/upscale";
  call.content_type = absl::StrCat("multipart/form-data; boundary=", kBoundary);
  call.body = Form(png_);
  call.tls_ca_file = certs_.ca.string();
  HttpResult https = HttpRequest(cluster.gateway().http_port(), call);
  ASSERT_EQ(https.status, 200) << https.error << https.body << cluster.Logs();
  auto json = nlohmann::json::parse(https.body, nullptr, false);
  ASSERT_TRUE(json.is_object()) << https.body;
  ASSERT_EQ(json["images"].size(), 1u) << https.body;
  EXPECT_TRUE(
      absl::StartsWith(json["images"][0]["url"].get<std::string>(), "data:image/png;base64,"));
  // Plain HTTP to the HTTPS port gets no answer.
  HttpCall plain_call = call;
  plain_call.tls_ca_file.clear();
  EXPECT_EQ(HttpRequest(cluster.gateway().http_port(), plain_call).status, 0);

  // The operator endpoints over HTTPS, on both daemons (the gateway's operators' port).
  for (int port : {cluster.gateway().admin_port(), cluster.orchestrator(0).http_port()}) {
    HttpCall get;
    get.path = "/metrics";
    get.tls_ca_file = certs_.ca.string();
    HttpResult metrics = HttpRequest(port, get);
    EXPECT_EQ(metrics.status, 200) << metrics.error;
    EXPECT_TRUE(absl::StrContains(metrics.body, "switchyard_")) << metrics.body.substr(0, 200);
    get.path = "/healthz";
    EXPECT_EQ(HttpRequest(port, get).status, 200);
    EXPECT_EQ(HttpRequest(port, "GET", "/healthz").status, 0);  // plaintext
  }
  // The orchestrator's gRPC port is TLS too.
  for (bool tls : {false, true}) {
    auto node = node::v1::Orchestrator::NewStub(
        (tls ? Security(certs_, false) : GrpcClientSecurity())
            .CreateChannel(cluster.orchestrator_address(0), grpc::ChannelArguments()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    node::v1::GetStatusRequest req;
    node::v1::NodeStatus status;
    grpc::Status st = node->GetStatus(&ctx, req, &status);
    EXPECT_EQ(st.ok(), tls) << st.error_message();
    if (tls) {
      EXPECT_EQ(status.node_id(), "orch-1");
    }
  }

  // The CLI: --tls-ca, a missing CA file (usage error), and plaintext (fails).
  const std::string cli = absl::StrCat(BinaryPath("switchyard").string(), " --gateway ",
                                       cluster.gateway_address(), " --timeout 10");
  std::string out;
  EXPECT_EQ(
      RunCommand(absl::StrCat(cli, " --tls-ca ", certs_.ca.string(), " capabilities 2>&1"), &out),
      0)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "esrgan-slim-x4")) << out;
  EXPECT_EQ(RunCommand(absl::StrCat(cli, " --tls-ca ", (tmp_.path() / "nope.pem").string(),
                                    " capabilities 2>&1"),
                       &out),
            2)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "--tls-ca: cannot read")) << out;
  EXPECT_EQ(RunCommand(absl::StrCat(cli, " capabilities 2>&1"), &out), 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "UNAVAILABLE")) << out;
}

TEST_F(TlsTest, MutualTlsBetweenGatewayAndOrchestrators) {
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {"esrgan-slim-x4"};
  options.gateway_config = {{"tls", MutualServerTls(certs_)},
                            {"orchestrator_tls", ClientTls(certs_, true)}};
  options.orchestrator_config = {{"tls", MutualServerTls(certs_)},
                                 {"gateway_tls", ClientTls(certs_, true)}};
  // The gateway's port requires a client certificate of every caller, this test's too.
  options.gateway_security = Security(certs_, true);
  LocalCluster cluster;
  auto st = cluster.Start(options);  // orch-1 presents its certificate: listed
  ASSERT_TRUE(st.ok()) << st;
  auto stub = cluster.GatewayStub();
  v1::ImageResponse resp;
  grpc::Status ok = Upscale(*stub, png_, &resp);
  ASSERT_TRUE(ok.ok()) << ok.error_message() << cluster.Logs();
  EXPECT_EQ(resp.job().orchestrator(), "orch-1");

  // A caller without a client certificate is refused.
  grpc::Status refused;
  EXPECT_EQ(
      ListedOrchestrators(*Stub(Security(certs_, false), cluster.gateway_address()), &refused), -1);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();

  // An orchestrator without a client certificate cannot register; it says so in its log.
  st = cluster.AddOrchestrator("orch-nocert", {{"gateway_tls", ClientTls(certs_, false)}});
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(WaitForLog(cluster.orchestrator(1), "not reachable over TLS"))
      << cluster.orchestrator(1).Log();
  EXPECT_FALSE(absl::StrContains(cluster.orchestrator(1).Log(), "registered with gateway"));
  {
    // This test's channel sat idle while the log was awaited; the gateway's keepalive (1 s pings)
    // may have closed it, and the first call after that fails with UNAVAILABLE: a few tries.
    grpc::Status last;
    int listed = -1;
    for (int i = 0; i < 5 && listed < 0; ++i) listed = ListedOrchestrators(*stub, &last);
    EXPECT_EQ(listed, 1) << last.error_message() << "\n" << cluster.Logs();
  }

  // A gateway without a client certificate cannot reach an orchestrator that requires one: as a
  // static orchestrator it is never listed, and the gateway logs why. With the certificate it is.
  Daemon no_cert("gw-nocert", tmp_.path() / "gw-nocert.log");
  st = StartStaticGateway(tmp_, "gw-nocert",
                          {{"static_orchestrators", {cluster.orchestrator_address(0)}},
                           {"orchestrator_tls", ClientTls(certs_, false)}},
                          &no_cert);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(WaitForLog(no_cert, absl::StrCat("static orchestrator ",
                                               cluster.orchestrator_address(0), " not reachable")))
      << no_cert.Log();
  EXPECT_EQ(
      ListedOrchestrators(*Stub(GrpcClientSecurity(), absl::StrCat("127.0.0.1:", no_cert.port()))),
      0);
  Daemon with_cert("gw-cert", tmp_.path() / "gw-cert.log");
  st = StartStaticGateway(tmp_, "gw-cert",
                          {{"static_orchestrators", {cluster.orchestrator_address(0)}},
                           {"orchestrator_tls", ClientTls(certs_, true)}},
                          &with_cert);
  ASSERT_TRUE(st.ok()) << st;
  auto cert_stub = Stub(GrpcClientSecurity(), absl::StrCat("127.0.0.1:", with_cert.port()));
  int listed = 0;
  for (int i = 0; i < 200 && listed != 1; ++i) {
    listed = ListedOrchestrators(*cert_stub);
    if (listed != 1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(listed, 1) << with_cert.Log();
  EXPECT_TRUE(Upscale(*cert_stub, png_, &resp).ok()) << with_cert.Log();
}

TEST_F(TlsTest, BadCertificateFilesStopTheDaemonsAtStart) {
  // Each config is refused before anything serves: exit status 2 and a message naming the
  // field and the file (bounded by `timeout` should a daemon start serving instead).
  auto run = [&](const std::string& binary, const std::string& name, const nlohmann::json& cfg,
                 std::string* out) {
    const auto path = tmp_.path() / (name + ".json");
    WriteFile(path, cfg.dump(2));
    return RunCommand(absl::StrCat("timeout 20 ", BinaryPath(binary).string(), " --config ",
                                   path.string(), " 2>&1"),
                      out);
  };
  const std::string missing = (tmp_.path() / "missing.pem").string();
  std::string out;
  EXPECT_EQ(run("switchyard-gateway", "gw-missing",
                {{"listen", "127.0.0.1:0"},
                 {"http_listen", ""},
                 {"tls", {{"cert_file", missing}, {"key_file", certs_.server_key.string()}}}},
                &out),
            2)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "tls.cert_file: cannot read '" + missing + "'")) << out;

  EXPECT_EQ(run("switchyard-orchestrator", "orch-mismatch",
                {{"listen", "127.0.0.1:0"},
                 {"http_listen", ""},
                 {"tls",
                  {{"cert_file", certs_.server_cert.string()},
                   {"key_file", certs_.client_key.string()}}}},
                &out),
            2)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "tls.key_file: the key in '" + certs_.client_key.string() +
                                         "' does not match the certificate in '" +
                                         certs_.server_cert.string() + "'"))
      << out;

  EXPECT_EQ(
      run("switchyard-orchestrator", "orch-ca",
          {{"listen", "127.0.0.1:0"}, {"http_listen", ""}, {"gateway_tls", {{"ca_file", missing}}}},
          &out),
      2)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "gateway_tls.ca_file: cannot read '" + missing + "'")) << out;

  EXPECT_EQ(run("switchyard-gateway", "gw-http",
                {{"listen", "127.0.0.1:0"},
                 {"http_listen", "127.0.0.1:0"},
                 {"http_tls", {{"cert_file", certs_.server_cert.string()}, {"key_file", missing}}}},
                &out),
            2)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "http_tls.key_file: cannot read '" + missing + "'")) << out;
}

}  // namespace
}  // namespace switchyard::testing
