// A Jinja2-subset interpreter for the `chat_template` of a Hugging Face tokenizer_config.json
// (issue 21, the third piece): turns a list of chat messages into the prompt text a model was
// trained on, without Python and without a third-party Jinja library (Debian ships none for C++).
// Nothing serves it yet; the engine and the OpenAI API are later pieces. docs/llm.md ("Chat
// templates") lists the subset, what is refused and the caps.
//
// The template is parsed once by Create; anything outside the subset is refused there with
// INVALID_ARGUMENT naming the construct and its line/column, so a template that loads only fails
// at render time on data (raise_exception, a type error, a cap). Rendering follows what
// transformers does (trim_blocks and lstrip_blocks on, one trailing newline of the template
// dropped) and is checked byte for byte against @huggingface/jinja (tests/fixtures/chat_template).
//
// Both the template and the context are treated as hostile: sizes, nesting, loop iterations,
// evaluation steps and output size are capped and every cap is a clear status, never a crash or
// a hang. A ChatTemplate is immutable after Create; Render may run from several threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace switchyard::llm {

struct ChatTemplateLimits {
  // Template source; more is INVALID_ARGUMENT. Real chat templates are under 10 KB.
  size_t max_template_bytes = size_t{1} << 20;
  // Nesting of blocks and of expressions at parse time, each link of an operator chain counting
  // one (`a + b + c` is two deep); more is INVALID_ARGUMENT. The parser and the evaluator
  // recurse, so this bounds their stack. Real templates stay under 30.
  int max_nesting = 128;
  // Nesting of a value built while rendering (list and dict literals, namespace()); more is
  // INVALID_ARGUMENT. Copying, printing and freeing values recurse.
  int max_value_depth = 64;
  // Context: nesting depth and total size of its strings plus one per value; more is
  // INVALID_ARGUMENT before rendering starts.
  int max_context_depth = 32;
  size_t max_context_bytes = size_t{16} << 20;
  // Rendered text; more is RESOURCE_EXHAUSTED.
  size_t max_output_bytes = size_t{16} << 20;
  // Iterations of all for loops together, and evaluation steps (each expression node and
  // statement counts one); more is RESOURCE_EXHAUSTED. Jinja has no while loop, but nested loops
  // over large lists could otherwise run for hours.
  uint64_t max_loop_iterations = 1'000'000;
  uint64_t max_steps = 50'000'000;
  // Any single string value built while rendering (concatenation, join, replace).
  size_t max_string_bytes = size_t{16} << 20;
};

class ChatTemplate {
 public:
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(
      std::string_view source, const ChatTemplateLimits& limits = {});

  ~ChatTemplate();
  ChatTemplate(const ChatTemplate&) = delete;
  ChatTemplate& operator=(const ChatTemplate&) = delete;

  // The context's top-level keys become the template's variables: `messages`,
  // `add_generation_prompt`, `bos_token`, `eos_token`, `tools`, `enable_thinking`, ... A key not
  // given is undefined (falsy, renders as empty). The context must be a JSON object.
  // raise_exception(msg) in the template gives INVALID_ARGUMENT with msg.
  // Objects keep nlohmann::json's key order (sorted), which `tojson` shows.
  absl::StatusOr<std::string> Render(const nlohmann::json& context) const;

  // Render with {messages, add_generation_prompt, bos_token, eos_token} plus the keys of `extra`
  // (an object or null; e.g. {"enable_thinking": false}, {"tools": [...]}).
  absl::StatusOr<std::string> RenderChat(const nlohmann::json& messages, bool add_generation_prompt,
                                         std::string_view bos_token, std::string_view eos_token,
                                         const nlohmann::json& extra = nullptr) const;

  // `strftime_now(fmt)` formats this instant (seconds since the Unix epoch, UTC) so that renders
  // are deterministic; 0 (the default) means the current time at each Render.
  void set_fixed_time(int64_t unix_seconds) { fixed_time_ = unix_seconds; }

  struct Impl;

 private:
  ChatTemplate(std::unique_ptr<Impl> impl, const ChatTemplateLimits& limits);
  std::unique_ptr<Impl> impl_;
  ChatTemplateLimits limits_;
  int64_t fixed_time_ = 0;
};

}  // namespace switchyard::llm
