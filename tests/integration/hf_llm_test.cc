// End to end: an llm model served from a Hugging Face checkpoint folder ("format": "hf"), built
// here from a fixture checkpoint (tests/fixtures/hf/qwen2, vocab 256) with a byte-level
// tokenizer.json of exactly the 256 byte tokens and a small chat template. The expected replies
// come from the Decoder's own greedy decoding, so the gateway -> orchestrator -> engine -> stream
// path is checked token for token. A second folder has the same ids as a SentencePiece-style
// (Llama 2 / Mistral form) tokenizer.json, a third as a SentencePiece tokenizer.model only.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "runner/hf/decoder.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/sentencepiece_model_writer.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::grpc::StatusCode;
using json = nlohmann::json;
using ::switchyard::testing::SerializeSpmModel;
using ::switchyard::testing::SpmModelSpec;
using ::switchyard::testing::SpmPieceType;

const fs::path kFixture = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "hf" / "qwen2";
// Renders "<user>Hi\n<assistant>" for one user message "Hi".
constexpr const char* kTemplate =
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}";
constexpr int kMaxTokens = 24;
constexpr const char* kRawPrompt = "Once upon a time";
constexpr int kContext = 4096;  // the served copy's max_position_embeddings

// GPT-2's bytes_to_unicode, written out here so the test does not trust the library's copy.
std::string ByteChar(int b) {
  int n = 0;
  int cp = -1;
  for (int x = 0; x < 256; ++x) {
    const bool printable = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174);
    const int c = printable ? x : 256 + n++;
    if (x == b) cp = c;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

json ByteTokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;
  return json{
      {"version", "1.0"},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", json::array()}}}};
}

// The same 256 ids as "<0x00>".."<0xFF>" in the SentencePiece-style form Llama 2 / Mistral
// folders ship (byte_fallback, Prepend("▁") + Replace(" ", "▁"), the Replace/ByteFallback/Fuse/
// Strip decoder): every character falls back to its bytes, and the text gets a "▁" in front.
json SpmByteTokenizer() {
  json vocab = json::object();
  const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) vocab[std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">"] = b;
  const char* meta = "\xE2\x96\x81";
  return json{{"version", "1.0"},
              {"added_tokens", json::array()},
              {"normalizer",
               {{"type", "Sequence"},
                {"normalizers",
                 {{{"type", "Prepend"}, {"prepend", meta}},
                  {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", meta}}}}}},
              {"pre_tokenizer", nullptr},
              {"post_processor", nullptr},
              {"decoder",
               {{"type", "Sequence"},
                {"decoders",
                 {{{"type", "Replace"}, {"pattern", {{"String", meta}}}, {"content", " "}},
                  {{"type", "ByteFallback"}},
                  {{"type", "Fuse"}},
                  {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"vocab", vocab},
                {"merges", json::array()}}}};
}

// A SentencePiece tokenizer.model (no tokenizer.json) of <unk> (id 0; SentencePiece requires
// one) and the 256 byte pieces "<0x00>".."<0xFF>" at ids 1..256 (byte_fallback requires all):
// every character falls back to its bytes, after the dummy prefix "▁". No <s>/</s>, so no eos.
constexpr int kSpmVocab = 257;
std::string SpmByteModel() {
  SpmModelSpec spec;
  spec.pieces.push_back({"<unk>", 0, SpmPieceType::kUnknown});
  const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    spec.pieces.push_back(
        {std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, SpmPieceType::kByte});
  }
  spec.unk_id = 0;
  spec.bos_id = -1;
  spec.eos_id = -1;
  return SerializeSpmModel(spec);
}

// A copy of a float32 safetensors file whose embed_tokens and lm_head get zero rows up to
// `vocab` (the fixture has 256; the tokenizer.model above needs 257).
void WritePaddedVocab(const fs::path& from, const fs::path& to, int vocab) {
  const std::string bytes = ReadFile(from);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  json header = json::parse(bytes.substr(8, header_size));
  const std::string data = bytes.substr(8 + header_size);
  std::vector<std::pair<uint64_t, std::string>> tensors;  // by data offset
  for (const auto& [name, info] : header.items()) {
    if (name != "__metadata__") tensors.emplace_back(info["data_offsets"][0].get<uint64_t>(), name);
  }
  std::sort(tensors.begin(), tensors.end());
  std::string out_data;
  for (const auto& [offset, name] : tensors) {
    json& info = header[name];
    const uint64_t end = info["data_offsets"][1].get<uint64_t>();
    std::string tensor = data.substr(offset, end - offset);
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
      const int64_t rows = info["shape"][0].get<int64_t>();
      const int64_t cols = info["shape"][1].get<int64_t>();
      tensor.append(static_cast<size_t>((vocab - rows) * cols * 4), '\0');
      info["shape"][0] = vocab;
    }
    info["data_offsets"] = {out_data.size(), out_data.size() + tensor.size()};
    out_data += tensor;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t size = text.size();
  std::memcpy(out.data(), &size, 8);
  WriteFile(to, out + text + out_data);
}

// Bytes that are not part of a well-formed UTF-8 character become U+FFFD, one per byte (what
// the server must do, since proto strings are UTF-8).
std::string WellFormed(const std::string& bytes) {
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    size_t len = c < 0x80             ? 1
                 : (c & 0xE0) == 0xC0 ? 2
                 : (c & 0xF0) == 0xE0 ? 3
                 : (c & 0xF8) == 0xF0 ? 4
                                      : 0;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = len > 0 && i + len <= bytes.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(bytes[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    const uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : len == 4 ? 0x10000 : 0;
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (ok) {
      out.append(bytes, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string PromptFor(const std::string& content) {
  return absl::StrCat("<user>", content, "\n<assistant>");
}

std::string BytesOf(const std::vector<int64_t>& ids) {
  std::string out;
  for (int64_t id : ids) out.push_back(static_cast<char>(id));
  return out;
}

class HfLlmServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    // The decoder's greedy tokens for each prompt the tests send, from the fixture itself.
    auto decoder = runner::hf::Decoder::Load(kFixture);
    ASSERT_TRUE(decoder.ok()) << decoder.status();
    expected_ = new std::map<std::string, std::vector<int64_t>>();
    for (const std::string content : {"Hi", "Hello there", "a third prompt"}) {
      const std::string prompt = PromptFor(content);
      std::vector<int64_t> ids;
      for (char c : prompt) ids.push_back(static_cast<unsigned char>(c));
      auto greedy = (*decoder)->GenerateGreedy(ids, kMaxTokens);
      ASSERT_TRUE(greedy.ok()) << greedy.status();
      (*expected_)[content] = *greedy;
    }
    // A raw prompt (LLMRequest.prompt): its bytes as they are, no template, no BOS (the byte
    // tokenizer has none).
    {
      std::vector<int64_t> ids;
      for (char c : std::string(kRawPrompt)) ids.push_back(static_cast<unsigned char>(c));
      auto greedy = (*decoder)->GenerateGreedy(ids, kMaxTokens);
      ASSERT_TRUE(greedy.ok()) << greedy.status();
      (*expected_)[absl::StrCat("raw:", kRawPrompt)] = *greedy;
    }
    // Through the SentencePiece-style tokenizer the prompt starts with "▁"'s three bytes.
    {
      std::vector<int64_t> ids = {0xE2, 0x96, 0x81};
      for (char c : PromptFor("Hi")) ids.push_back(static_cast<unsigned char>(c));
      auto greedy = (*decoder)->GenerateGreedy(ids, kMaxTokens);
      ASSERT_TRUE(greedy.ok()) << greedy.status();
      (*expected_)["spm:Hi"] = *greedy;
    }

    // The served copy: eos outside the vocabulary, so no reply stops early (the eos test names
    // a token that does occur through options.eos_token_id), and a 4096-token context (RoPE has
    // no weights: the fixture's 128 only bounds its tests) so that a stream lasts long enough to
    // be cancelled half-way.
    const fs::path good = dir_->path() / "hf-tiny";
    const fs::path broken = dir_->path() / "hf-no-tokenizer";
    for (const fs::path& folder : {good, broken}) {
      fs::create_directories(folder);
      fs::copy_file(kFixture / "model.safetensors", folder / "model.safetensors");
      json config = json::parse(ReadFile(kFixture / "config.json"));
      config["eos_token_id"] = 1000;
      config["max_position_embeddings"] = kContext;
      WriteFile(folder / "config.json", config.dump());
      WriteFile(folder / "tokenizer_config.json", json{{"chat_template", kTemplate}}.dump());
    }
    WriteFile(good / "tokenizer.json", ByteTokenizer().dump());
    const fs::path spm = dir_->path() / "hf-spm";
    fs::create_directories(spm);
    for (const char* file : {"model.safetensors", "config.json", "tokenizer_config.json"}) {
      fs::copy_file(good / file, spm / file);
    }
    WriteFile(spm / "tokenizer.json", SpmByteTokenizer().dump());
    // The tokenizer.model-only folder: the weights padded to its 257 ids, its greedy replies from
    // the padded copy itself.
    const fs::path spm_model = dir_->path() / "hf-spm-model";
    fs::create_directories(spm_model);
    fs::copy_file(good / "tokenizer_config.json", spm_model / "tokenizer_config.json");
    WritePaddedVocab(good / "model.safetensors", spm_model / "model.safetensors", kSpmVocab);
    {
      json config = json::parse(ReadFile(good / "config.json"));
      config["vocab_size"] = kSpmVocab;
      WriteFile(spm_model / "config.json", config.dump());
      auto padded = runner::hf::Decoder::Load(spm_model);
      ASSERT_TRUE(padded.ok()) << padded.status();
      std::vector<int64_t> ids = {1 + 0xE2, 1 + 0x96, 1 + 0x81};
      for (char c : PromptFor("Hi")) ids.push_back(1 + static_cast<unsigned char>(c));
      auto greedy = (*padded)->GenerateGreedy(ids, kMaxTokens);
      ASSERT_TRUE(greedy.ok()) << greedy.status();
      (*expected_)["spm-model:Hi"] = *greedy;
    }
    WriteFile(spm_model / "tokenizer.model", SpmByteModel());

    // The eos test's token: the first of "Hi"'s reply (from the fourth on) not seen before it.
    const auto& hi = expected_->at("Hi");
    stop_at_ = 3;
    while (stop_at_ < static_cast<int>(hi.size()) &&
           std::find(hi.begin(), hi.begin() + stop_at_, hi[stop_at_]) != hi.begin() + stop_at_) {
      ++stop_at_;
    }
    ASSERT_LT(stop_at_, static_cast<int>(hi.size()));

    auto entry = [&](const std::string& id, const fs::path& path, json options) {
      return json{{"id", id},
                  {"pipeline", "llm"},
                  {"format", "hf"},
                  {"path", path},
                  {"warm", true},
                  {"device", "cpu"},
                  {"options", std::move(options)}};
    };
    // A small engine: 4 tokens a block, 4 sequences a step, a 4 MiB KV budget (one full
    // 4096-token sequence of this model is 3 MiB).
    const json engine = {{"kv_cache_mb", 4},       {"block_tokens", 4},  {"max_batch_sequences", 4},
                         {"max_batch_tokens", 16}, {"max_tokens", 4000}, {"max_new_tokens", 3900}};
    json with_eos = engine;
    with_eos["eos_token_id"] = hi[stop_at_];
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {};
    options.extra_models = {entry("hf-tiny", good, engine), entry("hf-eos", good, with_eos),
                            entry("hf-broken", broken, engine), entry("hf-spm", spm, engine),
                            entry("hf-spm-model", spm_model, engine)};
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

  struct Stream {
    std::vector<v1::LLMResponse> messages;
    grpc::Status status;
    std::string text;
  };
  Stream Llm(const v1::LLMRequest& req) {
    Stream s;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(60)));
    auto reader = stub_->LLM(&ctx, req);
    v1::LLMResponse r;
    while (reader->Read(&r)) {
      for (const auto& c : r.choices()) s.text += c.delta().content();
      s.messages.push_back(r);
    }
    s.status = reader->Finish();
    return s;
  }

  static v1::LLMRequest Request(const std::string& model, const std::string& content,
                                int max_tokens = kMaxTokens) {
    v1::LLMRequest req;
    req.set_model(model);
    auto* m = req.add_messages();
    m->set_role("user");
    m->set_content(content);
    req.set_temperature(0);
    req.set_max_tokens(max_tokens);
    return req;
  }

  // The reply to `content` at max_tokens, as the decoder gives it.
  static std::string ExpectedText(const std::string& content) {
    return WellFormed(BytesOf(expected_->at(content)));
  }

  static TempDir* dir_;
  static LocalCluster* cluster_;
  static std::map<std::string, std::vector<int64_t>>* expected_;
  static int stop_at_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

TempDir* HfLlmServeTest::dir_ = nullptr;
LocalCluster* HfLlmServeTest::cluster_ = nullptr;
std::map<std::string, std::vector<int64_t>>* HfLlmServeTest::expected_ = nullptr;
int HfLlmServeTest::stop_at_ = 0;

TEST_F(HfLlmServeTest, GreedyStreamEqualsTheDecodersTokensWithUsage) {
  Stream s = Llm(Request("hf-tiny", "Hi"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << "\n" << cluster_->Logs();
  EXPECT_EQ(s.text, ExpectedText("Hi"));
  ASSERT_GE(s.messages.size(), 2u);  // at least one delta and the last message
  const auto& last = s.messages.back();
  EXPECT_EQ(last.choices(0).finish_reason(), "length");
  const int prompt = static_cast<int>(PromptFor("Hi").size());  // one token a byte
  EXPECT_EQ(last.usage().prompt_tokens(), prompt);
  EXPECT_EQ(last.usage().completion_tokens(), kMaxTokens);
  EXPECT_EQ(last.usage().total_tokens(), prompt + kMaxTokens);
  ASSERT_TRUE(last.has_job());
  EXPECT_EQ(last.job().units(), prompt + kMaxTokens);  // metering counts the engine's tokens
  for (size_t i = 0; i + 1 < s.messages.size(); ++i) {
    EXPECT_EQ(s.messages[i].choices(0).finish_reason(), "");
    EXPECT_FALSE(s.messages[i].choices(0).delta().content().empty());
  }
}

TEST_F(HfLlmServeTest, ASentencePieceStyleTokenizerJsonServesTheSameWay) {
  // A folder whose tokenizer.json is the Llama 2 / Mistral form: the prompt gains the "▁" the
  // normalizer puts first, and the reply decodes through byte fallback with its first space
  // stripped, as Hugging Face's decoder does.
  Stream s = Llm(Request("hf-spm", "Hi"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << "\n" << cluster_->Logs();
  std::string bytes = BytesOf(expected_->at("spm:Hi"));
  if (!bytes.empty() && bytes.front() == ' ') bytes.erase(0, 1);
  EXPECT_EQ(s.text, WellFormed(bytes));
  ASSERT_GE(s.messages.size(), 2u);
  const auto& last = s.messages.back();
  EXPECT_EQ(last.choices(0).finish_reason(), "length");
  EXPECT_EQ(last.usage().prompt_tokens(), static_cast<int>(PromptFor("Hi").size()) + 3);
  EXPECT_EQ(last.usage().completion_tokens(), kMaxTokens);
}

TEST_F(HfLlmServeTest, AFolderWithOnlyTokenizerModelLoadsAndServes) {
  // tokenizer.model (SentencePiece) and no tokenizer.json: the prompt is "▁"'s bytes, then the
  // prompt's, each byte b as id b + 1; the reply decodes id b + 1 to byte b and drops <unk>
  // (id 0, a special token the stream skips) and the first space.
  Stream s = Llm(Request("hf-spm-model", "Hi"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << "\n" << cluster_->Logs();
  std::string bytes;
  for (int64_t id : expected_->at("spm-model:Hi")) {
    if (id > 0) bytes.push_back(static_cast<char>(id - 1));
  }
  if (!bytes.empty() && bytes.front() == ' ') bytes.erase(0, 1);
  EXPECT_EQ(s.text, WellFormed(bytes));
  ASSERT_GE(s.messages.size(), 2u);
  const auto& last = s.messages.back();
  EXPECT_EQ(last.choices(0).finish_reason(), "length");
  EXPECT_EQ(last.usage().prompt_tokens(), static_cast<int>(PromptFor("Hi").size()) + 3);
  EXPECT_EQ(last.usage().completion_tokens(), kMaxTokens);
}

TEST_F(HfLlmServeTest, StopsAtTheEosTokenWhichIsNotPartOfTheReply) {
  Stream s = Llm(Request("hf-eos", "Hi"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << "\n" << cluster_->Logs();
  const auto& hi = expected_->at("Hi");
  EXPECT_EQ(s.text, WellFormed(BytesOf({hi.begin(), hi.begin() + stop_at_})));
  const auto& last = s.messages.back();
  EXPECT_EQ(last.choices(0).finish_reason(), "stop");
  EXPECT_EQ(last.usage().completion_tokens(), stop_at_ + 1);  // the stop token was computed
}

TEST_F(HfLlmServeTest, ARawPromptIsCompletedWithoutTheTemplate) {
  v1::LLMRequest req;
  req.set_model("hf-tiny");
  req.set_prompt(kRawPrompt);
  req.set_temperature(0);
  req.set_max_tokens(kMaxTokens);
  Stream s = Llm(req);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << "\n" << cluster_->Logs();
  EXPECT_EQ(s.text, WellFormed(BytesOf(expected_->at(absl::StrCat("raw:", kRawPrompt)))));
  EXPECT_EQ(s.messages.back().usage().prompt_tokens(), static_cast<int>(strlen(kRawPrompt)));
  req.add_messages()->set_content("and messages");
  EXPECT_EQ(Llm(req).status.error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(HfLlmServeTest, AStopStringEndsTheReplyBeforeIt) {
  // Two whole characters of the greedy reply (not U+FFFD, which stands for bytes that are not
  // text), first seen at byte p >= 3: the reply is cut there, and since each token is one byte
  // the stop string arrives split across deltas.
  const std::string expected = ExpectedText("Hi");
  auto char_len = [&](size_t i) -> size_t {
    const auto c = static_cast<unsigned char>(expected[i]);
    return c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
  };
  auto whole = [&](size_t i) { return expected.compare(i, 3, "\xEF\xBF\xBD") != 0; };
  std::string stop;
  size_t p = 0;
  for (size_t i = 0; i < expected.size() && stop.empty();) {
    const size_t n1 = char_len(i);
    if (i >= 3 && i + n1 < expected.size() && whole(i) && whole(i + n1)) {
      const std::string candidate = expected.substr(i, n1 + char_len(i + n1));
      if (expected.find(candidate) == i) {
        stop = candidate;
        p = i;
      }
    }
    i += n1;
  }
  ASSERT_FALSE(stop.empty()) << "no two whole characters in the reply to stop at";
  v1::LLMRequest req = Request("hf-tiny", "Hi");
  req.add_stop("never appears \x01");
  req.add_stop(stop);
  Stream s = Llm(req);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << "\n" << cluster_->Logs();
  EXPECT_EQ(s.text, expected.substr(0, p));
  const auto& last = s.messages.back();
  EXPECT_EQ(last.choices(0).finish_reason(), "stop");
  EXPECT_LT(last.usage().completion_tokens(), kMaxTokens);
  EXPECT_GT(last.usage().completion_tokens(), 0);
  // The model keeps serving: the same request without stop strings gets the whole reply.
  EXPECT_EQ(Llm(Request("hf-tiny", "Hi")).text, expected);
}

TEST_F(HfLlmServeTest, TheRequestsSeedMakesSamplingReproducible) {
  auto sampled = [&](int64_t seed) {
    v1::LLMRequest req = Request("hf-tiny", "Hi", 16);
    req.set_temperature(1.0f);
    req.set_seed(seed);
    Stream s = Llm(req);
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    return s.text;
  };
  const std::string a = sampled(7);
  EXPECT_EQ(sampled(7), a);
  EXPECT_NE(sampled(8), a);
}

TEST_F(HfLlmServeTest, ConcurrentStreamsEachEqualTheirSoloReply) {
  Stream a, b;
  std::thread ta([&] { a = Llm(Request("hf-tiny", "Hello there")); });
  std::thread tb([&] { b = Llm(Request("hf-tiny", "a third prompt")); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(a.text, ExpectedText("Hello there"));
  EXPECT_EQ(b.text, ExpectedText("a third prompt"));
  EXPECT_EQ(a.messages.back().usage().completion_tokens(), kMaxTokens);
  EXPECT_EQ(b.messages.back().usage().completion_tokens(), kMaxTokens);
}

TEST_F(HfLlmServeTest, ClientCancelEndsTheCallAndTheModelKeepsServing) {
  // Nearly 3900 tokens to go: far longer than the cancel takes to arrive.
  v1::LLMRequest req = Request("hf-tiny", "Hi", 3900);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(60)));
  auto reader = stub_->LLM(&ctx, req);
  v1::LLMResponse r;
  int got = 0;
  while (got < 2 && reader->Read(&r)) ++got;
  ASSERT_EQ(got, 2) << cluster_->Logs();
  const auto cancelled_at = std::chrono::steady_clock::now();
  ctx.TryCancel();
  int more = 0;
  while (more < 1000 && reader->Read(&r)) ++more;
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), StatusCode::CANCELLED) << st.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, Scaled(std::chrono::seconds(5)));

  // The orchestrator lets go (in-flight back to 0, bounded wait) and serves the next request
  // exactly as before.
  bool idle = false;
  for (int i = 0; i < 100 && !idle; ++i) {
    v1::ListCapabilitiesResponse caps;
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    if (stub_->ListCapabilities(&c, v1::ListCapabilitiesRequest(), &caps).ok()) {
      idle = true;
      for (const auto& o : caps.orchestrators()) idle = idle && o.in_flight() == 0;
    }
    if (!idle) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(idle);
  Stream s = Llm(Request("hf-tiny", "Hi"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.text, ExpectedText("Hi"));
}

TEST_F(HfLlmServeTest, LivepeerLlmHttpPathServesTheCheckpointUnchanged) {
  const json body = {{"model", "hf-tiny"},
                     {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                     {"temperature", 0},
                     {"max_tokens", kMaxTokens},
                     {"stream", false}};
  HttpResult r =
      HttpRequest(cluster_->gateway().http_port(), "POST", "/llm", "application/json", body.dump());
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  const json j = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.body;
  ASSERT_EQ(j["choices"].size(), 1u) << r.body;
  EXPECT_EQ(j["choices"][0]["message"]["content"], ExpectedText("Hi"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  const int prompt = static_cast<int>(PromptFor("Hi").size());
  EXPECT_EQ(j["usage"], json({{"prompt_tokens", prompt},
                              {"completion_tokens", kMaxTokens},
                              {"total_tokens", prompt + kMaxTokens}}));
}

TEST_F(HfLlmServeTest, PromptPastTheContextIsInvalidArgument) {
  Stream s = Llm(Request("hf-tiny", std::string(kContext + 10, 'x')));
  EXPECT_EQ(s.status.error_code(), StatusCode::INVALID_ARGUMENT) << s.status.error_message();
  EXPECT_NE(s.status.error_message().find("context"), std::string::npos)
      << s.status.error_message();
}

TEST_F(HfLlmServeTest, MissingTokenizerJsonFailsTheLoadWithAClearMessage) {
  const std::string logs = cluster_->Logs();
  EXPECT_NE(logs.find("model hf-broken failed to load"), std::string::npos) << logs;
  EXPECT_NE(logs.find("tokenizer.json is missing"), std::string::npos) << logs;
  EXPECT_NE(
      logs.find("and so is " + (dir_->path() / "hf-no-tokenizer" / "tokenizer.model").string()),
      std::string::npos)
      << logs;
  Stream s = Llm(Request("hf-broken", "Hi"));
  EXPECT_FALSE(s.status.ok());
}

TEST(HfLlmConfigTest, FormatHfOnAnotherPipelineOrAnUnknownOptionIsRefused) {
  TempDir dir;
  auto refused = [&](const json& model, const std::string& needle) {
    const fs::path cfg = dir.path() / "orch.json";
    WriteFile(cfg, json{{"listen", "127.0.0.1:0"}, {"models", json::array({model})}}.dump());
    std::string log;
    const int rc =
        RunCommand(absl::StrCat("timeout 30 ", BinaryPath("switchyard-orchestrator").string(),
                                " --config ", cfg.string(), " 2>&1"),
                   &log);
    EXPECT_NE(rc, 0) << log;
    EXPECT_NE(log.find(needle), std::string::npos) << log;
  };
  refused({{"id", "up"}, {"pipeline", "upscale"}, {"format", "hf"}, {"path", "."}},
          "models[0].format");
  refused({{"id", "x"}, {"pipeline", "llm"}, {"format", "onnx"}, {"path", "."}},
          "'onnx' is not torchscript or hf");
  refused({{"id", "x"},
           {"pipeline", "llm"},
           {"format", "hf"},
           {"path", "."},
           {"options", {{"kv_cache_MB", 1}}}},
          "kv_cache_MB");
}

}  // namespace
}  // namespace switchyard::testing
