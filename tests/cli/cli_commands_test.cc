#include "cli/cli_commands.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::cli {
namespace {

namespace fs = std::filesystem;
namespace v1 = switchyard::v1;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// ---------------------------------------------------------------------------------------------
// Parsers.

TEST(ParseBitrateTest, AcceptsPlainAndSuffixedValues) {
  EXPECT_EQ(*ParseBitrate("800000"), 800000);
  EXPECT_EQ(*ParseBitrate("3000k"), 3000000);
  EXPECT_EQ(*ParseBitrate("3000K"), 3000000);
  EXPECT_EQ(*ParseBitrate("3M"), 3000000);
  EXPECT_EQ(*ParseBitrate("3m"), 3000000);
  EXPECT_EQ(*ParseBitrate("2.5M"), 2500000);
  EXPECT_EQ(*ParseBitrate("1.5k"), 1500);
  EXPECT_EQ(*ParseBitrate(".5M"), 500000);
}

TEST(ParseBitrateTest, RejectsBadValues) {
  for (const char* bad : {"", "k", "M", "0", "0k", "-3M", "3G", "abc", "3 M", "1.5", "3.M", "1e6",
                          "1.0000001M", "99999999999999M"}) {
    EXPECT_FALSE(ParseBitrate(bad).ok()) << bad;
  }
}

TEST(ParseFpsTest, AcceptsIntegersFractionsAndDecimals) {
  EXPECT_EQ(*ParseFps("30"), std::make_pair(30, 1));
  EXPECT_EQ(*ParseFps("30000/1001"), std::make_pair(30000, 1001));
  EXPECT_EQ(*ParseFps("60/2"), std::make_pair(30, 1));
  EXPECT_EQ(*ParseFps("29.97"), std::make_pair(30000, 1001));
  EXPECT_EQ(*ParseFps("12.5"), std::make_pair(25, 2));
}

TEST(ParseFpsTest, RejectsBadValues) {
  for (const char* bad : {"", "0", "-30", "30/0", "/2", "30/", "x", "1.", ".5", "100000", "1/-2"}) {
    EXPECT_FALSE(ParseFps(bad).ok()) << bad;
  }
}

TEST(ParseRenditionTest, ParsesSizeBitrateAndFps) {
  absl::StatusOr<v1::Rendition> r = ParseRendition("1280x720:3000k");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->width(), 1280);
  EXPECT_EQ(r->height(), 720);
  EXPECT_EQ(r->bitrate_bps(), 3000000);
  EXPECT_EQ(r->fps_num(), 0);
  EXPECT_EQ(r->fps_den(), 0);
  EXPECT_EQ(r->name(), "");

  r = ParseRendition("low=0x360:800000@30000/1001");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name(), "low");
  EXPECT_EQ(r->width(), 0);
  EXPECT_EQ(r->height(), 360);
  EXPECT_EQ(r->bitrate_bps(), 800000);
  EXPECT_EQ(r->fps_num(), 30000);
  EXPECT_EQ(r->fps_den(), 1001);

  r = ParseRendition("854X0:1.6M@25");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->width(), 854);
  EXPECT_EQ(r->height(), 0);
  EXPECT_EQ(r->bitrate_bps(), 1600000);
  EXPECT_EQ(r->fps_num(), 25);
  EXPECT_EQ(r->fps_den(), 1);
}

TEST(ParseRenditionTest, RejectsBadSyntax) {
  for (const char* bad :
       {"", "1280x720", "1280x720:", "1280:3000k", "x720:3000k", "1280x:3000k", "0x0:1M",
        "1281x720:1M", "1280x721:1M", "-2x720:1M", "1280x720:3000k@", "1280x720:3000k@0",
        "1280x720:fast", "99999x720:1M", "../x=1280x720:1M", "a b=1280x720:1M", "=1280x720:1M"}) {
    EXPECT_FALSE(ParseRendition(bad).ok()) << bad;
  }
}

std::string PngHeader(uint32_t width, uint32_t height) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  png.append("\x00\x00\x00\x0dIHDR", 8);
  for (uint32_t v : {width, height}) {
    for (int shift = 24; shift >= 0; shift -= 8) png.push_back(static_cast<char>(v >> shift));
  }
  png.append("\x08\x02\x00\x00\x00", 5);
  return png;
}

std::string JpegHeader(int width, int height) {
  std::string jpeg("\xff\xd8", 2);
  // APP0 segment (length 16) with a JFIF payload, then SOF0.
  jpeg.append("\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", 18);
  jpeg.append("\xff\xc0\x00\x11\x08", 5);
  jpeg.push_back(static_cast<char>(height >> 8));
  jpeg.push_back(static_cast<char>(height & 0xff));
  jpeg.push_back(static_cast<char>(width >> 8));
  jpeg.push_back(static_cast<char>(width & 0xff));
  jpeg.append("\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 10);
  return jpeg;
}

TEST(ProbeImageSizeTest, ReadsPngAndJpegHeaders) {
  EXPECT_EQ(*ProbeImageSize(PngHeader(640, 480)), std::make_pair(640, 480));
  EXPECT_EQ(*ProbeImageSize(JpegHeader(1920, 1080)), std::make_pair(1920, 1080));
}

TEST(ProbeImageSizeTest, RejectsOtherData) {
  EXPECT_FALSE(ProbeImageSize("").ok());
  EXPECT_FALSE(ProbeImageSize("GIF89a....").ok());
  EXPECT_FALSE(ProbeImageSize(PngHeader(640, 480).substr(0, 20)).ok());
  EXPECT_FALSE(ProbeImageSize(JpegHeader(640, 480).substr(0, 24)).ok());
  EXPECT_FALSE(ProbeImageSize(PngHeader(0, 480)).ok());
}

TEST(StatusCodeNameTest, NamesCodes) {
  EXPECT_EQ(StatusCodeName(0), "OK");
  EXPECT_EQ(StatusCodeName(3), "INVALID_ARGUMENT");
  EXPECT_EQ(StatusCodeName(4), "DEADLINE_EXCEEDED");
  EXPECT_EQ(StatusCodeName(8), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(12), "UNIMPLEMENTED");
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(99), "CODE_99");
}

TEST(GenerateRequestIdTest, IsRandomHex) {
  const std::string a = GenerateRequestId();
  const std::string b = GenerateRequestId();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(RenditionBaseNameTest, PrefersNameThenHeight) {
  v1::Rendition r;
  r.set_height(720);
  EXPECT_EQ(RenditionBaseName(r, 720, 0), "720p");
  r.set_height(0);
  EXPECT_EQ(RenditionBaseName(r, 480, 0), "480p");
  EXPECT_EQ(RenditionBaseName(r, 0, 2), "rendition3");
  r.set_name("hi");
  EXPECT_EQ(RenditionBaseName(r, 480, 0), "hi");
}

v1::ListCapabilitiesResponse SampleCapabilities() {
  v1::ListCapabilitiesResponse response;
  v1::Capability* c = response.add_capabilities();
  c->set_pipeline("upscale");
  c->set_model_id("esrgan-slim-x4");
  c->set_orchestrators(2);
  c->set_warm_orchestrators(1);
  c->set_capacity(4);
  c->set_in_use(1);
  c->set_min_price_per_unit(1.5e-6);
  c->set_unit("pixel");
  v1::ModelOffer* o = response.add_offers();
  o->set_orchestrator("orch-1");
  o->set_pipeline("upscale");
  o->set_model_id("esrgan-slim-x4");
  o->set_warm(true);
  o->set_state("ready");
  o->set_capacity(2);
  v1::OrchestratorInfo* info = response.add_orchestrators();
  info->set_id("orch-1");
  info->set_address("10.0.0.1:50061");
  info->set_source("registered");
  info->set_ready(true);
  info->set_in_flight(3);
  return response;
}

TEST(FormatCapabilitiesTest, ListsCapabilitiesAndOrchestrators) {
  const std::string text = FormatCapabilities(SampleCapabilities(), /*with_offers=*/false);
  EXPECT_THAT(text, HasSubstr("PIPELINE"));
  EXPECT_THAT(text, HasSubstr("esrgan-slim-x4"));
  EXPECT_THAT(text, HasSubstr("1.5e-06"));
  EXPECT_THAT(text, HasSubstr("pixel"));
  EXPECT_THAT(text, HasSubstr("10.0.0.1:50061"));
  EXPECT_THAT(text, HasSubstr("registered"));
  EXPECT_THAT(text, Not(HasSubstr("STATE")));
  EXPECT_THAT(FormatCapabilities(SampleCapabilities(), true), HasSubstr("STATE"));
  EXPECT_THAT(FormatCapabilities(v1::ListCapabilitiesResponse(), false),
              HasSubstr("no capabilities"));
}

// ---------------------------------------------------------------------------------------------
// End to end against an in-process fake gateway.

class FakeGateway final : public v1::Gateway::Service {
 public:
  grpc::Status Upscale(grpc::ServerContext* context, const v1::UpscaleRequest* request,
                       v1::ImageResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_upscale_ = *request;
    }
    v1::Media* image = response->add_images();
    image->set_data("upscaled:" + request->image());
    image->set_content_type("image/png");
    image->set_width(256);
    image->set_height(192);
    FillJob(response->mutable_job(), request->model_id());
    return grpc::Status::OK;
  }

  grpc::Status Transcode(grpc::ServerContext* context, const v1::TranscodeRequest* request,
                         v1::TranscodeResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_transcode_ = *request;
    }
    for (const v1::Rendition& r : request->renditions()) {
      v1::RenditionResult* result = response->add_renditions();
      *result->mutable_rendition() = r;
      result->set_width(r.width() > 0 ? r.width() : 640);
      result->set_height(r.height() > 0 ? r.height() : 360);
      result->set_frames(30);
      result->set_data(std::string(static_cast<size_t>(r.bitrate_bps() / 1000), 'x'));
    }
    response->set_input_frames(30);
    response->set_duration_seconds(1.0);
    FillJob(response->mutable_job(), "libx264");
    return grpc::Status::OK;
  }

  grpc::Status ListCapabilities(grpc::ServerContext* context,
                                const v1::ListCapabilitiesRequest* request,
                                v1::ListCapabilitiesResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    *response = SampleCapabilities();
    response->mutable_capabilities(0)->set_pipeline(
        request->pipeline().empty() ? "upscale" : request->pipeline());
    return grpc::Status::OK;
  }

  grpc::Status TextToImage(grpc::ServerContext* context, const v1::TextToImageRequest* request,
                           v1::ImageResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_text_to_image_ = *request;
    }
    const int n = request->has_num_images_per_prompt() ? request->num_images_per_prompt() : 1;
    for (int i = 0; i < n; ++i) {
      v1::Media* image = response->add_images();
      image->set_data(absl::StrCat("image", i, ":", request->prompt()));
      image->set_content_type("image/png");
      image->set_width(32);
      image->set_height(16);
      image->set_seed(request->seed() + i);
    }
    FillJob(response->mutable_job(), request->model_id());
    return grpc::Status::OK;
  }

  // Streams "Hel", "lo" and a last message with usage; fails after "Hel" when llm_error_ is set.
  grpc::Status LLM(grpc::ServerContext* context, const v1::LLMRequest* request,
                   grpc::ServerWriter<v1::LLMResponse>* writer) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_llm_ = *request;
    }
    v1::LLMResponse message;
    message.set_id("chatcmpl-1");
    message.set_model(request->model());
    message.add_choices()->mutable_delta()->set_content("Hel");
    writer->Write(message);
    if (!llm_error_.ok()) return llm_error_;
    message.mutable_choices(0)->mutable_delta()->set_content("lo");
    writer->Write(message);
    message.mutable_choices(0)->mutable_delta()->set_content("");
    message.mutable_choices(0)->set_finish_reason("stop");
    message.mutable_usage()->set_prompt_tokens(7);
    message.mutable_usage()->set_completion_tokens(2);
    message.mutable_usage()->set_total_tokens(9);
    FillJob(message.mutable_job(), request->model());
    writer->Write(message);
    return grpc::Status::OK;
  }

  void set_llm_error(grpc::Status error) { llm_error_ = std::move(error); }
  v1::TextToImageRequest last_text_to_image() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_text_to_image_;
  }
  v1::LLMRequest last_llm() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_llm_;
  }

  void set_error(grpc::Status error) { error_ = std::move(error); }
  std::string last_request_id() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_request_id_;
  }
  v1::UpscaleRequest last_upscale() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_upscale_;
  }
  v1::TranscodeRequest last_transcode() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_transcode_;
  }
  int calls() const { return calls_; }

 private:
  void Record(grpc::ServerContext* context) {
    ++calls_;
    std::lock_guard<std::mutex> lock(mu_);
    const auto& md = context->client_metadata();
    auto it = md.find(kRequestIdMetadataKey);
    last_request_id_ = it == md.end() ? "" : std::string(it->second.data(), it->second.size());
  }

  static void FillJob(v1::JobInfo* job, const std::string& model) {
    job->set_request_id("job-1");
    job->set_orchestrator("orch-1");
    job->set_model_id(model);
    job->set_compute_ms(812.4);
    job->set_attempts(1);
    job->set_units(42);
  }

  grpc::Status error_ = grpc::Status::OK;
  grpc::Status llm_error_ = grpc::Status::OK;
  v1::TextToImageRequest last_text_to_image_;
  v1::LLMRequest last_llm_;
  std::atomic<int> calls_{0};
  std::mutex mu_;
  std::string last_request_id_;
  v1::UpscaleRequest last_upscale_;
  v1::TranscodeRequest last_transcode_;
};

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteAll(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("switchyard_cli_test_" + GenerateRequestId());
    fs::create_directories(dir_);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&gateway_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--gateway", "127.0.0.1:" + std::to_string(port_)});
    out_.str("");
    err_.str("");
    return RunCli(args, out_, err_);
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
  int port_ = 0;
  FakeGateway gateway_;
  std::unique_ptr<grpc::Server> server_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(CliTest, HelpExitsZero) {
  EXPECT_EQ(Run({"--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("upscale"));
  EXPECT_THAT(out_.str(), HasSubstr("transcode"));
  EXPECT_THAT(out_.str(), HasSubstr("capabilities"));
  EXPECT_EQ(Run({"transcode", "--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("--rendition"));
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Run({}), kExitUsage);
  EXPECT_EQ(Run({"frobnicate"}), kExitUsage);
  EXPECT_EQ(Run({"upscale", "--in", "x.png"}), kExitUsage);
  EXPECT_EQ(Run({"--timeout", "-1", "capabilities"}), kExitUsage);
  EXPECT_EQ(gateway_.calls(), 0);
}

TEST_F(CliTest, CapabilitiesTable) {
  EXPECT_EQ(Run({"capabilities", "--request-id", "req-42"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("esrgan-slim-x4"));
  EXPECT_THAT(out_.str(), HasSubstr("orch-1"));
  EXPECT_EQ(gateway_.last_request_id(), "req-42");
}

TEST_F(CliTest, CapabilitiesJson) {
  EXPECT_EQ(Run({"capabilities", "--json", "--pipeline", "transcode"}), kExitOk) << err_.str();
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["capabilities"][0]["pipeline"], "transcode");
  EXPECT_EQ(json["orchestrators"][0]["id"], "orch-1");
  // A random request id is sent when none is given.
  EXPECT_EQ(gateway_.last_request_id().size(), 32u);
}

TEST_F(CliTest, UpscaleWritesOutput) {
  WriteAll(Path("in.png"), PngHeader(64, 48));
  EXPECT_EQ(Run({"upscale", "--model", "esrgan-slim-x4", "--in", Path("in.png"), "--out",
                 Path("out.png"), "--prompt", "sharp"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(ReadAll(Path("out.png")), "upscaled:" + PngHeader(64, 48));
  EXPECT_EQ(out_.str(), "upscaled " + Path("in.png") + " (64x48) -> " + Path("out.png") +
                            " (256x192) with esrgan-slim-x4 on orch-1 in 812 ms (attempts 1)\n");
  EXPECT_EQ(gateway_.last_upscale().model_id(), "esrgan-slim-x4");
  EXPECT_EQ(gateway_.last_upscale().prompt(), "sharp");
  EXPECT_FALSE(gateway_.last_upscale().has_seed());
}

TEST_F(CliTest, UpscaleJson) {
  WriteAll(Path("in.jpg"), JpegHeader(64, 48));
  EXPECT_EQ(Run({"--json", "upscale", "--model", "m", "--in", Path("in.jpg"), "--out",
                 Path("out.png"), "--seed", "7"}),
            kExitOk)
      << err_.str();
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["output"], Path("out.png"));
  EXPECT_EQ(json["width"], 256);
  EXPECT_EQ(json["input_width"], 64);
  EXPECT_EQ(json["job"]["orchestrator"], "orch-1");
  EXPECT_EQ(json["job"]["attempts"], 1);
  EXPECT_EQ(gateway_.last_upscale().seed(), 7);
}

TEST_F(CliTest, UpscaleValidationExitsTwoWithoutCalling) {
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("missing.png"), "--out", Path("o.png")}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("does not exist"));
  WriteAll(Path("not-image.png"), "hello");
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("not-image.png"), "--out", Path("o.png")}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("not a PNG or JPEG"));
  WriteAll(Path("in.png"), PngHeader(8, 8));
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("in.png"), "--out", Path("nodir/o.png")}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("does not exist"));
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("in.png"), "--out", dir_.string()}),
            kExitUsage);
  EXPECT_EQ(gateway_.calls(), 0);
}

TEST_F(CliTest, RpcErrorExitsOne) {
  gateway_.set_error(grpc::Status(grpc::StatusCode::NOT_FOUND, "no orchestrator offers m"));
  WriteAll(Path("in.png"), PngHeader(8, 8));
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("in.png"), "--out", Path("o.png")}),
            kExitRpcError);
  EXPECT_THAT(err_.str(), StartsWith("error: NOT_FOUND: no orchestrator offers m\n"));
  EXPECT_FALSE(fs::exists(Path("o.png")));
}

TEST_F(CliTest, ClosedPortIsUnavailable) {
  std::ostringstream out;
  std::ostringstream err;
  // Port 1 is privileged and closed on test machines.
  EXPECT_EQ(RunCli({"--gateway", "127.0.0.1:1", "--timeout", "5", "capabilities"}, out, err),
            kExitRpcError);
  EXPECT_THAT(err.str(), StartsWith("error: UNAVAILABLE: "));
  EXPECT_EQ(out.str(), "");
}

TEST_F(CliTest, TranscodeWritesOneFilePerRendition) {
  WriteAll(Path("seg.ts"), std::string(188, 'G'));
  EXPECT_EQ(Run({"transcode", "--in", Path("seg.ts"), "--out", Path("out/ladder"), "--rendition",
                 "1280x720:3000k", "--rendition", "0x360:800k@30", "--rendition",
                 "mid=854x480:1.6M", "--fps", "30000/1001", "--preset", "fast", "--gop", "2"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(ReadAll(Path("out/ladder/720p.ts")).size(), 3000u);
  EXPECT_EQ(ReadAll(Path("out/ladder/360p.ts")).size(), 800u);
  EXPECT_EQ(ReadAll(Path("out/ladder/mid.ts")).size(), 1600u);
  EXPECT_THAT(out_.str(), HasSubstr("1280x720"));
  EXPECT_THAT(out_.str(), HasSubstr("30 frames"));
  EXPECT_THAT(out_.str(), HasSubstr("3000 bytes"));
  EXPECT_THAT(out_.str(), HasSubstr("into 3 renditions"));

  const v1::TranscodeRequest request = gateway_.last_transcode();
  ASSERT_EQ(request.renditions_size(), 3);
  EXPECT_EQ(request.container(), "mpegts");
  EXPECT_EQ(request.renditions(0).fps_num(), 30000);  // from --fps
  EXPECT_EQ(request.renditions(0).fps_den(), 1001);
  EXPECT_EQ(request.renditions(1).fps_num(), 30);  // from @30
  EXPECT_EQ(request.renditions(1).fps_den(), 1);
  EXPECT_EQ(request.renditions(2).preset(), "fast");
  EXPECT_EQ(request.renditions(2).gop_seconds(), 2.0);
}

TEST_F(CliTest, TranscodeJsonMp4) {
  WriteAll(Path("seg.mp4"), std::string(100, 'G'));
  EXPECT_EQ(Run({"transcode", "--json", "--in", Path("seg.mp4"), "--out", Path("out"),
                 "--rendition", "640x360:1M", "--container", "mp4"}),
            kExitOk)
      << err_.str();
  const auto json = nlohmann::json::parse(out_.str());
  ASSERT_EQ(json["renditions"].size(), 1u);
  EXPECT_EQ(json["renditions"][0]["path"], Path("out/360p.mp4"));
  EXPECT_EQ(json["renditions"][0]["bytes"], 1000);
  EXPECT_EQ(json["renditions"][0]["frames"], 30);
  EXPECT_EQ(json["job"]["model_id"], "libx264");
  EXPECT_TRUE(fs::exists(Path("out/360p.mp4")));
}

TEST_F(CliTest, TranscodeValidationExitsTwoWithoutCalling) {
  WriteAll(Path("seg.ts"), std::string(188, 'G'));
  EXPECT_EQ(
      Run({"transcode", "--in", Path("seg.ts"), "--out", Path("o"), "--rendition", "1280x720"}),
      kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("invalid rendition"));
  EXPECT_EQ(Run({"transcode", "--in", Path("seg.ts"), "--out", Path("o"), "--rendition",
                 "1280x720:3M", "--rendition", "1280x720:1M"}),
            kExitUsage);
  EXPECT_EQ(Run({"transcode", "--in", Path("missing.ts"), "--out", Path("o"), "--rendition",
                 "1280x720:3M"}),
            kExitUsage);
  WriteAll(Path("file"), "x");
  EXPECT_EQ(Run({"transcode", "--in", Path("seg.ts"), "--out", Path("file"), "--rendition",
                 "1280x720:3M"}),
            kExitUsage);
  std::vector<std::string> nine = {"transcode", "--in", Path("seg.ts"), "--out", Path("o")};
  for (int i = 0; i < 9; ++i) {
    nine.push_back("--rendition");
    nine.push_back(absl::StrCat("r", i, "=640x360:1M"));
  }
  EXPECT_EQ(Run(nine), kExitUsage);
  EXPECT_EQ(gateway_.calls(), 0);
}

TEST_F(CliTest, HelpListsEveryPipeline) {
  EXPECT_EQ(Run({"--help"}), kExitOk);
  for (const char* command :
       {"text-to-image", "image-to-image", "image-to-video", "audio-to-text", "segment-anything-2",
        "llm", "image-to-text", "text-to-speech", "orchestrators"}) {
    EXPECT_THAT(out_.str(), HasSubstr(command));
  }
  EXPECT_EQ(Run({"text-to-image", "--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("--num-images"));
  EXPECT_THAT(out_.str(), HasSubstr("--negative-prompt"));
  EXPECT_EQ(Run({"segment-anything-2", "--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("X,Y[,LABEL]"));
}

TEST_F(CliTest, PipelineUsageErrorsExitTwoWithoutCalling) {
  WriteAll(Path("in.png"), PngHeader(8, 8));
  WriteAll(Path("text.txt"), "hello");
  const std::string in = Path("in.png");
  const std::string out = Path("o.png");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"text-to-image", "--model", "m", "--out", out}, "--prompt"},
      {{"text-to-image", "--model", "m", "--prompt", "p", "--out", out, "--width", "0"}, "--width"},
      {{"text-to-image", "--model", "m", "--prompt", "p", "--out", out, "--num-images", "99"},
       "--num-images"},
      {{"text-to-image", "--model", "m", "--prompt", "p", "--out", out, "--loras", "[1]"},
       "--loras must be a JSON object"},
      {{"text-to-image", "--model", "m", "--prompt", "p", "--out", Path("nodir/o.png")},
       "does not exist"},
      {{"image-to-image", "--model", "m", "--prompt", "p", "--in", Path("text.txt"), "--out", out},
       "not a PNG or JPEG"},
      {{"image-to-image", "--model", "m", "--prompt", "p", "--in", in, "--out", out, "--strength",
        "1.5"},
       "--strength"},
      {{"image-to-video", "--model", "m", "--in", Path("missing.png"), "--out", Path("v.mp4")},
       "does not exist"},
      {{"image-to-video", "--model", "m", "--in", in, "--out", Path("v.mp4"), "--fps", "abc"},
       "--fps"},
      {{"audio-to-text", "--model", "m", "--in", Path("missing.wav")}, "input audio"},
      {{"audio-to-text", "--model", "m", "--in", Path("text.txt"), "--timestamps", "char"},
       "--timestamps"},
      {{"segment-anything-2", "--model", "m", "--in", in}, "--point"},
      {{"segment-anything-2", "--model", "m", "--in", in, "--point", "1"}, "invalid --point"},
      {{"segment-anything-2", "--model", "m", "--in", in, "--point", "1,2,5"}, "LABEL"},
      {{"segment-anything-2", "--model", "m", "--in", in, "--box", "4,4,1,1"}, "invalid --box"},
      {{"segment-anything-2", "--model", "m", "--in", in, "--point", "1,1", "--mask-input",
        Path("text.txt")},
       "--mask-input"},
      {{"llm", "--model", "m"}, "--prompt"},
      {{"llm", "--model", "m", "--message", "hi"}, "ROLE=CONTENT"},
      {{"llm", "--model", "m", "--prompt", "p", "--max-tokens", "0"}, "--max-tokens"},
      {{"llm", "--model", "m", "--prompt", "p", "--top-p", "2"}, "--top-p"},
      {{"image-to-text", "--model", "m", "--in", Path("missing.png")}, "does not exist"},
      {{"text-to-speech", "--model", "m", "--text", "hi", "--out", dir_.string()},
       "is a directory"},
      {{"text-to-speech", "--model", "m", "--out", Path("a.wav")}, "--text"},
  };
  for (const auto& [args, message] : cases) {
    EXPECT_EQ(Run(args), kExitUsage) << args[0] << " " << message << "\n" << err_.str();
    EXPECT_THAT(err_.str(), HasSubstr(message)) << args[0];
  }
  EXPECT_EQ(gateway_.calls(), 0);
}

TEST_F(CliTest, TextToImageNamesSeveralOutputsAndLeavesDefaultsUnset) {
  EXPECT_EQ(Run({"text-to-image", "--model", "m", "--prompt", "fox", "--out", Path("fox.png"),
                 "--num-images", "2", "--seed", "3", "--loras", "{\"a\": 1.5}"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(ReadAll(Path("fox-1.png")), "image0:fox");
  EXPECT_EQ(ReadAll(Path("fox-2.png")), "image1:fox");
  EXPECT_FALSE(fs::exists(Path("fox.png")));
  EXPECT_THAT(out_.str(), HasSubstr("seed 4"));
  const v1::TextToImageRequest request = gateway_.last_text_to_image();
  EXPECT_EQ(request.seed(), 3);
  EXPECT_EQ(request.loras(), "{\"a\": 1.5}");
  EXPECT_FALSE(request.has_width());  // the gateway's default applies
  EXPECT_FALSE(request.has_guidance_scale());
  EXPECT_FALSE(request.has_safety_check());

  EXPECT_EQ(Run({"--json", "text-to-image", "--model", "m", "--prompt", "x", "--out",
                 Path("one.png"), "--width", "32", "--no-safety-check"}),
            kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["images"][0]["path"], Path("one.png"));
  EXPECT_EQ(json["job"]["orchestrator"], "orch-1");
  EXPECT_EQ(gateway_.last_text_to_image().width(), 32);
  EXPECT_FALSE(gateway_.last_text_to_image().safety_check());
}

TEST_F(CliTest, LlmStreamsTokensAndBuildsTheConversation) {
  EXPECT_EQ(Run({"llm", "--model", "m", "--system", "be brief", "--message", "user=hi", "--message",
                 "assistant=hello", "--prompt", "again", "--temperature", "0"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(out_.str(), "Hello\n");
  EXPECT_THAT(err_.str(), HasSubstr("7 prompt + 2 completion tokens, finish stop"));
  const v1::LLMRequest request = gateway_.last_llm();
  ASSERT_EQ(request.messages_size(), 4);
  EXPECT_EQ(request.messages(0).role(), "system");
  EXPECT_EQ(request.messages(1).content(), "hi");
  EXPECT_EQ(request.messages(2).role(), "assistant");
  EXPECT_EQ(request.messages(3).role(), "user");
  EXPECT_EQ(request.messages(3).content(), "again");
  EXPECT_TRUE(request.has_temperature());
  EXPECT_FALSE(request.has_max_tokens());

  EXPECT_EQ(Run({"--json", "llm", "--model", "m", "--prompt", "p"}), kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["text"], "Hello");
  EXPECT_EQ(json["finish_reason"], "stop");
  EXPECT_EQ(json["usage"]["total_tokens"], 9);
  EXPECT_EQ(json["messages"], 3);
  EXPECT_FALSE(gateway_.last_llm().has_temperature());

  // A stream that fails midway: what came is printed, then the error, exit 1.
  gateway_.set_llm_error(grpc::Status(grpc::StatusCode::UNAVAILABLE, "node lost"));
  EXPECT_EQ(Run({"llm", "--model", "m", "--prompt", "p"}), kExitRpcError);
  EXPECT_EQ(out_.str(), "Hel\n");
  EXPECT_THAT(err_.str(), StartsWith("error: UNAVAILABLE: node lost\n"));
}

TEST_F(CliTest, OrchestratorsGroupsOffersByNode) {
  EXPECT_EQ(Run({"orchestrators", "--offers"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("ORCHESTRATOR"));
  EXPECT_THAT(out_.str(), HasSubstr("10.0.0.1:50061"));
  EXPECT_THAT(out_.str(), HasSubstr("esrgan-slim-x4"));
  EXPECT_EQ(Run({"--json", "orchestrators"}), kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  ASSERT_EQ(json["orchestrators"].size(), 1u);
  EXPECT_EQ(json["orchestrators"][0]["id"], "orch-1");
  EXPECT_EQ(json["orchestrators"][0]["in_flight"], 3);
  ASSERT_EQ(json["orchestrators"][0]["offers"].size(), 1u);
  EXPECT_EQ(json["orchestrators"][0]["offers"][0]["model_id"], "esrgan-slim-x4");
  EXPECT_EQ(json["orchestrators"][0]["offers"][0]["state"], "ready");
}

}  // namespace
}  // namespace switchyard::cli
