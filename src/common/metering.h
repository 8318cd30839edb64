// Metering: the units of every pipeline, computed the same way by the orchestrator (which reports
// them in JobInfo.units) and by the gateway (which recounts them from the request it sent and the
// response it relays, and refuses to pay for a mismatch). docs/metering.md.
//
// Every count is derived from bytes both sides hold (the request's media, the returned media's
// own headers or container), never from a side's own bookkeeping, so an honest orchestrator and
// the gateway always agree exactly.
//
//   text-to-image, image-to-image  pixel  output pixels: sum of width x height of the returned
//                                         images, read from their PNG/JPEG headers
//   image-to-video                 pixel  output pixels: frames x width x height of each returned
//                                         video, counted by demuxing it
//   upscale, image-to-text,        pixel  input pixels: width x height of the request's image,
//   segment-anything-2                    read from its header
//   audio-to-text                  ms     the request audio's duration: samples decoded at its
//                                         own rate (FFmpeg), x 1000 / rate, rounded
//   text-to-speech                 ms     the returned WAV's duration: frames x 1000 / rate
//   llm                            token  prompt_tokens + completion_tokens of the final usage
//   transcode                      pixel  sum over renditions of frames x width x height, each
//                                         rendition's frames and size counted by demuxing its data
//   live-video-to-video            pixel  output pixels: frames x width x height of the returned
//                                         segment, counted by demuxing it
//   kserve (ModelInfer)            element  elements of the request's input tensors (product of
//                                         each shape), checked against the contents' sizes
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/pipelines.h"
#include "inference/open_inference_grpc.pb.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::metering {

// Whether `price_per_unit` can be billed: a finite number >= 0. NaN, infinities and negative
// prices are refused wherever a price enters the gateway: a capability advertising one is not
// routed to, a response reporting one is disputed (docs/metering.md).
inline bool ValidPrice(double price_per_unit) {
  return std::isfinite(price_per_unit) && price_per_unit >= 0;
}

// The billing unit of a pipeline: "pixel", "ms", "token" or "element" (kserve); "" for an unknown
// pipeline.
std::string UnitOf(absl::string_view pipeline);

// Video frames (packets of the first video stream) and frame size of a container in memory
// (MPEG-TS, MP4 or fragmented MP4). INVALID_ARGUMENT when it cannot be demuxed or has no video
// frame.
struct VideoCount {
  int64_t frames = 0;
  int64_t width = 0;
  int64_t height = 0;
};
absl::StatusOr<VideoCount> CountVideo(absl::string_view container);

// Duration in milliseconds of any audio FFmpeg decodes: samples decoded at the stream's own rate,
// x 1000 / rate, rounded to the nearest ms. INVALID_ARGUMENT when it cannot be decoded.
absl::StatusOr<int64_t> DecodedAudioMilliseconds(absl::string_view audio);

// The format and length of a PCM WAV (RIFF, "fmt " and "data" chunks, any order and extra
// chunks; a data chunk cut short counts the bytes there are). INVALID_ARGUMENT when the header is
// not valid.
struct WavFormat {
  int channels = 0;
  int sample_rate = 0;
  int64_t frames = 0;
  double seconds() const { return static_cast<double>(frames) / sample_rate; }
};
absl::StatusOr<WavFormat> ReadWavFormat(absl::string_view wav);

// Duration in milliseconds of a PCM WAV (ReadWavFormat): frames x 1000 / rate, rounded.
absl::StatusOr<int64_t> WavMilliseconds(absl::string_view wav);

// The units of one completed job of each pipeline, from the request and the response as the
// client receives it. INVALID_ARGUMENT (naming what) when the media cannot be measured; that is
// a mismatch too, since the units cannot be checked.
// Defined per pipeline in metering.cc.
#define SWITCHYARD_UNITS(Method, Response, name) \
  absl::StatusOr<int64_t> Units(const v1::Method##Request& request, const v1::Response& response);
SWITCHYARD_UNARY_PIPELINES(SWITCHYARD_UNITS)
#undef SWITCHYARD_UNITS
absl::StatusOr<int64_t> Units(const v1::TranscodeRequest& request,
                              const v1::TranscodeResponse& response);

// KServe ModelInfer (pipeline "kserve", unit "element"): the total number of elements of the
// request's input tensors, each the product of its shape. The contents must hold exactly that
// many values: raw_input_contents (one entry per input, when given) of shape x the datatype's
// size bytes (BYTES: that many 4-byte-length-prefixed strings), or else the one typed contents
// field set, with that many values. INVALID_ARGUMENT naming the input otherwise (no inputs, an
// unknown datatype, a negative dimension, a size mismatch, more than 2^40 elements).
absl::StatusOr<int64_t> InferElements(const inference::ModelInferRequest& request);
absl::StatusOr<int64_t> Units(const inference::ModelInferRequest& request,
                              const inference::ModelInferResponse& response);

// A ModelInfer response has no JobInfo: the orchestrator reports its units and price in the
// response's parameters under these names (int64 and double), which the gateway relays to the
// client unchanged. docs/kserve.md.
inline constexpr const char* kInferUnitsParameter = "switchyard_units";
inline constexpr const char* kInferPriceParameter = "switchyard_price_per_unit";
void SetInferReport(int64_t units, double price_per_unit, inference::ModelInferResponse* response);
struct InferReport {
  int64_t units = 0;
  double price_per_unit = 0;
};
// INVALID_ARGUMENT when either parameter is missing or not of its type.
absl::StatusOr<InferReport> InferReportOf(const inference::ModelInferResponse& response);

// LLM: prompt_tokens + completion_tokens of the stream's final usage. INVALID_ARGUMENT when the
// usage is inconsistent: negative counts, total_tokens not their sum, more completion tokens than
// the request's max_tokens (`max_tokens` > 0) or fewer than the `content_messages` (messages with
// new text) the stream carried, since each generated token yields at most one.
absl::StatusOr<int64_t> LlmUnits(const v1::LLMTokenUsage& usage, int64_t max_tokens,
                                 int64_t content_messages);

}  // namespace switchyard::metering
