#include "runner/llm/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <system_error>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/mutex.h"
#include "runner/llm/pcre2_regex.h"
#include "runner/llm/sentencepiece_model.h"
#include "runner/llm/unicode_util.h"

namespace switchyard::llm {
namespace {

using nlohmann::json;

// tokenizer.json nests 4 levels; anything much deeper is hostile (recursive walks of a deeply
// nested value overflow the stack).
constexpr int kMaxJsonDepth = 32;
constexpr size_t kMaxPatternBytes = 4096;
constexpr size_t kMaxPreTokenizerSteps = 16;
// The per-word cache: words up to this many bytes, up to this many entries (then it starts over,
// so a stream of unique words cannot grow it without bound).
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCacheEntries = 1 << 16;
// A Prepend normalizer's text, a Replace normalizer's pattern and content, Metaspace's
// replacement ("▁" in every real file).
constexpr size_t kMaxNormalizerTextBytes = 64;
// SentencePiece's meta space U+2581, which SentencePiece-style files write for " ".
constexpr absl::string_view kMetaSpace = "\xE2\x96\x81";

// GPT-2's pattern, which a ByteLevel pre-tokenizer with use_regex true applies (Hugging Face's
// tokenizers, pre_tokenizers/byte_level.rs).
constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", field, ": ", what));
}

absl::StatusOr<json> ParseBounded(absl::string_view text, absl::string_view name,
                                  const TokenizerLimits& limits) {
  if (text.size() > limits.max_json_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " is ", text.size(), " bytes, over the limit of ", limits.max_json_bytes));
  }
  // The callback sees each value's depth as it is parsed; throwing stops the parse before a
  // deep value exists (nlohmann's parser itself is iterative, later walks are not).
  struct TooDeep {};
  try {
    return json::parse(
        text.begin(), text.end(),
        [](int depth, json::parse_event_t, json&) {
          if (depth > kMaxJsonDepth) throw TooDeep{};
          return true;
        },
        /*allow_exceptions=*/true);
  } catch (const TooDeep&) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": nested deeper than ", kMaxJsonDepth, " levels"));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": malformed JSON: ", e.what()));
  }
}

// Typed field access that names the field on failure.
absl::StatusOr<const json*> Field(const json& object, absl::string_view parent,
                                  absl::string_view key, json::value_t type, bool optional) {
  const std::string field = parent.empty() ? std::string(key) : absl::StrCat(parent, ".", key);
  auto it = object.find(key);
  if (it == object.end() || (optional && it->is_null())) {
    if (optional) return nullptr;
    return Invalid(field, "missing");
  }
  const bool ok =
      type == json::value_t::number_integer ? it->is_number_integer() : it->type() == type;
  if (!ok)
    return Invalid(field,
                   absl::StrCat("expected ", json(type).type_name(), ", got ", it->type_name()));
  return &*it;
}

absl::StatusOr<std::string> TypeOf(const json& object, absl::string_view field) {
  if (!object.is_object()) return Invalid(field, "expected an object");
  auto it = object.find("type");
  if (it == object.end() || !it->is_string())
    return Invalid(absl::StrCat(field, ".type"), "missing or not a string");
  return it->get<std::string>();
}

// A boolean field: `fallback` when missing or null, INVALID_ARGUMENT naming it when not a boolean
// (a "true" string must not read as false).
absl::StatusOr<bool> BoolOr(const json& object, absl::string_view parent, absl::string_view key,
                            bool fallback) {
  auto it = object.find(std::string(key));
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Invalid(absl::StrCat(parent, ".", key), "expected a boolean");
  return it->get<bool>();
}

// One step of the pre-tokenizer, applied to every piece in turn.
struct PreTokenizerStep {
  std::unique_ptr<Pcre2Regex> split;  // Split(behavior Isolated), or null for ByteLevel
  bool byte_level_prefix_space = false;
  std::unique_ptr<Pcre2Regex> byte_level_regex;  // ByteLevel's use_regex: GPT-2's pattern
};

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool normalized = false;
};

// Leftmost-longest matching of the added tokens' contents: a byte trie (a few hundred tokens of
// a few dozen bytes).
class AddedTokenMatcher {
 public:
  void Add(absl::string_view content, int index) {
    int node = 0;
    for (const char c : content) {
      auto [it, inserted] = nodes_[node].next.try_emplace(static_cast<unsigned char>(c), 0);
      if (inserted) {
        it->second = static_cast<int>(nodes_.size());
        nodes_.emplace_back();
      }
      node = it->second;
    }
    nodes_[node].token = index;
  }
  bool empty() const { return nodes_.size() == 1; }

  // The longest token (its index) starting at text[pos] that `usable` accepts, and its length.
  template <typename Usable>
  std::pair<int, size_t> Match(absl::string_view text, size_t pos, const Usable& usable) const {
    int node = 0;
    std::pair<int, size_t> best{-1, 0};
    for (size_t i = pos; i < text.size(); ++i) {
      const auto& next = nodes_[node].next;
      auto it = next.find(static_cast<unsigned char>(text[i]));
      if (it == next.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0 && usable(nodes_[node].token)) {
        best = {nodes_[node].token, i + 1 - pos};
      }
    }
    return best;
  }

 private:
  struct Node {
    std::map<unsigned char, int> next;
    int token = -1;
  };
  std::vector<Node> nodes_ = std::vector<Node>(1);
};

// The byte-fallback token of a byte: "<0x0A>" (upper-case hex, as SentencePiece writes them).
std::string ByteFallbackToken(unsigned char byte) {
  constexpr char kHex[] = "0123456789ABCDEF";
  return std::string{'<', '0', 'x', kHex[byte >> 4], kHex[byte & 15], '>'};
}

// The byte a "<0xNN>" vocab entry stands for (either case of hex digit), or -1.
int ByteFallbackValue(absl::string_view token) {
  if (token.size() != 6 || !absl::StartsWith(token, "<0x") || token.back() != '>') return -1;
  int value = 0;
  for (const char c : token.substr(3, 2)) {
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                             : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

// One normalizer step: a Unicode normalization form (ICU), Prepend or Replace(String).
struct NormalizerStep {
  std::unique_ptr<UnicodeNormalizer> unicode;
  bool prepend = false;  // else replace (when `unicode` is null)
  std::string pattern;   // Replace's literal pattern
  std::string content;   // Prepend's text, Replace's replacement
};

// A symbol for a character with no vocab entry that no merge has (merges name vocab entries, and
// for tokenizer.model also the characters of Impl::char_symbols).
constexpr int32_t kUnknownSymbol = -2;
// Not a symbol BPE can ever hold (a longer text that is no piece).
constexpr int32_t kNoSymbol = std::numeric_limits<int32_t>::min();

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec)
    return absl::NotFoundError(absl::StrCat("cannot read ", path.string(), ": ", ec.message()));
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " is ", size, " bytes, over the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text(size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  }
  return text;
}

// A load error that names one of the files (the message starts with its name) names it by its
// path in `folder`; read errors already give the full path.
absl::Status WithFolder(const absl::Status& status, const std::filesystem::path& folder) {
  for (const char* file : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"}) {
    if (absl::StartsWith(status.message(), file)) {
      return absl::Status(status.code(), absl::StrCat((folder / file).string(),
                                                      status.message().substr(strlen(file))));
    }
  }
  return status;
}

}  // namespace

struct Tokenizer::Impl {
  TokenizerLimits limits;
  // The model.
  absl::flat_hash_map<std::string, int32_t> vocab;  // byte-level form -> id
  std::vector<std::string> id_bytes;                // id -> the bytes it decodes to
  std::vector<uint8_t> id_kind;                     // 0 none, 1 vocab, 2 added, 3 special
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  absl::flat_hash_map<uint64_t, Merge> merges;
  // Byte-level: the id of each byte's character. SentencePiece-style: of its "<0xNN>" token.
  std::array<int32_t, 256> byte_id{};
  bool ignore_merges = false;
  // model.byte_fallback: the SentencePiece-style BPE of Llama 2 / Mistral / TinyLlama files.
  // Merges start from characters, not bytes; a character with no vocab entry becomes its bytes'
  // "<0xNN>" tokens; there is no byte-level pre-tokenizer and no byte map.
  bool spm = false;
  // Its pre-tokenizer, when the file has one: Metaspace (spaces become "▁", and a "▁" goes first
  // per prepend_scheme). Without it a Prepend/Replace normalizer does that job (older files).
  bool metaspace = false;
  std::string metaspace_replacement;
  enum class PrependScheme { kAlways, kFirst, kNever } prepend_scheme = PrependScheme::kAlways;
  // Its decoder: Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0).
  std::string decoder_replace_pattern, decoder_replace_content;
  bool decoder_strip_leading_space = false;
  // The highest id this file may use: the limit, and at most about twice its number of entries so
  // that one huge id cannot make the id tables huge.
  int64_t id_cap = 0;
  // Normalizer steps, pre-tokenizer steps.
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizer;
  // Added tokens.
  std::vector<AddedToken> added;
  AddedTokenMatcher raw_matcher;         // normalized == false: matched in the input text
  AddedTokenMatcher normalized_matcher;  // normalized == true: matched after normalization
  absl::flat_hash_map<std::string, int32_t> added_by_content;
  std::optional<int32_t> bos, eos;
  bool add_bos_token = false;
  // From a tokenizer.model (spm is true too): SentencePiece's BPE merges any two adjacent symbols
  // whose concatenation is a normal piece, so a character that is no piece itself can still merge;
  // such characters get these ids (-3, -4, ...; never output: left over, they fall back to
  // bytes). Empty for tokenizer.json.
  absl::flat_hash_map<std::string, int32_t> char_symbols;
  // The pieces that merges can make or start from (NORMAL); empty for tokenizer.json (all are).
  std::vector<bool> mergeable;

  // switchyard::Mutex (std::mutex), not absl::Mutex: ThreadSanitizer sees it (common/mutex.h).
  mutable Mutex cache_mu;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache ABSL_GUARDED_BY(cache_mu);

  absl::Status Load(const json& root);
  absl::Status LoadModel(const json& model);
  absl::Status LoadNormalizer(const json& normalizer, const std::string& field);
  absl::Status LoadPreTokenizerStep(const json& step, const std::string& field);
  // `names`, when given, names each entry in errors (else "added_tokens[i]").
  absl::Status LoadAddedTokens(const json& tokens, const std::vector<std::string>* names = nullptr);
  absl::Status LoadDecoder(const json& root);
  absl::Status LoadSpmPreTokenizer(const json& pre);
  absl::Status LoadByteLevelPreTokenizer(const json* pre);
  absl::Status LoadConfig(const json& config);
  absl::Status LoadSentencePiece(const SentencePieceModelFile& file, const json* config);

  absl::StatusOr<std::string> Normalize(absl::string_view text) const;
  absl::Status EncodeSection(absl::string_view section, bool first, bool allow_special,
                             std::vector<int32_t>* out) const;
  absl::Status EncodeNormalized(absl::string_view text, bool first,
                                std::vector<int32_t>* out) const;
  absl::Status EncodeWord(absl::string_view word, std::vector<int32_t>* out) const;
  void Bpe(absl::string_view word, std::vector<int32_t>* out) const;
  // Merges by rank over `ids` (the word's first symbols) in place; kUnknownSymbol never merges.
  // `positions`, when given, gets each result's first symbol's index in the input.
  void ApplyMerges(std::vector<int32_t>* ids, std::vector<int>* positions = nullptr) const;
  // The decoded text of one vocab entry or added token, as the file's decoder gives it.
  std::string DecodedForm(absl::string_view token) const;
  absl::Status CheckOutput(const std::vector<int32_t>& out) const {
    if (out.size() > limits.max_tokens) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the text gives more than ", limits.max_tokens, " tokens"));
    }
    return absl::OkStatus();
  }
};

absl::Status Tokenizer::Impl::Load(const json& root) {
  if (!root.is_object()) return Invalid("(root)", "expected an object");
  auto model = Field(root, "", "model", json::value_t::object, false);
  if (!model.ok()) return model.status();
  {
    size_t entries = 0;
    if (auto v = (*model)->find("vocab"); v != (*model)->end()) entries += v->size();
    if (auto a = root.find("added_tokens"); a != root.end()) entries += a->size();
    id_cap = std::min<int64_t>(limits.max_token_id, 2 * static_cast<int64_t>(entries) + 1024);
  }
  // Which family the file is decides what its decoder and pre-tokenizer must be.
  {
    auto byte_fallback = BoolOr(**model, "model", "byte_fallback", false);
    if (!byte_fallback.ok()) return byte_fallback.status();
    spm = *byte_fallback;
  }
  // The decoder before the model: it says what each vocab entry decodes to.
  if (auto s = LoadDecoder(root); !s.ok()) return s;
  if (auto s = LoadModel(**model); !s.ok()) return s;

  auto normalizer = Field(root, "", "normalizer", json::value_t::object, true);
  if (!normalizer.ok()) return normalizer.status();
  if (*normalizer != nullptr) {
    if (auto s = LoadNormalizer(**normalizer, "normalizer"); !s.ok()) return s;
  }

  auto pre = Field(root, "", "pre_tokenizer", json::value_t::object, true);
  if (!pre.ok()) return pre.status();
  if (spm) {
    if (*pre != nullptr) {
      if (auto s = LoadSpmPreTokenizer(**pre); !s.ok()) return s;
    }
  } else if (auto s = LoadByteLevelPreTokenizer(*pre); !s.ok()) {
    return s;
  }

  // The post-processor only adds template tokens (BOS) that Encode never adds; refuse the kinds
  // whose meaning we have not checked so a future one is not ignored silently.
  auto post = Field(root, "", "post_processor", json::value_t::object, true);
  if (!post.ok()) return post.status();
  if (*post != nullptr) {
    auto type = TypeOf(**post, "post_processor");
    if (!type.ok()) return type.status();
    if (*type != "ByteLevel" && *type != "TemplateProcessing") {
      return Invalid("post_processor.type",
                     absl::StrCat("unsupported \"", *type, "\" (ByteLevel or TemplateProcessing)"));
    }
  }

  auto added_tokens = Field(root, "", "added_tokens", json::value_t::array, true);
  if (!added_tokens.ok()) return added_tokens.status();
  if (*added_tokens != nullptr) {
    if (auto s = LoadAddedTokens(**added_tokens); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::LoadByteLevelPreTokenizer(const json* pre) {
  if (pre == nullptr) {
    return Invalid("pre_tokenizer", "missing; a byte-level BPE needs a ByteLevel pre-tokenizer");
  }
  auto pre_type = TypeOf(*pre, "pre_tokenizer");
  if (!pre_type.ok()) return pre_type.status();
  if (*pre_type == "Sequence") {
    auto steps = Field(*pre, "pre_tokenizer", "pretokenizers", json::value_t::array, false);
    if (!steps.ok()) return steps.status();
    if ((*steps)->size() > kMaxPreTokenizerSteps) {
      return Invalid("pre_tokenizer.pretokenizers", "too many steps");
    }
    for (size_t i = 0; i < (*steps)->size(); ++i) {
      if (auto s = LoadPreTokenizerStep((**steps)[i],
                                        absl::StrCat("pre_tokenizer.pretokenizers[", i, "]"));
          !s.ok()) {
        return s;
      }
    }
  } else {
    if (auto s = LoadPreTokenizerStep(*pre, "pre_tokenizer"); !s.ok()) return s;
  }
  // Every piece must end up in the byte-level alphabet the vocab is written in, so ByteLevel is
  // the last step and comes once.
  if (pre_tokenizer.empty() || pre_tokenizer.back().split != nullptr) {
    return Invalid("pre_tokenizer",
                   "the last step must be ByteLevel (only byte-level BPE, or SentencePiece-style "
                   "BPE with model.byte_fallback, is supported)");
  }
  for (size_t i = 0; i + 1 < pre_tokenizer.size(); ++i) {
    if (pre_tokenizer[i].split == nullptr) {
      return Invalid("pre_tokenizer", "ByteLevel must be the last step and come only once");
    }
  }
  return absl::OkStatus();
}

// SentencePiece-style files have no pre-tokenizer (a Prepend/Replace normalizer puts the "▁"s
// in) or Metaspace with split false: the whole section is one word for BPE.
absl::Status Tokenizer::Impl::LoadSpmPreTokenizer(const json& pre) {
  auto type = TypeOf(pre, "pre_tokenizer");
  if (!type.ok()) return type.status();
  if (*type != "Metaspace") {
    return Invalid("pre_tokenizer.type",
                   absl::StrCat("unsupported \"", *type,
                                "\" (with model.byte_fallback only none or Metaspace)"));
  }
  for (const auto& [key, value] : pre.items()) {
    if (key != "type" && key != "replacement" && key != "prepend_scheme" && key != "split") {
      return Invalid(absl::StrCat("pre_tokenizer.", key.substr(0, 64)),
                     "not supported (Metaspace takes replacement, prepend_scheme, split)");
    }
  }
  auto replacement = Field(pre, "pre_tokenizer", "replacement", json::value_t::string, false);
  if (!replacement.ok()) return replacement.status();
  metaspace_replacement = (*replacement)->get<std::string>();
  if (metaspace_replacement.empty() || metaspace_replacement.size() > kMaxNormalizerTextBytes ||
      FindInvalidUtf8(metaspace_replacement) != std::string::npos) {
    return Invalid("pre_tokenizer.replacement", "empty, too long or not UTF-8");
  }
  auto scheme = Field(pre, "pre_tokenizer", "prepend_scheme", json::value_t::string, false);
  if (!scheme.ok()) return scheme.status();
  const std::string& name = (*scheme)->get_ref<const std::string&>();
  if (name == "always") {
    prepend_scheme = PrependScheme::kAlways;
  } else if (name == "first") {
    prepend_scheme = PrependScheme::kFirst;
  } else if (name == "never") {
    prepend_scheme = PrependScheme::kNever;
  } else {
    return Invalid("pre_tokenizer.prepend_scheme",
                   absl::StrCat("unsupported \"", name.substr(0, 64), "\" (always, first, never)"));
  }
  // split true cuts the text before each "▁" first; real files of this family say false.
  auto split = Field(pre, "pre_tokenizer", "split", json::value_t::boolean, false);
  if (!split.ok()) return split.status();
  if ((*split)->get<bool>()) return Invalid("pre_tokenizer.split", "true is not supported");
  metaspace = true;
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::LoadModel(const json& model) {
  auto type = TypeOf(model, "model");
  if (!type.ok()) return type.status();
  if (*type != "BPE") {
    return Invalid("model.type", absl::StrCat("unsupported \"", *type, "\" (only BPE)"));
  }
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return Invalid("model.dropout", "BPE dropout is not supported (it makes encoding random)");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto it = model.find(key); it != model.end() && !it->is_null()) {
      if (!it->is_string() || !it->get_ref<const std::string&>().empty()) {
        return Invalid(absl::StrCat("model.", key), "not supported (byte-level BPE has none)");
      }
    }
  }
  // fuse_unk joins runs of unk_token; with every "<0xNN>" in the vocab (checked below) nothing
  // ever becomes unk_token, so both are only type-checked.
  if (auto fuse = BoolOr(model, "model", "fuse_unk", false); !fuse.ok()) return fuse.status();
  if (auto unk = Field(model, "model", "unk_token", json::value_t::string, true); !unk.ok()) {
    return unk.status();
  }
  if (auto it = model.find("ignore_merges"); it != model.end() && !it->is_null()) {
    if (!it->is_boolean()) return Invalid("model.ignore_merges", "expected a boolean");
    ignore_merges = it->get<bool>();
  }

  auto vocab_json = Field(model, "model", "vocab", json::value_t::object, false);
  if (!vocab_json.ok()) return vocab_json.status();
  if ((*vocab_json)->size() > static_cast<size_t>(limits.max_token_id) + 1) {
    return Invalid("model.vocab", "more entries than the id limit");
  }
  vocab.reserve((*vocab_json)->size());
  for (const auto& [token, id_json] : (*vocab_json)->items()) {
    if (!id_json.is_number_integer()) {
      return Invalid(absl::StrCat("model.vocab[\"", token.substr(0, 64), "\"]"),
                     "expected an integer id");
    }
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id > id_cap) {
      return Invalid(absl::StrCat("model.vocab[\"", token.substr(0, 64), "\"]"),
                     absl::StrCat("id ", id, " outside 0..", id_cap));
    }
    if (token.empty() || token.size() > limits.max_token_bytes ||
        FindInvalidUtf8(token) != std::string::npos) {
      return Invalid("model.vocab",
                     absl::StrCat("entry for id ", id, " is empty, too long or not UTF-8"));
    }
    if (static_cast<size_t>(id) >= id_kind.size()) {
      id_kind.resize(id + 1, 0);
      id_bytes.resize(id + 1);
    }
    if (id_kind[id] != 0) return Invalid("model.vocab", absl::StrCat("id ", id, " used twice"));
    id_kind[id] = 1;
    vocab.emplace(token, static_cast<int32_t>(id));
    if (spm) {
      id_bytes[id] = DecodedForm(token);
      continue;
    }
    // The bytes a vocab entry stands for: each character through the byte map. An entry with a
    // character outside the map (none in real files) decodes to its own UTF-8, as Hugging
    // Face's ByteLevel decoder does.
    std::string bytes;
    bool mapped = true;
    for (size_t pos = 0; pos < token.size();) {
      const int b = CharByte(NextCodePoint(token, &pos));
      if (b < 0) {
        mapped = false;
        break;
      }
      bytes.push_back(static_cast<char>(b));
    }
    id_bytes[id] = mapped ? std::move(bytes) : token;
  }
  // Every byte must have its token, so that any text encodes (no unk_token is ever needed).
  for (int b = 0; b < 256; ++b) {
    if (spm) {
      const std::string name = ByteFallbackToken(static_cast<unsigned char>(b));
      auto it = vocab.find(name);
      if (it == vocab.end()) {
        return Invalid("model.vocab",
                       absl::StrCat("no entry \"", name, "\"; model.byte_fallback needs all 256"));
      }
      byte_id[b] = it->second;
      continue;
    }
    auto it = vocab.find(ByteChar(static_cast<unsigned char>(b)));
    if (it == vocab.end()) {
      return Invalid("model.vocab",
                     absl::StrCat("no entry for byte 0x", absl::Hex(b, absl::kZeroPad2), " (\"",
                                  ByteChar(static_cast<unsigned char>(b)),
                                  "\"); every byte-level BPE vocab has all 256"));
    }
    byte_id[b] = it->second;
  }

  auto merges_json = Field(model, "model", "merges", json::value_t::array, false);
  if (!merges_json.ok()) return merges_json.status();
  if ((*merges_json)->size() > limits.max_merges) {
    return Invalid("model.merges", absl::StrCat((*merges_json)->size(),
                                                " merges, over the limit of ", limits.max_merges));
  }
  merges.reserve((*merges_json)->size());
  int32_t rank = 0;
  for (const json& merge : **merges_json) {
    const std::string field = absl::StrCat("model.merges[", rank, "]");
    absl::string_view left, right;
    if (merge.is_string()) {
      // "a b": byte-level tokens never contain a space (it is "Ġ", or "▁" in SentencePiece-style
      // files), so one space separates.
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return Invalid(field, "expected \"left right\" with one space");
      }
      left = absl::string_view(s).substr(0, space);
      right = absl::string_view(s).substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get_ref<const std::string&>();
      right = merge[1].get_ref<const std::string&>();
    } else {
      return Invalid(field, "expected \"left right\" or [\"left\", \"right\"]");
    }
    auto l = vocab.find(left);
    auto r = vocab.find(right);
    if (l == vocab.end() || r == vocab.end()) {
      return Invalid(field, "a part is not in model.vocab");
    }
    auto m = vocab.find(absl::StrCat(left, right));
    if (m == vocab.end()) return Invalid(field, "the merged token is not in model.vocab");
    // A pair listed twice takes its last rank, as in Hugging Face's tokenizers (Rust and JS
    // both build their rank map by inserting in order).
    merges.insert_or_assign(PairKey(l->second, r->second), Merge{rank, m->second});
    ++rank;
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::LoadNormalizer(const json& normalizer, const std::string& field) {
  auto type = TypeOf(normalizer, field);
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    auto steps = Field(normalizer, field, "normalizers", json::value_t::array, false);
    if (!steps.ok()) return steps.status();
    if ((*steps)->size() > kMaxPreTokenizerSteps) {
      return Invalid(field, "too many normalizers");
    }
    for (size_t i = 0; i < (*steps)->size(); ++i) {
      const json& step = (**steps)[i];
      const std::string step_field = absl::StrCat(field, ".normalizers[", i, "]");
      auto step_type = TypeOf(step, step_field);
      if (!step_type.ok()) return step_type.status();
      if (*step_type == "Sequence") return Invalid(step_field, "nested Sequence not supported");
      if (auto s = LoadNormalizer(step, step_field); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // A literal text of Prepend / Replace: non-empty (but Replace's content), short, UTF-8.
  auto text_field = [&](const json& object, absl::string_view parent, absl::string_view key,
                        bool may_be_empty) -> absl::StatusOr<std::string> {
    auto value = Field(object, parent, key, json::value_t::string, false);
    if (!value.ok()) return value.status();
    const std::string& text = (*value)->get_ref<const std::string&>();
    if ((text.empty() && !may_be_empty) || text.size() > kMaxNormalizerTextBytes ||
        FindInvalidUtf8(text) != std::string::npos) {
      return Invalid(absl::StrCat(parent, ".", key),
                     absl::StrCat(may_be_empty ? "" : "empty, ", "over ", kMaxNormalizerTextBytes,
                                  " bytes or not UTF-8"));
    }
    return text;
  };
  NormalizerStep step;
  if (*type == "Prepend") {
    auto prepend = text_field(normalizer, field, "prepend", false);
    if (!prepend.ok()) return prepend.status();
    step.prepend = true;
    step.content = *std::move(prepend);
  } else if (*type == "Replace") {
    auto pattern = Field(normalizer, field, "pattern", json::value_t::object, false);
    if (!pattern.ok()) return pattern.status();
    const std::string pattern_field = absl::StrCat(field, ".pattern");
    if ((*pattern)->size() != 1 || !(*pattern)->contains("String")) {
      return Invalid(pattern_field, "only {\"String\": ...} is supported (no Regex)");
    }
    auto from = text_field(**pattern, pattern_field, "String", false);
    if (!from.ok()) return from.status();
    auto to = text_field(normalizer, field, "content", true);
    if (!to.ok()) return to.status();
    step.pattern = *std::move(from);
    step.content = *std::move(to);
  } else {
    auto normalizer_or = UnicodeNormalizer::Create(*type);
    if (!normalizer_or.ok()) {
      if (normalizer_or.status().code() != absl::StatusCode::kInvalidArgument) {
        return normalizer_or.status();
      }
      return Invalid(absl::StrCat(field, ".type"),
                     absl::StrCat("unsupported \"", *type,
                                  "\" (NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence)"));
    }
    step.unicode = *std::move(normalizer_or);
  }
  normalizers.push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::LoadPreTokenizerStep(const json& step, const std::string& field) {
  auto type = TypeOf(step, field);
  if (!type.ok()) return type.status();
  PreTokenizerStep out;
  if (*type == "Split") {
    auto behavior = Field(step, field, "behavior", json::value_t::string, false);
    if (!behavior.ok()) return behavior.status();
    if ((*behavior)->get_ref<const std::string&>() != "Isolated") {
      return Invalid(
          absl::StrCat(field, ".behavior"),
          absl::StrCat("unsupported \"", (*behavior)->get<std::string>(), "\" (only Isolated)"));
    }
    auto invert = BoolOr(step, field, "invert", false);
    if (!invert.ok()) return invert.status();
    if (*invert) return Invalid(absl::StrCat(field, ".invert"), "true is not supported");
    auto pattern = Field(step, field, "pattern", json::value_t::object, false);
    if (!pattern.ok()) return pattern.status();
    const std::string pattern_field = absl::StrCat(field, ".pattern");
    const json* text = nullptr;
    bool literal = false;
    if (auto it = (*pattern)->find("Regex"); it != (*pattern)->end()) {
      text = &*it;
    } else if (auto it = (*pattern)->find("String"); it != (*pattern)->end()) {
      text = &*it;
      literal = true;
    }
    if (text == nullptr || !text->is_string() || text->get_ref<const std::string&>().empty() ||
        text->get_ref<const std::string&>().size() > kMaxPatternBytes) {
      return Invalid(pattern_field,
                     "expected {\"Regex\": ...} or {\"String\": ...} with a "
                     "non-empty pattern of at most 4096 bytes");
    }
    auto regex = Pcre2Regex::Compile(text->get_ref<const std::string&>(), literal);
    if (!regex.ok()) {
      return Invalid(absl::StrCat(pattern_field, literal ? ".String" : ".Regex"),
                     regex.status().message());
    }
    out.split = *std::move(regex);
  } else if (*type == "ByteLevel") {
    auto prefix_space = BoolOr(step, field, "add_prefix_space", false);
    if (!prefix_space.ok()) return prefix_space.status();
    out.byte_level_prefix_space = *prefix_space;
    // Files written before use_regex existed mean true (GPT-2's).
    auto use_regex = BoolOr(step, field, "use_regex", true);
    if (!use_regex.ok()) return use_regex.status();
    if (*use_regex) {
      auto regex = Pcre2Regex::Compile(kGpt2Pattern, /*literal=*/false);
      if (!regex.ok()) return regex.status();
      out.byte_level_regex = *std::move(regex);
    }
  } else {
    return Invalid(absl::StrCat(field, ".type"),
                   absl::StrCat("unsupported \"", *type, "\" (Sequence, Split, ByteLevel)"));
  }
  pre_tokenizer.push_back(std::move(out));
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::LoadDecoder(const json& root) {
  auto decoder = Field(root, "", "decoder", json::value_t::object, true);
  if (!decoder.ok()) return decoder.status();
  const char* const wanted =
      spm ? "with model.byte_fallback only Sequence[Replace(\"▁\", \" \"), ByteFallback, Fuse, "
            "Strip(\" \", 1, 0)]"
          : "only ByteLevel";
  if (*decoder == nullptr) return Invalid("decoder", absl::StrCat("missing; ", wanted));
  auto type = TypeOf(**decoder, "decoder");
  if (!type.ok()) return type.status();
  if (!spm) {
    if (*type != "ByteLevel") {
      return Invalid("decoder.type", absl::StrCat("unsupported \"", *type, "\" (", wanted, ")"));
    }
    return absl::OkStatus();
  }
  // SentencePiece-style: exactly the four steps Llama 2 / Mistral files have.
  auto mismatch = [&](absl::string_view field, absl::string_view what) {
    return Invalid(field, absl::StrCat(what, " (", wanted, ")"));
  };
  if (*type != "Sequence") {
    return mismatch("decoder.type", absl::StrCat("unsupported \"", *type, "\""));
  }
  auto steps = Field(**decoder, "decoder", "decoders", json::value_t::array, false);
  if (!steps.ok()) return steps.status();
  static constexpr const char* kSteps[] = {"Replace", "ByteFallback", "Fuse", "Strip"};
  if ((*steps)->size() != 4) return mismatch("decoder.decoders", "not the four steps");
  for (size_t i = 0; i < 4; ++i) {
    const std::string field = absl::StrCat("decoder.decoders[", i, "]");
    const json& step = (**steps)[i];
    auto step_type = TypeOf(step, field);
    if (!step_type.ok()) return step_type.status();
    if (*step_type != kSteps[i]) {
      return mismatch(absl::StrCat(field, ".type"),
                      absl::StrCat("unexpected \"", *step_type, "\""));
    }
    for (const auto& [key, value] : step.items()) {
      const bool known = key == "type" || (i == 0 && (key == "pattern" || key == "content")) ||
                         (i == 3 && (key == "content" || key == "start" || key == "stop"));
      if (!known) return mismatch(absl::StrCat(field, ".", key.substr(0, 64)), "not supported");
    }
  }
  const json& replace = (**steps)[0];
  auto pattern = Field(replace, "decoder.decoders[0]", "pattern", json::value_t::object, false);
  if (!pattern.ok()) return pattern.status();
  auto content = Field(replace, "decoder.decoders[0]", "content", json::value_t::string, false);
  if (!content.ok()) return content.status();
  if ((*pattern)->size() != 1 || !(*pattern)->contains("String") ||
      (**pattern)["String"] != std::string(kMetaSpace) || **content != " ") {
    return mismatch("decoder.decoders[0]", "not Replace(\"▁\", \" \")");
  }
  decoder_replace_pattern = std::string(kMetaSpace);
  decoder_replace_content.assign(1, ' ');
  const json& strip = (**steps)[3];
  if (strip.value("content", json()) != " " || strip.value("start", json()) != 1 ||
      strip.value("stop", json()) != 0) {
    return mismatch("decoder.decoders[3]", "not Strip(\" \", 1, 0)");
  }
  decoder_strip_leading_space = true;
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::LoadAddedTokens(const json& tokens,
                                              const std::vector<std::string>* names) {
  if (tokens.size() > limits.max_added_tokens) {
    return Invalid("added_tokens", absl::StrCat(tokens.size(), " entries, over the limit of ",
                                                limits.max_added_tokens));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string field =
        names != nullptr ? (*names)[i] : absl::StrCat("added_tokens[", i, "]");
    const json& t = tokens[i];
    if (!t.is_object()) return Invalid(field, "expected an object");
    auto id_json = Field(t, field, "id", json::value_t::number_integer, false);
    if (!id_json.ok()) return id_json.status();
    auto content_json = Field(t, field, "content", json::value_t::string, false);
    if (!content_json.ok()) return content_json.status();
    const int64_t id = (*id_json)->get<int64_t>();
    const std::string& content = (*content_json)->get_ref<const std::string&>();
    if (id < 0 || id > id_cap) {
      return Invalid(absl::StrCat(field, ".id"), absl::StrCat(id, " outside 0..", id_cap));
    }
    if (content.empty() || content.size() > limits.max_added_token_bytes ||
        FindInvalidUtf8(content) != std::string::npos) {
      return Invalid(
          absl::StrCat(field, ".content"),
          absl::StrCat("empty, over ", limits.max_added_token_bytes, " bytes or not UTF-8"));
    }
    // lstrip/rstrip/single_word change where a token matches; the byte-level families we serve
    // leave them false, so refuse rather than match differently from Hugging Face.
    for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
      auto value = BoolOr(t, field, flag, false);
      if (!value.ok()) return value.status();
      if (*value) return Invalid(absl::StrCat(field, ".", flag), "true is not supported");
    }
    auto special = BoolOr(t, field, "special", false);
    if (!special.ok()) return special.status();
    auto normalized_flag = BoolOr(t, field, "normalized", false);
    if (!normalized_flag.ok()) return normalized_flag.status();
    AddedToken token{content, static_cast<int32_t>(id), *special, *normalized_flag};
    if (static_cast<size_t>(id) >= id_kind.size()) {
      id_kind.resize(id + 1, 0);
      id_bytes.resize(id + 1);
    }
    if (id_kind[id] >= 2) return Invalid(absl::StrCat(field, ".id"), "used by another added token");
    if (id_kind[id] == 1) {
      // An added token may restate a vocab entry (same id, same text), never replace another.
      auto it = vocab.find(content);
      if (it == vocab.end() || it->second != id) {
        return Invalid(absl::StrCat(field, ".id"), "already a different model.vocab entry");
      }
    }
    if (added_by_content.contains(content)) {
      return Invalid(absl::StrCat(field, ".content"), "the same content as an earlier one");
    }
    id_kind[id] = token.special ? 3 : 2;
    // Added tokens decode to their text, not through the byte map (through Replace in
    // SentencePiece-style files, which applies to every token).
    id_bytes[id] = spm ? DecodedForm(content) : content;
    const int index = static_cast<int>(added.size());
    added_by_content.emplace(content, token.id);
    if (token.normalized && !normalizers.empty()) {
      // Matched in normalized text, so against its normalized form.
      auto normalized = Normalize(content);
      if (!normalized.ok()) return normalized.status();
      if (normalized->empty() || normalized->size() > 4 * limits.max_added_token_bytes) {
        return Invalid(absl::StrCat(field, ".content"), "empty or too long once normalized");
      }
      normalized_matcher.Add(*normalized, index);
    } else {
      raw_matcher.Add(content, index);
    }
    added.push_back(std::move(token));
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::LoadConfig(const json& config) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json: expected an object");
  }
  auto lookup = [&](const char* key, std::optional<int32_t>* out) -> absl::Status {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) return absl::OkStatus();
    const json* content = &*it;
    if (it->is_object()) {
      auto c = it->find("content");
      if (c == it->end())
        content = nullptr;
      else
        content = &*c;
    }
    if (content == nullptr || !content->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer_config.json: ", key, ": expected a string or {\"content\": string}"));
    }
    const std::string& text = content->get_ref<const std::string&>();
    if (auto a = added_by_content.find(text); a != added_by_content.end()) {
      *out = a->second;
    } else if (auto v = vocab.find(text); v != vocab.end()) {
      *out = v->second;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", key, ": \"",
                                                     text.substr(0, 64), "\" is no token"));
    }
    return absl::OkStatus();
  };
  if (auto s = lookup("bos_token", &bos); !s.ok()) return s;
  if (auto s = lookup("eos_token", &eos); !s.ok()) return s;
  if (auto it = config.find("add_bos_token"); it != config.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return absl::InvalidArgumentError("tokenizer_config.json: add_bos_token: expected a boolean");
    }
    add_bos_token = it->get<bool>();
    if (add_bos_token && !bos.has_value()) {
      return absl::InvalidArgumentError(
          "tokenizer_config.json: add_bos_token is true but bos_token names no token");
    }
  }
  return absl::OkStatus();
}

// tokenizer.model: the pieces fill the id tables that Encode, Decode, TokenId and IsSpecial use,
// and the file's rules become this class's SentencePiece-style BPE run the way SentencePiece's
// BPE (bpe_model.cc) runs: the normalizer puts "▁" first and turns spaces into "▁" (Prepend and
// Replace steps); the text is split into characters; the adjacent pair whose concatenation is a
// normal piece with the highest score merges first, the leftmost among equal scores (so every
// split of a piece into two symbols is a "merge" ranked by the piece's score, and equal scores
// share a rank, which the heap breaks by position); characters left over that are no piece fall
// back to their bytes' <0xNN> pieces. Decode is the fast tokenizer's (Replace("▁", " "),
// ByteFallback, Fuse, Strip). tokenizer_config.json's added_tokens_decoder adds or restates added
// tokens as tokenizer.json's added_tokens would, and the control and unknown pieces it does not
// list become special added tokens (transformers' LlamaTokenizer makes <s>, </s> and <unk>
// special tokens by default). What SentencePiece does that this does not is refused.
absl::Status Tokenizer::Impl::LoadSentencePiece(const SentencePieceModelFile& file,
                                                const json* config) {
  using File = SentencePieceModelFile;
  auto refuse = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.model: ", what));
  };
  if (file.model_type != File::kBpe) {
    return refuse(absl::StrCat("model_type ", file.model_type,
                               " is not supported (only BPE, 2: Llama 2 / Mistral; Unigram "
                               "files such as T5's or Gemma's are not)"));
  }
  if (!file.byte_fallback) return refuse("byte_fallback false is not supported");
  if (file.treat_whitespace_as_suffix) {
    return refuse("treat_whitespace_as_suffix true is not supported");
  }
  if (file.precompiled_charsmap_bytes > 0 || file.normalization_rule_tsv) {
    return refuse(absl::StrCat("normalizer_spec \"", file.normalizer_name.substr(0, 64),
                               "\" has normalization rules (a precompiled charsmap, e.g. "
                               "nmt_nfkc): only the identity normalizer is supported"));
  }
  if (file.denormalizer_rules) return refuse("denormalizer_spec rules are not supported");
  if (file.remove_extra_whitespaces) {
    return refuse("normalizer_spec.remove_extra_whitespaces true is not supported");
  }
  if (!file.escape_whitespaces) {
    return refuse("normalizer_spec.escape_whitespaces false is not supported");
  }
  const int pieces = static_cast<int>(file.pieces.size());
  if (pieces == 0) return refuse("no pieces");
  spm = true;
  decoder_replace_pattern = std::string(kMetaSpace);
  decoder_replace_content.assign(1, ' ');
  decoder_strip_leading_space = true;
  if (file.add_dummy_prefix) {
    NormalizerStep prepend;
    prepend.prepend = true;
    prepend.content = std::string(kMetaSpace);
    normalizers.push_back(std::move(prepend));
  }
  NormalizerStep replace;
  replace.pattern = " ";
  replace.content = std::string(kMetaSpace);
  normalizers.push_back(std::move(replace));

  const json* decoder_entries = nullptr;
  if (config != nullptr) {
    if (!config->is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json: expected an object");
    }
    if (auto it = config->find("added_tokens_decoder"); it != config->end() && !it->is_null()) {
      if (!it->is_object()) {
        return absl::InvalidArgumentError(
            "tokenizer_config.json: added_tokens_decoder: expected an object");
      }
      decoder_entries = &*it;
    }
  }
  const size_t entries =
      static_cast<size_t>(pieces) + (decoder_entries != nullptr ? decoder_entries->size() : 0);
  id_cap = std::min<int64_t>(limits.max_token_id, 2 * static_cast<int64_t>(entries) + 1024);
  id_kind.assign(pieces, 1);
  id_bytes.resize(pieces);
  mergeable.assign(pieces, false);
  vocab.reserve(pieces);
  int unknown_pieces = 0;
  size_t split_work = 0;
  std::array<bool, 256> have_byte{};
  for (int id = 0; id < pieces; ++id) {
    const File::Piece& p = file.pieces[id];
    const std::string where = absl::StrCat("piece ", id);
    if (p.piece.empty() || p.piece.size() > limits.max_token_bytes ||
        FindInvalidUtf8(p.piece) != std::string::npos) {
      return refuse(absl::StrCat(where, " is empty, too long or not UTF-8"));
    }
    if (!vocab.emplace(p.piece, id).second) {
      return refuse(absl::StrCat(where, " (\"", p.piece.substr(0, 64), "\") is there twice"));
    }
    switch (p.type) {
      case File::kNormal:
        if (p.score != p.score) return refuse(absl::StrCat(where, " has a NaN score"));
        mergeable[id] = true;
        split_work += p.piece.size() * p.piece.size();
        break;
      case File::kByte: {
        const int byte = ByteFallbackValue(p.piece);
        if (byte < 0) return refuse(absl::StrCat(where, " is a byte piece but not \"<0xNN>\""));
        if (have_byte[byte]) return refuse(absl::StrCat(where, ": byte ", byte, " twice"));
        have_byte[byte] = true;
        byte_id[byte] = id;
        break;
      }
      case File::kUnknown:
        ++unknown_pieces;
        break;
      case File::kControl:
        break;
      case File::kUserDefined:
        return refuse(absl::StrCat(where, " (\"", p.piece.substr(0, 64),
                                   "\") is USER_DEFINED: not supported (list such tokens in "
                                   "tokenizer_config.json's added_tokens_decoder)"));
      case File::kUnused:
        return refuse(absl::StrCat(where, " is UNUSED: not supported"));
      default:
        return refuse(absl::StrCat(where, " has an unknown type ", p.type));
    }
    id_bytes[id] = DecodedForm(p.piece);
  }
  // SentencePiece refuses a file without exactly one unknown piece; so do we.
  if (unknown_pieces != 1) return refuse("needs exactly one UNKNOWN piece (<unk>)");
  for (int b = 0; b < 256; ++b) {
    if (!have_byte[b]) {
      return refuse(absl::StrCat("no byte piece \"",
                                 ByteFallbackToken(static_cast<unsigned char>(b)),
                                 "\"; byte_fallback needs all 256"));
    }
  }
  // Every split of a normal piece into two symbols (each a normal piece or one character) is a
  // merge ranked by the piece's score. The splits cost the squares of the pieces' lengths: real
  // files (pieces of at most 16 characters) need a few million steps; a hostile one is capped.
  if (split_work > (size_t{1} << 28)) return refuse("the pieces are too long in total");
  std::vector<int32_t> by_score;
  for (int id = 0; id < pieces; ++id) {
    if (mergeable[id]) by_score.push_back(id);
  }
  std::stable_sort(by_score.begin(), by_score.end(), [&](int32_t a, int32_t b) {
    return file.pieces[a].score > file.pieces[b].score;
  });
  std::vector<int32_t> rank_of(pieces, 0);
  for (size_t i = 0, rank = 0; i < by_score.size(); ++i) {
    if (i > 0 && file.pieces[by_score[i]].score != file.pieces[by_score[i - 1]].score) ++rank;
    rank_of[by_score[i]] = static_cast<int32_t>(rank);
  }
  auto symbol = [&](absl::string_view text, bool one_char) -> int32_t {
    if (auto it = vocab.find(text); it != vocab.end() && mergeable[it->second]) return it->second;
    if (!one_char) return kNoSymbol;
    auto [it, inserted] =
        char_symbols.try_emplace(text, -3 - static_cast<int32_t>(char_symbols.size()));
    return it->second;
  };
  for (int id = 0; id < pieces; ++id) {
    if (!mergeable[id]) continue;
    const absl::string_view piece = file.pieces[id].piece;
    std::vector<size_t> bounds;
    for (size_t pos = 0; pos < piece.size();) {
      NextCodePoint(piece, &pos);
      bounds.push_back(pos);
    }
    for (size_t k = 0; k + 1 < bounds.size(); ++k) {
      const size_t cut = bounds[k];
      const int32_t left = symbol(piece.substr(0, cut), k == 0);
      const int32_t right = symbol(piece.substr(cut), k + 2 == bounds.size());
      if (left == kNoSymbol || right == kNoSymbol) continue;
      merges.insert_or_assign(PairKey(left, right), Merge{rank_of[id], id});
    }
  }
  if (merges.size() > limits.max_merges) {
    return refuse(absl::StrCat(merges.size(), " merges, over the limit of ", limits.max_merges));
  }

  if (decoder_entries != nullptr) {
    if (decoder_entries->size() > limits.max_added_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer_config.json: added_tokens_decoder has ", decoder_entries->size(),
                       " entries, over the limit of ", limits.max_added_tokens));
    }
    // {"32000": {"content": ...}, ...} as tokenizer.json's [{"id": 32000, "content": ...}], in
    // id order (the object's keys sort as text).
    std::vector<std::pair<int64_t, const json*>> by_id;
    for (const auto& [key, value] : decoder_entries->items()) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(key, &id) || id < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer_config.json: added_tokens_decoder: key \"", key.substr(0, 64),
                         "\" is not an id"));
      }
      by_id.emplace_back(id, &value);
    }
    std::sort(by_id.begin(), by_id.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    json tokens = json::array();
    std::vector<std::string> names;
    for (const auto& [id, value] : by_id) {
      json token = value->is_object() ? *value : json();
      if (token.is_object()) token["id"] = id;
      tokens.push_back(std::move(token));
      names.push_back(absl::StrCat("added_tokens_decoder[\"", id, "\"]"));
    }
    if (auto s = LoadAddedTokens(tokens, &names); !s.ok()) {
      // Invalid() names tokenizer.json; these entries came from tokenizer_config.json.
      std::string message(s.message());
      if (absl::StartsWith(message, "tokenizer.json: ")) {
        message.replace(0, 14, "tokenizer_config.json");
      }
      return absl::Status(s.code(), message);
    }
  }
  for (int id = 0; id < pieces; ++id) {
    const int type = file.pieces[id].type;
    if (type != File::kControl && type != File::kUnknown) continue;
    const std::string& piece = file.pieces[id].piece;
    if (id_kind[id] != 1 || added_by_content.contains(piece)) continue;  // listed in the config
    if (added.size() >= limits.max_added_tokens || piece.size() > limits.max_added_token_bytes) {
      return refuse(absl::StrCat("too many or too long control pieces (piece ", id, ")"));
    }
    id_kind[id] = 3;
    id_bytes[id] = DecodedForm(piece);
    added_by_content.emplace(piece, id);
    raw_matcher.Add(piece, static_cast<int>(added.size()));
    added.push_back(AddedToken{piece, id, /*special=*/true, /*normalized=*/false});
  }
  // The file's own <s> / </s> (TrainerSpec's bos_piece / eos_piece, when control pieces) unless
  // tokenizer_config.json names others (LoadConfig, next).
  for (auto [name, out] : {std::pair{&file.bos_piece, &bos}, std::pair{&file.eos_piece, &eos}}) {
    if (auto it = vocab.find(*name);
        it != vocab.end() && file.pieces[it->second].type == File::kControl) {
      *out = it->second;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Impl::Normalize(absl::string_view text) const {
  std::string out(text);
  // A Replace with a longer content grows the text: never past this (the text limit, 4 times over).
  const size_t cap = 4 * limits.max_text_bytes + 4 * kMaxNormalizerTextBytes;
  for (const NormalizerStep& step : normalizers) {
    if (step.unicode != nullptr) {
      auto s = step.unicode->Normalize(out);
      if (!s.ok()) return s.status();
      out = *std::move(s);
    } else if (step.prepend) {
      // Hugging Face's Prepend leaves an empty text empty.
      if (!out.empty()) out.insert(0, step.content);
    } else if (step.content.size() > step.pattern.size()) {
      size_t count = 0;
      for (size_t pos = out.find(step.pattern); pos != std::string::npos;
           pos = out.find(step.pattern, pos + step.pattern.size())) {
        ++count;
      }
      if (out.size() + count * (step.content.size() - step.pattern.size()) > cap) {
        return absl::InvalidArgumentError("the text grows too long in the normalizer");
      }
      out = absl::StrReplaceAll(out, {{step.pattern, step.content}});
    } else {
      out = absl::StrReplaceAll(out, {{step.pattern, step.content}});
    }
    if (out.size() > cap) {
      return absl::InvalidArgumentError("the text grows too long in the normalizer");
    }
  }
  return out;
}

std::string Tokenizer::Impl::DecodedForm(absl::string_view token) const {
  if (const int byte = ByteFallbackValue(token); byte >= 0) return std::string(1, char(byte));
  return absl::StrReplaceAll(token, {{decoder_replace_pattern, decoder_replace_content}});
}

// A stretch of input between raw-matched added tokens: normalize it, split out the normalized
// added tokens, pre-tokenize and BPE the rest. `first`: the stretch starts the text (Metaspace's
// prepend_scheme "first").
absl::Status Tokenizer::Impl::EncodeSection(absl::string_view section, bool first,
                                            bool allow_special, std::vector<int32_t>* out) const {
  if (section.empty()) return absl::OkStatus();
  auto normalized = Normalize(section);
  if (!normalized.ok()) return normalized.status();
  const absl::string_view text = *normalized;
  if (normalized_matcher.empty()) return EncodeNormalized(text, first, out);
  auto usable = [&](int index) { return allow_special || !added[index].special; };
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    auto [index, length] = normalized_matcher.Match(text, pos, usable);
    if (index < 0) {
      ++pos;
      continue;
    }
    if (auto s = EncodeNormalized(text.substr(start, pos - start), first, out); !s.ok()) return s;
    out->push_back(added[index].id);
    pos += length;
    start = pos;
  }
  return EncodeNormalized(text.substr(start), first, out);
}

absl::Status Tokenizer::Impl::EncodeNormalized(absl::string_view text, bool first,
                                               std::vector<int32_t>* out) const {
  if (text.empty()) return absl::OkStatus();
  if (spm) {
    // No pre-split: the whole stretch is one word (Metaspace with split false, or none).
    if (!metaspace) return EncodeWord(text, out);
    std::string word = absl::StrReplaceAll(text, {{" ", metaspace_replacement}});
    if (!absl::StartsWith(word, metaspace_replacement) &&
        (prepend_scheme == PrependScheme::kAlways ||
         (prepend_scheme == PrependScheme::kFirst && first))) {
      word.insert(0, metaspace_replacement);
    }
    return EncodeWord(word, out);
  }
  std::vector<std::string> pieces{std::string(text)};
  std::vector<std::string> next;
  for (const PreTokenizerStep& step : pre_tokenizer) {
    next.clear();
    for (std::string& piece : pieces) {
      if (step.split != nullptr) {
        if (auto s = step.split->SplitIsolated(piece, &next); !s.ok()) return s;
        continue;
      }
      // ByteLevel (always the last step): the prefix space, then GPT-2's pattern if asked. The
      // byte map itself is applied per word in EncodeWord.
      if (step.byte_level_prefix_space && piece.front() != ' ') piece.insert(0, 1, ' ');
      if (step.byte_level_regex != nullptr) {
        if (auto s = step.byte_level_regex->SplitIsolated(piece, &next); !s.ok()) return s;
      } else {
        next.push_back(std::move(piece));
      }
    }
    pieces.swap(next);
  }
  for (const std::string& word : pieces) {
    if (auto s = EncodeWord(word, out); !s.ok()) return s;
  }
  return CheckOutput(*out);
}

absl::Status Tokenizer::Impl::EncodeWord(absl::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return absl::OkStatus();
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    MutexLock lock(&cache_mu);
    if (auto it = cache.find(word); it != cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return CheckOutput(*out);
    }
  }
  std::vector<int32_t> ids;
  bool whole = false;
  if (ignore_merges) {
    // Llama 3: a word that is itself a vocab entry is that one token, whatever the merges say.
    if (auto it = vocab.find(spm ? std::string(word) : ByteLevelEncode(word)); it != vocab.end()) {
      ids.push_back(it->second);
      whole = true;
    }
  }
  if (!whole) Bpe(word, &ids);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    MutexLock lock(&cache_mu);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(word, std::move(ids));
  }
  return CheckOutput(*out);
}

// BPE of one word. Byte-level: one symbol per byte. SentencePiece-style: one per character, and
// after merging, a character with no vocab entry becomes its bytes' "<0xNN>" tokens (Hugging
// Face's byte_fallback; every "<0xNN>" is in the vocab, checked at load).
void Tokenizer::Impl::Bpe(absl::string_view word, std::vector<int32_t>* out) const {
  std::vector<int32_t> ids;
  if (!spm) {
    ids.reserve(word.size());
    for (const char c : word) ids.push_back(byte_id[static_cast<unsigned char>(c)]);
    ApplyMerges(&ids);
    out->insert(out->end(), ids.begin(), ids.end());
    return;
  }
  std::vector<std::pair<size_t, size_t>> chars;  // each symbol's character, for byte fallback
  for (size_t pos = 0; pos < word.size();) {
    const size_t start = pos;
    NextCodePoint(word, &pos);
    const absl::string_view c = word.substr(start, pos - start);
    int32_t id = kUnknownSymbol;
    if (auto it = vocab.find(c);
        it != vocab.end() && (mergeable.empty() || mergeable[it->second])) {
      id = it->second;
    } else if (auto s = char_symbols.find(c); s != char_symbols.end()) {
      id = s->second;
    }
    ids.push_back(id);
    chars.emplace_back(start, pos - start);
  }
  std::vector<int> positions;
  ApplyMerges(&ids, &positions);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= 0) {
      out->push_back(ids[i]);
      continue;
    }
    const auto [start, length] = chars[positions[i]];
    for (const char c : word.substr(start, length)) {
      out->push_back(byte_id[static_cast<unsigned char>(c)]);
    }
  }
}

// Applies the lowest-ranked merge present (leftmost first on ties) until none applies. A heap over
// the adjacent pairs with a linked list of symbols keeps it O(n log n) in the word's length, so a
// megabyte without spaces costs milliseconds, not the minutes the quadratic textbook loop would.
void Tokenizer::Impl::ApplyMerges(std::vector<int32_t>* ids, std::vector<int>* positions) const {
  const int n = static_cast<int>(ids->size());
  struct Symbol {
    int32_t id;
    int prev;
    int next;
  };
  std::vector<Symbol> symbols(n);
  for (int i = 0; i < n; ++i) symbols[i] = {(*ids)[i], i - 1, i + 1 < n ? i + 1 : -1};
  struct Candidate {
    int32_t rank;
    int pos;  // the left symbol
    int32_t left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](int pos) {
    if (pos < 0 || symbols[pos].next < 0) return;
    const int32_t a = symbols[pos].id;
    const int32_t b = symbols[symbols[pos].next].id;
    if (auto it = merges.find(PairKey(a, b)); it != merges.end()) {
      queue.push({it->second.rank, pos, a, b});
    }
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.pos];
    // Stale entries: either symbol changed since this pair was queued (merged symbols get id -1).
    if (left.id != c.left || left.next < 0 || symbols[left.next].id != c.right) continue;
    const int right_pos = left.next;
    left.id = merges.find(PairKey(c.left, c.right))->second.merged;
    left.next = symbols[right_pos].next;
    if (left.next >= 0) symbols[left.next].prev = c.pos;
    symbols[right_pos].id = -1;
    push(left.prev);
    push(c.pos);
  }
  ids->clear();
  for (int i = 0; i >= 0 && i < n; i = symbols[i].next) {
    ids->push_back(symbols[i].id);
    if (positions != nullptr) positions->push_back(i);
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::CreateFromFile(
    const std::filesystem::path& tokenizer_json, const TokenizerLimits& limits) {
  auto text = ReadFile(tokenizer_json, limits.max_json_bytes);
  if (!text.ok()) return text.status();
  std::string config;
  const auto config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    auto c = ReadFile(config_path, limits.max_json_bytes);
    if (!c.ok()) return c.status();
    config = *std::move(c);
  }
  return CreateFromJson(*text, config, limits);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::CreateFromJson(
    std::string_view tokenizer_json_std, std::string_view tokenizer_config_json_std,
    const TokenizerLimits& limits) {
  const absl::string_view tokenizer_json(tokenizer_json_std.data(), tokenizer_json_std.size());
  const absl::string_view tokenizer_config_json(tokenizer_config_json_std.data(),
                                                tokenizer_config_json_std.size());
  auto root = ParseBounded(tokenizer_json, "tokenizer.json", limits);
  if (!root.ok()) return root.status();
  auto impl = std::make_unique<Impl>();
  impl->limits = limits;
  if (auto s = impl->Load(*root); !s.ok()) return s;
  if (!tokenizer_config_json.empty()) {
    auto config = ParseBounded(tokenizer_config_json, "tokenizer_config.json", limits);
    if (!config.ok()) return config.status();
    if (auto s = impl->LoadConfig(*config); !s.ok()) return s;
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::CreateFromSentencePieceFile(
    const std::filesystem::path& tokenizer_model, const TokenizerLimits& limits) {
  auto model = ReadFile(tokenizer_model, limits.max_model_bytes);
  if (!model.ok()) return model.status();
  std::string config;
  const auto config_path = tokenizer_model.parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    auto c = ReadFile(config_path, limits.max_json_bytes);
    if (!c.ok()) return c.status();
    config = *std::move(c);
  }
  auto tokenizer = CreateFromSentencePiece(*model, config, limits);
  if (!tokenizer.ok()) return WithFolder(tokenizer.status(), tokenizer_model.parent_path());
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::CreateFromSentencePiece(
    std::string_view tokenizer_model_std, std::string_view tokenizer_config_json_std,
    const TokenizerLimits& limits) {
  const absl::string_view tokenizer_model(tokenizer_model_std.data(), tokenizer_model_std.size());
  const absl::string_view tokenizer_config_json(tokenizer_config_json_std.data(),
                                                tokenizer_config_json_std.size());
  if (tokenizer_model.size() > limits.max_model_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.model is ", tokenizer_model.size(),
                                                   " bytes, over the limit of ",
                                                   limits.max_model_bytes));
  }
  std::optional<json> config;
  if (!tokenizer_config_json.empty()) {
    auto parsed = ParseBounded(tokenizer_config_json, "tokenizer_config.json", limits);
    if (!parsed.ok()) return parsed.status();
    config = *std::move(parsed);
  }
  auto file = ParseSentencePieceModel(tokenizer_model, static_cast<size_t>(limits.max_token_id) + 1,
                                      limits.max_token_bytes);
  if (!file.ok()) return file.status();
  auto impl = std::make_unique<Impl>();
  impl->limits = limits;
  if (auto s = impl->LoadSentencePiece(*file, config ? &*config : nullptr); !s.ok()) return s;
  if (config) {
    if (auto s = impl->LoadConfig(*config); !s.ok()) return s;
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::CreateFromFolder(
    const std::filesystem::path& folder, const TokenizerLimits& limits) {
  std::error_code ec;
  const auto json_path = folder / "tokenizer.json";
  if (std::filesystem::exists(json_path, ec)) {
    auto tokenizer = CreateFromFile(json_path, limits);
    if (!tokenizer.ok()) return WithFolder(tokenizer.status(), folder);
    return tokenizer;
  }
  const auto model_path = folder / "tokenizer.model";
  if (std::filesystem::exists(model_path, ec)) {
    return CreateFromSentencePieceFile(model_path, limits);
  }
  return absl::NotFoundError(
      absl::StrCat(folder.string(), " has neither tokenizer.json nor tokenizer.model"));
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text_std,
                                                       bool allow_special) const {
  const absl::string_view text(text_std.data(), text_std.size());
  const Impl& m = *impl_;
  if (text.size() > m.limits.max_text_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text is ", text.size(), " bytes, over the limit of ", m.limits.max_text_bytes));
  }
  if (const size_t bad = FindInvalidUtf8(text); bad != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 at byte ", bad));
  }
  std::vector<int32_t> out;
  auto usable = [&](int index) { return allow_special || !m.added[index].special; };
  size_t start = 0;
  if (!m.raw_matcher.empty()) {
    for (size_t pos = 0; pos < text.size();) {
      auto [index, length] = m.raw_matcher.Match(text, pos, usable);
      if (index < 0) {
        ++pos;
        continue;
      }
      if (auto s =
              m.EncodeSection(text.substr(start, pos - start), start == 0, allow_special, &out);
          !s.ok()) {
        return s;
      }
      out.push_back(m.added[index].id);
      if (auto s = m.CheckOutput(out); !s.ok()) return s;
      pos += length;
      start = pos;
    }
  }
  if (auto s = m.EncodeSection(text.substr(start), start == 0, allow_special, &out); !s.ok()) {
    return s;
  }
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids,
                                              bool skip_special) const {
  const Impl& m = *impl_;
  if (ids.size() > m.limits.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(ids.size(), " ids, over the limit of ", m.limits.max_tokens));
  }
  std::string out;
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= m.id_kind.size() || m.id_kind[id] == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown token id ", id));
    }
    if (skip_special && m.id_kind[id] == 3) continue;
    out += m.id_bytes[id];
  }
  // SentencePiece-style: Strip(" ", 1, 0) drops the space the "▁" in front of the text gave.
  if (m.decoder_strip_leading_space && !out.empty() && out.front() == ' ') out.erase(0, 1);
  return out;
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token_std) const {
  const absl::string_view token(token_std.data(), token_std.size());
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) {
    return it->second;
  }
  if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_kind.size()); }

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_kind.size() && impl_->id_kind[id] == 3;
}

std::vector<std::string> Tokenizer::SpecialTokens() const {
  std::vector<std::string> out;
  for (const AddedToken& t : impl_->added) {
    if (t.special) out.push_back(t.content);
  }
  return out;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos_token() const { return impl_->add_bos_token; }

size_t CompleteUtf8Prefix(std::string_view bytes) {
  // Look back at most 3 bytes for the lead byte of a sequence that is still short.
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(bytes[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking for the lead
    // F8..FF never start a sequence: nothing to wait for.
    const size_t need = c >= 0xF8 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

}  // namespace switchyard::llm
