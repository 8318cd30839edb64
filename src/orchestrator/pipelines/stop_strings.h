// Stop strings for the llm pipeline (LLMRequest.stop, the OpenAI API's `stop`): generated text
// passes through a StopStringFilter before it reaches the client. Text that could be the start of
// a stop string is held back until the next delta shows whether it is; when a stop string appears
// the text before it is released, the rest (the stop string included) never is, and generation
// ends with finish_reason "stop", as OpenAI and vLLM do.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace switchyard::orchestrator {

class StopStringFilter {
 public:
  // `stops`: non-empty strings (validated by ValidateLlmRequest); empty means no stop strings,
  // and then every delta passes unchanged.
  explicit StopStringFilter(std::vector<std::string> stops);

  // Appends generated text; returns the text that may be sent now (possibly empty). Once a stop
  // string is found, stopped() is true and every later call returns "".
  std::string Push(std::string_view delta);
  // The end of generation without a stop string: the text still held back.
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  size_t longest_ = 0;  // bytes of the longest stop string
  std::string held_;
  bool stopped_ = false;
};

}  // namespace switchyard::orchestrator
