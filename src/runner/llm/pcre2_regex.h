// A compiled PCRE2 pattern (8-bit, UTF + UCP, JIT when available) for the tokenizer's
// pre-tokenizer. PCRE2, not RE2: the GPT-2, Llama 3 and Qwen patterns use the lookahead \s+(?!\S),
// which RE2 lacks.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace switchyard::llm {

class Pcre2Regex {
 public:
  // INVALID_ARGUMENT with PCRE2's message and offset when `pattern` does not compile.
  // `literal`: the pattern is a plain string (a Split pattern's {"String": ...}).
  static absl::StatusOr<std::unique_ptr<Pcre2Regex>> Compile(absl::string_view pattern,
                                                             bool literal);
  ~Pcre2Regex();
  Pcre2Regex(const Pcre2Regex&) = delete;
  Pcre2Regex& operator=(const Pcre2Regex&) = delete;

  // Appends to `pieces` the parts of `text` (valid UTF-8, unchecked) that Hugging Face's Split
  // with behavior Isolated gives: every non-empty match and every non-empty stretch between
  // matches, in order. RESOURCE_EXHAUSTED when the match limits are hit (a pathological pattern
  // backtracking on hostile text), never an unbounded run.
  absl::Status SplitIsolated(absl::string_view text, std::vector<std::string>* pieces) const;

  bool jit() const { return jit_; }

 private:
  struct Code;
  Pcre2Regex(std::unique_ptr<Code> code, bool jit);
  std::unique_ptr<Code> code_;
  bool jit_;
};

}  // namespace switchyard::llm
