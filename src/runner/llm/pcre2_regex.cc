#include "runner/llm/pcre2_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace switchyard::llm {
namespace {

// Backtracking bounds per match call: far above what the real patterns need on any text (they
// match in linear time), low enough that a pathological pattern fails within a second.
constexpr uint32_t kMatchLimit = 10'000'000;
constexpr uint32_t kDepthLimit = 100'000;
// The JIT's stack for one match: \s+(?!\S) on a long run of spaces needs more than PCRE2's
// default 32 KiB.
constexpr size_t kJitStackMin = 32 << 10;
constexpr size_t kJitStackMax = 4 << 20;

std::string ErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return absl::StrCat("PCRE2 error ", code);
  }
  return reinterpret_cast<const char*>(buffer);
}

// Per-thread match state: a match context with the limits and a JIT stack, shared by every
// pattern (a JIT stack is not tied to one pattern); match data is per call.
struct ThreadMatchState {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadMatchState() {
    context = pcre2_match_context_create(nullptr);
    if (context != nullptr) {
      pcre2_set_match_limit(context, kMatchLimit);
      pcre2_set_depth_limit(context, kDepthLimit);
      jit_stack = pcre2_jit_stack_create(kJitStackMin, kJitStackMax, nullptr);
      if (jit_stack != nullptr) pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
  }
  ~ThreadMatchState() {
    if (jit_stack != nullptr) pcre2_jit_stack_free(jit_stack);
    if (context != nullptr) pcre2_match_context_free(context);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

size_t Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  return 4;
}

}  // namespace

struct Pcre2Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

Pcre2Regex::Pcre2Regex(std::unique_ptr<Code> code, bool jit) : code_(std::move(code)), jit_(jit) {}
Pcre2Regex::~Pcre2Regex() = default;

absl::StatusOr<std::unique_ptr<Pcre2Regex>> Pcre2Regex::Compile(absl::string_view pattern,
                                                                bool literal) {
  // UCP: \s, \p{L}, \w follow Unicode properties as in Oniguruma (Hugging Face's engine).
  // (LITERAL allows UTF but refuses UCP, which a literal does not need.) NEVER_BACKSLASH_C: \C
  // matches one byte, so a split could cut a character in two, and the matches after it skip the
  // UTF-8 check.
  const uint32_t options =
      literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C;
  int error = 0;
  PCRE2_SIZE offset = 0;
  auto code = std::make_unique<Code>();
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                             &error, &offset, nullptr);
  if (code->code == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("does not compile (PCRE2) at offset ", offset, ": ", ErrorMessage(error)));
  }
  // JIT is an optimisation only: without it (an architecture PCRE2 has no JIT for, or SELinux
  // refusing executable memory) the interpreter gives the same matches.
  const bool jit = pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<Pcre2Regex>(new Pcre2Regex(std::move(code), jit));
}

absl::Status Pcre2Regex::SplitIsolated(absl::string_view text,
                                       std::vector<std::string>* pieces) const {
  ThreadMatchState& state = MatchState();
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  if (data == nullptr) return absl::ResourceExhaustedError("PCRE2: no memory for match data");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;    // where the next search starts
  size_t emitted = 0;  // text before this is in `pieces`
  absl::Status status;
  while (start <= text.size()) {
    // NO_UTF_CHECK: the tokenizer validated the whole input once.
    const int rc = pcre2_match(code_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, data,
                               state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      status = absl::ResourceExhaustedError(
          absl::StrCat("pre-tokenizer regex failed on the text: ", ErrorMessage(rc)));
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t match_begin = ovector[0];
    const size_t match_end = ovector[1];
    if (match_end < match_begin) {  // \K in a lookahead can do this: fail, never misread
      status =
          absl::InvalidArgumentError("pre-tokenizer regex gave a match ending before its start");
      break;
    }
    if (match_end == match_begin) {
      // An empty match yields no piece (as in Hugging Face); step one character on.
      if (match_begin >= text.size()) break;
      start = match_begin + Utf8Length(static_cast<unsigned char>(text[match_begin]));
      continue;
    }
    if (match_begin > emitted) pieces->emplace_back(text.substr(emitted, match_begin - emitted));
    pieces->emplace_back(text.substr(match_begin, match_end - match_begin));
    emitted = match_end;
    start = match_end;
  }
  pcre2_match_data_free(data);
  if (!status.ok()) return status;
  if (emitted < text.size()) pieces->emplace_back(text.substr(emitted));
  return absl::OkStatus();
}

}  // namespace switchyard::llm
