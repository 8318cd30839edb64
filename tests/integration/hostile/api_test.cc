// Hostile clients of the Livepeer HTTP API (issue 18, helper "api"), against a real cluster: JSON
// nested a million levels deep (2 MB) on /text-to-image and /live-video-to-video, one API key
// asking for another key's async result and video, and bad segments sent to
// /quote/live-video-to-video. Each attack gets its documented error, the gateway stays up and
// another client's job still succeeds.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "gateway/billing/api_keys.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kKeyA[] = "sy_hostile-api-key-a";
constexpr char kKeyB[] = "sy_hostile-api-key-b";
constexpr char kBoundary[] = "hostile-api-boundary";

std::string Deep(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

// {"detail": {"msg": M}} with `status`, M containing `text`.
::testing::AssertionResult IsError(const HttpResult& r, int status, const std::string& text) {
  Json j = Json::parse(r.body, nullptr, false);
  if (r.status != status || j.is_discarded() || !j["detail"]["msg"].is_string() ||
      j["detail"]["msg"].get<std::string>().find(text) == std::string::npos) {
    return ::testing::AssertionFailure() << "want " << status << " with '" << text << "', got "
                                         << r.status << " " << r.body.substr(0, 300);
  }
  return ::testing::AssertionSuccess();
}

class HostileApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const fs::path keys = dir_->path() / "keys.json";
    std::ofstream(keys) << Json{{"keys",
                                 {{{"id", "a"}, {"sha256", gateway::Sha256Hex(kKeyA)}},
                                  {{"id", "b"}, {"sha256", gateway::Sha256Hex(kKeyB)}}}}}
                               .dump();
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {};
    options.api_key = kKeyA;
    options.gateway_config = {{"api_keys_file", keys.string()}};
    auto add = [&](const std::string& id, const std::string& pipeline, const char* source,
                   Json opts) {
      const fs::path path = dir_->path() / (id + ".pt");
      SaveScriptModule(path, source);
      options.extra_models.push_back({{"id", id},
                                      {"pipeline", pipeline},
                                      {"path", path.string()},
                                      {"warm", true},
                                      {"device", "cpu"},
                                      {"warmup_size", 16},
                                      {"max_input_pixels", 4096},
                                      {"options", std::move(opts)}});
    };
    add("t2i-hostile", "text-to-image", kTinyTextToImageSource,
        {{"max_width", 64}, {"max_height", 64}, {"default_width", 16}, {"default_height", 16}});
    add("i2v-hostile", "image-to-video", kTinyImageToVideoSource, {{"max_frames", 4}});
    const fs::path live = dir_->path() / "live-hostile.pt";
    SaveScriptModule(live, "def forward(self, frame, params: str):\n    return frame\n");
    options.extra_models.push_back({{"id", "live-hostile"},
                                    {"pipeline", "live-video-to-video"},
                                    {"path", live.string()},
                                    {"warm", true},
                                    {"device", "cpu"},
                                    {"options", {{"preset", "ultrafast"}}}});
    cluster_ = new LocalCluster();
    start_ = new absl::Status(cluster_->Start(options));
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete start_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_TRUE(start_->ok()) << *start_ << "\n" << cluster_->Logs();
    port_ = cluster_->gateway().http_port();
  }

  HttpResult Post(const std::string& path, const std::string& content_type, std::string body,
                  const std::string& key, const std::map<std::string, std::string>& extra = {}) {
    HttpCall call;
    call.method = "POST";
    call.path = path;
    call.content_type = content_type;
    call.body = std::move(body);
    call.headers = extra;
    if (!key.empty()) call.headers["Authorization"] = absl::StrCat("Bearer ", key);
    return HttpRequest(port_, call);
  }
  HttpResult Get(const std::string& path, const std::string& key) {
    HttpCall call;
    call.path = path;
    if (!key.empty()) call.headers["Authorization"] = absl::StrCat("Bearer ", key);
    return HttpRequest(port_, call);
  }

  // Another client's ordinary job: it must still succeed.
  void ExpectOtherClientsJobSucceeds() {
    HttpResult r = Post("/text-to-image", "application/json",
                        Json{{"model_id", "t2i-hostile"}, {"prompt", "ok"}}.dump(), kKeyB);
    EXPECT_EQ(r.status, 200) << r.body.substr(0, 300) << cluster_->Logs();
    EXPECT_TRUE(cluster_->gateway().Alive()) << cluster_->Logs();
  }

  static TempDir* dir_;
  static LocalCluster* cluster_;
  static absl::Status* start_;
  int port_ = 0;
};

TempDir* HostileApiTest::dir_ = nullptr;
LocalCluster* HostileApiTest::cluster_ = nullptr;
absl::Status* HostileApiTest::start_ = nullptr;

// A million levels (2 MB) killed the gateway with SIGSEGV (dump() of the live-video params, or a
// copy of any deep value); now the body is refused while parsing, 400 naming the limit.
TEST_F(HostileApiTest, MillionLevelJsonIs400AndTheGatewayLives) {
  const std::string deep = Deep(1000000);
  EXPECT_TRUE(
      IsError(Post("/live-video-to-video", "application/json",
                   absl::StrCat(R"({"subscribe_url":"http://127.0.0.1:1/in",)",
                                R"("publish_url":"http://127.0.0.1:1/out","model_id":"live",)",
                                R"("params":{"a":)", deep, "}}"),
                   kKeyA),
              400, "JSON nested deeper than 64 levels"));
  EXPECT_TRUE(cluster_->gateway().Alive()) << cluster_->Logs();
  EXPECT_TRUE(IsError(
      Post("/text-to-image", "application/json",
           absl::StrCat(R"({"model_id":"t2i-hostile","prompt":"a","loras":)", deep, "}"), kKeyA),
      400, "JSON nested deeper than 64 levels"));
  EXPECT_TRUE(
      IsError(Post("/llm", "application/json", absl::StrCat(R"({"messages":)", deep, "}"), kKeyA),
              400, "JSON nested deeper than 64 levels"));
  ExpectOtherClientsJobSucceeds();
}

// Async results and served videos were anyone's who had the id (and the ids came from
// mt19937_64). Now ids are 32 hex digits from the CSPRNG and, with API keys, a result or video
// is the key's that made it: another key gets 404, the same as an unknown id.
// Needs gateway_server.cc to pass its ApiKeyAuth to LivepeerApiRoutes.
TEST_F(HostileApiTest, AnotherKeyCannotFetchAResultOrVideo) {
  const std::string png = *media::EncodePng(media::RgbImage{8, 8, std::vector<uint8_t>(192, 90)});
  const std::string form = absl::StrCat(
      "--", kBoundary,
      "\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\ni2v-hostile\r\n--", kBoundary,
      "\r\nContent-Disposition: form-data; name=\"num_inference_steps\"\r\n\r\n2\r\n--", kBoundary,
      "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
      "Content-Type: image/png\r\n\r\n",
      png, "\r\n--", kBoundary, "--\r\n");
  HttpResult accepted =
      Post("/image-to-video", absl::StrCat("multipart/form-data; boundary=", kBoundary), form,
           kKeyA, {{"Prefer", "respond-async"}});
  ASSERT_EQ(accepted.status, 202) << accepted.body << cluster_->Logs();
  const std::string id = Json::parse(accepted.body)["request_id"];
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{32}"))) << id;

  const std::string ask = Json{{"request_id", id}}.dump();
  Json done;
  for (int i = 0; i < 300; ++i) {  // bounded: 300 x 50 ms
    HttpResult r = Post("/image-to-video/result", "application/json", ask, kKeyA);
    ASSERT_EQ(r.status, 200) << r.body;
    done = Json::parse(r.body);
    if (done["status"] != "processing") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(done["status"], "complete") << done.dump();
  ASSERT_TRUE(done["result"]["images"][0]["url"].is_string()) << done.dump();
  const std::string url = done["result"]["images"][0]["url"];
  std::smatch m;
  ASSERT_TRUE(
      std::regex_match(url, m, std::regex("https?://[^/]+(/stream/[0-9a-f]{32}/video-0\\.mp4)")))
      << url;
  const std::string path = m[1];

  EXPECT_TRUE(IsError(Post("/image-to-video/result", "application/json", ask, kKeyB), 404, id));
  EXPECT_TRUE(IsError(Get(path, kKeyB), 404, "no media"));
  // No key at all is refused from the headers (401) before the path is looked at.
  EXPECT_TRUE(IsError(Get(path, ""), 401, "API key required"));
  HttpResult video = Get(path, kKeyA);
  EXPECT_EQ(video.status, 200);
  EXPECT_FALSE(video.body.empty());
  ExpectOtherClientsJobSucceeds();
}

// A model id with a newline wrote a second, forged line into the gateway's log (the job's
// "answered" line quotes the model id, and so does the error it quotes), and a long one flooded
// it. Now every client string in the gateway's job lines is cut and escaped (LogSafe).
TEST_F(HostileApiTest, AModelIdCannotForgeOrFloodLogLines) {
  const std::string forged = "FORGED-LINE-18 error [gateway] orchestrator node-a ejected";
  const std::string model =
      absl::StrCat("nope\n2026-12-03 00:00:00.000 ", forged, "\x1b[2J", std::string(20000, 'x'));
  HttpResult r = Post("/text-to-image", "application/json",
                      Json{{"model_id", model}, {"prompt", "a"}}.dump(), kKeyA);
  EXPECT_GE(r.status, 400) << r.body.substr(0, 300);
  // The gateway logs the failed job once it has answered; give the line a moment to be written.
  std::string log;
  for (int i = 0; i < 100; ++i) {  // bounded: 2 s
    log = cluster_->gateway().Log();
    if (log.find("FORGED-LINE-18") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_NE(log.find("FORGED-LINE-18"), std::string::npos) << "the job was not logged at all";
  ExpectNoForgedLogLines(log, "2026-12-03 00:00:00.000 FORGED");
  ExpectOtherClientsJobSucceeds();
}

// POST /quote/live-video-to-video reads a client's whole segment (demuxed to count its frames):
// a missing, empty, oversized or unreadable one, an unknown model and a malformed body each get a
// 4xx naming what was wrong, and the gateway goes on quoting and serving.
TEST_F(HostileApiTest, LiveVideoQuoteRefusesBadSegmentsAndTheGatewayLives) {
  const std::string type = absl::StrCat("multipart/form-data; boundary=", kBoundary);
  auto form = [](const std::string& model, const std::optional<std::string>& video) {
    std::string body = absl::StrCat("--", kBoundary,
                                    "\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n",
                                    model, "\r\n");
    if (video) {
      absl::StrAppend(&body, "--", kBoundary,
                      "\r\nContent-Disposition: form-data; name=\"video\"; filename=\"s.ts\"\r\n"
                      "Content-Type: video/mp2t\r\n\r\n",
                      *video, "\r\n");
    }
    return absl::StrCat(body, "--", kBoundary, "--\r\n");
  };
  auto quote = [&](const std::string& body, const std::string& key = kKeyA) {
    return Post("/quote/live-video-to-video", type, body, key);
  };
  SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.fps = "10";
  spec.seconds = 1.0;
  spec.gop_seconds = 1.0;
  const std::string segment = MakeTestSegment(*dir_, spec);
  ASSERT_FALSE(segment.empty());
  HttpResult ok = quote(form("live-hostile", segment));
  ASSERT_EQ(ok.status, 200) << ok.body << cluster_->Logs();
  EXPECT_EQ(Json::parse(ok.body)["units"], std::to_string(10 * 64 * 48));

  HttpResult r = quote(form("live-hostile", std::nullopt));
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_NE(r.body.find(R"(["body","video"])"), std::string::npos) << r.body;
  r = quote(form("live-hostile", ""));
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_NE(r.body.find(R"(["body","video"])"), std::string::npos) << r.body;
  // Bytes that are no container, an image, MPEG-TS without video: 400 naming the segment.
  EXPECT_TRUE(IsError(quote(form("live-hostile", std::string(4096, '\x5a'))), 400,
                      "segment: video could not be demuxed"));
  const std::string png = *media::EncodePng(media::RgbImage{8, 8, std::vector<uint8_t>(192, 90)});
  EXPECT_TRUE(
      IsError(quote(form("live-hostile", png)), 400, "segment: video could not be demuxed"));
  const fs::path audio_ts = dir_->path() / "audio-only.ts";
  std::string log;
  ASSERT_EQ(RunCommand(absl::StrCat("ffmpeg -hide_banner -loglevel error -y -f lavfi -i "
                                    "sine=frequency=440:sample_rate=48000 -t 0.5 -c:a aac -f "
                                    "mpegts ",
                                    audio_ts.string()),
                       &log),
            0)
      << log;
  EXPECT_TRUE(IsError(quote(form("live-hostile", ReadFile(audio_ts))), 400,
                      "segment: video has no video stream"));
  // A model nobody offers; one byte over a session's 64 MiB input segment.
  EXPECT_TRUE(IsError(quote(form("nobody-has-this", segment)), 400,
                      "no orchestrator offers model 'nobody-has-this'"));
  EXPECT_TRUE(IsError(quote(form("live-hostile", std::string((64 << 20) + 1, '\x47'))), 413,
                      "video: 67108865 bytes, more than the 67108864 bytes"));
  // Malformed bodies: multipart cut before its closing boundary, JSON, no key.
  std::string cut = form("live-hostile", segment);
  cut.resize(cut.size() - 10);
  EXPECT_EQ(quote(cut).status, 400);
  EXPECT_TRUE(IsError(Post("/quote/live-video-to-video", "application/json",
                           Json{{"model_id", "live-hostile"}}.dump(), kKeyA),
                      415, "multipart/form-data"));
  EXPECT_TRUE(IsError(quote(form("live-hostile", segment), ""), 401, "API key required"));

  EXPECT_TRUE(cluster_->gateway().Alive()) << cluster_->Logs();
  ok = quote(form("live-hostile", segment), kKeyB);
  EXPECT_EQ(ok.status, 200) << ok.body;
  ExpectOtherClientsJobSucceeds();
}

}  // namespace
}  // namespace switchyard::testing
