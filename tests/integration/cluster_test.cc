// End-to-end tests: a real gateway and real orchestrators on loopback, jobs through the public
// API and the CLI, outputs checked (sizes, numerics against the TF.js reference, ffprobe).
#include <signal.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::grpc::StatusCode;

std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

void RequireModels() {
  ASSERT_TRUE(fs::exists(ModelDir() / "esrgan-slim-x4.pt"))
      << "models are not prepared in " << ModelDir() << "; run scripts/prepare-models";
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RequireModels();
    if (HasFatalFailure()) return;
    auto st = cluster_.Start(options_);
    ASSERT_TRUE(st.ok()) << st;
    stub_ = cluster_.GatewayStub();
  }

  grpc::Status Upscale(const std::string& model, const std::string& image, v1::ImageResponse* out,
                       std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    v1::UpscaleRequest req;
    req.set_model_id(model);
    req.set_image(image);
    auto ctx = Context(timeout);
    return stub_->Upscale(ctx.get(), req, out);
  }

  ClusterOptions options_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  TempDir tmp_;
};

TEST_F(ClusterTest, ListCapabilitiesShowsBothOrchestratorsAndTheirModels) {
  v1::ListCapabilitiesRequest req;
  v1::ListCapabilitiesResponse resp;
  std::map<std::string, v1::Capability> caps;
  // The warm model becomes READY on both nodes by itself, no job sent (a node may register while
  // its warm-up has not begun yet: bounded wait, 30 s).
  for (int i = 0; i < 300; ++i) {
    auto ctx = Context(std::chrono::seconds(5));
    resp.Clear();
    ASSERT_TRUE(stub_->ListCapabilities(ctx.get(), req, &resp).ok());
    caps.clear();
    for (const auto& c : resp.capabilities()) caps[c.pipeline() + "/" + c.model_id()] = c;
    if (caps["upscale/esrgan-slim-x4"].warm_orchestrators() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(resp.orchestrators_size(), 2);
  ASSERT_TRUE(caps.count("upscale/esrgan-slim-x4"));
  EXPECT_EQ(caps["upscale/esrgan-slim-x4"].orchestrators(), 2);
  EXPECT_EQ(caps["upscale/esrgan-slim-x4"].warm_orchestrators(), 2);  // warm at start
  ASSERT_TRUE(caps.count("upscale/esrgan-slim-x2"));
  EXPECT_EQ(caps["upscale/esrgan-slim-x2"].warm_orchestrators(), 0);  // cold until used
  ASSERT_TRUE(caps.count("transcode/libx264"));
  EXPECT_EQ(caps["transcode/libx264"].capacity(), 4);
  EXPECT_DOUBLE_EQ(caps["upscale/esrgan-slim-x4"].min_price_per_unit(), 0.000001);
}

TEST_F(ClusterTest, UpscaleX4OfGeneratedPngHasFourTimesTheSize) {
  std::string png = MakeTestImage(tmp_, 64, 48, "png");
  v1::ImageResponse resp;
  auto st = Upscale("esrgan-slim-x4", png, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  ASSERT_EQ(resp.images_size(), 1);
  EXPECT_EQ(resp.images(0).content_type(), "image/png");
  EXPECT_EQ(resp.images(0).width(), 256);
  EXPECT_EQ(resp.images(0).height(), 192);
  auto decoded = media::DecodeImage(resp.images(0).data(), 1 << 24);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 256);
  EXPECT_EQ(decoded->height, 192);
  EXPECT_EQ(resp.job().units(), 64 * 48);  // billed by input pixels
  EXPECT_EQ(resp.job().attempts(), 1);
  EXPECT_FALSE(resp.job().orchestrator().empty());
  EXPECT_FALSE(resp.job().request_id().empty());
}

// The whole path (PNG decode, tensor layout, model, clamp/round, PNG encode) against the output
// the original TF.js model computes for the committed fixture input.
TEST_F(ClusterTest, UpscaleThroughTheClusterMatchesTfjsReference) {
  const fs::path fixtures = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "esrgan";
  auto input_header = nlohmann::json::parse(ReadFile(fixtures / "input.json"));
  const int h = input_header["shape"][0], w = input_header["shape"][1];
  media::RgbImage input{w, h, {}};
  std::string raw = ReadFile(fixtures / "input.u8");
  input.pixels.assign(raw.begin(), raw.end());
  ASSERT_EQ(input.pixels.size(), static_cast<size_t>(w * h * 3));
  auto png = media::EncodePng(input);
  ASSERT_TRUE(png.ok()) << png.status();

  for (int scale : {2, 4}) {
    SCOPED_TRACE(absl::StrCat("x", scale));
    v1::ImageResponse resp;
    auto st = Upscale(absl::StrCat("esrgan-slim-x", scale), *png, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    auto out = media::DecodeImage(resp.images(0).data(), 1 << 24);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->width, w * scale);
    ASSERT_EQ(out->height, h * scale);
    std::string ref_bytes = ReadFile(fixtures / absl::StrCat("x", scale, ".f32"));
    ASSERT_EQ(ref_bytes.size(), out->pixels.size() * sizeof(float));
    const float* ref = reinterpret_cast<const float*>(ref_bytes.data());
    double max_err = 0;
    for (size_t i = 0; i < out->pixels.size(); ++i) {
      double expected = std::clamp(static_cast<double>(ref[i]), 0.0, 255.0);
      max_err = std::max(max_err, std::abs(out->pixels[i] - expected));
    }
    // Rounding to 8 bits adds up to 0.5 to the model's own error.
    EXPECT_LE(max_err, 1.0);
    std::cout << "x" << scale << " end-to-end max abs error vs TF.js: " << max_err << "\n";
  }
}

TEST_F(ClusterTest, ColdModelLoadsOnFirstUseAndIsThenAdvertisedWarm) {
  std::string png = MakeTestImage(tmp_, 32, 24, "jpg");
  v1::ImageResponse resp;
  auto st = Upscale("esrgan-slim-x2", png, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.images(0).width(), 64);
  // The node that ran it now reports the model READY (bounded wait for the update to arrive).
  bool warm = false;
  for (int i = 0; i < 100 && !warm; ++i) {
    v1::ListCapabilitiesRequest req;
    v1::ListCapabilitiesResponse caps;
    auto ctx = Context(std::chrono::seconds(5));
    ASSERT_TRUE(stub_->ListCapabilities(ctx.get(), req, &caps).ok());
    for (const auto& o : caps.offers()) {
      warm = warm || (o.model_id() == "esrgan-slim-x2" &&
                      o.orchestrator() == resp.job().orchestrator() && o.warm());
    }
    if (!warm) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(warm);
}

TEST_F(ClusterTest, TranscodeIntoThreeRenditionLadder) {
  SegmentSpec spec;
  spec.width = 320;
  spec.height = 240;
  spec.fps = "30";
  spec.seconds = 2.0;
  spec.audio = true;
  std::string segment = MakeTestSegment(tmp_, spec);

  v1::TranscodeRequest req;
  req.set_segment(segment);
  struct Want {
    int w, h;
    int64_t bps;
    int fps;
    int frames;
  };
  std::vector<Want> wants = {
      {256, 192, 600000, 0, 60}, {160, 120, 300000, 15, 30}, {128, 96, 200000, 0, 60}};
  for (const auto& want : wants) {
    auto* r = req.add_renditions();
    r->set_width(want.w);
    r->set_height(want.h);
    r->set_bitrate_bps(want.bps);
    if (want.fps) {
      r->set_fps_num(want.fps);
      r->set_fps_den(1);
    }
    r->set_preset("ultrafast");
  }
  v1::TranscodeResponse resp;
  auto ctx = Context(std::chrono::seconds(120));
  auto st = stub_->Transcode(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  ASSERT_EQ(resp.renditions_size(), 3);
  EXPECT_EQ(resp.input_frames(), 60);
  for (size_t i = 0; i < wants.size(); ++i) {
    SCOPED_TRACE(i);
    const auto& r = resp.renditions(static_cast<int>(i));
    EXPECT_EQ(r.width(), wants[i].w);
    EXPECT_EQ(r.height(), wants[i].h);
    EXPECT_EQ(r.frames(), wants[i].frames);
    EXPECT_EQ(r.pixels(), r.frames() * r.width() * r.height());
    ProbeResult probe = ProbeVideo(tmp_, r.data(), "ts");
    ASSERT_TRUE(probe.ok) << probe.error;
    EXPECT_EQ(probe.codec, "h264");
    EXPECT_EQ(probe.width, wants[i].w);
    EXPECT_EQ(probe.height, wants[i].h);
    EXPECT_EQ(probe.frames, wants[i].frames);
  }
  EXPECT_GT(resp.job().units(), 0);
}

TEST_F(ClusterTest, CorruptImageIsInvalidArgumentAndNodesKeepServing) {
  std::string png = MakeTestImage(tmp_, 32, 32, "png");
  v1::ImageResponse resp;
  auto st = Upscale("esrgan-slim-x4", "this is not an image", &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("image"), std::string::npos) << st.error_message();

  st = Upscale("esrgan-slim-x4", png.substr(0, png.size() / 2), &resp);  // truncated PNG
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();

  st = Upscale("esrgan-slim-x4", png, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  for (size_t i = 0; i < cluster_.orchestrator_count(); ++i) {
    EXPECT_TRUE(cluster_.orchestrator(i).Alive());
  }
}

TEST_F(ClusterTest, CorruptOrEmptySegmentIsInvalidArgument) {
  v1::TranscodeRequest req;
  auto* r = req.add_renditions();
  r->set_width(128);
  r->set_height(96);
  r->set_bitrate_bps(200000);
  v1::TranscodeResponse resp;
  {
    auto ctx = Context(std::chrono::seconds(30));
    auto st = stub_->Transcode(ctx.get(), req, &resp);  // no segment
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
  {
    req.set_segment(std::string(5000, '\x47'));  // TS sync bytes and nothing else
    auto ctx = Context(std::chrono::seconds(30));
    auto st = stub_->Transcode(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
  {
    SegmentSpec spec;
    std::string segment = MakeTestSegment(tmp_, spec);
    req.set_segment(segment.substr(0, segment.size() / 50));  // a sliver of a real segment
    auto ctx = Context(std::chrono::seconds(30));
    auto st = stub_->Transcode(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
  {
    req.clear_renditions();  // no ladder
    auto ctx = Context(std::chrono::seconds(30));
    auto st = stub_->Transcode(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
}

TEST_F(ClusterTest, UnknownModelIsNotFoundAndEveryPipelineIsRouted) {
  std::string png = MakeTestImage(tmp_, 16, 16, "png");
  v1::ImageResponse resp;
  auto st = Upscale("no-such-model", png, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
  EXPECT_NE(st.error_message().find("no-such-model"), std::string::npos);

  st = Upscale("", png, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);

  v1::TextToImageRequest t2i;
  t2i.set_model_id("x");
  t2i.set_prompt("a cat");
  auto ctx = Context(std::chrono::seconds(5));
  st = stub_->TextToImage(ctx.get(), t2i, &resp);
  // Every pipeline is routed: nobody in this cluster offers a text-to-image model "x".
  EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
  EXPECT_NE(st.error_message().find("text-to-image"), std::string::npos) << st.error_message();
  t2i.clear_prompt();
  auto ctx3 = Context(std::chrono::seconds(5));
  st = stub_->TextToImage(ctx3.get(), t2i, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();

  // The streaming pipeline is routed too.
  v1::LLMRequest llm;
  auto* msg = llm.add_messages();
  msg->set_role("user");
  msg->set_content("hi");
  llm.set_model("no-such-llm");
  auto ctx2 = Context(std::chrono::seconds(5));
  auto reader = stub_->LLM(ctx2.get(), llm);
  v1::LLMResponse chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  grpc::Status llm_status = reader->Finish();
  EXPECT_EQ(llm_status.error_code(), StatusCode::NOT_FOUND) << llm_status.error_message();
  EXPECT_NE(llm_status.error_message().find("no-such-llm"), std::string::npos);
}

TEST_F(ClusterTest, BadInputInFlightDoesNotDisturbGoodJobs) {
  std::string png = MakeTestImage(tmp_, 48, 48, "png");
  std::atomic<int> good_ok{0}, bad_invalid{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      v1::ImageResponse resp;
      bool bad = i % 2 == 1;
      auto st =
          Upscale("esrgan-slim-x4", bad ? png.substr(0, 40) + std::string(200, 'x') : png, &resp);
      if (!bad && st.ok() && resp.images(0).width() == 192) {
        ++good_ok;
      } else if (bad && st.error_code() == StatusCode::INVALID_ARGUMENT) {
        ++bad_invalid;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good_ok.load(), 4);
  EXPECT_EQ(bad_invalid.load(), 4);
  EXPECT_EQ(other.load(), 0) << cluster_.Logs();
}

TEST_F(ClusterTest, ClientDeadlineIsPropagated) {
  std::string png = MakeTestImage(tmp_, 256, 256, "png");
  v1::ImageResponse resp;
  auto start = std::chrono::steady_clock::now();
  auto st = Upscale("esrgan-slim-x4", png, &resp, std::chrono::milliseconds(30));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(st.error_code(), StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  EXPECT_LT(took, std::chrono::seconds(5));
  // The cluster is still healthy afterwards.
  std::string small = MakeTestImage(tmp_, 16, 16, "png");
  EXPECT_TRUE(Upscale("esrgan-slim-x4", small, &resp).ok());
}

TEST_F(ClusterTest, KilledOrchestratorIsDroppedAtOnceAndJobsGoToTheOther) {
  cluster_.orchestrator(0).Kill();  // no goodbye: the stream just breaks
  auto st = cluster_.WaitForOrchestrators(1, std::chrono::seconds(5));
  ASSERT_TRUE(st.ok()) << st;
  std::string png = MakeTestImage(tmp_, 32, 32, "png");
  for (int i = 0; i < 3; ++i) {
    v1::ImageResponse resp;
    auto s = Upscale("esrgan-slim-x4", png, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.job().orchestrator(), "orch-2");
  }
  // A node that comes back is routed to again once it registers.
  ASSERT_TRUE(cluster_.AddOrchestrator("orch-3").ok());
  st = cluster_.WaitForOrchestrators(2, std::chrono::seconds(30));
  EXPECT_TRUE(st.ok()) << st;
}

TEST_F(ClusterTest, StoppedOrchestratorLeavesCleanly) {
  EXPECT_EQ(cluster_.orchestrator(1).Stop(), 0);  // SIGTERM: leaves gateways, drains, exits 0
  // Every gRPC object was gone before main returned, so gRPC's own teardown (which joins its
  // threads) finished before exit() ran: none of them races the process's destructors.
  EXPECT_FALSE(absl::StrContains(cluster_.orchestrator(1).Log(), "had not finished shutting down"))
      << cluster_.orchestrator(1).Log();
  auto st = cluster_.WaitForOrchestrators(1, std::chrono::seconds(5));
  EXPECT_TRUE(st.ok()) << st;
}

// SIGTERM: the gateway lets the job in flight finish and then exits at once. The orchestrators'
// registration streams never end on their own; the gateway closes them itself rather than sitting
// out its whole shutdown grace (10 s) because they are open.
TEST_F(ClusterTest, StoppedGatewayFinishesItsJobsAndExitsWithoutWaitingOutItsGrace) {
  std::string png = MakeTestImage(tmp_, 64, 64, "png");
  grpc::Status job_status;
  std::thread job([&] {
    v1::ImageResponse resp;
    job_status = Upscale("esrgan-slim-x4", png, &resp);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto start = std::chrono::steady_clock::now();
  const int rc = cluster_.gateway().Stop(std::chrono::seconds(20));
  const auto took = std::chrono::steady_clock::now() - start;
  job.join();
  EXPECT_EQ(rc, 0);
  // A job the gateway accepted completes; one that came after the SIGTERM is refused, never lost.
  EXPECT_TRUE(job_status.ok() || job_status.error_code() == StatusCode::UNAVAILABLE)
      << job_status.error_code() << " " << job_status.error_message();
  EXPECT_LT(took, std::chrono::seconds(8)) << cluster_.Logs();
  EXPECT_TRUE(absl::StrContains(cluster_.gateway().Log(), "stopped")) << cluster_.gateway().Log();
  EXPECT_FALSE(absl::StrContains(cluster_.gateway().Log(), "had not finished shutting down"))
      << cluster_.gateway().Log();
  // The orchestrators were told why their streams ended, and keep running.
  EXPECT_TRUE(cluster_.orchestrator(0).Alive());
}

TEST_F(ClusterTest, CliRunsUpscaleAndTranscodeAgainstTheCluster) {
  fs::path in = tmp_.path() / "in.png";
  WriteFile(in, MakeTestImage(tmp_, 40, 30, "png"));
  fs::path out = tmp_.path() / "out.png";
  std::string log;
  std::string cli = BinaryPath("switchyard").string();
  int rc = RunCommand(
      absl::StrCat(cli, " --gateway ", cluster_.gateway_address(),
                   " upscale --model esrgan-slim-x4 --in ", in.string(), " --out ", out.string()),
      &log);
  ASSERT_EQ(rc, 0) << log;
  EXPECT_NE(log.find("160x120"), std::string::npos) << log;
  auto decoded = media::DecodeImage(ReadFile(out), 1 << 24);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->width, 160);

  SegmentSpec spec;
  fs::path seg = tmp_.path() / "seg.ts";
  WriteFile(seg, MakeTestSegment(tmp_, spec));
  fs::path dir = tmp_.path() / "renditions";
  rc = RunCommand(
      absl::StrCat(cli, " --gateway ", cluster_.gateway_address(), " transcode --in ", seg.string(),
                   " --out ", dir.string(), " --rendition 256x192:500k --rendition 128x96:200k"),
      &log);
  ASSERT_EQ(rc, 0) << log;
  EXPECT_TRUE(fs::exists(dir / "192p.ts")) << log;
  EXPECT_TRUE(fs::exists(dir / "96p.ts")) << log;
  ProbeResult probe = ProbeVideo(tmp_, ReadFile(dir / "96p.ts"), "ts");
  EXPECT_EQ(probe.height, 96);

  rc = RunCommand(
      absl::StrCat(cli, " --gateway ", cluster_.gateway_address(),
                   " upscale --model missing-model --in ", in.string(), " --out ", out.string()),
      &log);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(log.find("NOT_FOUND"), std::string::npos) << log;
}

// A model whose file is missing is FAILED on every node: it is advertised, but no node can run
// it, so the gateway answers UNAVAILABLE (not NOT_FOUND), and the good models keep serving.
class FailedModelClusterTest : public ClusterTest {
 protected:
  void SetUp() override {
    options_.orchestrators = 1;
    options_.models = {"esrgan-slim-x4"};
    options_.extra_models.push_back({{"id", "broken"},
                                     {"pipeline", "upscale"},
                                     {"path", "/nonexistent/broken.pt"},
                                     {"warm", true}});
    ClusterTest::SetUp();
  }
};

TEST_F(FailedModelClusterTest, FailedModelAnswersUnavailable) {
  std::string png = MakeTestImage(tmp_, 16, 16, "png");
  v1::ImageResponse resp;
  auto st = Upscale("broken", png, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_NE(st.error_message().find("broken"), std::string::npos) << st.error_message();
  EXPECT_TRUE(Upscale("esrgan-slim-x4", png, &resp).ok());
}

TEST(NoOrchestratorTest, JobForModelNobodyOffersAnyMoreIsNotFound) {
  RequireModels();
  if (HasFatalFailure()) return;
  LocalCluster cluster;
  ClusterOptions options;
  options.orchestrators = 1;
  ASSERT_TRUE(cluster.Start(options).ok());
  auto stub = cluster.GatewayStub();
  cluster.orchestrator(0).Kill();
  ASSERT_TRUE(cluster.WaitForOrchestrators(0, std::chrono::seconds(5)).ok());
  v1::UpscaleRequest req;
  req.set_model_id("esrgan-slim-x4");
  req.set_image("x");
  v1::ImageResponse resp;
  auto ctx = Context(std::chrono::seconds(5));
  auto st = stub->Upscale(ctx.get(), req, &resp);
  // Nobody offers the model any more.
  EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND) << st.error_message();
}

TEST(StaticOrchestratorTest, GatewayPollsAStaticOrchestrator) {
  RequireModels();
  if (HasFatalFailure()) return;
  TempDir dir;
  nlohmann::json orch = {{"node_id", "static-1"},
                         {"listen", "127.0.0.1:0"},
                         {"http_listen", ""},
                         {"torch", {{"intra_op_threads", 1}, {"inter_op_threads", 1}}},
                         {"models",
                          {{{"id", "esrgan-slim-x2"},
                            {"pipeline", "upscale"},
                            {"path", (ModelDir() / "esrgan-slim-x2.pt").string()},
                            {"warm", true}}}}};
  WriteFile(dir.path() / "orch.json", orch.dump());
  WriteFile(dir.path() / "gw.json",
            R"({"gateway_id": "gw", "listen": "127.0.0.1:0", "http_listen": "",
                "admin_listen": "", "poll_interval_ms": 200})");
  Daemon o("static-1", dir.path() / "orch.log");
  ASSERT_TRUE(o.Start(BinaryPath("switchyard-orchestrator").string(),
                      {"--config", (dir.path() / "orch.json").string(), "--no-gateways",
                       "--port-file", (dir.path() / "orch.port").string()})
                  .ok());
  ASSERT_TRUE(o.WaitForPort(dir.path() / "orch.port", std::chrono::seconds(30)).ok());
  Daemon g("gateway", dir.path() / "gw.log");
  ASSERT_TRUE(g.Start(BinaryPath("switchyard-gateway").string(),
                      {"--config", (dir.path() / "gw.json").string(), "--static-orchestrator",
                       absl::StrCat("127.0.0.1:", o.port()), "--port-file",
                       (dir.path() / "gw.port").string()})
                  .ok());
  ASSERT_TRUE(g.WaitForPort(dir.path() / "gw.port", std::chrono::seconds(30)).ok());
  auto stub = v1::Gateway::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", g.port()),
                                                       grpc::InsecureChannelCredentials()));
  std::string png = MakeTestImage(dir, 16, 16, "png");
  grpc::Status st;
  v1::ImageResponse resp;
  // The first poll may not have happened yet: retry for a bounded time.
  for (int i = 0; i < 100; ++i) {
    v1::UpscaleRequest req;
    req.set_model_id("esrgan-slim-x2");
    req.set_image(png);
    auto ctx = Context(std::chrono::seconds(10));
    st = stub->Upscale(ctx.get(), req, &resp);
    if (st.error_code() != StatusCode::NOT_FOUND) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << g.Log() << o.Log();
  EXPECT_EQ(resp.job().orchestrator(), "static-1");
  EXPECT_EQ(resp.images(0).width(), 32);
}

}  // namespace
}  // namespace switchyard::testing
