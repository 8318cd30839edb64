// API keys at the gateway (gRPC and the Livepeer HTTP API) and the orchestrators' registration
// secret, on a local cluster (docs/security.md).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "inference/open_inference_grpc.grpc.pb.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

constexpr char kBoundary[] = "authtestboundary";
constexpr char kSecret[] = "registration-s3cret";

// A new key and its entry, made by the operators' tool (`switchyard-gateway --new-api-key`),
// with `limits` over the tool's defaults.
nlohmann::json NewKey(const std::string& id, const nlohmann::json& limits, std::string* key) {
  std::string out;
  const int rc = RunCommand(
      absl::StrCat(BinaryPath("switchyard-gateway").string(), " --new-api-key ", id), &out);
  EXPECT_EQ(rc, 0) << out;
  nlohmann::json entry;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::ConsumePrefix(&line, "key: ")) *key = std::string(line);
    if (absl::ConsumePrefix(&line, "entry: ")) {
      entry = nlohmann::json::parse(line, nullptr, false);
    }
  }
  EXPECT_TRUE(entry.is_object() && absl::StartsWith(*key, "sy_")) << out;
  if (!entry.is_object()) return nlohmann::json::object();
  EXPECT_EQ(entry["id"], id);
  entry.update(limits);
  return entry;
}

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key, const std::string& header) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (header == "authorization") ctx->AddMetadata("authorization", absl::StrCat("Bearer ", key));
  if (header == "x-api-key") ctx->AddMetadata("x-api-key", key);
  return ctx;
}

std::string Form(const std::string& png) {
  return absl::StrCat("--", kBoundary,
                      "\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n"
                      "esrgan-slim-x4\r\n--",
                      kBoundary,
                      "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\n"
                      "Content-Type: image/png\r\n\r\n",
                      png, "\r\n--", kBoundary, "--\r\n");
}

TEST(AuthTest, ApiKeysQuotasReloadAndRegistrationSecret) {
  ASSERT_TRUE(std::filesystem::exists(ModelDir() / "esrgan-slim-x4.pt"))
      << "models are not prepared; run scripts/prepare-models";
  TempDir tmp;
  const auto keys_file = tmp.path() / "keys.json";
  std::string key, slow_key, new_key;
  // "app": one call at a time; "slow": one call, then rate limited for a long while.
  nlohmann::json app = NewKey("app", {{"max_concurrent", 1}, {"rate_per_second", 0}}, &key);
  nlohmann::json slow =
      NewKey("slow", {{"rate_per_second", 0.001}, {"burst", 1}, {"max_concurrent", 0}}, &slow_key);
  nlohmann::json added_entry = NewKey("added", nlohmann::json::object(), &new_key);
  ASSERT_FALSE(HasFailure());
  nlohmann::json keys = {{"keys", {app, slow}}};
  WriteFile(keys_file, keys.dump());
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {"esrgan-slim-x4"};
  options.gateway_config = {{"api_keys_file", keys_file.string()},
                            {"registration_secret", kSecret}};
  options.orchestrator_config = {{"registration_secret", kSecret}};
  options.api_key = key;
  LocalCluster cluster;
  auto st = cluster.Start(options);  // the orchestrator with the right secret is listed
  ASSERT_TRUE(st.ok()) << st;
  auto stub = cluster.GatewayStub();
  const std::string png = MakeTestImage(tmp, 16, 12, "png");
  auto upscale = [&](const std::string& presented, const std::string& header) {
    v1::UpscaleRequest req;
    req.set_model_id("esrgan-slim-x4");
    req.set_image(png);
    v1::ImageResponse resp;
    auto ctx = Ctx(presented, header);
    return stub->Upscale(ctx.get(), req, &resp);
  };

  // gRPC: no key, a wrong key, the right one (both header forms).
  grpc::Status none = upscale("", "");
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED) << none.error_message();
  EXPECT_TRUE(absl::StrContains(none.error_message(), "API key required")) << none.error_message();
  grpc::Status wrong = upscale("sy_wrong", "authorization");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED) << wrong.error_message();
  grpc::Status ok = upscale(key, "authorization");
  EXPECT_TRUE(ok.ok()) << ok.error_message() << cluster.Logs();
  // At once: the previous call's concurrency slot (max_concurrent 1) is free when its answer comes.
  ok = upscale(key, "x-api-key");
  EXPECT_TRUE(ok.ok()) << GrpcCodeName(ok.error_code()) << ": " << ok.error_message();
  {  // The CLI sends --api-key (or SWITCHYARD_API_KEY) as a bearer token.
    const std::string cli = absl::StrCat(BinaryPath("switchyard").string(), " --gateway ",
                                         cluster.gateway_address(), " capabilities 2>&1");
    std::string out;
    EXPECT_EQ(RunCommand(cli, &out), 1) << out;
    EXPECT_TRUE(absl::StrContains(out, "UNAUTHENTICATED")) << out;
    EXPECT_EQ(RunCommand(absl::StrCat(BinaryPath("switchyard").string(), " --api-key ", key,
                                      " --gateway ", cluster.gateway_address(), " capabilities"),
                         &out),
              0)
        << out;
    EXPECT_EQ(RunCommand("SWITCHYARD_API_KEY=" + key + " " + cli, &out), 0) << out;
  }
  {  // the key is checked before the request: an empty one is refused, not called invalid
    v1::UpscaleRequest empty;
    v1::ImageResponse resp;
    auto ctx = Ctx("", "");
    const grpc::Status st = stub->Upscale(ctx.get(), empty, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message() << "\n"
                                                                  << cluster.Logs();
  }

  // Streaming RPCs are checked too: LLM (server streaming) and KServe.
  {
    auto ctx = Ctx("", "");
    v1::LLMRequest req;  // no model either: the key is checked first
    auto reader = stub->LLM(ctx.get(), req);
    v1::LLMResponse chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    auto kserve = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(cluster.gateway_address(), grpc::InsecureChannelCredentials()));
    inference::ModelInferRequest req;
    req.set_model_name("esrgan-slim-x4");
    inference::ModelInferResponse resp;
    auto ctx = Ctx("", "");
    EXPECT_EQ(kserve->ModelInfer(ctx.get(), req, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    inference::ServerLiveRequest live_req;
    inference::ServerLiveResponse live;
    auto live_ctx = Ctx("", "");
    EXPECT_TRUE(kserve->ServerLive(live_ctx.get(), live_req, &live).ok());  // a probe: open
  }

  // Concurrency: an open TranscodeStream holds the key's only slot until it ends.
  {
    grpc::Status over, finished;
    // The stream's call reaches the gateway asynchronously, so an upscale sent right after it
    // can take the slot first and the stream is then the one refused (its Finish says so): that
    // round proves nothing and is run again, a bounded number of times.
    for (int round = 0; round < 5; ++round) {
      auto ctx = Ctx(key, "authorization");
      auto stream = stub->TranscodeStream(ctx.get());
      for (int i = 0; i < 50; ++i) {  // retry, bounded, until the upscale is refused
        over = upscale(key, "authorization");
        if (over.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      stream->WritesDone();
      finished = stream->Finish();
      const bool stream_lost_the_race =
          finished.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
          over.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED;
      if (!stream_lost_the_race) break;
    }
    EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << over.error_message();
    EXPECT_TRUE(absl::StrContains(over.error_message(), "concurrency quota"))
        << over.error_message();
    EXPECT_TRUE(finished.ok()) << GrpcCodeName(finished.error_code()) << ": "
                               << finished.error_message() << "\n"
                               << cluster.Logs();
  }
  grpc::Status after;
  for (int i = 0; i < 50; ++i) {  // the slot is back once the stream's call is done
    after = upscale(key, "authorization");
    if (after.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(after.ok()) << after.error_message();

  // Rate limit: the slow key has a burst of one.
  EXPECT_TRUE(upscale(slow_key, "authorization").ok());
  grpc::Status limited = upscale(slow_key, "authorization");
  EXPECT_EQ(limited.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(limited.error_message(), "rate limit")) << limited.error_message();

  // HTTP: 401 without a key (Livepeer's error shape), 200 with it, 429 over the rate limit.
  const int http = cluster.gateway().http_port();
  HttpCall call;
  call.method = "POST";
  call.path = "/upscale";
  call.content_type = absl::StrCat("multipart/form-data; boundary=", kBoundary);
  call.body = Form(png);
  HttpResult unauthorized = HttpRequest(http, call);
  EXPECT_EQ(unauthorized.status, 401) << unauthorized.body;
  auto error = nlohmann::json::parse(unauthorized.body, nullptr, false);
  // The route's Livepeer error shape ({"detail": {"msg": ...}} for /upscale).
  EXPECT_TRUE(error.is_object() && (error.contains("detail") || error.contains("error")))
      << unauthorized.body;
  EXPECT_TRUE(absl::StrContains(unauthorized.body, "API key")) << unauthorized.body;
  call.headers["Authorization"] = absl::StrCat("Bearer ", key);
  HttpResult authorized = HttpRequest(http, call);
  EXPECT_EQ(authorized.status, 200) << authorized.body;
  call.headers["Authorization"] = absl::StrCat("Bearer ", slow_key);
  EXPECT_EQ(HttpRequest(http, call).status, 429);
  EXPECT_EQ(HttpRequest(http, "GET", "/healthz").status, 200);  // operators' routes stay open

  // SIGHUP: a bad file keeps the old keys; an edited file makes a new key work.
  WriteFile(keys_file, "{not json");
  cluster.gateway().Signal(SIGHUP);
  bool reported = false;
  for (int i = 0; i < 50 && !reported; ++i) {
    reported = absl::StrContains(cluster.gateway().Log(), "old keys kept");
    if (!reported) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(reported) << cluster.gateway().Log();
  EXPECT_TRUE(upscale(key, "authorization").ok());
  EXPECT_EQ(upscale(new_key, "authorization").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  keys["keys"].push_back(added_entry);
  WriteFile(keys_file, keys.dump());
  cluster.gateway().Signal(SIGHUP);
  grpc::Status added;
  for (int i = 0; i < 50; ++i) {
    added = upscale(new_key, "authorization");
    if (added.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(added.ok()) << added.error_message() << cluster.gateway().Log();

  // An orchestrator with the wrong secret is refused, logged with its address, and not listed.
  ASSERT_TRUE(cluster.AddOrchestrator("orch-bad", {{"registration_secret", "guess"}}).ok());
  bool logged = false;
  for (int i = 0; i < 100 && !logged; ++i) {  // both sides say why
    const std::string gw_log = cluster.gateway().Log();
    logged = absl::StrContains(gw_log, "refused registration from ipv4:127.0.0.1:") &&
             absl::StrContains(gw_log, "wrong registration secret") &&
             absl::StrContains(cluster.orchestrator(1).Log(), "refused registration");
    if (!logged) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(logged) << cluster.gateway().Log() << cluster.orchestrator(1).Log();
  auto ctx = Ctx(key, "authorization");
  v1::ListCapabilitiesRequest req;
  v1::ListCapabilitiesResponse resp;
  ASSERT_TRUE(stub->ListCapabilities(ctx.get(), req, &resp).ok());
  ASSERT_EQ(resp.orchestrators_size(), 1);
  EXPECT_EQ(resp.orchestrators(0).id(), "orch-1");
}

}  // namespace
}  // namespace switchyard::testing
