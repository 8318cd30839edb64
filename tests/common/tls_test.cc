// TLS config blocks (common/tls.h): parsing, the checks made at start (errors name the field and
// the file), and http::Server over HTTPS (plain and streamed replies, client certificates).
// Certificates are made with the openssl CLI (support/tls_certs.h).
#include "common/tls.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tls_certs.h"

namespace switchyard {
namespace {

using ::switchyard::testing::HttpCall;
using ::switchyard::testing::HttpRequest;
using ::switchyard::testing::HttpResult;
using ::switchyard::testing::MakeTestCerts;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::TestCerts;
using ::switchyard::testing::WriteFile;

class TlsConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto certs = MakeTestCerts(dir_.path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    config_file_ = (dir_.path() / "daemon.json").string();
  }

  absl::Status ParseServer(const nlohmann::json& json, TlsServerConfig* out) {
    json_ = json;
    ConfigObject root(json_, config_file_, "");
    return ReadTlsServerConfig(root, "tls", out);
  }
  absl::Status ParseClient(const nlohmann::json& json, TlsClientConfig* out) {
    json_ = json;
    ConfigObject root(json_, config_file_, "");
    return ReadTlsClientConfig(root, "peer_tls", out);
  }

  TempDir dir_;
  TestCerts certs_;
  std::string config_file_;
  nlohmann::json json_;
};

TEST_F(TlsConfigTest, AbsentBlocksArePlaintext) {
  TlsServerConfig server;
  TlsClientConfig client;
  ASSERT_TRUE(ParseServer(nlohmann::json::object(), &server).ok());
  ASSERT_TRUE(ParseClient(nlohmann::json::object(), &client).ok());
  EXPECT_FALSE(server.enabled());
  EXPECT_FALSE(client.enabled);
  auto creds = MakeGrpcServerCredentials(server);
  ASSERT_TRUE(creds.ok());
  auto security = GrpcClientSecurity::Create(client);
  ASSERT_TRUE(security.ok());
  EXPECT_FALSE(security->tls());
}

TEST_F(TlsConfigTest, ServerBlockWithRelativePathsFromTheConfigFile) {
  TlsServerConfig tls;
  absl::Status st = ParseServer({{"tls",
                                  {{"cert_file", "server.pem"},
                                   {"key_file", "server.key"},
                                   {"client_ca_file", "ca.pem"},
                                   {"require_client_cert", true}}}},
                                &tls);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(tls.enabled());
  EXPECT_EQ(tls.cert_file, certs_.server_cert);
  EXPECT_EQ(tls.key_file, certs_.server_key);
  EXPECT_EQ(tls.client_ca_file, certs_.ca);
  EXPECT_TRUE(tls.require_client_cert);
  EXPECT_TRUE(MakeGrpcServerCredentials(tls).ok());
}

TEST_F(TlsConfigTest, ServerBlockErrorsNameTheFieldAndTheFile) {
  TlsServerConfig tls;
  const std::string server = certs_.server_cert.string();
  auto error = [&](const nlohmann::json& block) {
    absl::Status st = ParseServer({{"tls", block}}, &tls);
    EXPECT_FALSE(st.ok()) << block.dump();
    return std::string(st.message());
  };
  std::string m = error({{"cert_file", "missing.pem"}, {"key_file", "server.key"}});
  EXPECT_TRUE(absl::StrContains(m, "daemon.json: tls.cert_file: cannot read '")) << m;
  EXPECT_TRUE(absl::StrContains(m, (dir_.path() / "missing.pem").string())) << m;
  EXPECT_TRUE(absl::StrContains(m, "No such file or directory")) << m;

  m = error({{"cert_file", server}, {"key_file", "nope.key"}});
  EXPECT_TRUE(absl::StrContains(m, "tls.key_file: cannot read '")) << m;
  EXPECT_TRUE(absl::StrContains(m, "nope.key")) << m;

  // The client's key with the server's certificate.
  m = error({{"cert_file", server}, {"key_file", certs_.client_key.string()}});
  EXPECT_TRUE(absl::StrContains(m, "tls.key_file: the key in '" + certs_.client_key.string() +
                                       "' does not match the certificate in '" + server + "'"))
      << m;

  WriteFile(dir_.path() / "garbage.pem", "not a certificate\n");
  m = error({{"cert_file", "garbage.pem"}, {"key_file", "server.key"}});
  EXPECT_TRUE(absl::StrContains(m, "tls.cert_file: '")) << m;
  EXPECT_TRUE(absl::StrContains(m, "garbage.pem' holds no PEM certificate")) << m;
  m = error({{"cert_file", server}, {"key_file", "garbage.pem"}});
  EXPECT_TRUE(absl::StrContains(m, "garbage.pem' holds no (unencrypted) PEM private key")) << m;
  m = error({{"cert_file", server}, {"key_file", "server.key"}, {"client_ca_file", "garbage.pem"}});
  EXPECT_TRUE(absl::StrContains(m, "tls.client_ca_file: '")) << m;

  m = error({{"cert_file", server}});
  EXPECT_TRUE(absl::StrContains(m, "tls.key_file: is required")) << m;
  m = error({{"cert_file", server}, {"key_file", "server.key"}, {"require_client_cert", true}});
  EXPECT_TRUE(absl::StrContains(m, "tls.require_client_cert: needs client_ca_file")) << m;
  m = error({{"cert_file", server}, {"key_file", "server.key"}, {"ca_file", "ca.pem"}});
  EXPECT_TRUE(absl::StrContains(m, "tls.ca_file: unknown field")) << m;
  m = error({{"cert_file", server}, {"key_file", "server.key"}, {"require_client_cert", "yes"}});
  EXPECT_TRUE(absl::StrContains(m, "tls.require_client_cert: has the wrong type")) << m;
  m = error({{"cert_file", ""}, {"key_file", "server.key"}});
  EXPECT_TRUE(absl::StrContains(m, "tls.cert_file: must not be empty")) << m;
  m = error("server.pem");
  EXPECT_TRUE(absl::StrContains(m, "tls: must be a JSON object")) << m;
}

TEST_F(TlsConfigTest, ClientBlock) {
  TlsClientConfig tls;
  absl::Status st = ParseClient({{"peer_tls",
                                  {{"ca_file", "ca.pem"},
                                   {"cert_file", "client.pem"},
                                   {"key_file", "client.key"},
                                   {"server_name_override", "localhost"}}}},
                                &tls);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(tls.enabled);
  EXPECT_EQ(tls.ca_file, certs_.ca);
  EXPECT_EQ(tls.cert_file, certs_.client_cert);
  EXPECT_EQ(tls.key_file, certs_.client_key);
  EXPECT_EQ(tls.server_name_override, "localhost");
  auto security = GrpcClientSecurity::Create(tls);
  ASSERT_TRUE(security.ok()) << security.status();
  EXPECT_TRUE(security->tls());

  // An empty block: TLS with the system's roots.
  ASSERT_TRUE(ParseClient({{"peer_tls", nlohmann::json::object()}}, &tls).ok());
  EXPECT_TRUE(tls.enabled);
  EXPECT_TRUE(tls.ca_file.empty());

  st = ParseClient({{"peer_tls", {{"ca_file", "nope.pem"}}}}, &tls);
  EXPECT_TRUE(absl::StrContains(st.message(), "daemon.json: peer_tls.ca_file: cannot read '"))
      << st;
  st = ParseClient({{"peer_tls", {{"ca_file", "ca.pem"}, {"cert_file", "client.pem"}}}}, &tls);
  EXPECT_TRUE(absl::StrContains(st.message(), "peer_tls.key_file: cert_file and key_file go"))
      << st;
  st = ParseClient({{"peer_tls", {{"cert_file", "client.pem"}, {"key_file", "server.key"}}}}, &tls);
  EXPECT_TRUE(absl::StrContains(st.message(), "peer_tls.key_file: the key in")) << st;
  st = ParseClient({{"peer_tls", {{"ca", "ca.pem"}}}}, &tls);
  EXPECT_TRUE(absl::StrContains(st.message(), "peer_tls.ca: unknown field")) << st;
  st = ParseClient({{"peer_tls", {{"server_name_override", ""}}}}, &tls);
  EXPECT_TRUE(absl::StrContains(st.message(), "peer_tls.server_name_override: must not be empty"))
      << st;
}

// http::Server over HTTPS.
class HttpsServerTest : public TlsConfigTest {
 protected:
  std::unique_ptr<http::Server> Start(const TlsServerConfig& tls) {
    http::ServerOptions options;
    options.tls = tls;
    std::map<std::string, http::Handler> routes;
    routes["/plain"] = [](const http::Request& req, http::Reply reply) {
      http::Response r;
      r.body = "hello over " + req.method;
      reply(std::move(r));
    };
    // Server-sent events, as the LLM route streams them.
    routes["/sse"] = [](const http::Request&, http::Reply reply) {
      auto writer = std::make_shared<http::StreamWriter>();
      http::Response r;
      r.content_type = "text/event-stream";
      r.stream = writer->state();
      reply(std::move(r));
      std::thread([writer] {
        for (int i = 0; i < 3; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
          writer->Write(absl::StrCat("data: ", i, "\n\n"));
        }
        writer->Close();
      }).detach();
    };
    auto server = http::Server::Create(options, std::move(routes));
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }

  TlsServerConfig ServerTls(bool require_client_cert) {
    TlsServerConfig tls;
    tls.cert_file = certs_.server_cert;
    tls.key_file = certs_.server_key;
    if (require_client_cert) {
      tls.client_ca_file = certs_.ca;
      tls.require_client_cert = true;
    }
    return tls;
  }

  HttpCall Call(const std::string& path, bool http11 = false) {
    HttpCall call;
    call.path = path;
    call.http11 = http11;
    call.tls_ca_file = certs_.ca.string();
    return call;
  }
};

TEST_F(HttpsServerTest, PlainAndStreamedRepliesOverTls) {
  auto server = Start(ServerTls(false));
  ASSERT_NE(server, nullptr);
  HttpResult r = HttpRequest(server->port(), Call("/plain"));
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "hello over GET");
  // Streamed: chunked on HTTP/1.1, raw until the close on HTTP/1.0.
  for (bool http11 : {true, false}) {
    int reads = 0;
    HttpCall call = Call("/sse", http11);
    call.on_read = [&](const std::string&) { ++reads; };
    r = HttpRequest(server->port(), call);
    EXPECT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.headers["content-type"], "text/event-stream");
    EXPECT_EQ(r.body, "data: 0\n\ndata: 1\n\ndata: 2\n\n") << "http11 " << http11;
    EXPECT_EQ(r.headers.count("transfer-encoding"), http11 ? 1u : 0u);
    EXPECT_GE(reads, 2) << "the events came in one read: not streamed";
    EXPECT_TRUE(r.error.empty()) << r.error;  // ended by close_notify, not cut
  }
  // A plaintext client gets no HTTP answer from the TLS port.
  EXPECT_EQ(HttpRequest(server->port(), "GET", "/plain").status, 0);
  // A client that trusts another CA refuses the server's certificate.
  HttpCall untrusting = Call("/plain");
  untrusting.tls_ca_file = certs_.other_ca.string();
  r = HttpRequest(server->port(), untrusting);
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(absl::StrContains(r.error, "certificate verify failed")) << r.error;
  // The server still serves afterwards.
  EXPECT_EQ(HttpRequest(server->port(), Call("/plain")).status, 200);
}

TEST_F(HttpsServerTest, RequiredClientCertificates) {
  auto server = Start(ServerTls(true));
  ASSERT_NE(server, nullptr);
  HttpResult none = HttpRequest(server->port(), Call("/plain"));
  EXPECT_EQ(none.status, 0) << none.body;
  EXPECT_FALSE(none.error.empty());
  HttpCall with_cert = Call("/plain");
  with_cert.tls_cert_file = certs_.client_cert.string();
  with_cert.tls_key_file = certs_.client_key.string();
  HttpResult ok = HttpRequest(server->port(), with_cert);
  EXPECT_EQ(ok.status, 200) << ok.error;
  EXPECT_EQ(ok.body, "hello over GET");
  // A certificate from a CA the server does not trust is refused like none.
  HttpCall rogue = Call("/plain");
  rogue.tls_cert_file = certs_.rogue_cert.string();
  rogue.tls_key_file = certs_.rogue_key.string();
  EXPECT_EQ(HttpRequest(server->port(), rogue).status, 0);
}

TEST_F(HttpsServerTest, UnloadableFilesAreRefusedAtCreate) {
  TlsServerConfig tls = ServerTls(false);
  tls.key_file = dir_.path() / "absent.key";
  auto server = http::Server::Create(
      http::ServerOptions{
          .listen = "127.0.0.1:0", .threads = 1, .max_body_bytes = 1024, .tls = tls},
      {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(server.status().message(), "absent.key")) << server.status();
}

}  // namespace
}  // namespace switchyard
