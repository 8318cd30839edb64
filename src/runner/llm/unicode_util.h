// UTF-8 validation, GPT-2's byte <-> unicode map (the ByteLevel pre-tokenizer and decoder) and
// Unicode normalization (ICU) for the tokenizer.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace switchyard::llm {

// The byte offset of the first byte that is not part of valid UTF-8 (overlong forms, surrogates
// and code points above U+10FFFF are invalid), or npos.
size_t FindInvalidUtf8(absl::string_view text);

// Decodes the code point at text[*pos] (valid UTF-8, unchecked) and advances *pos past it.
char32_t NextCodePoint(absl::string_view text, size_t* pos);
void AppendUtf8(char32_t code_point, std::string* out);

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for
// U+0100.. in byte order, so every byte string becomes printable text without spaces. ByteChar(b)
// is the UTF-8 of byte b's character; CharByte(c) is the byte of a character, or -1.
const std::string& ByteChar(unsigned char byte);
int CharByte(char32_t code_point);

// The UTF-8 of `bytes` with every byte replaced by its ByteChar.
std::string ByteLevelEncode(absl::string_view bytes);

// One of Hugging Face's Unicode normalizers, by its `type`: NFC, NFD, NFKC or NFKD.
class UnicodeNormalizer {
 public:
  // INVALID_ARGUMENT for another type, INTERNAL when ICU cannot load its data.
  static absl::StatusOr<std::unique_ptr<UnicodeNormalizer>> Create(absl::string_view type);
  // `text` is valid UTF-8.
  absl::StatusOr<std::string> Normalize(absl::string_view text) const;

 private:
  explicit UnicodeNormalizer(const void* icu_normalizer) : icu_(icu_normalizer) {}
  const void* icu_;  // an icu::Normalizer2 singleton owned by ICU (kept out of this header)
};

}  // namespace switchyard::llm
