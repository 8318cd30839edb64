#include "orchestrator/warmup.h"

namespace switchyard::orchestrator {

WarmupInputs WarmupInputsFor(const ModelConfig& model) {
  if (model.warmup_size <= 0) return std::nullopt;
  if (model.pipeline == "upscale") {
    return runner::ModelExecutor::Inputs{
        at::zeros({1, 3, model.warmup_size, model.warmup_size}, at::kFloat)};
  }
  if (model.pipeline == "audio-to-text" || model.pipeline == "text-to-speech" ||
      model.pipeline == "llm") {
    return AudioTextWarmupInputs(model);
  }
  return ImageWarmupInputs(model);
}

}  // namespace switchyard::orchestrator
