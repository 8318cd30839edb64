// Prompt length limits (option `max_prompt_chars` of the text-to-image, image-to-image,
// image-to-text, text-to-speech and llm models; docs/pipelines.md "Limits").
//
// Lengths are counted in Unicode code points ("characters") of the UTF-8 text, not in bytes, so a
// limit means the same for every script. Counting is one pass over the bytes and runs before any
// model work: before a cold model is loaded, before an image is decoded and, for llm, before the
// prompt is templated and tokenized (tokenizing a huge prompt is itself heavy).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace switchyard::orchestrator {

// Defaults. Image prompts: text encoders read at most a few hundred tokens (CLIP: 77), and the
// '|' form holds several prompts, so 4096 characters leave room for every sensible request.
// Text-to-speech: 4096 characters is several minutes of speech, already a long job. LLM: the
// messages must fit the model's context (max_context_tokens, 8192 by default), and no common
// tokenizer averages more than 16 characters per token, so 131072 characters refuse no prompt
// that could fit while bounding the templating and tokenizing work.
inline constexpr int64_t kDefaultImageMaxPromptChars = 4096;
inline constexpr int64_t kDefaultSpeechMaxPromptChars = 4096;
inline constexpr int64_t kDefaultLlmMaxPromptChars = 131072;

// Code points in `text`: bytes that do not continue a UTF-8 sequence (protobuf string fields are
// valid UTF-8; for other bytes this still gives a bounded, well-defined count).
inline int64_t Utf8Chars(absl::string_view text) {
  int64_t n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// OK when `chars` <= `max_chars`; else INVALID_ARGUMENT naming `field`, its length and the limit:
// "prompt is 5000 characters, more than the model's max_prompt_chars (4096)".
inline absl::Status CheckPromptChars(absl::string_view field, int64_t chars, int64_t max_chars) {
  if (chars <= max_chars) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " is ", chars,
                                                 " characters, more than the model's "
                                                 "max_prompt_chars (",
                                                 max_chars, ")"));
}

}  // namespace switchyard::orchestrator
