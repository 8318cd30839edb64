// The Livepeer AI HTTP API on the gateway's HTTP port, against a local cluster: every path over
// real HTTP with tiny deterministic TorchScript models built here, the response shapes and values,
// bad input per path, the llm event stream and image-to-video's async mode.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/media/image_codec.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

const char kBoundary[] = "switchyard-test-boundary";

std::string Multipart(const std::map<std::string, std::string>& fields, const std::string& image) {
  std::string body;
  for (const auto& [name, value] : fields) {
    body += std::string("--") + kBoundary + "\r\nContent-Disposition: form-data; name=\"" + name +
            "\"\r\n\r\n" + value + "\r\n";
  }
  if (!image.empty()) {
    body += std::string("--") + kBoundary +
            "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\n"
            "Content-Type: image/png\r\n\r\n" +
            image + "\r\n";
  }
  body += std::string("--") + kBoundary + "--\r\n";
  return body;
}

TEST(LivepeerApiTest, UpscaleOverHttpLikeTheLivepeerGateway) {
  ASSERT_TRUE(std::filesystem::exists(ModelDir() / "esrgan-slim-x4.pt"))
      << "models are not prepared; run scripts/prepare-models";
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {"esrgan-slim-x4"};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  const int port = cluster.gateway().http_port();
  TempDir tmp;
  const std::string png = MakeTestImage(tmp, 24, 16, "png");
  const std::string form_type = std::string("multipart/form-data; boundary=") + kBoundary;

  HttpResult ok = HttpRequest(port, "POST", "/upscale", form_type,
                              Multipart({{"model_id", "esrgan-slim-x4"}, {"seed", "7"}}, png));
  ASSERT_EQ(ok.status, 200) << ok.body << cluster.Logs();
  auto json = nlohmann::json::parse(ok.body, nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << ok.body;
  ASSERT_EQ(json["images"].size(), 1u) << ok.body;
  const std::string url = json["images"][0]["url"];
  const std::string prefix = "data:image/png;base64,";
  ASSERT_EQ(url.rfind(prefix, 0), 0u) << url.substr(0, 40);
  std::string decoded_png;
  ASSERT_TRUE(absl::Base64Unescape(url.substr(prefix.size()), &decoded_png));
  auto image = media::DecodeImage(decoded_png, 1 << 24);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 96);
  EXPECT_EQ(image->height, 64);
  EXPECT_TRUE(json["images"][0].contains("seed"));
  EXPECT_EQ(json["images"][0]["nsfw"], false);

  // The reference API's errors: 422 for a missing field, 415 for a non-form body, 400 for an
  // unknown model or a corrupt image, 405 for the wrong method, 404 off the API.
  HttpResult missing = HttpRequest(port, "POST", "/upscale", form_type,
                                   Multipart({{"model_id", "esrgan-slim-x4"}}, ""));
  EXPECT_EQ(missing.status, 422) << missing.body;
  auto mj = nlohmann::json::parse(missing.body, nullptr, false);
  ASSERT_FALSE(mj.is_discarded()) << missing.body;
  EXPECT_EQ(mj["detail"][0]["loc"], nlohmann::json::array({"body", "image"})) << missing.body;
  EXPECT_EQ(HttpRequest(port, "POST", "/upscale", "application/json", "{}").status, 415);
  HttpResult unknown = HttpRequest(port, "POST", "/upscale", form_type,
                                   Multipart({{"model_id", "no-such-model"}}, png));
  EXPECT_EQ(unknown.status, 400) << unknown.body;
  EXPECT_NE(unknown.body.find("no-such-model"), std::string::npos) << unknown.body;
  HttpResult corrupt = HttpRequest(port, "POST", "/upscale", form_type,
                                   Multipart({{"model_id", "esrgan-slim-x4"}}, "not a png"));
  EXPECT_EQ(corrupt.status, 400) << corrupt.body;
  auto cj = nlohmann::json::parse(corrupt.body, nullptr, false);
  ASSERT_FALSE(cj.is_discarded());
  EXPECT_TRUE(cj["detail"].contains("msg")) << corrupt.body;
  EXPECT_EQ(HttpRequest(port, "GET", "/upscale", "", "").status, 405);
  HttpResult bad_seed =
      HttpRequest(port, "POST", "/upscale", form_type,
                  Multipart({{"model_id", "esrgan-slim-x4"}, {"seed", "x"}}, png));
  EXPECT_EQ(bad_seed.status, 422) << bad_seed.body;
}

// ---------------------------------------------------------------------------------------------
// Every other path, against one cluster serving tiny models (the contracts of
// docs/pipelines-image.md and docs/pipelines-audio-text.md; the same models as the gRPC tests).

namespace fs = std::filesystem;
using Json = nlohmann::json;

media::RgbImage Gradient(int w, int h) {
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

std::string Png(const media::RgbImage& img) {
  auto png = media::EncodePng(img);
  return png.ok() ? *png : std::string();
}

struct FilePart {
  std::string name;
  std::string filename;
  std::string content_type;
  std::string data;
};

std::string Form(const std::map<std::string, std::string>& fields,
                 const std::vector<FilePart>& files) {
  std::string body;
  for (const auto& [name, value] : fields) {
    absl::StrAppend(&body, "--", kBoundary, "\r\nContent-Disposition: form-data; name=\"", name,
                    "\"\r\n\r\n", value, "\r\n");
  }
  for (const auto& f : files) {
    absl::StrAppend(&body, "--", kBoundary, "\r\nContent-Disposition: form-data; name=\"", f.name,
                    "\"; filename=\"", f.filename, "\"\r\nContent-Type: ", f.content_type,
                    "\r\n\r\n", f.data, "\r\n");
  }
  absl::StrAppend(&body, "--", kBoundary, "--\r\n");
  return body;
}

FilePart ImagePart(const std::string& png) { return {"image", "in.png", "image/png", png}; }

const std::string kFormType = std::string("multipart/form-data; boundary=") + kBoundary;

Json Parse(const HttpResult& r) { return Json::parse(r.body, nullptr, false); }

// The 422 body names `loc` (after "body") in one of its errors.
::testing::AssertionResult NamesField(const HttpResult& r, const Json& loc) {
  if (r.status != 422) return ::testing::AssertionFailure() << r.status << " " << r.body;
  Json j = Parse(r);
  Json full = Json::array({"body"});
  for (const auto& l : loc) full.push_back(l);
  if (j.is_discarded() || !j["detail"].is_array()) {
    return ::testing::AssertionFailure() << "not a validation error body: " << r.body;
  }
  for (const auto& d : j["detail"]) {
    if (d["loc"] == full && d["msg"].is_string() && d["type"].is_string()) {
      return ::testing::AssertionSuccess();
    }
  }
  return ::testing::AssertionFailure() << "no error at " << full.dump() << ": " << r.body;
}

// An HTTPError body ({"detail": {"msg": ...}}) with `status` whose message contains `text`.
::testing::AssertionResult IsError(const HttpResult& r, int status, const std::string& text) {
  Json j = Parse(r);
  if (r.status != status || j.is_discarded() || !j["detail"]["msg"].is_string() ||
      j["detail"]["msg"].get<std::string>().find(text) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "want " << status << " with '" << text << "', got " << r.status << " " << r.body;
  }
  return ::testing::AssertionSuccess();
}

// Decodes a data URL of `type`.
::testing::AssertionResult DataUrl(const Json& url, const std::string& type, std::string* out) {
  const std::string prefix = "data:" + type + ";base64,";
  if (!url.is_string() || url.get<std::string>().rfind(prefix, 0) != 0) {
    return ::testing::AssertionFailure()
           << "not a " << type << " data URL: " << url.dump().substr(0, 60);
  }
  if (!absl::Base64Unescape(url.get<std::string>().substr(prefix.size()), out)) {
    return ::testing::AssertionFailure() << "bad base64";
  }
  return ::testing::AssertionSuccess();
}

class LivepeerApiClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_dir_ = new TempDir();
    const fs::path dir = models_dir_->path();
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {};
    auto add = [&](const std::string& id, const std::string& pipeline, const char* source,
                   Json opts, const ModuleAttributes& attrs = nullptr) {
      const fs::path path = dir / (id + ".pt");
      SaveScriptModule(path, source, attrs);
      options.extra_models.push_back({{"id", id},
                                      {"pipeline", pipeline},
                                      {"path", path.string()},
                                      {"warm", true},
                                      {"device", "cpu"},
                                      {"warmup_size", 16},
                                      {"max_input_pixels", 4096},
                                      {"options", std::move(opts)}});
    };
    add("t2i-test", "text-to-image", kTinyTextToImageSource,
        {{"max_width", 256}, {"max_height", 256}, {"default_width", 64}, {"default_height", 32}});
    add("i2i-test", "image-to-image", kTinyImageToImageSource, Json::object());
    add("i2v-test", "image-to-video", kTinyImageToVideoSource, {{"max_frames", 16}});
    add("sam2-test", "segment-anything-2", kTinySegmentSource, Json::object());
    add("i2t-test", "image-to-text", kTinyImageToTextSource, Json::object());
    add("tiny-asr", "audio-to-text", kTinyAsrSource, {{"max_audio_seconds", 2.5}});
    add("tiny-tts", "text-to-speech", kTinyTtsSource, Json::object(), TinyTtsAttributes());
    add("tiny-llm", "llm", kTinyLlmSource, {{"max_tokens", 512}},
        TinyLlmAttributes(0, kTinyLlmReply));
    // ~10+ ms per token, so the stream test can see events arrive one by one.
    add("slow-llm", "llm", kTinyLlmSource, {{"max_tokens", 512}},
        TinyLlmAttributes(8, kTinyLlmReply));
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
    port_ = cluster_->gateway().http_port();
  }

  HttpResult PostJson(const std::string& path, const Json& body) {
    return HttpRequest(port_, "POST", path, "application/json", body.dump());
  }
  HttpResult PostForm(const std::string& path, const std::map<std::string, std::string>& fields,
                      const std::vector<FilePart>& files) {
    return HttpRequest(port_, "POST", path, kFormType, Form(fields, files));
  }

  std::string Sine(const std::string& name, double seconds) {
    const fs::path path = tmp_.path() / name;
    std::string log;
    EXPECT_EQ(RunCommand(absl::StrCat("ffmpeg -nostdin -loglevel error -y -f lavfi -i sine=",
                                      "frequency=440:sample_rate=44100:duration=", seconds,
                                      " -c:a pcm_s16le ", path.string()),
                         &log),
              0)
        << log;
    return ReadFile(path);
  }

  static TempDir* models_dir_;
  static LocalCluster* cluster_;
  static absl::Status* start_status_;
  int port_ = 0;
  TempDir tmp_;
};

TempDir* LivepeerApiClusterTest::models_dir_ = nullptr;
LocalCluster* LivepeerApiClusterTest::cluster_ = nullptr;
absl::Status* LivepeerApiClusterTest::start_status_ = nullptr;

TEST_F(LivepeerApiClusterTest, TextToImage) {
  HttpResult r = PostJson("/text-to-image", {{"model_id", "t2i-test"},
                                             {"prompt", "abc"},
                                             {"width", 16},
                                             {"height", 8},
                                             {"seed", 3},
                                             {"num_images_per_prompt", 2}});
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  Json j = Parse(r);
  ASSERT_EQ(j["images"].size(), 2u) << r.body;
  for (int n = 0; n < 2; ++n) {
    std::string png;
    ASSERT_TRUE(DataUrl(j["images"][n]["url"], "image/png", &png));
    auto img = media::DecodeImage(png, 1 << 20);
    ASSERT_TRUE(img.ok()) << img.status();
    EXPECT_EQ(img->width, 16);
    EXPECT_EQ(img->height, 8);
    // (len("abc") * 7 + seed + n + c * 50 + y + x) at c=1, y=2, x=5.
    EXPECT_EQ(img->pixels[(2 * 16 + 5) * 3 + 1], 21 + 3 + n + 50 + 2 + 5);
    EXPECT_EQ(j["images"][n]["seed"], 3 + n);  // image n is generated with seed + n
    EXPECT_EQ(j["images"][n]["nsfw"], false);
  }

  EXPECT_TRUE(NamesField(PostJson("/text-to-image", {{"model_id", "t2i-test"}}), {"prompt"}));
  EXPECT_TRUE(NamesField(PostJson("/text-to-image", {{"prompt", "a"}}), {"model_id"}));
  EXPECT_TRUE(NamesField(
      PostJson("/text-to-image", {{"model_id", "t2i-test"}, {"prompt", "a"}, {"width", "wide"}}),
      {"width"}));
  EXPECT_TRUE(
      NamesField(PostJson("/text-to-image",
                          {{"model_id", "t2i-test"}, {"prompt", "a"}, {"safety_check", "maybe"}}),
                 {"safety_check"}));
  EXPECT_EQ(HttpRequest(port_, "POST", "/text-to-image", "application/json", "{nope").status, 422);
  EXPECT_EQ(HttpRequest(port_, "POST", "/text-to-image", "application/json", "[1]").status, 422);
  EXPECT_TRUE(IsError(PostForm("/text-to-image", {{"model_id", "t2i-test"}}, {}), 415, "json"));
  EXPECT_TRUE(IsError(PostJson("/text-to-image", {{"model_id", "no-such"}, {"prompt", "a"}}), 400,
                      "no-such"));
  EXPECT_TRUE(IsError(HttpRequest(port_, "GET", "/text-to-image"), 405, "POST"));
  // The client's X-Request-Id names the job in the gateway's log lines (polled: logs are files).
  HttpCall with_id;
  with_id.method = "POST";
  with_id.path = "/text-to-image";
  with_id.content_type = "application/json";
  with_id.headers["X-Request-Id"] = "http-rid-4242";
  with_id.body = Json{{"model_id", "no-such"}, {"prompt", "a"}}.dump();
  EXPECT_EQ(HttpRequest(port_, with_id).status, 400);
  bool logged = false;
  for (int i = 0; i < 40 && !logged; ++i) {
    logged = cluster_->gateway().Log().find("[http-rid-4242]") != std::string::npos;
    if (!logged) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(logged) << cluster_->gateway().Log();
  // Over the model's max_width: the pipeline's INVALID_ARGUMENT, naming the field.
  EXPECT_TRUE(IsError(
      PostJson("/text-to-image", {{"model_id", "t2i-test"}, {"prompt", "a"}, {"width", 512}}), 400,
      "width"));
}

TEST_F(LivepeerApiClusterTest, ImageToImage) {
  const media::RgbImage in = Gradient(8, 8);
  HttpResult r = PostForm(
      "/image-to-image",
      {{"model_id", "i2i-test"}, {"prompt", "pp"}, {"seed", "1"}, {"num_inference_steps", "2"}},
      {ImagePart(Png(in))});
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  Json j = Parse(r);
  ASSERT_EQ(j["images"].size(), 1u) << r.body;
  std::string png;
  ASSERT_TRUE(DataUrl(j["images"][0]["url"], "image/png", &png));
  auto img = media::DecodeImage(png, 1 << 20);
  ASSERT_TRUE(img.ok()) << img.status();
  ASSERT_EQ(img->width, 8);
  for (size_t i : {size_t{0}, size_t{77}, size_t{191}}) {
    EXPECT_EQ(img->pixels[i], (in.pixels[i] + 1 + 2 + 2) % 256) << i;
  }
  EXPECT_EQ(j["images"][0]["seed"], 1);

  EXPECT_TRUE(NamesField(
      PostForm("/image-to-image", {{"model_id", "i2i-test"}, {"prompt", "p"}}, {}), {"image"}));
  EXPECT_TRUE(NamesField(
      PostForm("/image-to-image", {{"model_id", "i2i-test"}, {"prompt", "p"}, {"strength", "x"}},
               {ImagePart(Png(in))}),
      {"strength"}));
  EXPECT_TRUE(IsError(PostForm("/image-to-image", {{"model_id", "i2i-test"}, {"prompt", "p"}},
                               {ImagePart("not an image")}),
                      400, "image"));
  EXPECT_TRUE(IsError(PostJson("/image-to-image", {{"model_id", "i2i-test"}}), 415, "multipart"));
  // Over the model's max_input_pixels (4096): too large.
  EXPECT_TRUE(IsError(PostForm("/image-to-image", {{"model_id", "i2i-test"}, {"prompt", "p"}},
                               {ImagePart(Png(Gradient(80, 80)))}),
                      413, "pixels"));
}

// Fetches a URL the gateway returned (http://127.0.0.1:PORT/stream/...).
HttpResult Fetch(int port, const std::string& url) {
  const std::string prefix = absl::StrCat("http://127.0.0.1:", port);
  if (url.rfind(prefix, 0) != 0) return HttpResult{};
  return HttpRequest(port, "GET", url.substr(prefix.size()));
}

TEST_F(LivepeerApiClusterTest, ImageToVideoSyncServesTheMp4) {
  const std::map<std::string, std::string> fields = {
      {"model_id", "i2v-test"},     {"width", "32"}, {"height", "32"}, {"fps", "8"},
      {"num_inference_steps", "3"}, {"seed", "5"}};
  HttpResult r = PostForm("/image-to-video", fields, {ImagePart(Png(Gradient(8, 8)))});
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  Json j = Parse(r);
  ASSERT_EQ(j["images"].size(), 1u) << r.body;
  EXPECT_EQ(j["images"][0]["seed"], 5);
  EXPECT_EQ(j["images"][0]["nsfw"], false);
  const std::string url = j["images"][0]["url"];
  EXPECT_EQ(url.rfind(absl::StrCat("http://127.0.0.1:", port_, "/stream/"), 0), 0u) << url;
  HttpResult video = Fetch(port_, url);
  ASSERT_EQ(video.status, 200) << url;
  EXPECT_EQ(video.headers["content-type"], "video/mp4");
  auto probe = ProbeVideo(tmp_, video.body, "mp4");
  ASSERT_TRUE(probe.ok) << probe.error;
  EXPECT_EQ(probe.width, 32);
  EXPECT_EQ(probe.height, 32);
  EXPECT_EQ(probe.frames, 3);
  EXPECT_EQ(HttpRequest(port_, "GET", "/stream/nope/video-0.mp4").status, 404);

  EXPECT_TRUE(NamesField(PostForm("/image-to-video", {{"model_id", "i2v-test"}}, {}), {"image"}));
  EXPECT_TRUE(NamesField(PostForm("/image-to-video", {{"model_id", "i2v-test"}, {"fps", "0"}},
                                  {ImagePart(Png(Gradient(8, 8)))}),
                         {"fps"}));
  EXPECT_TRUE(NamesField(
      PostForm("/image-to-video", {{"model_id", "i2v-test"}, {"motion_bucket_id", "1.5"}},
               {ImagePart(Png(Gradient(8, 8)))}),
      {"motion_bucket_id"}));
}

TEST_F(LivepeerApiClusterTest, ImageToVideoAsync) {
  auto start = [&](const std::string& steps) {
    HttpCall call;
    call.method = "POST";
    call.path = "/image-to-video";
    call.content_type = kFormType;
    call.headers["Prefer"] = "respond-async";
    call.body = Form({{"model_id", "i2v-test"},
                      {"width", "16"},
                      {"height", "16"},
                      {"num_inference_steps", steps}},
                     {ImagePart(Png(Gradient(8, 8)))});
    return HttpRequest(port_, call);
  };
  // Polls (bounded: 200 x 50 ms) until the job is complete.
  auto poll = [&](const std::string& id) {
    Json last;
    for (int i = 0; i < 200; ++i) {
      HttpResult r = PostJson("/image-to-video/result", {{"request_id", id}});
      if (r.status != 200) return Json{{"http", r.status}, {"body", r.body}};
      last = Parse(r);
      if (last["status"] != "processing") return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return last;
  };
  HttpResult accepted = start("2");
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  const std::string id = Parse(accepted)["request_id"];
  ASSERT_FALSE(id.empty());
  Json done = poll(id);
  ASSERT_EQ(done["status"], "complete") << done.dump();
  ASSERT_EQ(done["result"]["images"].size(), 1u) << done.dump();
  HttpResult video = Fetch(port_, done["result"]["images"][0]["url"]);
  ASSERT_EQ(video.status, 200);
  auto probe = ProbeVideo(tmp_, video.body, "mp4");
  ASSERT_TRUE(probe.ok) << probe.error;
  EXPECT_EQ(probe.frames, 2);

  // A job that fails is complete with the error.
  HttpResult failing = start("17");  // over the model's max_frames (16)
  ASSERT_EQ(failing.status, 202) << failing.body;
  Json failed = poll(Parse(failing)["request_id"]);
  ASSERT_EQ(failed["status"], "complete") << failed.dump();
  EXPECT_NE(failed["result"]["error"]["msg"].get<std::string>().find("max_frames"),
            std::string::npos)
      << failed.dump();

  EXPECT_TRUE(IsError(PostJson("/image-to-video/result", {{"request_id", "nope"}}), 404, "nope"));
  EXPECT_TRUE(NamesField(PostJson("/image-to-video/result", Json::object()), {"request_id"}));
}

TEST_F(LivepeerApiClusterTest, AudioToText) {
  const std::string wav = Sine("a.wav", 1.0);
  HttpResult r = PostForm("/audio-to-text", {{"model_id", "tiny-asr"}},
                          {{"audio", "a.wav", "audio/wav", wav}});
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  Json j = Parse(r);
  EXPECT_EQ(j["text"], "n=16000 c=1");
  ASSERT_EQ(j["chunks"].size(), 1u) << r.body;
  EXPECT_EQ(j["chunks"][0]["text"], "n=16000 c=1");
  EXPECT_EQ(j["chunks"][0]["timestamp"], Json::array({0.0, 1.0}));

  HttpResult words =
      PostForm("/audio-to-text", {{"model_id", "tiny-asr"}, {"return_timestamps", "word"}},
               {{"audio", "a.wav", "audio/wav", wav}});
  ASSERT_EQ(words.status, 200) << words.body;
  Json w = Parse(words);
  ASSERT_EQ(w["chunks"].size(), 2u) << words.body;
  EXPECT_EQ(w["chunks"][1]["text"], "c=1");
  EXPECT_EQ(w["chunks"][1]["timestamp"], Json::array({0.5, 1.0}));

  EXPECT_TRUE(NamesField(PostForm("/audio-to-text", {{"model_id", "tiny-asr"}}, {}), {"audio"}));
  EXPECT_TRUE(NamesField(PostForm("/audio-to-text", {}, {{"audio", "a.wav", "audio/wav", wav}}),
                         {"model_id"}));
  EXPECT_TRUE(IsError(PostForm("/audio-to-text", {{"model_id", "tiny-asr"}},
                               {{"audio", "a.txt", "text/plain", "this is not audio at all"}}),
                      415, "audio"));
  EXPECT_TRUE(IsError(PostForm("/audio-to-text", {{"model_id", "tiny-asr"}},
                               {{"audio", "long.wav", "audio/wav", Sine("long.wav", 3.0)}}),
                      413, "max_audio_seconds"));
  EXPECT_TRUE(
      IsError(PostForm("/audio-to-text", {{"model_id", "tiny-asr"}, {"return_timestamps", "maybe"}},
                       {{"audio", "a.wav", "audio/wav", wav}}),
              400, "return_timestamps"));
}

TEST_F(LivepeerApiClusterTest, SegmentAnything2) {
  const std::string png = Png(Gradient(4, 2));
  HttpResult r =
      PostForm("/segment-anything-2",
               {{"model_id", "sam2-test"}, {"point_coords", "[[2, 1]]"}, {"point_labels", "[1]"}},
               {ImagePart(png)});
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  Json j = Parse(r);
  // Strings holding JSON, as the spec's MasksResponse.
  ASSERT_TRUE(j["masks"].is_string()) << r.body;
  EXPECT_EQ(j["masks"],
            "[[[-2,-1,0,1],[-2,-1,0,1]],[[-1.5,-0.5,0.5,1.5],[-1.5,-0.5,0.5,1.5]],"
            "[[-1,0,1,2],[-1,0,1,2]]]");
  EXPECT_EQ(j["scores"], "[0.5,0.75,1]");
  Json logits = Json::parse(j["logits"].get<std::string>(), nullptr, false);
  ASSERT_EQ(logits.size(), 3u) << r.body;
  EXPECT_EQ(logits[0][0][0], 1);

  HttpResult single = PostForm("/segment-anything-2",
                               {{"model_id", "sam2-test"},
                                {"point_coords", "[[2,1]]"},
                                {"point_labels", "[1]"},
                                {"multimask_output", "false"},
                                {"return_logits", "false"}},
                               {ImagePart(png)});
  ASSERT_EQ(single.status, 200) << single.body;
  EXPECT_EQ(Parse(single)["masks"], "[[[0,0,0,1],[0,0,0,1]]]");

  auto with = [&](const std::string& field, const std::string& value) {
    std::map<std::string, std::string> f = {
        {"model_id", "sam2-test"}, {"point_coords", "[[1,1]]"}, {"point_labels", "[1]"}};
    f[field] = value;
    return PostForm("/segment-anything-2", f, {ImagePart(png)});
  };
  EXPECT_TRUE(NamesField(with("point_coords", "[[1,2,3]]"), {"point_coords"}));
  EXPECT_TRUE(NamesField(with("point_coords", "not json"), {"point_coords"}));
  EXPECT_TRUE(NamesField(with("point_labels", "[2]"), {"point_labels"}));
  EXPECT_TRUE(NamesField(with("box", "[1, 2]"), {"box"}));
  EXPECT_TRUE(NamesField(with("multimask_output", "sometimes"), {"multimask_output"}));
  EXPECT_TRUE(IsError(with("point_labels", "[1, 0]"), 400, "point_labels"));
  EXPECT_TRUE(
      NamesField(PostForm("/segment-anything-2", {{"model_id", "sam2-test"}}, {}), {"image"}));
}

TEST_F(LivepeerApiClusterTest, ImageToText) {
  HttpResult r = PostForm("/image-to-text", {{"model_id", "i2t-test"}, {"prompt", "hi"}},
                          {ImagePart(Png(Gradient(8, 6)))});
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  EXPECT_EQ(Parse(r), Json({{"text", "hi:8x6:9"}}));
  EXPECT_TRUE(
      NamesField(PostForm("/image-to-text", {{"prompt", "hi"}}, {ImagePart(Png(Gradient(8, 6)))}),
                 {"model_id"}));
  EXPECT_TRUE(
      IsError(PostForm("/image-to-text", {{"model_id", "i2t-test"}}, {ImagePart("\xff\xd8\xff")}),
              400, "image"));
}

TEST_F(LivepeerApiClusterTest, TextToSpeech) {
  HttpResult r = PostJson("/text-to-speech", {{"model_id", "tiny-tts"}, {"text", "ab"}});
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  std::string wav;
  ASSERT_TRUE(DataUrl(Parse(r)["audio"]["url"], "audio/wav", &wav));
  ASSERT_EQ(wav.size(), 44u + 2 * 3200);  // 16-bit PCM, 0.1 s at 16 kHz per character
  EXPECT_EQ(wav.substr(0, 4), "RIFF");
  EXPECT_EQ(wav.substr(8, 4), "WAVE");

  EXPECT_TRUE(NamesField(PostJson("/text-to-speech", {{"text", "ab"}}), {"model_id"}));
  EXPECT_TRUE(
      NamesField(PostJson("/text-to-speech", {{"model_id", "tiny-tts"}, {"text", 5}}), {"text"}));
  EXPECT_TRUE(IsError(PostJson("/text-to-speech", {{"model_id", "tiny-tts"}}), 400, "text"));
}

Json LlmBody(const std::string& model, bool stream) {
  return {{"model", model},
          {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
          {"temperature", 0},
          {"stream", stream}};
}

TEST_F(LivepeerApiClusterTest, LlmJson) {
  HttpResult r = PostJson("/llm", LlmBody("tiny-llm", false));
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  Json j = Parse(r);
  EXPECT_EQ(j["model"], "tiny-llm");
  EXPECT_TRUE(j["id"].is_string() && !j["id"].get<std::string>().empty()) << r.body;
  EXPECT_GT(j["created"].get<int64_t>(), 0);
  ASSERT_EQ(j["choices"].size(), 1u) << r.body;
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["message"], Json({{"role", "assistant"}, {"content", kTinyLlmReply}}));
  const int reply_len = static_cast<int>(std::string(kTinyLlmReply).size());
  const int prompt = static_cast<int>(std::string("<|user|>\nHi\n<|assistant|>\n").size());
  EXPECT_EQ(j["usage"], Json({{"prompt_tokens", prompt},
                              {"completion_tokens", reply_len},
                              {"total_tokens", prompt + reply_len}}));

  Json no_messages = LlmBody("tiny-llm", false);
  no_messages.erase("messages");
  EXPECT_TRUE(NamesField(PostJson("/llm", no_messages), {"messages"}));
  Json no_role = LlmBody("tiny-llm", false);
  no_role["messages"][0].erase("role");
  EXPECT_TRUE(NamesField(PostJson("/llm", no_role), {"messages", 0, "role"}));
  Json bad_stream = LlmBody("tiny-llm", false);
  bad_stream["stream"] = "yes";
  EXPECT_TRUE(NamesField(PostJson("/llm", bad_stream), {"stream"}));
  Json bad_tokens = LlmBody("tiny-llm", false);
  bad_tokens["max_tokens"] = 0;
  EXPECT_TRUE(NamesField(PostJson("/llm", bad_tokens), {"max_tokens"}));
  // An error before any token is a plain HTTP error, also when streaming.
  EXPECT_TRUE(IsError(PostJson("/llm", LlmBody("no-such-llm", true)), 400, "no-such-llm"));
}

TEST_F(LivepeerApiClusterTest, LlmStreamsServerSentEventsAsTokensArrive) {
  using Clock = std::chrono::steady_clock;
  const auto begin = Clock::now();
  Clock::time_point first_event, done;
  HttpCall call;
  call.method = "POST";
  call.path = "/llm";
  call.content_type = "application/json";
  call.http11 = true;
  Json body = LlmBody("slow-llm", true);
  body["max_tokens"] = 8;
  call.body = body.dump();
  // Reads that brought new events: a server that sent the events at the end would need one.
  int reads_with_events = 0;
  size_t events_seen = 0;
  call.on_read = [&](const std::string& received) {
    size_t n = 0;
    for (size_t at = received.find("data: {"); at != std::string::npos;
         at = received.find("data: {", at + 1)) {
      ++n;
    }
    if (n > events_seen) ++reads_with_events;
    events_seen = n;
    if (first_event == Clock::time_point() && n > 0) first_event = Clock::now();
    if (done == Clock::time_point() && received.find("[DONE]") != std::string::npos) {
      done = Clock::now();
    }
  };
  HttpResult r = HttpRequest(port_, call);
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  EXPECT_EQ(r.headers["transfer-encoding"], "chunked");
  std::vector<std::string> events = absl::StrSplit(r.body, "\n\n", absl::SkipEmpty());
  ASSERT_GE(events.size(), 4u) << r.body;
  EXPECT_EQ(events.back(), "data: [DONE]");
  std::string text;
  Json last;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    ASSERT_EQ(events[i].rfind("data: ", 0), 0u) << events[i];
    last = Json::parse(events[i].substr(6), nullptr, false);
    ASSERT_FALSE(last.is_discarded()) << events[i];
    ASSERT_EQ(last["choices"].size(), 1u) << events[i];
    EXPECT_EQ(last["choices"][0]["delta"]["role"], "assistant");
    text += last["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, std::string(kTinyLlmReply).substr(0, 8));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 8);
  // Sent as generated, not at the end: the first token's event came well before [DONE].
  ASSERT_NE(first_event, Clock::time_point());
  ASSERT_NE(done, Clock::time_point());
  EXPECT_GE(reads_with_events, 3) << "first event after " << (first_event - begin).count() / 1000000
                                  << " ms, done after " << (done - begin).count() / 1000000
                                  << " ms";
  EXPECT_GT(done, first_event);

  // HTTP/1.0 clients get the same events, unchunked, ended by the connection closing.
  HttpResult plain =
      HttpRequest(port_, "POST", "/llm", "application/json", LlmBody("tiny-llm", true).dump());
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(plain.headers.count("transfer-encoding"), 0u) << Json(plain.headers).dump();
  EXPECT_EQ(plain.headers["connection"], "close");
  EXPECT_EQ(plain.body.rfind("data: {", 0), 0u) << plain.body;
  EXPECT_EQ(plain.body.substr(plain.body.size() - 14), "data: [DONE]\n\n");
}

// No orchestrator at all: 503, and the server's own limits in the spec's error shape.
TEST(LivepeerApiTest, NoOrchestratorIs503AndOversizedBodiesAre413) {
  ClusterOptions options;
  options.orchestrators = 0;
  options.models = {};
  // The live-video URLs below name 127.0.0.1, which the gateway refuses unless allowed.
  options.gateway_config = {{"live_video", {{"allowed_hosts", {"127.0.0.1/32"}}}}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  const int port = cluster.gateway().http_port();
  EXPECT_TRUE(IsError(HttpRequest(port, "POST", "/text-to-image", "application/json",
                                  Json{{"model_id", "any"}, {"prompt", "a"}}.dump()),
                      503, "no orchestrator"));
  HttpCall huge;
  huge.method = "POST";
  huge.path = "/image-to-image";
  huge.content_type = kFormType;
  huge.content_length = size_t{1} << 30;  // announced, never sent: refused from the header
  EXPECT_TRUE(IsError(HttpRequest(port, huge), 413, "request body over"));
  // /live-video-to-video validates first (422), then wants an orchestrator offering the model.
  const HttpResult live_empty =
      HttpRequest(port, "POST", "/live-video-to-video", "application/json", "{}");
  EXPECT_TRUE(NamesField(live_empty, {"subscribe_url"})) << live_empty.body;
  EXPECT_TRUE(NamesField(live_empty, {"publish_url"})) << live_empty.body;
  EXPECT_TRUE(NamesField(live_empty, {"model_id"})) << live_empty.body;
  EXPECT_TRUE(IsError(HttpRequest(port, "POST", "/live-video-to-video", "application/json",
                                  Json{{"subscribe_url", "http://127.0.0.1:1/in"},
                                       {"publish_url", "http://127.0.0.1:1/out"},
                                       {"model_id", "any"}}
                                      .dump()),
                      503, "no orchestrator"));
}

}  // namespace
}  // namespace switchyard::testing
