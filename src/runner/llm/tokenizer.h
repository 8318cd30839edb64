// A BPE tokenizer loaded from a Hugging Face `tokenizer.json`, without libtorch or Python: the
// first piece of issue 21 (LLMs from standard checkpoints); the llm pipeline uses it for
// "format": "hf" models (orchestrator/pipelines/hf_llm.h). Two families:
//  - byte-level BPE (GPT-2, Llama 3, Qwen 2/2.5/3, SmolLM): pre-tokenized (Split by regex with
//    PCRE2, then ByteLevel), each piece merged from its bytes;
//  - SentencePiece-style BPE with `byte_fallback` (Llama 2, Mistral, TinyLlama): spaces become
//    "▁" (a Prepend/Replace normalizer, or a Metaspace pre-tokenizer with split false), the whole
//    text between added tokens is merged from its characters, and a character with no vocab
//    entry becomes its bytes' "<0xNN>" tokens; decoding turns "▁" back into spaces and drops
//    the first one.
// A folder with only a SentencePiece `tokenizer.model` (Llama 2 style, no tokenizer.json) loads
// too (CreateFromSentencePiece): its pieces and scores become the second family's tables, merged
// the way SentencePiece's BPE merges (sentencepiece_model.h reads the file; the tests check the
// ids against Debian's libsentencepiece).
// docs/llm.md and docs/hf-checkpoints.md list what is supported and refused.
//
// Encode(text) gives the ids Hugging Face's `tokenizer.encode(text, add_special_tokens=False)`
// gives: added tokens are split out first (longest match), the rest is normalized (NFC and
// friends via ICU; Prepend, Replace), pre-tokenized and merged by BPE rank. The post-processor
// (BOS/EOS templates) is never applied: the caller or the chat template adds BOS where a model
// wants one (add_bos_token()).
//
// The file is treated as hostile: its size, nesting, shapes, ids and counts are checked at load
// and anything outside the supported subset is refused with INVALID_ARGUMENT naming the field.
// A Tokenizer is immutable after Create and safe to use from several threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::llm {

struct TokenizerLimits {
  // tokenizer.json (and tokenizer_config.json) larger than this is refused unread. Qwen3's is
  // 11 MB, Llama 3's 9 MB.
  size_t max_json_bytes = size_t{64} << 20;
  // Encode's input; more is INVALID_ARGUMENT. 8 MiB is far beyond any context window.
  size_t max_text_bytes = size_t{8} << 20;
  // Encode's output and Decode's input; more is RESOURCE_EXHAUSTED / INVALID_ARGUMENT.
  size_t max_tokens = size_t{4} << 20;
  // Load-time caps on the file's contents (real files: 151k vocab entries, 280k merges).
  size_t max_merges = size_t{4} << 20;
  int32_t max_token_id = (1 << 22) - 1;
  size_t max_added_tokens = 1 << 16;
  size_t max_token_bytes = 4096;  // one vocab entry
  // One added token's content. Encode tries the added tokens at every position of the text, which
  // costs up to this many steps each (Llama 3's longest is 30 bytes).
  size_t max_added_token_bytes = 256;
  // tokenizer.model larger than this is refused unread (Llama 2's is 500 kB, Gemma's 4 MB).
  size_t max_model_bytes = size_t{32} << 20;
};

class Tokenizer {
 public:
  // A tokenizer.json file; tokenizer_config.json beside it, when present, names bos/eos.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> CreateFromFile(
      const std::filesystem::path& tokenizer_json, const TokenizerLimits& limits = {});
  // The text of a tokenizer.json and, optionally (empty: none), of a tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> CreateFromJson(
      std::string_view tokenizer_json, std::string_view tokenizer_config_json = {},
      const TokenizerLimits& limits = {});

  // A SentencePiece model file (tokenizer.model: its ModelProto, as Llama 2 / Mistral checkpoints
  // ship it); tokenizer_config.json beside it, when present, names bos/eos/add_bos_token and adds
  // the tokens its added_tokens_decoder lists. Encode gives what SentencePiece (and Hugging Face's
  // Llama tokenizers with add_special_tokens=False) give: each stretch between added tokens
  // encoded as SentencePiece does (its dummy prefix "▁" each time), never BOS/EOS. The control
  // and unknown pieces (<s>, </s>, <unk>) are special added tokens. Decode is the fast
  // tokenizer's (as for tokenizer.json). Only BPE files with byte_fallback and the identity
  // normalizer (Llama 2 / Mistral / TinyLlama) load; others are INVALID_ARGUMENT naming the field.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> CreateFromSentencePieceFile(
      const std::filesystem::path& tokenizer_model, const TokenizerLimits& limits = {});
  // The bytes of a tokenizer.model and, optionally (empty: none), the text of a
  // tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> CreateFromSentencePiece(
      std::string_view tokenizer_model, std::string_view tokenizer_config_json = {},
      const TokenizerLimits& limits = {});
  // A checkpoint folder: its tokenizer.json if there is one, else its tokenizer.model; NOT_FOUND
  // naming both when it has neither.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> CreateFromFolder(
      const std::filesystem::path& folder, const TokenizerLimits& limits = {});

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // `text` must be valid UTF-8 (else INVALID_ARGUMENT with the byte offset: Hugging Face's
  // tokenizers take Rust/JS strings and so never see invalid input; guessing a repair would give
  // ids no reference gives). With allow_special false, special added tokens in the text are
  // tokenized as plain text (Hugging Face's split_special_tokens), so user text cannot inject
  // <|im_start|>; non-special added tokens are still matched, as there.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool allow_special) const;

  // The bytes the ids stand for, as the file's decoder gives them (ByteLevel; or Replace("▁",
  // " "), ByteFallback, Fuse, Strip(" ", 1, 0)), except that bytes that do not form valid UTF-8
  // are kept as they are (a streaming caller holds an incomplete sequence at
  // the end back until the next token; see CompleteUtf8Prefix). Added tokens give their content.
  // skip_special drops special added tokens. An unknown id is INVALID_ARGUMENT.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids, bool skip_special) const;

  // The id of a vocab entry (in its byte-level form, e.g. "Ġthe") or added token's content.
  std::optional<int32_t> TokenId(std::string_view token) const;
  // Highest id + 1 over the vocab and the added tokens (the embedding rows a model needs).
  int32_t vocab_size() const;
  bool IsSpecial(int32_t id) const;
  // The contents of the special added tokens, in the file's order.
  std::vector<std::string> SpecialTokens() const;
  // bos_token / eos_token of tokenizer_config.json (a string or {"content": ...}), when given and
  // a known token.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // tokenizer_config.json's add_bos_token (Llama 2 / Mistral say true): whether transformers'
  // tokenizer(text) puts bos first. False when absent.
  bool add_bos_token() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence that
// could still be completed: what a streaming decoder can emit now.
size_t CompleteUtf8Prefix(std::string_view bytes);

}  // namespace switchyard::llm
