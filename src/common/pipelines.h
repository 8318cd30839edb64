// The pipelines Switchyard serves: one table of names, billing units and proto types that the
// gateway, the orchestrator, the Livepeer HTTP API and the CLI all read. Adding a pipeline starts
// here (docs/development.md, "Adding a pipeline"): a name constant, a row in kPipelineTable and,
// for a public API pipeline, a PipelineOf<Request> specialisation naming its response type.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "switchyard/v1/gateway.pb.h"

namespace switchyard::pipelines {

// Names as in the public API, capabilities and docs/pipelines.md (C strings: they meet
// std::string, absl::string_view and format strings alike).
inline constexpr const char* kUpscale = "upscale";
inline constexpr const char* kTextToImage = "text-to-image";
inline constexpr const char* kImageToImage = "image-to-image";
inline constexpr const char* kImageToVideo = "image-to-video";
inline constexpr const char* kAudioToText = "audio-to-text";
inline constexpr const char* kSegmentAnything2 = "segment-anything-2";
inline constexpr const char* kLlm = "llm";
inline constexpr const char* kImageToText = "image-to-text";
inline constexpr const char* kTextToSpeech = "text-to-speech";
inline constexpr const char* kLiveVideoToVideo = "live-video-to-video";
// Not model pipelines: video transcoding (capability model "libx264") and KServe ModelInfer
// calls relayed by the gateway's inference proxy (metered as their own pipeline).
inline constexpr const char* kTranscode = "transcode";
inline constexpr const char* kKserve = "kserve";

// What a pipeline is, beyond its name.
struct PipelineInfo {
  const char* name;
  // Billing unit (docs/metering.md): "pixel", "ms", "token" or "element".
  const char* unit;
  // Served by a model the orchestrator loads (a `models.json` entry names it); false for
  // transcode and kserve.
  bool model_pipeline;
};

inline constexpr std::array<PipelineInfo, 12> kPipelineTable = {{
    {kUpscale, "pixel", true},
    {kTextToImage, "pixel", true},
    {kImageToImage, "pixel", true},
    {kImageToVideo, "pixel", true},
    {kAudioToText, "ms", true},
    {kSegmentAnything2, "pixel", true},
    {kLlm, "token", true},
    {kImageToText, "pixel", true},
    {kTextToSpeech, "ms", true},
    {kLiveVideoToVideo, "pixel", true},
    {kTranscode, "pixel", false},
    {kKserve, "element", false},
}};

// The row of `name`, or nullptr for a name that is not a pipeline.
constexpr const PipelineInfo* Find(std::string_view name) {
  for (const PipelineInfo& info : kPipelineTable) {
    if (std::string_view(info.name) == name) return &info;
  }
  return nullptr;
}

// Whether `name` is a pipeline an orchestrator serves with a model of its own.
constexpr bool IsModelPipeline(std::string_view name) {
  const PipelineInfo* info = Find(name);
  return info != nullptr && info->model_pipeline;
}

// The model pipelines' names, joined with ", " (for errors that list what is allowed).
std::string ModelPipelineNames();

// The public API's unary jobs by request type: the pipeline's name, its response type and the
// request field naming the model. Gateway handlers, metering and clients are generic over this.
template <typename Request>
struct PipelineOf;

// The public API's unary pipelines, one row each: X(gRPC method, response type, name). The
// request type is v1::<Method>Request. The gateway's and the orchestrator's handlers, metering's
// Units and PipelineOf are declared from this list, so a new pipeline is one row here.
#define SWITCHYARD_UNARY_PIPELINES(X)                   \
  X(Upscale, ImageResponse, kUpscale)                   \
  X(TextToImage, ImageResponse, kTextToImage)           \
  X(ImageToImage, ImageResponse, kImageToImage)         \
  X(ImageToVideo, VideoResponse, kImageToVideo)         \
  X(AudioToText, TextResponse, kAudioToText)            \
  X(SegmentAnything2, MasksResponse, kSegmentAnything2) \
  X(ImageToText, ImageToTextResponse, kImageToText)     \
  X(TextToSpeech, AudioResponse, kTextToSpeech)         \
  X(LiveVideoSegment, LiveVideoSegmentResponse, kLiveVideoToVideo)

#define SWITCHYARD_PIPELINE_OF(Method, ResponseType, pipeline_name)              \
  template <>                                                                    \
  struct PipelineOf<v1::Method##Request> {                                       \
    using Request = v1::Method##Request;                                         \
    using Response = v1::ResponseType;                                           \
    static constexpr const char* kName = pipeline_name;                          \
    static const std::string& ModelId(const Request& r) { return r.model_id(); } \
  };
SWITCHYARD_UNARY_PIPELINES(SWITCHYARD_PIPELINE_OF)
#undef SWITCHYARD_PIPELINE_OF

// The LLM names its model in `model` (the OpenAI field) and streams its response.
template <>
struct PipelineOf<v1::LLMRequest> {
  using Request = v1::LLMRequest;
  using Response = v1::LLMResponse;
  static constexpr const char* kName = kLlm;
  static const std::string& ModelId(const Request& r) { return r.model(); }
};

}  // namespace switchyard::pipelines
