// Hostile orchestrators and callers against node identity and the orchestrator's admin calls
// (issue 18, "Node id takeover" and "Orchestrator admin calls"; docs/security.md, "Node identity
// and admin calls"). Each test sends the attack to a real local cluster, then checks the daemons
// are alive, the answer is the documented error, and other clients' jobs still succeed.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/node_identity.h"
#include "common/status.h"
#include "common/tls.h"
#include "gateway/billing/api_keys.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/tls_certs.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

using Json = nlohmann::json;

// A registration as a hostile orchestrator sends it: a hello for `node_id`, advertising an
// address where nothing serves (so that traffic it took would fail). Returns the gateway's
// answer; `acked` says whether the gateway accepted it (an ack came back).
grpc::Status RawRegister(const std::string& gateway, const std::string& node_id,
                         const std::string& secret, bool* acked) {
  auto stub =
      node::v1::Registry::NewStub(grpc::CreateChannel(gateway, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(10)));
  if (!secret.empty()) ctx.AddMetadata("x-switchyard-registration-secret", secret);
  auto stream = stub->Register(&ctx);
  node::v1::NodeMessage hello;
  auto* status = hello.mutable_hello();
  status->set_node_id(node_id);
  status->set_address("127.0.0.1:1");
  auto* cap = status->add_capabilities();
  cap->set_pipeline("upscale");
  cap->set_model_id("esrgan-slim-x4");
  cap->set_state(node::v1::MODEL_STATE_READY);
  cap->set_capacity(64);
  stream->Write(hello);
  node::v1::GatewayMessage msg;
  *acked = stream->Read(&msg) && msg.has_ack();
  if (*acked) {
    // Taken over: hold it a moment, as an impostor would, then leave (the test fails anyway).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ctx.TryCancel();
  }
  return stream->Finish();
}

// How a registration with a key answers the gateway's challenge.
enum class Proof {
  kHonest,        // signs the challenge as the node protocol says
  kGarbage,       // 64 random-looking bytes
  kOtherGateway,  // a proof made for another gateway (a replayed or relayed one)
  kOtherKey,      // signed with another key than the hello's
  kNone,          // never answers (the test cancels)
};

struct KeyedAnswer {
  bool challenged = false;
  bool acked = false;
  grpc::Status status;
};

// A registration as node `node_id` with `key`'s public key in the hello, answering the challenge
// as `proof` says. `hello_key` replaces the hello's public key when not empty (to claim a key the
// client does not hold).
KeyedAnswer RegisterWithKey(const std::string& gateway, const std::string& node_id,
                            const NodeKey& key, Proof proof, const std::string& hello_key = "") {
  auto stub =
      node::v1::Registry::NewStub(grpc::CreateChannel(gateway, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(10)));
  auto stream = stub->Register(&ctx);
  node::v1::NodeMessage hello;
  auto* status = hello.mutable_hello();
  status->set_node_id(node_id);
  status->set_address("127.0.0.1:1");
  status->mutable_identity()->set_public_key(hello_key.empty() ? key.public_key() : hello_key);
  KeyedAnswer answer;
  stream->Write(hello);
  node::v1::GatewayMessage msg;
  if (stream->Read(&msg) && msg.has_challenge()) {
    answer.challenged = true;
    const auto& c = msg.challenge();
    auto other = NodeKey::Generate();
    const std::string signed_for = proof == Proof::kOtherGateway ? "another-gateway" : c.gateway_id();
    const std::string text = RegistrationProofMessage(signed_for, c.nonce(), node_id,
                                                      status->identity().public_key(),
                                                      status->address());
    node::v1::NodeMessage reply;
    if (proof == Proof::kGarbage) {
      reply.mutable_proof()->set_signature(std::string(64, '\x5a'));
    } else if (proof == Proof::kOtherKey) {
      reply.mutable_proof()->set_signature((*other)->Sign(text).value_or(""));
    } else {
      reply.mutable_proof()->set_signature(key.Sign(text).value_or(""));
    }
    if (proof != Proof::kNone) stream->Write(reply);
    answer.acked = proof != Proof::kNone && stream->Read(&msg) && msg.has_ack();
  }
  // Refused: the gateway ended the stream with its status. Accepted or never answered: leave.
  if (answer.acked || (answer.challenged && proof == Proof::kNone)) ctx.TryCancel();
  answer.status = stream->Finish();
  return answer;
}

// Node id -> address, as the gateway lists its orchestrators.
std::map<std::string, std::string> Listed(v1::Gateway::Stub& stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(5)));
  v1::ListCapabilitiesRequest req;
  v1::ListCapabilitiesResponse resp;
  std::map<std::string, std::string> out;
  if (!stub.ListCapabilities(&ctx, req, &resp).ok()) return out;
  for (const auto& o : resp.orchestrators()) out[o.id()] = o.address();
  return out;
}

// Waits (bounded) until `daemon`'s log contains `text`.
bool LogShows(Daemon& daemon, const std::string& text,
              std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + Scaled(timeout);
  while (std::chrono::steady_clock::now() < end) {
    if (absl::StrContains(daemon.Log(), text)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::StrContains(daemon.Log(), text);
}

// An honest client's upscale job through the gateway; returns the node that ran it ("" if none).
std::string UpscaleOn(v1::Gateway::Stub& stub, const std::string& png, grpc::Status* status) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(30)));
  v1::UpscaleRequest req;
  req.set_model_id("esrgan-slim-x4");
  req.set_image(png);
  v1::ImageResponse resp;
  *status = stub.Upscale(&ctx, req, &resp);
  return status->ok() ? resp.job().orchestrator() : "";
}

// A one-segment TranscodeStream; at its end the gateway closes the session on the node with an
// admin call (CloseTranscodeSession). Returns the node, "" on failure.
std::string OneSegmentStream(v1::Gateway::Stub& stub, const std::string& segment) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(60)));
  auto stream = stub.TranscodeStream(&ctx);
  v1::TranscodeRequest req;
  req.set_segment(segment);
  auto* r = req.add_renditions();
  r->set_height(60);
  r->set_bitrate_bps(200000);
  r->set_preset("ultrafast");
  v1::TranscodeStreamResponse resp;
  if (!stream->Write(req) || !stream->Read(&resp) || resp.code() != 0) return "";
  stream->WritesDone();
  while (stream->Read(&resp)) {
  }
  return stream->Finish().ok() ? resp.result().job().orchestrator() : "";
}

// The transcode slots in use on `node` reach 0 within a few seconds: the session was closed by
// the gateway's CloseTranscodeSession, not by the node's 30 s idle timeout.
bool SessionClosedPromptly(v1::Gateway::Stub& stub, const std::string& node) {
  const auto end = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(5));
  while (std::chrono::steady_clock::now() < end) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListCapabilitiesRequest req;
    req.set_pipeline("transcode");
    v1::ListCapabilitiesResponse resp;
    if (stub.ListCapabilities(&ctx, req, &resp).ok()) {
      for (const auto& o : resp.offers()) {
        if (o.orchestrator() == node && o.in_use() == 0) return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string SmallSegment(const TempDir& dir) {
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 0.5;
  return MakeTestSegment(dir, spec);
}

class IdentityHostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(ModelDir() / "esrgan-slim-x4.pt"))
        << "models are not prepared; run scripts/prepare-models";
    png_ = MakeTestImage(tmp_, 16, 12, "png");
  }
  TempDir tmp_;
  std::string png_;
};

// An orchestrator registering with another's node id used to replace it: the victim left routing
// and the impostor got its traffic. Then the live registration kept its id (ALREADY_EXISTS), but
// the impostor got it once the victim's stream ended. Now the id is bound to the key its node
// proved (issue 23): an impostor without that key is refused (PERMISSION_DENIED) while the victim
// is live and after it left; the victim itself, restarted with its key, gets back in.
TEST_F(IdentityHostileTest, ANodeIdHeldByALiveRegistrationCannotBeTaken) {
  ClusterOptions options;
  options.orchestrators = 2;
  options.models = {"esrgan-slim-x4"};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  auto stub = cluster.GatewayStub();
  const std::map<std::string, std::string> before = Listed(*stub);
  ASSERT_EQ(before.size(), 2u);

  // A hostile client registers as orch-1 (a third orchestrator, seen in the field), without a
  // key: orch-1 is bound to its key.
  bool acked = false;
  grpc::Status refused = RawRegister(cluster.gateway_address(), "orch-1", "", &acked);
  EXPECT_FALSE(acked) << "the gateway accepted a second registration of orch-1";
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << GrpcCodeName(refused.error_code()) << ": " << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "node 'orch-1' refused: the id is bound"))
      << refused.error_message();
  // Logged at the gateway with the client's address.
  EXPECT_TRUE(LogShows(cluster.gateway(), "refused registration from ipv4:127.0.0.1:"))
      << cluster.gateway().Log();
  // With orch-1's own key (its key file: a restarted orch-1 whose old stream is still open),
  // the live registration keeps the id: ALREADY_EXISTS, logged with both ends.
  auto victim_key = NodeKey::LoadOrCreate(cluster.dir().path() / "orch-1.key");
  ASSERT_TRUE(victim_key.ok()) << victim_key.status();
  KeyedAnswer same_key =
      RegisterWithKey(cluster.gateway_address(), "orch-1", **victim_key, Proof::kHonest);
  EXPECT_TRUE(same_key.challenged);
  EXPECT_FALSE(same_key.acked);
  EXPECT_EQ(same_key.status.error_code(), grpc::StatusCode::ALREADY_EXISTS)
      << same_key.status.error_message();
  EXPECT_TRUE(absl::StrContains(same_key.status.error_message(), "node id 'orch-1'"));
  EXPECT_TRUE(LogShows(cluster.gateway(), "held by the live registration from ipv4:127.0.0.1:"));

  // A real orchestrator daemon configured with the victim's id (and a key of its own): refused
  // too, says so, retries.
  ASSERT_TRUE(cluster.AddOrchestrator("impostor", {{"node_id", "orch-1"}}).ok());
  EXPECT_TRUE(LogShows(cluster.orchestrator(2), "refused registration: registration of node "
                                                "'orch-1' refused: the id is bound to key"))
      << cluster.orchestrator(2).Log();

  // The victim keeps its routes and runs jobs; the impostor runs none.
  EXPECT_EQ(Listed(*stub), before);
  std::map<std::string, int> ran;
  for (int i = 0; i < 6; ++i) {
    grpc::Status job;
    ran[UpscaleOn(*stub, png_, &job)]++;
    EXPECT_TRUE(job.ok()) << job.error_message() << cluster.Logs();
  }
  EXPECT_EQ(ran[""], 0);
  EXPECT_FALSE(absl::StrContains(cluster.orchestrator(2).Log(), "upscale esrgan-slim-x4"))
      << "the impostor ran a job";
  EXPECT_TRUE(cluster.gateway().Alive());
  EXPECT_TRUE(cluster.orchestrator(0).Alive());
  EXPECT_TRUE(cluster.orchestrator(1).Alive());

  // Once the victim's stream ends the impostor is still refused: the id stays bound to the key.
  cluster.orchestrator(0).Stop();
  const auto gone = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(15));
  while (std::chrono::steady_clock::now() < gone && Listed(*stub).count("orch-1") != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the impostor retries within 2 s
  EXPECT_EQ(Listed(*stub).count("orch-1"), 0u) << cluster.Logs();
  // The victim, restarted with its key file, gets its id back.
  ASSERT_TRUE(cluster.RestartOrchestrator(0).ok());
  const auto end = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(15));
  std::map<std::string, std::string> after;
  while (std::chrono::steady_clock::now() < end) {
    after = Listed(*stub);
    if (after.count("orch-1") != 0 && after["orch-1"] == cluster.orchestrator_address(0)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(after["orch-1"], cluster.orchestrator_address(0)) << cluster.Logs();
  EXPECT_FALSE(absl::StrContains(cluster.orchestrator(2).Log(), "registered with gateway"))
      << "the impostor registered";
}

// Per-node secrets (gateway node_secrets_file): a node registers only under its own id.
TEST_F(IdentityHostileTest, PerNodeSecretsBindEachNodeToItsId) {
  const std::string s1 = "node-1-secret-0123456789", s2 = "node-2-secret-9876543210";
  const auto nodes_file = tmp_.path() / "nodes.json";
  WriteFile(nodes_file, Json({{"nodes",
                               {{{"id", "orch-1"}, {"sha256", gateway::Sha256Hex(s1)}},
                                {{"id", "orch-2"}, {"sha256", gateway::Sha256Hex(s2)}}}}})
                            .dump());
  ClusterOptions options;
  options.orchestrators = 0;
  options.models = {"esrgan-slim-x4"};
  options.transcode_capacity = 1;
  options.gateway_config = {{"node_secrets_file", nodes_file.string()}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_TRUE(cluster.AddOrchestrator("orch-1", {{"registration_secret", s1}}).ok());
  ASSERT_TRUE(cluster.AddOrchestrator("orch-2", {{"registration_secret", s2}}).ok());
  st = cluster.WaitForOrchestrators(2, std::chrono::seconds(30));
  ASSERT_TRUE(st.ok()) << st;
  auto stub = cluster.GatewayStub();
  const std::map<std::string, std::string> before = Listed(*stub);

  struct Attack {
    const char* what;
    std::string node_id, secret;
    grpc::StatusCode code;
    const char* message;
  };
  const Attack attacks[] = {
      {"orch-2's secret for orch-1", "orch-1", s2, grpc::StatusCode::UNAUTHENTICATED,
       "is not node 'orch-1''s"},
      {"no secret", "orch-1", "", grpc::StatusCode::UNAUTHENTICATED, "no registration secret"},
      {"a guessed secret", "orch-3", "guess", grpc::StatusCode::UNAUTHENTICATED,
       "wrong registration secret"},
      {"a real secret for an unlisted id", "orch-3", s1, grpc::StatusCode::PERMISSION_DENIED,
       "'orch-3' is not in the gateway's node_secrets_file"},
      // orch-1 proved its key when it registered: its id is bound to that key (issue 23).
      {"the right secret but no key while orch-1 is live", "orch-1", s1,
       grpc::StatusCode::PERMISSION_DENIED, "the id is bound to key"},
  };
  for (const Attack& a : attacks) {
    bool acked = false;
    grpc::Status refused = RawRegister(cluster.gateway_address(), a.node_id, a.secret, &acked);
    EXPECT_FALSE(acked) << a.what;
    EXPECT_EQ(refused.error_code(), a.code)
        << a.what << ": " << GrpcCodeName(refused.error_code()) << ": " << refused.error_message();
    EXPECT_TRUE(absl::StrContains(refused.error_message(), a.message))
        << a.what << ": " << refused.error_message();
  }
  // A real daemon with orch-2's secret posing as orch-1: refused, and it says why.
  ASSERT_TRUE(
      cluster.AddOrchestrator("impostor", {{"node_id", "orch-1"}, {"registration_secret", s2}})
          .ok());
  EXPECT_TRUE(LogShows(cluster.orchestrator(2), "is not node 'orch-1''s"))
      << cluster.orchestrator(2).Log();
  EXPECT_TRUE(LogShows(cluster.gateway(), "refused registration of node 'orch-1' from"));

  EXPECT_EQ(Listed(*stub), before);
  grpc::Status job;
  EXPECT_FALSE(UpscaleOn(*stub, png_, &job).empty()) << job.error_message() << cluster.Logs();
  // The gateway closes a finished stream's session with the secret that node registered with.
  const std::string node = OneSegmentStream(*stub, SmallSegment(tmp_));
  ASSERT_FALSE(node.empty()) << cluster.Logs();
  EXPECT_TRUE(SessionClosedPromptly(*stub, node)) << cluster.Logs();
  EXPECT_TRUE(cluster.gateway().Alive());
}

// LoadModel, UnloadModel and CloseTranscodeSession used to be open to anyone reaching the
// orchestrator's port. Now they need a registration secret of the node's or its admin token.
TEST_F(IdentityHostileTest, AdminCallsNeedACredential) {
  const std::string secret = "shared-registration-secret", token = "operator-admin-token";
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {"esrgan-slim-x4", "esrgan-slim-x2"};
  options.transcode_capacity = 1;
  options.gateway_config = {{"registration_secret", secret}};
  options.orchestrator_config = {{"registration_secret", secret}, {"admin_token", token}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  auto gateway = cluster.GatewayStub();
  auto orch = node::v1::Orchestrator::NewStub(
      grpc::CreateChannel(cluster.orchestrator_address(0), grpc::InsecureChannelCredentials()));
  auto ctx = [](const std::string& key, const std::string& value) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(30)));
    if (!key.empty()) c->AddMetadata(key, value);
    return c;
  };
  node::v1::ModelRequest warm;
  warm.set_model_id("esrgan-slim-x4");
  node::v1::NodeCapability cap;

  // Without a credential, or with a wrong one: refused, and the warm model stays loaded.
  struct Attempt {
    std::string key, value;
    const char* why;
  };
  const Attempt attempts[] = {
      {"", "", "no credential"},
      {"x-switchyard-registration-secret", "guess", "wrong registration secret"},
      {"authorization", "Bearer guess", "wrong admin token"},
  };
  for (const Attempt& a : attempts) {
    grpc::Status unload = orch->UnloadModel(ctx(a.key, a.value).get(), warm, &cap);
    EXPECT_EQ(unload.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << a.why << ": " << GrpcCodeName(unload.error_code()) << " " << unload.error_message();
    EXPECT_TRUE(absl::StrContains(unload.error_message(), "UnloadModel is an admin call"))
        << unload.error_message();
    EXPECT_TRUE(absl::StrContains(unload.error_message(), a.why)) << unload.error_message();
    grpc::Status load = orch->LoadModel(ctx(a.key, a.value).get(), warm, &cap);
    EXPECT_EQ(load.error_code(), grpc::StatusCode::UNAUTHENTICATED) << a.why;
    node::v1::CloseTranscodeSessionRequest close;
    close.set_stream_id("someone-elses-stream");
    node::v1::CloseTranscodeSessionResponse closed;
    grpc::Status close_st = orch->CloseTranscodeSession(ctx(a.key, a.value).get(), close, &closed);
    EXPECT_EQ(close_st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << a.why;
  }
  EXPECT_TRUE(LogShows(cluster.orchestrator(0), "refused UnloadModel from ipv4:127.0.0.1:"));
  // Another client's job runs on the model the attacker tried to unload.
  grpc::Status job;
  EXPECT_EQ(UpscaleOn(*gateway, png_, &job), "orch-1") << job.error_message() << cluster.Logs();

  // The operator's token and the gateway's secret are both accepted.
  node::v1::ModelRequest cold;
  cold.set_model_id("esrgan-slim-x2");
  grpc::Status load = orch->LoadModel(ctx("authorization", "Bearer " + token).get(), cold, &cap);
  EXPECT_TRUE(load.ok()) << load.error_message();
  grpc::Status unload =
      orch->UnloadModel(ctx("x-switchyard-registration-secret", secret).get(), cold, &cap);
  EXPECT_TRUE(unload.ok()) << unload.error_message();

  // Even an admin's model id is cut and escaped in the orchestrator's log lines: it cannot start
  // a line of its own, clear the terminal, or flood the log.
  node::v1::ModelRequest hostile;
  hostile.set_model_id(absl::StrCat("nope\n2026-12-03 00:00:00.000 FORGED-ORCH-18 admin\x1b[2J",
                                    std::string(20000, 'x')));
  grpc::Status refused =
      orch->LoadModel(ctx("authorization", "Bearer " + token).get(), hostile, &cap);
  EXPECT_FALSE(refused.ok());
  ASSERT_TRUE(LogShows(cluster.orchestrator(0), "FORGED-ORCH-18")) << "the load was not logged";
  ExpectNoForgedLogLines(cluster.orchestrator(0).Log(), "2026-12-03 00:00:00.000 FORGED");

  // The gateway sends its credential when it closes a finished stream's session.
  const size_t log_mark = cluster.orchestrator(0).Log().size();  // past the refusals above
  const std::string node = OneSegmentStream(*gateway, SmallSegment(tmp_));
  ASSERT_EQ(node, "orch-1") << cluster.Logs();
  EXPECT_TRUE(SessionClosedPromptly(*gateway, node)) << cluster.Logs();
  EXPECT_FALSE(absl::StrContains(cluster.orchestrator(0).Log().substr(log_mark),
                                 "refused CloseTranscodeSession"))
      << "the gateway's own CloseTranscodeSession was refused\n"
      << cluster.orchestrator(0).Log();
  EXPECT_TRUE(cluster.gateway().Alive());
  EXPECT_TRUE(cluster.orchestrator(0).Alive());
}

// With mutual TLS and node_id_from_client_cert, the certificate names the node: a node whose
// certificate names another id cannot register as it (the shared-secret setup cannot tell).
TEST_F(IdentityHostileTest, ClientCertificateBindsTheNodeId) {
  auto certs = MakeTestCerts(tmp_.path());
  ASSERT_TRUE(certs.ok()) << certs.status();
  const std::string cert_id = "switchyard-test-client";  // the test client certificate's CN
  const Json server_tls = {{"cert_file", certs->server_cert.string()},
                           {"key_file", certs->server_key.string()},
                           {"client_ca_file", certs->ca.string()},
                           {"require_client_cert", true}};
  const Json client_tls = {{"ca_file", certs->ca.string()},
                           {"cert_file", certs->client_cert.string()},
                           {"key_file", certs->client_key.string()}};
  TlsClientConfig tls;
  tls.enabled = true;
  tls.ca_file = certs->ca;
  tls.cert_file = certs->client_cert;
  tls.key_file = certs->client_key;
  auto security = GrpcClientSecurity::Create(tls);
  ASSERT_TRUE(security.ok()) << security.status();
  ClusterOptions options;
  options.orchestrators = 0;
  options.models = {"esrgan-slim-x4"};
  options.gateway_config = {{"tls", server_tls}, {"node_id_from_client_cert", true}};
  options.orchestrator_config = {{"gateway_tls", client_tls}};
  options.gateway_security = *security;
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_TRUE(cluster.AddOrchestrator("named", {{"node_id", cert_id}}).ok());
  st = cluster.WaitForOrchestrators(1, std::chrono::seconds(30));
  ASSERT_TRUE(st.ok()) << st;
  // The same certificate, another id: refused, and both sides say why.
  ASSERT_TRUE(cluster.AddOrchestrator("orch-x").ok());
  EXPECT_TRUE(LogShows(cluster.orchestrator(1),
                       "the client certificate names " + cert_id + ", not node 'orch-x'"))
      << cluster.orchestrator(1).Log();
  EXPECT_TRUE(LogShows(cluster.gateway(), "refused registration of node 'orch-x'"))
      << cluster.gateway().Log();
  auto stub = cluster.GatewayStub();
  const auto listed = Listed(*stub);
  EXPECT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed.count(cert_id), 1u);
  grpc::Status job;
  EXPECT_EQ(UpscaleOn(*stub, png_, &job), cert_id) << job.error_message() << cluster.Logs();
  EXPECT_TRUE(cluster.gateway().Alive());
}

// Node identity keys (issue 23): a hello with a key is acked only after the node signed the
// gateway's fresh challenge with that key, for this gateway, this id and this address.
TEST_F(IdentityHostileTest, AKeyMustBeProvenAtEveryRegistration) {
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {"esrgan-slim-x4"};
  options.transcode_capacity = 1;
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  // The real node proved its key (the file its config names, mode 0600).
  EXPECT_TRUE(LogShows(cluster.gateway(), "orchestrator orch-1 proved its identity key"))
      << cluster.gateway().Log();
  auto victim = NodeKey::LoadOrCreate(cluster.dir().path() / "orch-1.key");
  ASSERT_TRUE(victim.ok()) << victim.status();
  auto mine = NodeKey::Generate();
  ASSERT_TRUE(mine.ok());
  const std::string gw = cluster.gateway_address();

  struct Attack {
    const char* what;
    std::string node_id;
    const NodeKey* key;
    Proof proof;
    std::string hello_key;
    grpc::StatusCode code;
    const char* message;
  };
  const Attack attacks[] = {
      {"orch-1's public key without its private key", "orch-new", mine->get(), Proof::kHonest,
       (*victim)->public_key(), grpc::StatusCode::UNAUTHENTICATED, "identity proof failed"},
      {"a garbage signature", "orch-new", mine->get(), Proof::kGarbage, "",
       grpc::StatusCode::UNAUTHENTICATED, "identity proof failed"},
      {"a proof made for another gateway", "orch-new", mine->get(), Proof::kOtherGateway, "",
       grpc::StatusCode::UNAUTHENTICATED, "does not verify"},
      {"a proof by another key", "orch-new", mine->get(), Proof::kOtherKey, "",
       grpc::StatusCode::UNAUTHENTICATED, "does not verify"},
      {"another key for orch-1, honestly signed", "orch-1", mine->get(), Proof::kHonest, "",
       grpc::StatusCode::PERMISSION_DENIED, "bound to key"},
      {"a 31-byte key", "orch-new", mine->get(), Proof::kHonest, std::string(31, 'k'),
       grpc::StatusCode::INVALID_ARGUMENT, "31 bytes"},
  };
  for (const Attack& a : attacks) {
    KeyedAnswer answer = RegisterWithKey(gw, a.node_id, *a.key, a.proof, a.hello_key);
    EXPECT_FALSE(answer.acked) << a.what;
    EXPECT_EQ(answer.status.error_code(), a.code)
        << a.what << ": " << GrpcCodeName(answer.status.error_code()) << ": "
        << answer.status.error_message();
    EXPECT_TRUE(absl::StrContains(answer.status.error_message(), a.message))
        << a.what << ": " << answer.status.error_message();
  }
  // A proof without a challenge, and a client that never answers the challenge.
  {
    auto stub =
        node::v1::Registry::NewStub(grpc::CreateChannel(gw, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(10)));
    auto stream = stub->Register(&ctx);
    node::v1::NodeMessage proof;
    proof.mutable_proof()->set_signature(std::string(64, 'x'));
    stream->Write(proof);
    node::v1::GatewayMessage msg;
    EXPECT_FALSE(stream->Read(&msg));
    grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  }
  KeyedAnswer silent = RegisterWithKey(gw, "orch-silent", **mine, Proof::kNone);
  EXPECT_TRUE(silent.challenged);
  EXPECT_FALSE(silent.acked);

  // An honest new node with its own key is accepted; the real node still serves.
  KeyedAnswer honest = RegisterWithKey(gw, "orch-new", **mine, Proof::kHonest);
  EXPECT_TRUE(honest.acked) << honest.status.error_message();
  auto stub = cluster.GatewayStub();
  grpc::Status job;
  EXPECT_EQ(UpscaleOn(*stub, png_, &job), "orch-1") << job.error_message() << cluster.Logs();
  EXPECT_TRUE(cluster.gateway().Alive());
  EXPECT_TRUE(cluster.orchestrator(0).Alive());
}

// node_identity.mode "require" refuses nodes without a key; the policy file's deny and allow
// lists and rebind are re-read on SIGHUP, a bad file keeping the old lists; bindings persist in
// bindings_file across a gateway restart.
TEST_F(IdentityHostileTest, RequiredKeysPolicyReloadAndPersistentBindings) {
  auto denied = NodeKey::Generate();
  auto moved = NodeKey::Generate();
  ASSERT_TRUE(denied.ok() && moved.ok());
  const auto policy = tmp_.path() / "node-policy.json";
  WriteFile(policy, Json({{"deny", {{{"public_key", NodeKeyHex((*denied)->public_key())}}}}})
                        .dump());
  const auto bindings = tmp_.path() / "node-bindings.json";
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {"esrgan-slim-x4"};
  options.transcode_capacity = 1;
  options.gateway_config = {{"node_identity",
                             {{"mode", "require"},
                              {"policy_file", policy.string()},
                              {"bindings_file", bindings.string()}}}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  const std::string gw = cluster.gateway_address();

  bool acked = false;
  grpc::Status keyless = RawRegister(gw, "orch-keyless", "", &acked);
  EXPECT_FALSE(acked);
  EXPECT_EQ(keyless.error_code(), grpc::StatusCode::UNAUTHENTICATED) << keyless.error_message();
  EXPECT_TRUE(absl::StrContains(keyless.error_message(), "requires a node identity key"));
  KeyedAnswer deny = RegisterWithKey(gw, "orch-x", **denied, Proof::kHonest);
  EXPECT_FALSE(deny.acked);
  EXPECT_EQ(deny.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(deny.status.error_message(), "is denied"))
      << deny.status.error_message();

  // orch-1 is bound (and the binding written, 0600).
  const std::string orch1_key = NodeKeyHex(NodeKey::LoadOrCreate(cluster.dir().path() / "orch-1.key")
                                               .value()
                                               ->public_key());
  EXPECT_TRUE(absl::StrContains(ReadFile(bindings), orch1_key)) << ReadFile(bindings);

  // The operator lifts the deny and lets orch-1 move to a new key; SIGHUP.
  WriteFile(policy, Json({{"rebind", {"orch-1"}}}).dump());
  cluster.gateway().Signal(SIGHUP);
  ASSERT_TRUE(LogShows(cluster.gateway(), "node identity policy " + policy.string() +
                                              ": 0 allowed keys, 0 denied keys, 0 denied ids, 1"))
      << cluster.gateway().Log();
  EXPECT_TRUE(RegisterWithKey(gw, "orch-x", **denied, Proof::kHonest).acked);
  // A bad policy file: the old lists stay (rebind still allowed), the error is logged.
  WriteFile(policy, "{\"deny\": 5}");
  cluster.gateway().Signal(SIGHUP);
  EXPECT_TRUE(LogShows(cluster.gateway(), "node identity policy not reloaded, old lists kept"))
      << cluster.gateway().Log();
  cluster.orchestrator(0).Stop();
  const auto gone = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(15));
  auto stub = cluster.GatewayStub();
  while (std::chrono::steady_clock::now() < gone && Listed(*stub).count("orch-1") != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  KeyedAnswer rebound = RegisterWithKey(gw, "orch-1", **moved, Proof::kHonest);
  EXPECT_TRUE(rebound.acked) << rebound.status.error_message();
  EXPECT_TRUE(absl::StrContains(ReadFile(bindings), NodeKeyHex((*moved)->public_key())));

  // After a gateway restart the bindings file holds: orch-1 is now `moved`'s, so the old key is
  // refused once rebind is gone.
  WriteFile(policy, "{}");
  ASSERT_TRUE(cluster.RestartGateway().ok());
  KeyedAnswer old_key = RegisterWithKey(cluster.gateway_address(), "orch-1",
                                        *NodeKey::LoadOrCreate(cluster.dir().path() / "orch-1.key")
                                             .value(),
                                        Proof::kHonest);
  EXPECT_FALSE(old_key.acked);
  EXPECT_EQ(old_key.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << old_key.status.error_message();
  EXPECT_TRUE(cluster.gateway().Alive());
}

}  // namespace
}  // namespace switchyard::testing
