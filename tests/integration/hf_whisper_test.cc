// End to end: an audio-to-text model served from a Hugging Face Whisper checkpoint folder
// ("format": "hf"), the random-weight fixture of tools/whisper-reference/reference.py
// (tests/fixtures/hf/whisper). The client sends a 16-bit PCM WAV of the reference's "short"
// audio through the gateway; the text and chunks must be the reference's greedy transcription
// (expected.json), so the WAV -> FFmpeg -> log-mel -> encoder-decoder -> tokenizer path is checked
// against an independent implementation.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/cluster.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kFixture = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "hf" / "whisper";

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// reference.py's make_audio as int16 samples (the same generator as tests/runner/hf_whisper_test).
std::vector<int16_t> MakeAudio(int64_t n, uint32_t seed) {
  std::vector<int16_t> out(n);
  uint32_t x = seed;
  for (int64_t i = 0; i < n; ++i) {
    x = 1103515245u * x + 12345u;
    const int64_t noise = static_cast<int64_t>((x >> 16) & 0xFFFF) - 32768;
    const int64_t env = (i / 4000) % 5;
    const int64_t square = ((i / 19) % 2 == 0) ? 6000 : -6000;
    int64_t v = FloorDiv(noise * env, 16) + (((i / 16000) % 2 == 0) ? square : 0);
    out[i] = static_cast<int16_t>(std::max<int64_t>(-32768, std::min<int64_t>(32767, v)));
  }
  return out;
}

// A canonical 44-byte-header 16 kHz mono 16-bit PCM WAV.
std::string Wav(const std::vector<int16_t>& samples) {
  auto le = [](std::string* s, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  const uint32_t data = static_cast<uint32_t>(samples.size() * 2);
  std::string w = "RIFF";
  le(&w, 36 + data, 4);
  w += "WAVEfmt ";
  le(&w, 16, 4);
  le(&w, 1, 2);  // PCM
  le(&w, 1, 2);  // mono
  le(&w, 16000, 4);
  le(&w, 32000, 4);
  le(&w, 2, 2);
  le(&w, 16, 2);
  w += "data";
  le(&w, data, 4);
  for (int16_t s : samples) le(&w, static_cast<uint16_t>(s), 2);
  return w;
}

class HfWhisperServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    expected_ = new json(json::parse(ReadFile(kFixture / "expected.json")));
    // A folder without tokenizer.json: its load must fail with an error naming the file.
    const fs::path broken = dir_->path() / "whisper-no-tokenizer";
    fs::create_directories(broken);
    for (const char* f : {"config.json", "model.safetensors", "generation_config.json"}) {
      fs::copy_file(kFixture / f, broken / f);
    }
    auto entry = [&](const std::string& id, const fs::path& path, bool warm) {
      return json{{"id", id},
                  {"pipeline", "audio-to-text"},
                  {"format", "hf"},
                  {"path", path},
                  {"warm", warm},
                  {"device", "cpu"},
                  {"options",
                   {{"language", "en"},
                    {"max_new_tokens", (*expected_)["max_new_tokens"]},
                    {"max_audio_seconds", 30}}}};
    };
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {};
    options.extra_models = {entry("whisper-tiny", kFixture, true),
                            entry("whisper-broken", broken, false)};
    cluster_ = new LocalCluster();
    auto st = cluster_->Start(options);
    ASSERT_TRUE(st.ok()) << st;
  }

  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete expected_;
    expected_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    stub_ = cluster_->GatewayStub();
  }

  grpc::Status AudioToText(const std::string& audio, const std::string& timestamps,
                           v1::TextResponse* out, const std::string& model = "whisper-tiny") {
    v1::AudioToTextRequest req;
    req.set_model_id(model);
    req.set_audio(audio);
    req.set_return_timestamps(timestamps);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(60)));
    return stub_->AudioToText(&ctx, req, out);
  }

  static std::string ShortWav() {
    const json& a = (*expected_)["audio"]["short"];
    return Wav(MakeAudio(a[0].get<int64_t>(), a[1].get<uint32_t>()));
  }

  static TempDir* dir_;
  static LocalCluster* cluster_;
  static json* expected_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

TempDir* HfWhisperServeTest::dir_ = nullptr;
LocalCluster* HfWhisperServeTest::cluster_ = nullptr;
json* HfWhisperServeTest::expected_ = nullptr;

TEST_F(HfWhisperServeTest, TextEqualsTheReferenceTranscription) {
  v1::TextResponse resp;
  auto st = AudioToText(ShortWav(), "false", &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  const std::string text = (*expected_)["cases"]["short_en"]["text"].get<std::string>();
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(resp.text(), text);
  EXPECT_EQ(resp.chunks_size(), 0);
}

TEST_F(HfWhisperServeTest, TimestampsGiveTheReferenceSegmentsAsChunks) {
  v1::TextResponse resp;
  auto st = AudioToText(ShortWav(), "true", &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  const json& e = (*expected_)["cases"]["short_en_timestamps"];
  EXPECT_EQ(resp.text(), e["text"].get<std::string>());
  ASSERT_EQ(resp.chunks_size(), static_cast<int>(e["chunks"].size()));
  ASSERT_GT(resp.chunks_size(), 0);
  for (int i = 0; i < resp.chunks_size(); ++i) {
    ASSERT_EQ(resp.chunks(i).timestamp_size(), 2);
    EXPECT_NEAR(resp.chunks(i).timestamp(0), e["chunks"][i][0].get<double>(), 1e-9);
    EXPECT_NEAR(resp.chunks(i).timestamp(1), e["chunks"][i][1].get<double>(), 1e-9);
    EXPECT_EQ(resp.chunks(i).text(), e["chunks"][i][2].get<std::string>());
  }
}

TEST_F(HfWhisperServeTest, RefusesWordTimestampsLongAudioAndABrokenFolder) {
  v1::TextResponse resp;
  auto st = AudioToText(ShortWav(), "word", &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("word"), std::string::npos) << st.error_message();
  st = AudioToText(Wav(std::vector<int16_t>(16000 * 31, 100)), "false", &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("max_audio_seconds"), std::string::npos) << st.error_message();
  st = AudioToText(ShortWav(), "false", &resp, "whisper-broken");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.error_message().find("tokenizer.json"), std::string::npos) << st.error_message();
}

}  // namespace
}  // namespace switchyard::testing
