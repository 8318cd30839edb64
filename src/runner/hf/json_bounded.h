// JSON parsing for files that may be hostile (checkpoint headers, indexes, config.json):
// nlohmann's parser recurses per nesting level, so a deeply nested document could exhaust the
// stack; the depth is checked by a linear scan before parsing.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace switchyard::runner::hf {

inline constexpr int kMaxJsonDepth = 64;

// Parses `text` (no exceptions); INVALID_ARGUMENT "<what>: ..." when it is not JSON or nests
// deeper than kMaxJsonDepth.
inline absl::StatusOr<nlohmann::json> ParseBoundedJson(std::string_view text,
                                                       const std::string& what) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // skip the escaped character (a quote must not end the string)
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON"));
  return j;
}

}  // namespace switchyard::runner::hf
