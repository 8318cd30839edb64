// Unit tests of the audio and text pipelines' helpers: audio decode + resample (media generated
// with the ffmpeg CLI), WAV encoding, LLM sampling, chat template and request validation.
#include "orchestrator/pipelines/audio_text_pipelines.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "support/media_fixtures.h"

namespace switchyard::orchestrator {
namespace {

using ::switchyard::testing::ReadFile;
using ::switchyard::testing::RunCommand;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;

// A 440 Hz sine, `seconds` long, encoded by ffmpeg with `args` into `name`.
std::string MakeSine(const TempDir& dir, const std::string& name, const std::string& args,
                     double seconds = 1.0, int rate = 44100) {
  auto path = dir.path() / name;
  std::string log;
  std::string cmd = absl::StrCat(
      "ffmpeg -nostdin -loglevel error -y -f lavfi -i sine=frequency=440:", "sample_rate=", rate,
      ":duration=", seconds, " ", args, " ", path.string());
  EXPECT_EQ(RunCommand(cmd, &log), 0) << log;
  return ReadFile(path);
}

struct AudioCase {
  std::string name;
  std::string args;
  int tolerance = 1;  // output samples
};

class DecodeAudioTest : public ::testing::TestWithParam<AudioCase> {
 protected:
  TempDir dir_;
};

TEST_P(DecodeAudioTest, OneSecondResamplesTo16000MonoSamples) {
  const AudioCase& c = GetParam();
  std::string data = MakeSine(dir_, c.name, c.args);
  ASSERT_FALSE(data.empty());
  auto audio = DecodeAudio(data, 16000, 1, 300);
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_EQ(audio->sample_rate, 16000);
  EXPECT_EQ(audio->channels, 1);
  EXPECT_NEAR(audio->samples, 16000, c.tolerance) << c.name;
  EXPECT_EQ(audio->source_sample_rate, 44100);
  // A sine at -1..1 scale: amplitude well inside the range, and not silent.
  float peak = 0;
  for (float v : audio->planar) peak = std::max(peak, std::abs(v));
  EXPECT_GT(peak, 0.05f);
  EXPECT_LE(peak, 1.0f);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, DecodeAudioTest,
    ::testing::Values(AudioCase{"stereo.wav", "-ac 2 -c:a pcm_s16le"},
                      AudioCase{"sine.mp3", "-ac 2 -c:a libmp3lame -b:a 128k"},
                      AudioCase{"sine.m4a", "-ac 2 -c:a aac -b:a 128k"},
                      // Vorbis: the decoder drops part of the first block (~130 input samples).
                      AudioCase{"sine.ogg", "-ac 1 -c:a libvorbis", 64},
                      AudioCase{"sine.flac", "-ac 2 -c:a flac"}),
    [](const auto& info) {
      std::string n = info.param.name;
      for (char& ch : n) {
        if (ch == '.') ch = '_';
      }
      return n;
    });

TEST(DecodeAudio, StereoKeepsTwoChannelsWhenAsked) {
  TempDir dir;
  std::string data = MakeSine(dir, "s.wav", "-ac 2 -c:a pcm_s16le", 0.5, 48000);
  auto audio = DecodeAudio(data, 24000, 2, 300);
  ASSERT_TRUE(audio.ok()) << audio.status();
  EXPECT_EQ(audio->channels, 2);
  EXPECT_NEAR(audio->samples, 12000, 1);
  EXPECT_EQ(audio->planar.size(), static_cast<size_t>(audio->samples * 2));
}

// A stream whose channel count changes mid-way (stereo MP3 frames, then mono ones; broadcast
// ADTS does it, hostile uploads do it on purpose) is resampled with a resampler set up anew for
// the new format. Feeding mono frames to the stereo resampler read a second plane that is not
// there (a crash).
TEST(DecodeAudio, ChannelCountChangingMidStreamIsResampledNotRead) {
  TempDir dir;
  const std::string plain = "-c:a libmp3lame -b:a 128k -write_xing 0 -id3v2_version 0 -f mp3";
  std::string stereo = MakeSine(dir, "stereo.mp3", "-ac 2 " + plain);
  std::string mono = MakeSine(dir, "mono.mp3", "-ac 1 " + plain);
  ASSERT_FALSE(stereo.empty());
  ASSERT_FALSE(mono.empty());
  for (const std::string& data : {stereo + mono, mono + stereo}) {
    auto audio = DecodeAudio(data, 16000, 1, 300);
    ASSERT_TRUE(audio.ok()) << audio.status();
    EXPECT_EQ(audio->source_sample_rate, 44100);
    // Two one-second parts (each MP3 part adds its encoder delay and padding, under 0.1 s).
    EXPECT_NEAR(audio->samples, 32000, 2000);
    // Both halves carry the sine: neither was dropped or zeroed.
    const int64_t half = audio->samples / 2;
    float peak_first = 0, peak_second = 0;
    for (int64_t i = 0; i < audio->samples; ++i) {
      float& peak = i < half ? peak_first : peak_second;
      peak = std::max(peak, std::abs(audio->planar[i]));
    }
    EXPECT_GT(peak_first, 0.05f);
    EXPECT_GT(peak_second, 0.05f);
  }
}

TEST(DecodeAudio, CorruptOrEmptyIsInvalidArgument) {
  EXPECT_EQ(DecodeAudio("", 16000, 1, 300).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeAudio(std::string(4096, 'x'), 16000, 1, 300).status().code(),
            absl::StatusCode::kInvalidArgument);
  TempDir dir;
  std::string wav = MakeSine(dir, "t.wav", "-c:a pcm_s16le");
  // A PNG is not audio.
  std::string png("\x89PNG\r\n\x1a\n", 8);
  png += std::string(200, '\0');
  EXPECT_EQ(DecodeAudio(png, 16000, 1, 300).status().code(), absl::StatusCode::kInvalidArgument);
  // Truncated header.
  EXPECT_EQ(DecodeAudio(wav.substr(0, 20), 16000, 1, 300).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DecodeAudio, LongerThanTheLimitNamesTheField) {
  TempDir dir;
  std::string data = MakeSine(dir, "long.wav", "-c:a pcm_s16le", 3.0, 16000);
  auto audio = DecodeAudio(data, 16000, 1, 1.0);
  ASSERT_EQ(audio.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(audio.status().message().find("max_audio_seconds"), std::string::npos);
  EXPECT_TRUE(DecodeAudio(data, 16000, 1, 3.5).ok());
}

TEST(AudioToTextOptions, DefaultsAndBadValues) {
  auto o = ParseAudioToTextOptions(nlohmann::json::object());
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->sample_rate, 16000);
  EXPECT_EQ(o->channels, 1);
  EXPECT_EQ(o->max_audio_seconds, 300);
  auto bad = ParseAudioToTextOptions({{"sample_rate", "fast"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("options.sample_rate"), std::string::npos);
  EXPECT_FALSE(ParseAudioToTextOptions({{"channels", 0}}).ok());
}

TEST(TimestampMode, SpecValues) {
  EXPECT_EQ(*TimestampMode(""), "sentence");
  EXPECT_EQ(*TimestampMode("true"), "sentence");
  EXPECT_EQ(*TimestampMode("sentence"), "sentence");
  EXPECT_EQ(*TimestampMode("word"), "word");
  EXPECT_EQ(*TimestampMode("false"), "none");
  auto bad = TimestampMode("yes");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("return_timestamps"), std::string::npos);
}

TEST(FillTranscription, TextAndChunks) {
  c10::List<std::string> texts;
  texts.push_back("hello");
  texts.push_back("world");
  at::Tensor times = at::tensor({0.0, 0.5, 0.5, 1.25}, at::kFloat).reshape({2, 2});
  c10::IValue result = c10::ivalue::Tuple::create(
      {c10::IValue(std::string("hello world")), c10::IValue(texts), c10::IValue(times)});
  v1::TextResponse r;
  ASSERT_TRUE(FillTranscription(result, "sentence", &r).ok());
  EXPECT_EQ(r.text(), "hello world");
  ASSERT_EQ(r.chunks_size(), 2);
  EXPECT_EQ(r.chunks(1).text(), "world");
  ASSERT_EQ(r.chunks(1).timestamp_size(), 2);
  EXPECT_DOUBLE_EQ(r.chunks(1).timestamp(1), 1.25);

  v1::TextResponse none;
  ASSERT_TRUE(FillTranscription(result, "none", &none).ok());
  EXPECT_EQ(none.chunks_size(), 0);

  v1::TextResponse plain;
  ASSERT_TRUE(FillTranscription(c10::IValue(std::string("x")), "sentence", &plain).ok());
  EXPECT_EQ(plain.text(), "x");

  c10::IValue mismatched = c10::ivalue::Tuple::create(
      {c10::IValue(std::string("a")), c10::IValue(texts), c10::IValue(at::zeros({3, 2}))});
  v1::TextResponse bad;
  EXPECT_EQ(FillTranscription(mismatched, "word", &bad).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(FillTranscription(c10::IValue(int64_t{3}), "word", &bad).code(),
            absl::StatusCode::kInternal);
}

TEST(Wav, EncodeRoundTripAndFfprobe) {
  std::vector<float> samples(24000);
  for (size_t i = 0; i < samples.size(); ++i) {
    samples[i] = static_cast<float>(std::sin(2 * M_PI * 440 * static_cast<double>(i) / 24000));
  }
  samples[0] = 2.0f;           // clamped
  samples[1] = -3.0f;          // clamped
  samples[2] = std::nanf("");  // 0
  std::string wav = EncodeWav(samples, 1, 24000);
  ASSERT_EQ(wav.size(), 44u + 2 * samples.size());
  auto info = ParseWavHeader(wav);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->channels, 1);
  EXPECT_EQ(info->sample_rate, 24000);
  EXPECT_EQ(info->bits_per_sample, 16);
  EXPECT_EQ(info->frames, 24000);
  auto sample = [&](size_t i) {
    return static_cast<int16_t>(static_cast<uint8_t>(wav[44 + 2 * i]) |
                                (static_cast<uint8_t>(wav[45 + 2 * i]) << 8));
  };
  EXPECT_EQ(sample(0), 32767);
  EXPECT_EQ(sample(1), -32767);
  EXPECT_EQ(sample(2), 0);

  TempDir dir;
  WriteFile(dir.path() / "out.wav", wav);
  std::string log;
  ASSERT_EQ(RunCommand(absl::StrCat("ffprobe -v error -show_entries stream=codec_name,sample_rate,"
                                    "channels,duration -of default=nw=1 ",
                                    (dir.path() / "out.wav").string()),
                       &log),
            0)
      << log;
  EXPECT_NE(log.find("codec_name=pcm_s16le"), std::string::npos) << log;
  EXPECT_NE(log.find("sample_rate=24000"), std::string::npos) << log;
  EXPECT_NE(log.find("channels=1"), std::string::npos) << log;
  EXPECT_NE(log.find("duration=1.000000"), std::string::npos) << log;
  // And our own decoder reads it back.
  auto back = DecodeAudio(wav, 24000, 1, 300);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->samples, 24000);
  EXPECT_NEAR(back->planar[100], samples[100], 1e-3);
}

TEST(Wav, StereoInterleavedAndBadHeaders) {
  std::string wav = EncodeWav({0.f, 0.5f, 0.f, 0.5f}, 2, 8000);
  auto info = ParseWavHeader(wav);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->channels, 2);
  EXPECT_EQ(info->frames, 2);
  EXPECT_FALSE(ParseWavHeader("RIFF").ok());
  EXPECT_FALSE(ParseWavHeader(wav.substr(0, 46)).ok());
}

TEST(Wav, WaveformShapes) {
  int channels = 0;
  auto mono = WaveformToInterleaved(at::ones({5}), &channels);
  ASSERT_TRUE(mono.ok());
  EXPECT_EQ(channels, 1);
  EXPECT_EQ(mono->size(), 5u);
  auto stereo = WaveformToInterleaved(at::stack({at::zeros({3}), at::ones({3})}), &channels);
  ASSERT_TRUE(stereo.ok());
  EXPECT_EQ(channels, 2);
  EXPECT_EQ(*stereo, (std::vector<float>{0, 1, 0, 1, 0, 1}));
  EXPECT_FALSE(WaveformToInterleaved(at::ones({1, 2, 3}), &channels).ok());
  EXPECT_FALSE(WaveformToInterleaved(at::ones({4}, at::kLong), &channels).ok());
}

TEST(TextToSpeechOptions, Defaults) {
  auto o = ParseTextToSpeechOptions(nlohmann::json::object());
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->sample_rate, 0);
  EXPECT_FALSE(ParseTextToSpeechOptions({{"sample_rate", 5}}).ok());
  EXPECT_EQ(o->max_prompt_chars, 4096);
  EXPECT_EQ(ParseTextToSpeechOptions({{"max_prompt_chars", 12}})->max_prompt_chars, 12);
  // max_text_chars, the older name, still works; max_prompt_chars wins over it.
  EXPECT_EQ(ParseTextToSpeechOptions({{"max_text_chars", 7}})->max_prompt_chars, 7);
  EXPECT_EQ(
      ParseTextToSpeechOptions({{"max_text_chars", 7}, {"max_prompt_chars", 9}})->max_prompt_chars,
      9);
  auto bad = ParseTextToSpeechOptions({{"max_prompt_chars", 0}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("options.max_prompt_chars"), std::string::npos);
}

// n copies of "é" (one character, two bytes).
std::string Accented(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "\xc3\xa9";
  return s;
}

TEST(ValidateTextToSpeech, TextIsRequiredAndLimitedInCharacters) {
  TextToSpeechOptions options;
  options.max_prompt_chars = 5;
  v1::TextToSpeechRequest r;
  auto empty = ValidateTextToSpeech(r, options);
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.message(), "text is required");
  r.set_text(Accented(5));  // 10 bytes, 5 characters: at the limit
  EXPECT_TRUE(ValidateTextToSpeech(r, options).ok());
  r.set_text(Accented(6));
  auto over = ValidateTextToSpeech(r, options);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.message(), "text is 6 characters, more than the model's max_prompt_chars (5)");
  r.set_text(std::string(4096, 'a'));
  EXPECT_TRUE(ValidateTextToSpeech(r, TextToSpeechOptions()).ok());
  r.set_text(std::string(4097, 'a'));
  EXPECT_EQ(ValidateTextToSpeech(r, TextToSpeechOptions()).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// llm

TEST(SampleToken, GreedyPicksArgmax) {
  std::mt19937_64 rng(1);
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(SampleToken({0.1f, 3.0f, 2.9f, -1.f}, p, rng), 1);
  EXPECT_EQ(SampleToken({5.f}, p, rng), 0);
}

TEST(SampleToken, TopKOneIsGreedyAtAnyTemperature) {
  std::mt19937_64 rng(7);
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(SampleToken({0.f, 1.f, 0.5f, 0.9f}, p, rng), 1);
}

TEST(SampleToken, TopKAndTopPRestrictTheCandidates) {
  std::mt19937_64 rng(3);
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  std::map<int64_t, int> seen;
  for (int i = 0; i < 500; ++i) ++seen[SampleToken({0.f, 2.f, 1.9f, 0.1f}, p, rng)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[2], 0);

  // Probabilities ~ 0.6, 0.3, 0.1: top_p 0.5 keeps only the first; 0.85 the first two.
  std::vector<float> logits = {std::log(0.3f), std::log(0.6f), std::log(0.1f)};
  p.top_k = -1;
  p.top_p = 0.5f;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(SampleToken(logits, p, rng), 1);
  p.top_p = 0.85f;
  seen.clear();
  for (int i = 0; i < 1000; ++i) ++seen[SampleToken(logits, p, rng)];
  EXPECT_EQ(seen.count(2), 0u);
  EXPECT_NEAR(seen[1] / 1000.0, 2.0 / 3.0, 0.06);
  // Full distribution: all three appear, roughly in proportion.
  p.top_p = 1.0f;
  seen.clear();
  for (int i = 0; i < 2000; ++i) ++seen[SampleToken(logits, p, rng)];
  EXPECT_NEAR(seen[2] / 2000.0, 0.1, 0.03);
}

TEST(SampleToken, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<float> logits = {0.f, 0.1f, 0.2f, 0.3f, 0.4f};
  std::mt19937_64 a(42), b(42);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(SampleToken(logits, p, a), SampleToken(logits, p, b));
}

TEST(ChatTemplate, Default) {
  EXPECT_EQ(DefaultChatTemplate({"system", "user"}, {"Be brief.", "Hi"}),
            "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n");
}

TEST(NewText, PrefixAndIncompleteCharacters) {
  EXPECT_EQ(NewText("hello", "hel"), "lo");
  EXPECT_EQ(NewText("hel", "hel"), "");
  EXPECT_EQ(NewText("ab\xEF\xBF\xBD", "a"), "");  // incomplete UTF-8 held back
  EXPECT_EQ(NewText("xyz", "ab"), "");
  // Byte-level tokenizers: the first bytes of a character wait for the rest.
  EXPECT_EQ(NewText("a\xC3", "a"), "");
  EXPECT_EQ(NewText("a\xC3\xA9", "a"), "\xC3\xA9");
  EXPECT_EQ(NewText("ab\xE2\x82", "a"), "b");
  EXPECT_EQ(NewText("ab\xF0\x9F\x98", "a"), "b");
  EXPECT_EQ(NewText("a\xC3x", "a"), "\xC3x");  // never completed: passed on (ValidUtf8 fixes it)
}

TEST(ValidUtf8, KeepsWellFormedTextAndReplacesTheRest) {
  EXPECT_EQ(ValidUtf8("plain"), "plain");
  EXPECT_EQ(ValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(ValidUtf8("a\x80"
                      "b"),
            "a" + r + "b");                                 // lone continuation byte
  EXPECT_EQ(ValidUtf8("a\xC3"), "a" + r);                   // truncated at the end
  EXPECT_EQ(ValidUtf8("\xC0\xAF"), r + r);                  // overlong
  EXPECT_EQ(ValidUtf8("\xED\xA0\x80"), r + r + r);          // a surrogate
  EXPECT_EQ(ValidUtf8("\xF4\x90\x80\x80"), r + r + r + r);  // past U+10FFFF
  EXPECT_EQ(ValidUtf8(std::string("\xFF\xFEok", 4)), r + r + "ok");
}

v1::LLMRequest Request() {
  v1::LLMRequest r;
  r.set_model("m");
  auto* m = r.add_messages();
  m->set_role("user");
  m->set_content("hi");
  return r;
}

void ExpectInvalid(const v1::LLMRequest& r, const std::string& field) {
  auto p = ValidateLlmRequest(r, LlmOptions());
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_NE(p.status().message().find(field), std::string::npos) << p.status();
}

TEST(ValidateLlmRequest, DefaultsFromTheSpec) {
  auto p = ValidateLlmRequest(Request(), LlmOptions());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FLOAT_EQ(p->temperature, 0.7f);
  EXPECT_EQ(p->max_tokens, 256);
  EXPECT_FLOAT_EQ(p->top_p, 1.0f);
  EXPECT_EQ(p->top_k, -1);
  LlmOptions small;
  small.max_tokens_limit = 16;
  EXPECT_EQ(ValidateLlmRequest(Request(), small)->max_tokens, 16);
}

TEST(ValidateLlmRequest, EveryErrorNamesItsField) {
  v1::LLMRequest r = Request();
  r.clear_messages();
  ExpectInvalid(r, "messages");
  r = Request();
  r.mutable_messages(0)->set_role("");
  ExpectInvalid(r, "messages[0].role");
  r = Request();
  r.mutable_messages(0)->set_role("robot");
  ExpectInvalid(r, "messages[0].role");
  r = Request();
  r.mutable_messages(0)->set_content("");
  ExpectInvalid(r, "messages[0].content");
  r = Request();
  r.set_max_tokens(0);
  ExpectInvalid(r, "max_tokens");
  r.set_max_tokens(5000);
  ExpectInvalid(r, "max_tokens");
  r = Request();
  r.set_temperature(-0.1f);
  ExpectInvalid(r, "temperature");
  r = Request();
  r.set_top_p(0);
  ExpectInvalid(r, "top_p");
  r.set_top_p(1.5f);
  ExpectInvalid(r, "top_p");
  r = Request();
  r.set_top_k(0);
  ExpectInvalid(r, "top_k");
  r = Request();
  r.set_temperature(0);
  r.set_top_k(3);
  r.set_top_p(0.5f);
  r.set_max_tokens(4096);
  EXPECT_TRUE(ValidateLlmRequest(r, LlmOptions()).ok());
}

TEST(ValidateLlmRequest, AllMessagesContentTogetherIsLimitedInCharacters) {
  LlmOptions options;
  options.max_prompt_chars = 10;
  v1::LLMRequest r;
  r.set_model("m");
  auto* a = r.add_messages();
  a->set_role("system");
  a->set_content(Accented(4));
  auto* b = r.add_messages();
  b->set_role("user");
  b->set_content("abcdef");  // 4 + 6 = 10 characters (14 bytes): at the limit
  EXPECT_TRUE(ValidateLlmRequest(r, options).ok());
  b->set_content("abcdefg");
  auto over = ValidateLlmRequest(r, options);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(),
            "messages' content (all messages together) is 11 characters, more than the model's "
            "max_prompt_chars (10)");
  // Roles do not count; the default is 131072 characters.
  b->set_content(std::string(131072 - 4, 'x'));
  EXPECT_TRUE(ValidateLlmRequest(r, LlmOptions()).ok());
  b->set_content(std::string(131072 - 3, 'x'));
  auto over_default = ValidateLlmRequest(r, LlmOptions());
  ASSERT_FALSE(over_default.ok());
  EXPECT_NE(over_default.status().message().find("131073 characters"), std::string::npos);
}

TEST(LlmOptions, Parse) {
  auto o = ParseLlmOptions({{"max_tokens", 32}, {"seed", 9}, {"eos_token_id", 2}});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->max_tokens_limit, 32);
  EXPECT_EQ(o->seed, 9);
  EXPECT_EQ(o->eos_token_id, 2);
  EXPECT_FALSE(ParseLlmOptions({{"max_tokens", 0}}).ok());
  EXPECT_EQ(o->max_prompt_chars, 131072);
  EXPECT_EQ(ParseLlmOptions({{"max_prompt_chars", 100}})->max_prompt_chars, 100);
  EXPECT_FALSE(ParseLlmOptions({{"max_prompt_chars", 0}}).ok());
  EXPECT_FALSE(ParseLlmOptions({{"max_prompt_chars", "long"}}).ok());
}

}  // namespace
}  // namespace switchyard::orchestrator
