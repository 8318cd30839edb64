#include "orchestrator/pipelines/warmup.h"

#include <string_view>

#include "common/pipelines.h"

namespace switchyard::orchestrator {
namespace {

// Each model pipeline's warm-up inputs: the one place a pipeline registers them. A pipeline not
// listed (live-video-to-video: its models are warmed by their first segment) gets none.
struct PipelineWarmup {
  const char* pipeline;
  WarmupInputs (*inputs)(const ModelConfig& model);
};
constexpr PipelineWarmup kWarmups[] = {
    {pipelines::kUpscale, UpscaleWarmupInputs},
    {pipelines::kTextToImage, ImageWarmupInputs},
    {pipelines::kImageToImage, ImageWarmupInputs},
    {pipelines::kImageToVideo, ImageWarmupInputs},
    {pipelines::kSegmentAnything2, ImageWarmupInputs},
    {pipelines::kImageToText, ImageWarmupInputs},
    {pipelines::kAudioToText, AudioTextWarmupInputs},
    {pipelines::kTextToSpeech, AudioTextWarmupInputs},
    {pipelines::kLlm, AudioTextWarmupInputs},
};

}  // namespace

WarmupInputs WarmupInputsFor(const ModelConfig& model) {
  if (model.warmup_size <= 0) return std::nullopt;
  for (const PipelineWarmup& w : kWarmups) {
    if (std::string_view(w.pipeline) == model.pipeline) return w.inputs(model);
  }
  return std::nullopt;
}

}  // namespace switchyard::orchestrator
