// Bounded JSON parsing for bytes from clients, orchestrators and files. nlohmann's parser is
// iterative, but dump() and most walks over a parsed value recurse once per nesting level, so a
// body nested a million levels deep (2 MB) parses fine and then overflows the stack. Every JSON
// that did not come from this process goes through ParseJson, which refuses such nesting before
// the parser sees it.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard {

// Deep enough for every document the daemons accept (the deepest, a Livepeer live-video
// `params`, nests well under 10); shallow enough that a recursive walk stays far from the stack's
// end (each level costs a few hundred bytes).
inline constexpr int kMaxJsonDepth = 64;

// OK when no object or array in `text` nests deeper than `max_depth` levels; brackets inside
// strings do not count. INVALID_ARGUMENT naming the limit otherwise. It reads `text` once and
// does not check anything else: a text that passes may still be malformed.
absl::Status CheckJsonDepth(std::string_view text, int max_depth = kMaxJsonDepth);

// CheckJsonDepth, then nlohmann's parser. INVALID_ARGUMENT "JSON nested deeper than N levels"
// or "malformed JSON: <parser's message>".
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, int max_depth = kMaxJsonDepth);

}  // namespace switchyard
