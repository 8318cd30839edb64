// The `switchyard` CLI binary against a real local cluster: every pipeline subcommand with tiny
// deterministic models (tests/support/tiny_models.h), checking the files it writes, what it prints
// (text and --json) and its exit codes.
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace cli_cluster {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct CliRun {
  int rc = -1;
  std::string out;  // stdout
  std::string err;  // stderr
  std::string Describe() const {
    return absl::StrCat("rc ", rc, "\nstdout:\n", out, "stderr:\n", err);
  }
};

media::RgbImage MakeImage(int w, int h) {
  media::RgbImage img{w, h, {}};
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        img.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>((x * 3 + y * 5 + c * 7 + 9) % 256);
      }
    }
  }
  return img;
}

int Pixel(const media::RgbImage& img, int x, int y, int c) {
  return img.pixels[(static_cast<size_t>(y) * img.width + x) * 3 + c];
}

class CliClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_dir_ = new TempDir();
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {};
    options.extra_models = SaveTinyModels(models_dir_->path());
    // A live-video-to-video model that inverts every pixel, for the live-video-to-video command.
    const fs::path live = models_dir_->path() / "live-invert.pt";
    SaveScriptModule(live, "def forward(self, frame, params: str):\n    return 255.0 - frame\n");
    options.extra_models.push_back(
        {{"id", "live-invert"}, {"pipeline", "live-video-to-video"}, {"path", live.string()},
         {"warm", true}});
    cluster_ = new LocalCluster();
    start_status_ = new absl::Status(cluster_->Start(options));
  }

  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete models_dir_;
    models_dir_ = nullptr;
    delete start_status_;
    start_status_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(start_status_->ok()) << *start_status_ << "\n" << cluster_->Logs();
  }

  // Runs the CLI binary with `args` (shell words) against the cluster's gateway; every call has a
  // 30 s deadline, so a test cannot hang on it.
  CliRun Cli(const std::string& args) {
    const fs::path err_file = tmp_.path() / "stderr.txt";
    const std::string command =
        absl::StrCat(BinaryPath("switchyard").string(), " --gateway ", cluster_->gateway_address(),
                     " --timeout 30 ", args, " 2>", err_file.string());
    CliRun run;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return run;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) run.out.append(buf.data(), n);
    const int status = ::pclose(pipe);
    run.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    run.err = fs::exists(err_file) ? ReadFile(err_file) : "";
    return run;
  }

  std::string Path(const std::string& name) const { return (tmp_.path() / name).string(); }

  std::string WritePng(const std::string& name, int w, int h) {
    auto png = media::EncodePng(MakeImage(w, h));
    EXPECT_TRUE(png.ok()) << png.status();
    WriteFile(Path(name), png.ok() ? *png : "");
    return Path(name);
  }

  static nlohmann::json Json(const CliRun& run) {
    auto json = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(json.is_discarded()) << run.Describe();
    return json;
  }

  static TempDir* models_dir_;
  static LocalCluster* cluster_;
  static absl::Status* start_status_;
  TempDir tmp_;
};

TempDir* CliClusterTest::models_dir_ = nullptr;
LocalCluster* CliClusterTest::cluster_ = nullptr;
absl::Status* CliClusterTest::start_status_ = nullptr;

TEST_F(CliClusterTest, ImagePipelines) {
  // text-to-image: two images, named out-1.png and out-2.png, with the model's exact pixels.
  CliRun run = Cli(absl::StrCat("text-to-image --model t2i-test --prompt 'a red fox' --seed 11 ",
                                "--width 24 --height 16 --num-images 2 --out ", Path("fox.png")));
  ASSERT_EQ(run.rc, 0) << run.Describe() << cluster_->Logs();
  EXPECT_THAT(run.out, HasSubstr("wrote " + Path("fox-1.png") + " (24x16"));
  EXPECT_THAT(run.out, HasSubstr("seed 12"));
  EXPECT_THAT(run.out, HasSubstr("text-to-image with t2i-test on orch-1"));
  for (int n = 0; n < 2; ++n) {
    auto img = media::DecodeImage(ReadFile(Path(absl::StrCat("fox-", n + 1, ".png"))), 1 << 20);
    ASSERT_TRUE(img.ok()) << img.status();
    ASSERT_EQ(img->width, 24);
    EXPECT_EQ(Pixel(*img, 3, 2, 1), (9 * 7 + 11 + n + 50 + 2 + 3) % 256);
  }
  run = Cli(absl::StrCat("--json text-to-image --model t2i-test --prompt x --seed 5 --out ",
                         Path("one.png")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  nlohmann::json json = Json(run);
  ASSERT_EQ(json["images"].size(), 1u);
  EXPECT_EQ(json["images"][0]["path"], Path("one.png"));
  EXPECT_EQ(json["images"][0]["width"], 64);  // the model's default_width option
  EXPECT_EQ(json["images"][0]["seed"], 5);
  EXPECT_EQ(json["job"]["units"], 64 * 32);
  EXPECT_TRUE(fs::exists(Path("one.png")));

  // image-to-image
  const std::string in = WritePng("in.png", 20, 12);
  run = Cli(absl::StrCat("--json image-to-image --model i2i-test --prompt oil --seed 7 --steps 2 ",
                         "--strength 0.5 --in ", in, " --out ", Path("oil.png")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  json = Json(run);
  EXPECT_EQ(json["images"][0]["seed"], 7);
  EXPECT_EQ(json["job"]["model_id"], "i2i-test");
  auto img = media::DecodeImage(ReadFile(Path("oil.png")), 1 << 20);
  ASSERT_TRUE(img.ok()) << img.status();
  const media::RgbImage input = MakeImage(20, 12);
  EXPECT_EQ(Pixel(*img, 5, 4, 2), (Pixel(input, 5, 4, 2) + 7 + 3 + 2) % 256);

  // image-to-video: one frame per step, an MP4 ffprobe reads.
  run = Cli(absl::StrCat("image-to-video --model i2v-test --width 64 --height 48 --fps 12 ",
                         "--steps 9 --seed 4 --in ", in, " --out ", Path("clip.mp4")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  EXPECT_THAT(run.out, HasSubstr("video/mp4"));
  ProbeResult probe = ProbeVideo(tmp_, ReadFile(Path("clip.mp4")), "mp4");
  ASSERT_TRUE(probe.ok) << probe.error;
  EXPECT_EQ(probe.width, 64);
  EXPECT_EQ(probe.height, 48);
  EXPECT_EQ(probe.frames, 9);

  // segment-anything-2: the masks as the model computed them, also written to --out.
  const std::string small = WritePng("small.png", 4, 2);
  run = Cli(absl::StrCat("--json segment-anything-2 --model sam2-test --point 2,1 --in ", small,
                         " --out ", Path("masks.json")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  json = Json(run);
  EXPECT_EQ(json["masks"].dump(),
            "[[[-2,-1,0,1],[-2,-1,0,1]],[[-1.5,-0.5,0.5,1.5],[-1.5,-0.5,0.5,1.5]],"
            "[[-1,0,1,2],[-1,0,1,2]]]");
  EXPECT_EQ(json["scores"].dump(), "[0.5,0.75,1]");
  EXPECT_EQ(json["mask_shape"].dump(), "[3,2,4]");
  auto saved = nlohmann::json::parse(ReadFile(Path("masks.json")));
  EXPECT_EQ(saved["masks"], json["masks"]);
  run = Cli(absl::StrCat("segment-anything-2 --model sam2-test --point 2,1,1 --single-mask ",
                         "--no-logits --in ", small));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  EXPECT_THAT(run.out, StartsWith("1 mask of 4x2, scores [0.5]"));

  // image-to-text: the text alone on stdout, the job on stderr.
  run = Cli(absl::StrCat("image-to-text --model i2t-test --prompt 'what is it' --in ",
                         WritePng("desc.png", 10, 6)));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  EXPECT_EQ(run.out, "what is it:10x6:9\n");
  EXPECT_THAT(run.err, HasSubstr("image-to-text with i2t-test on orch-1"));
}

TEST_F(CliClusterTest, LiveVideoSegmentsOfOneStream) {
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 120;
  spec.seconds = 0.5;
  spec.gop_seconds = 0.5;
  WriteFile(Path("live-0.ts"), MakeTestSegment(tmp_, spec));
  WriteFile(Path("live-1.ts"), MakeTestSegment(tmp_, spec));
  // Two segments: one call each, the outputs in the --out directory, one line per segment.
  CliRun run = Cli(absl::StrCat("live-video-to-video --model live-invert --stream-id s1 --in ",
                                Path("live-0.ts"), " ", Path("live-1.ts"), " --out ",
                                Path("live-out")));
  ASSERT_EQ(run.rc, 0) << run.Describe() << cluster_->Logs();
  EXPECT_THAT(run.out, HasSubstr("segment 0: "));
  EXPECT_THAT(run.out, HasSubstr("segment 1: "));
  EXPECT_THAT(run.out, HasSubstr("15 frames, 160x120"));
  EXPECT_THAT(run.out, HasSubstr("live-video-to-video with live-invert on orch-1"));
  for (const char* name : {"segment-0.ts", "segment-1.ts"}) {
    const fs::path out = tmp_.path() / "live-out" / name;
    ASSERT_TRUE(fs::exists(out)) << out;
    ProbeResult probe = ProbeVideo(tmp_, ReadFile(out), "ts");
    ASSERT_TRUE(probe.ok) << probe.error;
    EXPECT_EQ(probe.width, 160);
    EXPECT_EQ(probe.height, 120);
    EXPECT_EQ(probe.frames, 15);
    EXPECT_EQ(probe.codec, "h264");
  }
  // One segment, --json: the output is the --out file; units are output pixels.
  run = Cli(absl::StrCat("--json live-video-to-video --model live-invert --params '{\"a\": 1}' ",
                         "--in ", Path("live-0.ts"), " --out ", Path("one.ts")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  auto json = nlohmann::json::parse(run.out);
  ASSERT_EQ(json["segments"].size(), 1u);
  EXPECT_EQ(json["segments"][0]["output"], Path("one.ts"));
  EXPECT_EQ(json["segments"][0]["frames"], 15);
  EXPECT_EQ(json["units"], 15 * 160 * 120);
  EXPECT_TRUE(fs::exists(Path("one.ts")));
  // Usage errors exit 2 without a call; a gateway error names the segment that failed.
  run = Cli(absl::StrCat("live-video-to-video --model live-invert --params '[1]' --in ",
                         Path("live-0.ts"), " --out ", Path("x.ts")));
  EXPECT_EQ(run.rc, 2) << run.Describe();
  EXPECT_THAT(run.err, HasSubstr("--params must be a JSON object"));
  run = Cli(absl::StrCat("live-video-to-video --model live-invert --in ", Path("missing.ts"),
                         " --out ", Path("x.ts")));
  EXPECT_EQ(run.rc, 2) << run.Describe();
  EXPECT_THAT(run.err, HasSubstr("does not exist"));
  WriteFile(Path("junk.ts"), "not a transport stream");
  run = Cli(absl::StrCat("live-video-to-video --model live-invert --in ", Path("live-0.ts"), " ",
                         Path("junk.ts"), " --out ", Path("partial")));
  EXPECT_EQ(run.rc, 1) << run.Describe();
  EXPECT_THAT(run.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(run.err, HasSubstr("segment 1 ("));
  EXPECT_TRUE(fs::exists(tmp_.path() / "partial" / "segment-0.ts"));
  EXPECT_FALSE(fs::exists(tmp_.path() / "partial" / "segment-1.ts"));
}

TEST_F(CliClusterTest, AudioAndTextPipelines) {
  // audio-to-text: a 1 s 44.1 kHz stereo WAV reaches the model as 16000 mono samples.
  std::string log;
  ASSERT_EQ(RunCommand(absl::StrCat("ffmpeg -nostdin -loglevel error -y -f lavfi -i ",
                                    "sine=frequency=440:sample_rate=44100:duration=1 -ac 2 ",
                                    Path("a.wav")),
                       &log),
            0)
      << log;
  CliRun run = Cli(absl::StrCat("audio-to-text --model tiny-asr --in ", Path("a.wav")));
  ASSERT_EQ(run.rc, 0) << run.Describe() << cluster_->Logs();
  EXPECT_EQ(run.out, "n=16000 c=1\n");
  run = Cli(absl::StrCat("audio-to-text --model tiny-asr --timestamps word --in ", Path("a.wav")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  EXPECT_EQ(run.out, "n=16000 c=1\n[0.00 - 0.50] n=16000\n[0.50 - 1.00] c=1\n");
  run = Cli(absl::StrCat("--json audio-to-text --model tiny-asr --in ", Path("a.wav")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  nlohmann::json json = Json(run);
  EXPECT_EQ(json["text"], "n=16000 c=1");
  EXPECT_EQ(json["chunks"][0]["timestamp"].dump(), "[0.0,1.0]");
  EXPECT_EQ(json["job"]["units"], 1000);

  // text-to-speech: 0.1 s per character at 16 kHz.
  run = Cli(
      absl::StrCat("text-to-speech --model tiny-tts --text 'hi there' --out ", Path("speech.wav")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  EXPECT_THAT(run.out, HasSubstr("0.80 s, 16000 Hz, 1 channel"));
  run = Cli(absl::StrCat("--json text-to-speech --model tiny-tts --text abcd --out ",
                         Path("speech.wav")));
  ASSERT_EQ(run.rc, 0) << run.Describe();
  json = Json(run);
  EXPECT_EQ(json["content_type"], "audio/wav");
  EXPECT_EQ(json["sample_rate"], 16000);
  EXPECT_DOUBLE_EQ(json["duration_seconds"].get<double>(), 0.4);
  EXPECT_EQ(ReadFile(Path("speech.wav")).size(), 44u + 6400u * 2);

  // llm: the tokens on stdout as they stream, usage on stderr; --json the final result.
  run = Cli("llm --model tiny-llm --prompt hello --temperature 0");
  ASSERT_EQ(run.rc, 0) << run.Describe() << cluster_->Logs();
  EXPECT_EQ(run.out, std::string(kTinyLlmReply) + "\n");
  EXPECT_THAT(run.err, HasSubstr("23 completion tokens, finish stop"));
  run =
      Cli("--json llm --model tiny-llm --system 'be brief' --message user=hi "
          "--message assistant=ok --prompt again --max-tokens 5 --temperature 0");
  ASSERT_EQ(run.rc, 0) << run.Describe();
  json = Json(run);
  EXPECT_EQ(json["text"], "Hello");
  EXPECT_EQ(json["finish_reason"], "length");
  EXPECT_EQ(json["usage"]["completion_tokens"], 5);
  EXPECT_GT(json["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(json["usage"]["total_tokens"].get<int>(),
            json["usage"]["prompt_tokens"].get<int>() + 5);
  EXPECT_EQ(json["job"]["orchestrator"], "orch-1");
  EXPECT_EQ(json["model"], "tiny-llm");

  // Sampled: the tiny model's tokens are single bytes, so sampling produces bytes that are not
  // UTF-8 on their own. They must reach the client as valid UTF-8 text, and the stream must end.
  for (int i = 0; i < 3; ++i) {
    run = Cli("--json llm --model tiny-llm --prompt again --max-tokens 24 --temperature 1.5");
    ASSERT_EQ(run.rc, 0) << run.Describe() << cluster_->Logs();
    json = Json(run);  // nlohmann rejects invalid UTF-8
    EXPECT_GE(json["usage"]["completion_tokens"].get<int>(), 1);
    EXPECT_LE(json["usage"]["completion_tokens"].get<int>(), 24);
  }
  // LLM streams are counted in the gateway's job metrics like unary jobs.
  HttpResult metrics = HttpRequest(cluster_->gateway().admin_port(), "GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("switchyard_gateway_jobs_total{code=\"OK\",model=\"tiny-llm\","
                                      "pipeline=\"llm\"} 5"));
}

TEST_F(CliClusterTest, OrchestratorsAndErrors) {
  CliRun run = Cli("orchestrators --offers");
  ASSERT_EQ(run.rc, 0) << run.Describe();
  EXPECT_THAT(run.out, HasSubstr("orch-1"));
  EXPECT_THAT(run.out, HasSubstr("tiny-llm"));
  EXPECT_THAT(run.out, HasSubstr(cluster_->orchestrator_address(0)));
  run = Cli("--json orchestrators");
  ASSERT_EQ(run.rc, 0) << run.Describe();
  nlohmann::json json = Json(run);
  ASSERT_EQ(json["orchestrators"].size(), 1u);
  EXPECT_EQ(json["orchestrators"][0]["id"], "orch-1");
  EXPECT_EQ(json["orchestrators"][0]["ready"], true);
  // The eight tiny models, live-invert and the transcoder.
  std::set<std::string> offers;
  for (const auto& offer : json["orchestrators"][0]["offers"]) {
    offers.insert(offer["pipeline"].get<std::string>() + "/" +
                  offer["model_id"].get<std::string>());
  }
  EXPECT_EQ(offers.size(), 10u) << json.dump();
  EXPECT_EQ(offers.count("llm/tiny-llm"), 1u) << json.dump();
  EXPECT_EQ(offers.count("live-video-to-video/live-invert"), 1u) << json.dump();
  EXPECT_EQ(std::count_if(offers.begin(), offers.end(),
                          [](const std::string& o) { return o.rfind("transcode/", 0) == 0; }),
            1)
      << json.dump();

  // The gateway's errors: exit 1 with the gRPC code and message.
  run = Cli(absl::StrCat("text-to-image --model nope --prompt x --out ", Path("x.png")));
  EXPECT_EQ(run.rc, 1) << run.Describe();
  EXPECT_THAT(run.err, StartsWith("error: NOT_FOUND: "));
  run = Cli(
      absl::StrCat("text-to-image --model t2i-test --prompt x --height 264 --out ", Path("x.png")));
  EXPECT_EQ(run.rc, 1) << run.Describe();
  EXPECT_THAT(run.err, StartsWith("error: INVALID_ARGUMENT: "));
  EXPECT_THAT(run.err, HasSubstr("height"));
  EXPECT_FALSE(fs::exists(Path("x.png")));
  run = Cli("text-to-speech --model tiny-tts --text '' --out " + Path("x.wav"));
  EXPECT_EQ(run.rc, 1) << run.Describe();
  EXPECT_THAT(run.err, HasSubstr("text is required"));

  // Usage errors: exit 2 before any call, naming the file or option.
  run = Cli(absl::StrCat("image-to-text --model i2t-test --in ", Path("missing.png")));
  EXPECT_EQ(run.rc, 2) << run.Describe();
  EXPECT_THAT(run.err, HasSubstr("does not exist"));
  run = Cli(absl::StrCat("audio-to-text --model tiny-asr --in ", Path("missing.wav")));
  EXPECT_EQ(run.rc, 2) << run.Describe();
  EXPECT_THAT(run.err, HasSubstr("input audio"));
  run = Cli(absl::StrCat("image-to-image --model i2i-test --prompt p --strength 2 --in ",
                         WritePng("i.png", 8, 8), " --out ", Path("o.png")));
  EXPECT_EQ(run.rc, 2) << run.Describe();
  EXPECT_THAT(run.err, HasSubstr("--strength"));
  run = Cli("llm --model tiny-llm --message robot=hi");
  EXPECT_EQ(run.rc, 2) << run.Describe();
  EXPECT_THAT(run.err, HasSubstr("ROLE=CONTENT"));
}

}  // namespace
}  // namespace cli_cluster
}  // namespace switchyard::testing
