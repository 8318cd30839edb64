#include "runner/llm/unicode_util.h"

#include <unicode/bytestream.h>
#include <unicode/errorcode.h>
#include <unicode/normalizer2.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace switchyard::llm {
namespace {

struct ByteMaps {
  std::array<std::string, 256> byte_char;
  std::array<int, 512> char_byte;  // every mapped code point is below U+0144
  ByteMaps() {
    char_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      AppendUtf8(c, &byte_char[b]);
      char_byte[c] = b;
    }
  }
};

const ByteMaps& Maps() {
  static const ByteMaps* maps = new ByteMaps();
  return *maps;
}

}  // namespace

size_t FindInvalidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    char32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;  // continuation byte, overlong lead C0/C1, or F5..FF
    }
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return i;
    }
    i += len;
  }
  return absl::string_view::npos;
}

char32_t NextCodePoint(absl::string_view text, size_t* pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const unsigned char c = s[*pos];
  if (c < 0x80) {
    ++*pos;
    return c;
  }
  size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
  char32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < len && *pos + k < text.size(); ++k) cp = (cp << 6) | (s[*pos + k] & 0x3F);
  *pos += len;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const std::string& ByteChar(unsigned char byte) { return Maps().byte_char[byte]; }

int CharByte(char32_t code_point) {
  return code_point < Maps().char_byte.size() ? Maps().char_byte[code_point] : -1;
}

std::string ByteLevelEncode(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char b : bytes) out += ByteChar(static_cast<unsigned char>(b));
  return out;
}

absl::StatusOr<std::unique_ptr<UnicodeNormalizer>> UnicodeNormalizer::Create(
    absl::string_view type) {
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  if (type == "NFC") {
    normalizer = icu::Normalizer2::getNFCInstance(error);
  } else if (type == "NFD") {
    normalizer = icu::Normalizer2::getNFDInstance(error);
  } else if (type == "NFKC") {
    normalizer = icu::Normalizer2::getNFKCInstance(error);
  } else if (type == "NFKD") {
    normalizer = icu::Normalizer2::getNFKDInstance(error);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported type \"", type, "\""));
  }
  if (U_FAILURE(error) || normalizer == nullptr) {
    return absl::InternalError(absl::StrCat("ICU has no ", type, " data: ", u_errorName(error)));
  }
  return std::unique_ptr<UnicodeNormalizer>(new UnicodeNormalizer(normalizer));
}

absl::StatusOr<std::string> UnicodeNormalizer::Normalize(absl::string_view text) const {
  const auto* normalizer = static_cast<const icu::Normalizer2*>(icu_);
  UErrorCode error = U_ZERO_ERROR;
  // Most text is already normalized (always so for ASCII): skip the copy then.
  if (normalizer->isNormalizedUTF8(icu::StringPiece(text.data(), text.size()), error) &&
      U_SUCCESS(error)) {
    return std::string(text);
  }
  error = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  normalizer->normalizeUTF8(0, icu::StringPiece(text.data(), text.size()), sink, nullptr, error);
  if (U_FAILURE(error)) {
    return absl::InternalError(absl::StrCat("ICU normalization failed: ", u_errorName(error)));
  }
  return out;
}

}  // namespace switchyard::llm
