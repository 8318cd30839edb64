// The warm-up inference each pipeline runs before a model is reported READY, so the first real
// job does not pay for lazy initialisation. `warmup_size` 0 in a model's config turns it off.
#pragma once

#include <optional>

#include "orchestrator/orchestrator_config.h"
#include "runner/model_executor.h"

namespace switchyard::orchestrator {

using WarmupInputs = std::optional<runner::ModelExecutor::Inputs>;

// Arguments of forward() for one warm-up pass of `model`, or nullopt for none.
WarmupInputs WarmupInputsFor(const ModelConfig& model);

// Per pipeline family (defined beside each family's pipelines; registered in warmup.cc).
WarmupInputs UpscaleWarmupInputs(const ModelConfig& model);    // upscale
WarmupInputs ImageWarmupInputs(const ModelConfig& model);      // text/image/video/sam2 pipelines
WarmupInputs AudioTextWarmupInputs(const ModelConfig& model);  // audio-to-text, tts, llm

}  // namespace switchyard::orchestrator
