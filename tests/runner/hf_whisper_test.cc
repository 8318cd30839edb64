// Whisper (src/runner/hf/whisper*, log_mel*) against the independent float64 PyTorch reference's
// fixture (tools/whisper-reference/reference.py, tests/fixtures/hf/whisper/): log-mel, encoder
// output, decoder logits, and greedy transcriptions (language given and detected, English-only,
// timestamps, long audio in 30 s windows); plus hostile configs, checkpoints and inputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runner/hf/log_mel.h"
#include "runner/hf/safetensors.h"
#include "runner/hf/whisper.h"
#include "runner/hf/whisper_transcribe.h"

namespace switchyard::runner::hf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kFixture = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "hf" / "whisper";
// The reference computes in float64 from the same stored weights; the C++ model in float32.
constexpr double kTolerance = 1e-4;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

json Expected() { return json::parse(ReadFile(kFixture / "expected.json")); }

at::Tensor ExpectedTensor(const std::string& name) {
  auto file = SafetensorsFile::Open(kFixture / "expected.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  auto t = (*file)->Tensor(name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t->clone();
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// reference.py's make_audio, bit for bit: int16 samples (LCG noise with a stepped envelope plus a
// square wave every other second), as float in [-1, 1) the way FFmpeg converts s16 to float.
std::vector<float> MakeAudio(int64_t n, uint32_t seed) {
  std::vector<float> out(n);
  uint32_t x = seed;
  for (int64_t i = 0; i < n; ++i) {
    x = 1103515245u * x + 12345u;
    const int64_t noise = static_cast<int64_t>((x >> 16) & 0xFFFF) - 32768;
    const int64_t env = (i / 4000) % 5;
    const int64_t square = ((i / 19) % 2 == 0) ? 6000 : -6000;
    int64_t v = FloorDiv(noise * env, 16) + (((i / 16000) % 2 == 0) ? square : 0);
    v = std::max<int64_t>(-32768, std::min<int64_t>(32767, v));
    out[i] = static_cast<float>(v) / 32768.0f;
  }
  return out;
}

std::vector<float> FixtureAudio(const std::string& which) {
  const json a = Expected()["audio"][which];
  return MakeAudio(a[0].get<int64_t>(), a[1].get<uint32_t>());
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

void ExpectError(const absl::Status& s, const std::string& needle) {
  EXPECT_FALSE(s.ok()) << "expected an error mentioning '" << needle << "'";
  EXPECT_TRUE(absl::StrContains(s.message(), needle))
      << "error '" << s.message() << "' does not mention '" << needle << "'";
}

class WhisperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("hf_whisper_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A copy of the fixture folder (without the expected outputs) that a test may then damage.
  fs::path CopyFixture() {
    fs::path dst = dir_ / "whisper";
    fs::create_directories(dst);
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json",
                          "tokenizer_config.json", "generation_config.json"}) {
      fs::copy_file(kFixture / f, dst / f);
    }
    return dst;
  }

  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// log-mel

TEST(WhisperLogMelTest, FiltersMatchTheReference) {
  auto f80 = WhisperMelFilters(80);
  ASSERT_TRUE(f80.ok()) << f80.status();
  EXPECT_LT(MaxAbsDiff(*f80, ExpectedTensor("mel_filters")), 1e-7);
  auto f128 = WhisperMelFilters(128);
  ASSERT_TRUE(f128.ok()) << f128.status();
  EXPECT_LT(MaxAbsDiff(*f128, ExpectedTensor("mel_filters_128")), 1e-7);
}

TEST(WhisperLogMelTest, MatchesTheReference) {
  auto mel = WhisperLogMel(FixtureAudio("short"), 80);
  ASSERT_TRUE(mel.ok()) << mel.status();
  ASSERT_EQ(mel->sizes(), at::IntArrayRef({80, 3000}));
  const at::Tensor expected = ExpectedTensor("log_mel");
  const double diff = MaxAbsDiff(*mel, expected);
  std::cout << "log-mel max |C++ - reference| = " << diff << "\n";
  EXPECT_LT(diff, kTolerance);
  // Not a constant: the reference's spectrogram has structure the comparison can fail on.
  EXPECT_GT((expected.max() - expected.min()).item<double>(), 1.0);
}

TEST(WhisperLogMelTest, RefusesBadInputs) {
  std::vector<float> nan_audio(1000, 0.0f);
  nan_audio[500] = std::numeric_limits<float>::quiet_NaN();
  ExpectError(WhisperLogMel(nan_audio, 80).status(), "sample 500 is not finite");
  nan_audio[500] = std::numeric_limits<float>::infinity();
  ExpectError(WhisperLogMel(nan_audio, 80).status(), "not finite");
  ExpectError(WhisperLogMel(std::vector<float>(10), 0).status(), "n_mels");
  ExpectError(WhisperLogMel(std::vector<float>(10), 100000).status(), "n_mels");
  // Silence and empty input are fine (all frames at the floor).
  auto silent = WhisperLogMel(std::vector<float>(), 80);
  ASSERT_TRUE(silent.ok()) << silent.status();
  EXPECT_EQ(silent->sizes(), at::IntArrayRef({80, 3000}));
  EXPECT_TRUE(at::isfinite(*silent).all().item<bool>());
}

// ---------------------------------------------------------------------------------------------
// encoder and decoder

TEST(WhisperModelTest, EncoderAndDecoderMatchTheReference) {
  auto model = WhisperModel::Load(kFixture);
  ASSERT_TRUE(model.ok()) << model.status();
  auto enc = (*model)->Encode(ExpectedTensor("log_mel"));
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(enc->sizes(), at::IntArrayRef({1, 1500, 64}));
  const double enc_diff = MaxAbsDiff(enc->squeeze(0), ExpectedTensor("encoder"));
  std::cout << "encoder max |C++ - reference| = " << enc_diff << "\n";
  EXPECT_LT(enc_diff, kTolerance);

  const std::vector<int64_t> tokens = Expected()["decoder_tokens"].get<std::vector<int64_t>>();
  const at::Tensor expected = ExpectedTensor("decoder_logits");
  ASSERT_EQ(expected.size(0), static_cast<int64_t>(tokens.size()));
  // Whole sequence at once.
  auto state = (*model)->StartDecoding(*enc);
  ASSERT_TRUE(state.ok()) << state.status();
  auto all = (*model)->DecodeStep(tokens, &*state);
  ASSERT_TRUE(all.ok()) << all.status();
  const double dec_diff = MaxAbsDiff(*all, expected);
  std::cout << "decoder logits max |C++ - reference| = " << dec_diff << "\n";
  EXPECT_LT(dec_diff, kTolerance);
  // The prompt, then one token at a time through the KV cache.
  state = (*model)->StartDecoding(*enc);
  ASSERT_TRUE(state.ok()) << state.status();
  std::vector<int64_t> prompt(tokens.begin(), tokens.begin() + 4);
  auto first = (*model)->DecodeStep(prompt, &*state);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_LT(MaxAbsDiff(*first, expected.narrow(0, 0, 4)), kTolerance);
  for (size_t i = 4; i < tokens.size(); ++i) {
    auto step = (*model)->DecodeStep({tokens[i]}, &*state);
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_LT(MaxAbsDiff(step->squeeze(0), expected[i]), kTolerance) << "position " << i;
  }
  EXPECT_EQ(state->length, static_cast<int64_t>(tokens.size()));
}

TEST(WhisperModelTest, RefusesBadInputs) {
  auto model = WhisperModel::Load(kFixture);
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectError((*model)->Encode(at::zeros({80, 2999})).status(), "expected [1, 80, 3000]");
  ExpectError((*model)->Encode(at::zeros({128, 3000})).status(), "expected [1, 80, 3000]");
  ExpectError((*model)->Encode(at::zeros({2, 80, 3000})).status(), "log-mel must be");
  ExpectError((*model)->Encode(at::Tensor()).status(), "log-mel must be");
  ExpectError((*model)->Encode(at::zeros({80, 3000}, at::kLong)).status(), "floating-point");
  ExpectError((*model)->StartDecoding(at::zeros({1, 1500, 32})).status(), "encoder output");
  ExpectError((*model)->StartDecoding(at::zeros({1, 1501, 64})).status(), "encoder output");
  auto state = (*model)->StartDecoding(at::zeros({1, 1500, 64}));
  ASSERT_TRUE(state.ok()) << state.status();
  const int64_t vocab = (*model)->config().vocab_size;
  ExpectError((*model)->DecodeStep({vocab}, &*state).status(), "outside the vocabulary");
  ExpectError((*model)->DecodeStep({-1}, &*state).status(), "outside the vocabulary");
  ExpectError((*model)->DecodeStep({}, &*state).status(), "no tokens");
  ExpectError((*model)->DecodeStep({1}, nullptr).status(), "decoder state");
  // Positions run out at max_target_positions (64 here); the state is unchanged by the failure.
  ExpectError((*model)->DecodeStep(std::vector<int64_t>(65, 1), &*state).status(),
              "max_target_positions");
  EXPECT_EQ(state->length, 0);
  ASSERT_TRUE((*model)->DecodeStep(std::vector<int64_t>(64, 1), &*state).ok());
  ExpectError((*model)->DecodeStep({1}, &*state).status(), "max_target_positions");
}

// ---------------------------------------------------------------------------------------------
// transcription

struct Case {
  const char* name;
  const char* audio;
  std::string language;
  bool timestamps;
  bool english_only;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class WhisperTranscribeTest : public WhisperTest, public ::testing::WithParamInterface<Case> {};

TEST_P(WhisperTranscribeTest, MatchesTheReference) {
  const Case& c = GetParam();
  fs::path folder = kFixture;
  if (c.english_only) {
    folder = CopyFixture();
    json gen = json::parse(ReadFile(folder / "generation_config.json"));
    gen["is_multilingual"] = false;
    WriteFile(folder / "generation_config.json", gen.dump());
  }
  auto t = WhisperTranscriber::Load(folder);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->multilingual(), !c.english_only);
  const json expected = Expected();
  const json& e = expected["cases"][c.name];
  WhisperRequest request;
  request.language = c.language;
  request.timestamps = c.timestamps;
  request.max_new_tokens = expected["max_new_tokens"].get<int64_t>();
  auto r = (*t)->Transcribe(FixtureAudio(c.audio), request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->window_tokens, e["window_tokens"].get<std::vector<std::vector<int64_t>>>());
  EXPECT_EQ(r->window_starts, e["window_starts"].get<std::vector<int64_t>>());
  EXPECT_EQ(r->text, e["text"].get<std::string>());
  if (e["language"].is_null()) {
    EXPECT_EQ(r->language, "");
  } else {
    EXPECT_EQ(*(*t)->tokenizer().TokenId(r->language), e["language"].get<int64_t>());
  }
  ASSERT_EQ(r->chunks.size(), e["chunks"].size());
  for (size_t i = 0; i < r->chunks.size(); ++i) {
    EXPECT_NEAR(r->chunks[i].start, e["chunks"][i][0].get<double>(), 1e-9) << i;
    EXPECT_NEAR(r->chunks[i].end, e["chunks"][i][1].get<double>(), 1e-9) << i;
    EXPECT_EQ(r->chunks[i].text, e["chunks"][i][2].get<std::string>()) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixture, WhisperTranscribeTest,
                         ::testing::Values(Case{"short_en", "short", "en", false, false},
                                           Case{"short_detect", "short", "", false, false},
                                           Case{"short_en_timestamps", "short", "<|en|>", true,
                                                false},
                                           Case{"short_english_only", "short", "", false, true},
                                           Case{"long_en", "long", "en", false, false},
                                           Case{"long_en_timestamps", "long", "en", true, false}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(WhisperTest, TranscribeRefusesBadRequests) {
  WhisperLimits limits;
  limits.max_samples = 16000 * 40;
  auto t = WhisperTranscriber::Load(kFixture, at::kCPU, at::kFloat, limits);
  ASSERT_TRUE(t.ok()) << t.status();
  WhisperRequest request;
  ExpectError((*t)->Transcribe(std::vector<float>(16000 * 40 + 1), request).status(),
              "over the limit");
  request.language = "xx";
  ExpectError((*t)->Transcribe(std::vector<float>(16000), request).status(), "language \"xx\"");
  request.language = "en";
  request.max_new_tokens = 0;
  ExpectError((*t)->Transcribe(std::vector<float>(16000), request).status(), "max_new_tokens");
  request.max_new_tokens = 1 << 30;  // capped by max_target_positions, not an error
  std::vector<float> audio(16000, 0.0f);
  audio[5] = std::numeric_limits<float>::quiet_NaN();
  ExpectError((*t)->Transcribe(audio, request).status(), "not finite");
  // keep_going ends the transcription with its status (a cancelled client, a deadline).
  int polls = 0;
  request.keep_going = [&polls]() {
    return ++polls > 5 ? absl::CancelledError("client went away") : absl::OkStatus();
  };
  auto cancelled = (*t)->Transcribe(std::vector<float>(16000, 0.1f), request);
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(polls, 6);
  request.keep_going = nullptr;
  auto empty = (*t)->Transcribe({}, request);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->text, "");
  // Less than one frame of audio still gives one window.
  auto tiny = (*t)->Transcribe(std::vector<float>(3, 0.1f), request);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->window_tokens.size(), 1u);
  EXPECT_LE(static_cast<int64_t>(tiny->window_tokens[0].size()), 64 - 4);
}

// ---------------------------------------------------------------------------------------------
// hostile configs and checkpoints

json FixtureConfig() { return json::parse(ReadFile(kFixture / "config.json")); }

TEST(WhisperConfigTest, ParsesTheFixtureAndRefusesWhatChangesTheMath) {
  auto ok = ParseWhisperConfig(FixtureConfig().dump());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->d_model, 64);
  EXPECT_EQ(ok->num_mel_bins, 80);
  EXPECT_TRUE(ok->tie_word_embeddings);

  struct Bad {
    const char* field;
    json value;
    const char* needle;
  };
  const std::vector<Bad> bad = {
      {"rope_theta", 10000.0, "rope_theta: unknown field"},
      {"activation_function", "relu", "activation_function"},
      {"num_mel_bins", 100, "num_mel_bins"},
      {"max_source_positions", 750, "max_source_positions"},
      {"d_model", 1 << 30, "d_model"},
      {"d_model", -4, "d_model"},
      {"d_model", "64", "d_model: must be an integer"},
      {"encoder_attention_heads", 5, "encoder_attention_heads"},
      {"decoder_attention_heads", 0, "decoder_attention_heads"},
      {"vocab_size", 0, "vocab_size"},
      {"decoder_start_token_id", 100000, "decoder_start_token_id"},
      {"eos_token_id", json::array({1, 2}), "eos_token_id"},
      {"num_hidden_layers", 3, "num_hidden_layers"},
      {"architectures", json::array({"WhisperForAudioClassification"}), "architectures"},
      {"model_type", "llama", "model_type"},
      {"scale_embedding", 1, "scale_embedding"},
      {"quantization_config", json::object({{"bits", 4}}), "quantization_config"},
      {"encoder_layers", nullptr, "encoder_layers: missing"},
  };
  for (const Bad& b : bad) {
    json c = FixtureConfig();
    c[b.field] = b.value;
    ExpectError(ParseWhisperConfig(c.dump()).status(), b.needle);
  }
  ExpectError(ParseWhisperConfig("[1, 2]").status(), "JSON object");
  ExpectError(ParseWhisperConfig("{\"d_model\": ").status(), "not valid JSON");
  ExpectError(ParseWhisperConfig(std::string(100000, '[')).status(), "nested deeper");
}

// All tensors of the fixture, copied, in name order.
std::vector<std::pair<std::string, at::Tensor>> FixtureTensors() {
  auto ckpt = Checkpoint::Open(kFixture);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const std::string& n : ckpt->Names()) out.emplace_back(n, ckpt->Tensor(n)->clone());
  return out;
}

std::string Safetensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  json header = json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.contiguous().to(at::kFloat);
    const size_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", "F32"},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {data.size(), data.size() + bytes}}};
    data.append(static_cast<const char*>(c.data_ptr()), bytes);
  }
  const std::string h = header.dump();
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  return len + h + data;
}

TEST_F(WhisperTest, LoadNamesWrongMissingAndUnexpectedTensors) {
  const fs::path folder = CopyFixture();
  auto write = [&](std::vector<std::pair<std::string, at::Tensor>> tensors) {
    WriteFile(folder / "model.safetensors", Safetensors(tensors));
  };
  auto tensors = FixtureTensors();
  // A wrong shape.
  auto wrong = tensors;
  for (auto& [name, t] : wrong) {
    if (name == "model.decoder.layers.1.encoder_attn.k_proj.weight") t = at::zeros({64, 32});
  }
  write(wrong);
  ExpectError(WhisperModel::Load(folder).status(),
              "'model.decoder.layers.1.encoder_attn.k_proj.weight' has shape [64, 32], expected "
              "[64, 64]");
  // A missing one.
  auto missing = tensors;
  std::erase_if(missing, [](const auto& p) { return p.first == "model.encoder.conv2.bias"; });
  write(missing);
  ExpectError(WhisperModel::Load(folder).status(), "missing tensor 'model.encoder.conv2.bias'");
  // An unexpected one (a k_proj bias, which Whisper does not have).
  auto extra = tensors;
  extra.emplace_back("model.encoder.layers.0.self_attn.k_proj.bias", at::zeros({64}));
  write(extra);
  ExpectError(WhisperModel::Load(folder).status(),
              "unexpected tensor 'model.encoder.layers.0.self_attn.k_proj.bias'");
  // Without stored encoder positions the sinusoids are computed: the reference stored exactly
  // those, so the encoder output is unchanged.
  auto no_pos = tensors;
  std::erase_if(no_pos,
                [](const auto& p) { return p.first == "model.encoder.embed_positions.weight"; });
  write(no_pos);
  auto model = WhisperModel::Load(folder);
  ASSERT_TRUE(model.ok()) << model.status();
  auto enc = (*model)->Encode(ExpectedTensor("log_mel"));
  ASSERT_TRUE(enc.ok()) << enc.status();
  EXPECT_LT(MaxAbsDiff(enc->squeeze(0), ExpectedTensor("encoder")), kTolerance);
  // An untied proj_out is used when tie_word_embeddings is false, and required then.
  json config = FixtureConfig();
  config["tie_word_embeddings"] = false;
  WriteFile(folder / "config.json", config.dump());
  write(tensors);
  ExpectError(WhisperModel::Load(folder).status(), "missing tensor 'proj_out.weight'");
  // A truncated file.
  const std::string good = ReadFile(kFixture / "model.safetensors");
  WriteFile(folder / "config.json", FixtureConfig().dump());
  for (size_t keep : {size_t{0}, size_t{7}, size_t{100}, good.size() / 2, good.size() - 1}) {
    WriteFile(folder / "model.safetensors", good.substr(0, keep));
    EXPECT_FALSE(WhisperModel::Load(folder).ok()) << keep;
  }
}

TEST_F(WhisperTest, LoadRefusesBadFolders) {
  ExpectError(WhisperModel::Load(dir_ / "nope").status(), "config.json");
  const fs::path folder = CopyFixture();
  // A config whose dims disagree with the weights.
  json config = FixtureConfig();
  config["encoder_ffn_dim"] = 256;
  WriteFile(folder / "config.json", config.dump());
  ExpectError(WhisperModel::Load(folder).status(), "fc1.weight' has shape [128, 64]");
  // An absurd vocabulary is refused by the shape check, not allocated.
  config = FixtureConfig();
  config["vocab_size"] = 1 << 20;
  WriteFile(folder / "config.json", config.dump());
  ExpectError(WhisperModel::Load(folder).status(), "embed_tokens.weight' has shape");
  WriteFile(folder / "config.json", FixtureConfig().dump());
  ExpectError(WhisperModel::Load(folder, at::kCPU, at::kHalf).status(), "float16");
  ExpectError(WhisperModel::Load(folder, at::kCPU, at::kLong).status(), "compute dtype");
  // Tokenizer without Whisper's special tokens.
  json tok = json::parse(ReadFile(folder / "tokenizer.json"));
  for (auto& t : tok["added_tokens"]) {
    if (t["content"] == "<|notimestamps|>") t["content"] = "<|nots|>";
  }
  WriteFile(folder / "tokenizer.json", tok.dump());
  ExpectError(WhisperTranscriber::Load(folder).status(), "no <|notimestamps|> token");
  WriteFile(folder / "tokenizer.json", ReadFile(kFixture / "tokenizer.json"));
  // generation_config.json with ids outside the vocabulary, or malformed.
  json gen = json::parse(ReadFile(folder / "generation_config.json"));
  gen["suppress_tokens"] = json::array({1, 999999});
  WriteFile(folder / "generation_config.json", gen.dump());
  ExpectError(WhisperTranscriber::Load(folder).status(), "suppress_tokens");
  gen = json::parse(ReadFile(kFixture / "generation_config.json"));
  gen["lang_to_id"]["english"] = 5;
  WriteFile(folder / "generation_config.json", gen.dump());
  ExpectError(WhisperTranscriber::Load(folder).status(), "lang_to_id");
  WriteFile(folder / "generation_config.json", "{");
  ExpectError(WhisperTranscriber::Load(folder).status(), "generation_config.json");
  // decoder_start_token_id must be <|startoftranscript|>.
  WriteFile(folder / "generation_config.json", ReadFile(kFixture / "generation_config.json"));
  config = FixtureConfig();
  config["decoder_start_token_id"] = 5;
  WriteFile(folder / "config.json", config.dump());
  ExpectError(WhisperTranscriber::Load(folder).status(), "decoder_start_token_id");
}

}  // namespace
}  // namespace switchyard::runner::hf
