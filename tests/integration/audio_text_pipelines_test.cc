// End-to-end tests of audio-to-text, text-to-speech and llm: a real gateway and orchestrators on
// loopback serving tiny deterministic TorchScript models built here, jobs through the public API.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::grpc::StatusCode;

std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

std::string MakeSine(const TempDir& dir, const std::string& name, const std::string& args,
                     double seconds) {
  auto path = dir.path() / name;
  std::string log;
  int rc = RunCommand(absl::StrCat("ffmpeg -nostdin -loglevel error -y -f lavfi -i sine=",
                                   "frequency=440:sample_rate=44100:duration=", seconds, " ", args,
                                   " ", path.string()),
                      &log);
  EXPECT_EQ(rc, 0) << log;
  return ReadFile(path);
}

class AudioTextPipelinesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_dir_ = new TempDir();
    const fs::path dir = models_dir_->path();
    SaveScriptModule(dir / "asr.pt", kTinyAsrSource);
    SaveScriptModule(dir / "tts.pt", kTinyTtsSource, TinyTtsAttributes());
    SaveScriptModule(dir / "llm.pt", kTinyLlmSource, TinyLlmAttributes(0, kTinyLlmReply));
    SaveScriptModule(dir / "llm-slow.pt", kTinyLlmSource,
                     TinyLlmAttributes(40, std::string(300, 'z')));

    ClusterOptions options;
    options.orchestrators = 2;
    options.models = {};
    auto entry = [&](const std::string& id, const std::string& pipeline, const std::string& file,
                     nlohmann::json opts) {
      return nlohmann::json{{"id", id},     {"pipeline", pipeline}, {"path", (dir / file).string()},
                            {"warm", true}, {"device", "cpu"},      {"options", std::move(opts)}};
    };
    options.extra_models = {
        entry("tiny-asr", "audio-to-text", "asr.pt", {{"max_audio_seconds", 2.5}}),
        entry("tiny-tts", "text-to-speech", "tts.pt", nlohmann::json::object()),
        entry("tiny-llm", "llm", "llm.pt", {{"max_tokens", 512}}),
        entry("slow-llm", "llm", "llm-slow.pt", nlohmann::json::object()),
    };
    cluster_ = new LocalCluster();
    auto st = cluster_->Start(options);
    ASSERT_TRUE(st.ok()) << st;
  }

  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete models_dir_;
    models_dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    stub_ = cluster_->GatewayStub();
  }

  grpc::Status AudioToText(const std::string& audio, const std::string& timestamps,
                           v1::TextResponse* out, const std::string& model = "tiny-asr") {
    v1::AudioToTextRequest req;
    req.set_model_id(model);
    req.set_audio(audio);
    req.set_return_timestamps(timestamps);
    auto ctx = Context(std::chrono::seconds(30));
    return stub_->AudioToText(ctx.get(), req, out);
  }

  struct Stream {
    std::vector<v1::LLMResponse> messages;
    grpc::Status status;
    std::string text;
  };
  Stream Llm(const v1::LLMRequest& req) {
    Stream s;
    auto ctx = Context(std::chrono::seconds(60));
    auto reader = stub_->LLM(ctx.get(), req);
    v1::LLMResponse r;
    while (reader->Read(&r)) {
      for (const auto& c : r.choices()) s.text += c.delta().content();
      s.messages.push_back(r);
    }
    s.status = reader->Finish();
    return s;
  }

  static v1::LLMRequest LlmRequest(const std::string& model, const std::string& content) {
    v1::LLMRequest req;
    req.set_model(model);
    auto* m = req.add_messages();
    m->set_role("user");
    m->set_content(content);
    req.set_temperature(0);
    return req;
  }

  static TempDir* models_dir_;
  static LocalCluster* cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  TempDir tmp_;
};

TempDir* AudioTextPipelinesTest::models_dir_ = nullptr;
LocalCluster* AudioTextPipelinesTest::cluster_ = nullptr;

TEST_F(AudioTextPipelinesTest, CapabilitiesListTheThreePipelinesWarm) {
  v1::ListCapabilitiesRequest req;
  v1::ListCapabilitiesResponse resp;
  auto ctx = Context(std::chrono::seconds(5));
  ASSERT_TRUE(stub_->ListCapabilities(ctx.get(), req, &resp).ok());
  std::map<std::string, v1::Capability> caps;
  for (const auto& c : resp.capabilities()) caps[c.pipeline() + "/" + c.model_id()] = c;
  for (const char* key : {"audio-to-text/tiny-asr", "text-to-speech/tiny-tts", "llm/tiny-llm"}) {
    ASSERT_TRUE(caps.count(key)) << key;
    EXPECT_EQ(caps[key].warm_orchestrators(), 2) << key << "\n" << cluster_->Logs();
  }
}

TEST_F(AudioTextPipelinesTest, AudioToTextResamplesWavStereo44kTo16kMono) {
  std::string wav = MakeSine(tmp_, "a.wav", "-ac 2 -c:a pcm_s16le", 1.0);
  v1::TextResponse resp;
  auto st = AudioToText(wav, "", &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_->Logs();
  EXPECT_EQ(resp.text(), "n=16000 c=1");
  ASSERT_EQ(resp.chunks_size(), 1);  // default "true" = sentence
  ASSERT_EQ(resp.chunks(0).timestamp_size(), 2);
  EXPECT_DOUBLE_EQ(resp.chunks(0).timestamp(1), 1.0);
  EXPECT_EQ(resp.job().units(), 1000);  // audio milliseconds
  EXPECT_EQ(resp.job().model_id(), "tiny-asr");
  EXPECT_EQ(resp.job().attempts(), 1);
  EXPECT_FALSE(resp.job().orchestrator().empty());
}

TEST_F(AudioTextPipelinesTest, AudioToTextMp3AndM4a) {
  for (const auto& [name, args] : std::vector<std::pair<std::string, std::string>>{
           {"a.mp3", "-c:a libmp3lame -b:a 128k"}, {"a.m4a", "-c:a aac -b:a 128k"}}) {
    v1::TextResponse resp;
    auto st = AudioToText(MakeSine(tmp_, name, args, 1.0), "false", &resp);
    ASSERT_TRUE(st.ok()) << name << ": " << st.error_message();
    // "n=<samples> c=1" with samples 16000 ± 1.
    ASSERT_EQ(resp.text().rfind("n=", 0), 0u) << resp.text();
    int n = std::stoi(resp.text().substr(2));
    EXPECT_NEAR(n, 16000, 1) << name;
    EXPECT_EQ(resp.chunks_size(), 0) << name;  // "false"
  }
}

TEST_F(AudioTextPipelinesTest, AudioToTextWordTimestamps) {
  v1::TextResponse resp;
  auto st = AudioToText(MakeSine(tmp_, "w.wav", "-c:a pcm_s16le", 0.5), "word", &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.text(), "n=8000 c=1");
  ASSERT_EQ(resp.chunks_size(), 2);
  EXPECT_EQ(resp.chunks(0).text(), "n=8000");
  EXPECT_DOUBLE_EQ(resp.chunks(1).timestamp(0), 0.5);
}

TEST_F(AudioTextPipelinesTest, AudioToTextBadInputs) {
  v1::TextResponse resp;
  auto st = AudioToText(std::string(3000, 'x'), "", &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("audio"), std::string::npos);

  std::string wav = MakeSine(tmp_, "b.wav", "-c:a pcm_s16le", 0.2);
  st = AudioToText(wav, "maybe", &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("return_timestamps"), std::string::npos);

  st = AudioToText(MakeSine(tmp_, "long.wav", "-c:a pcm_s16le", 3.0), "", &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("max_audio_seconds"), std::string::npos) << st.error_message();

  st = AudioToText("", "", &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  st = AudioToText(wav, "", &resp, "no-such-model");
  EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
}

TEST_F(AudioTextPipelinesTest, TextToSpeechReturnsAWavFfprobeAgrees) {
  v1::TextToSpeechRequest req;
  req.set_model_id("tiny-tts");
  req.set_text("hello world");  // 11 characters: 1.1 s
  v1::AudioResponse resp;
  auto ctx = Context(std::chrono::seconds(30));
  auto st = stub_->TextToSpeech(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_->Logs();
  EXPECT_EQ(resp.audio().content_type(), "audio/wav");
  EXPECT_EQ(resp.job().units(), 1100);
  const std::string& wav = resp.audio().data();
  ASSERT_EQ(wav.size(), 44u + 2 * 17600);
  // Sample 50 of the ramp: 50 / 200 = 0.25 -> 8192 (rounded 0.25 * 32767).
  int16_t s50 = static_cast<int16_t>(static_cast<uint8_t>(wav[44 + 100]) |
                                     (static_cast<uint8_t>(wav[45 + 100]) << 8));
  EXPECT_EQ(s50, 8192);
  WriteFile(tmp_.path() / "tts.wav", wav);
  std::string log;
  ASSERT_EQ(RunCommand(absl::StrCat("ffprobe -v error -show_entries stream=codec_name,sample_rate,"
                                    "channels,duration -of default=nw=1 ",
                                    (tmp_.path() / "tts.wav").string()),
                       &log),
            0)
      << log;
  EXPECT_NE(log.find("codec_name=pcm_s16le"), std::string::npos) << log;
  EXPECT_NE(log.find("sample_rate=16000"), std::string::npos) << log;
  EXPECT_NE(log.find("channels=1"), std::string::npos) << log;
  EXPECT_NE(log.find("duration=1.100000"), std::string::npos) << log;
}

TEST_F(AudioTextPipelinesTest, TextToSpeechEmptyTextIsInvalid) {
  v1::TextToSpeechRequest req;
  req.set_model_id("tiny-tts");
  v1::AudioResponse resp;
  auto ctx = Context(std::chrono::seconds(10));
  auto st = stub_->TextToSpeech(ctx.get(), req, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("text"), std::string::npos);
}

TEST_F(AudioTextPipelinesTest, LlmStreamsTokensInOrderAndStopsAtEos) {
  v1::LLMRequest req = LlmRequest("tiny-llm", "Hi");
  Stream s = Llm(req);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << "\n" << cluster_->Logs();
  EXPECT_EQ(s.text, kTinyLlmReply);
  const int reply_len = static_cast<int>(std::string(kTinyLlmReply).size());
  // One message per token, then the last one with finish_reason, usage and job.
  ASSERT_EQ(static_cast<int>(s.messages.size()), reply_len + 1);
  std::string prefix;
  for (int i = 0; i < reply_len; ++i) {
    const auto& m = s.messages[i];
    ASSERT_EQ(m.choices_size(), 1);
    EXPECT_EQ(m.choices(0).finish_reason(), "");
    EXPECT_EQ(m.choices(0).delta().content(), std::string(1, kTinyLlmReply[i]));
    EXPECT_FALSE(m.has_job());
    EXPECT_EQ(m.id(), s.messages[0].id());
  }
  const auto& last = s.messages.back();
  EXPECT_EQ(last.choices(0).finish_reason(), "stop");
  const int prompt = static_cast<int>(std::string("<|user|>\nHi\n<|assistant|>\n").size());
  EXPECT_EQ(last.usage().prompt_tokens(), prompt);
  EXPECT_EQ(last.usage().completion_tokens(), reply_len);
  EXPECT_EQ(last.usage().total_tokens(), prompt + reply_len);
  ASSERT_TRUE(last.has_job());
  EXPECT_EQ(last.job().units(), prompt + reply_len);
  EXPECT_EQ(last.job().attempts(), 1);
  EXPECT_FALSE(last.job().orchestrator().empty());
  EXPECT_FALSE(last.job().request_id().empty());
  EXPECT_EQ(last.model(), "tiny-llm");
}

TEST_F(AudioTextPipelinesTest, LlmStopsAtMaxTokensWithLength) {
  v1::LLMRequest req = LlmRequest("tiny-llm", "Hello there");
  req.set_max_tokens(5);
  Stream s = Llm(req);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.text, "Hello");
  ASSERT_FALSE(s.messages.empty());
  EXPECT_EQ(s.messages.back().choices(0).finish_reason(), "length");
  EXPECT_EQ(s.messages.back().usage().completion_tokens(), 5);
}

TEST_F(AudioTextPipelinesTest, LlmClientCancelMidStreamThenClusterKeepsServing) {
  v1::LLMRequest req = LlmRequest("slow-llm", "go");
  req.set_max_tokens(300);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub_->LLM(&ctx, req);
  v1::LLMResponse r;
  int got = 0;
  while (got < 3 && reader->Read(&r)) ++got;
  ASSERT_EQ(got, 3) << cluster_->Logs();
  const auto cancelled_at = std::chrono::steady_clock::now();
  ctx.TryCancel();
  int more = 0;
  while (reader->Read(&r) && more < 1000) ++more;
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), StatusCode::CANCELLED) << st.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, std::chrono::seconds(5));

  // Both ends let go: the gateway's in-flight counts drop back to 0 (bounded wait).
  bool idle = false;
  for (int i = 0; i < 100 && !idle; ++i) {
    v1::ListCapabilitiesResponse caps;
    auto c = Context(std::chrono::seconds(2));
    if (stub_->ListCapabilities(c.get(), v1::ListCapabilitiesRequest(), &caps).ok()) {
      idle = true;
      for (const auto& o : caps.orchestrators()) idle = idle && o.in_flight() == 0;
    }
    if (!idle) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(idle);

  Stream s = Llm(LlmRequest("tiny-llm", "again"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.text, kTinyLlmReply);
}

TEST_F(AudioTextPipelinesTest, LlmBadRequestsNameTheField) {
  struct Case {
    std::string field;
    std::function<void(v1::LLMRequest&)> mutate;
    StatusCode code = StatusCode::INVALID_ARGUMENT;
  };
  std::vector<Case> cases = {
      {"model", [](v1::LLMRequest& r) { r.clear_model(); }},
      {"messages", [](v1::LLMRequest& r) { r.clear_messages(); }},
      {"messages[0].role", [](v1::LLMRequest& r) { r.mutable_messages(0)->set_role("robot"); }},
      {"messages[0].role", [](v1::LLMRequest& r) { r.mutable_messages(0)->clear_role(); }},
      {"messages[0].content", [](v1::LLMRequest& r) { r.mutable_messages(0)->clear_content(); }},
      {"max_tokens", [](v1::LLMRequest& r) { r.set_max_tokens(0); }},
      {"max_tokens", [](v1::LLMRequest& r) { r.set_max_tokens(513); }},
      {"temperature", [](v1::LLMRequest& r) { r.set_temperature(-1); }},
      {"top_p", [](v1::LLMRequest& r) { r.set_top_p(0); }},
      {"top_p", [](v1::LLMRequest& r) { r.set_top_p(1.01f); }},
      {"top_k", [](v1::LLMRequest& r) { r.set_top_k(-2); }},
      {"no-such-llm", [](v1::LLMRequest& r) { r.set_model("no-such-llm"); }, StatusCode::NOT_FOUND},
  };
  for (const auto& c : cases) {
    v1::LLMRequest req = LlmRequest("tiny-llm", "Hi");
    c.mutate(req);
    Stream s = Llm(req);
    EXPECT_EQ(s.status.error_code(), c.code) << c.field << ": " << s.status.error_message();
    EXPECT_NE(s.status.error_message().find(c.field), std::string::npos)
        << c.field << ": " << s.status.error_message();
    EXPECT_TRUE(s.messages.empty()) << c.field;
  }
}

TEST_F(AudioTextPipelinesTest, LlmSampledWithTopKOneMatchesGreedy) {
  v1::LLMRequest req = LlmRequest("tiny-llm", "Hi");
  req.set_temperature(1.5f);
  req.set_top_k(1);
  Stream s = Llm(req);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.text, kTinyLlmReply);
}

}  // namespace
}  // namespace switchyard::testing
