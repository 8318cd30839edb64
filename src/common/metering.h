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
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::metering {

// The billing unit of a pipeline: "pixel", "ms" or "token"; "" for an unknown pipeline.
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

// Duration in milliseconds of a PCM WAV (RIFF, "fmt " and "data" chunks, any order and extra
// chunks): data frames x 1000 / rate, rounded. INVALID_ARGUMENT when the header is not valid.
absl::StatusOr<int64_t> WavMilliseconds(absl::string_view wav);

// The units of one completed job of each pipeline, from the request and the response as the
// client receives it. INVALID_ARGUMENT (naming what) when the media cannot be measured; that is
// a mismatch too, since the units cannot be checked.
absl::StatusOr<int64_t> Units(const v1::TextToImageRequest& request,
                              const v1::ImageResponse& response);
absl::StatusOr<int64_t> Units(const v1::ImageToImageRequest& request,
                              const v1::ImageResponse& response);
absl::StatusOr<int64_t> Units(const v1::ImageToVideoRequest& request,
                              const v1::VideoResponse& response);
absl::StatusOr<int64_t> Units(const v1::UpscaleRequest& request,
                              const v1::ImageResponse& response);
absl::StatusOr<int64_t> Units(const v1::ImageToTextRequest& request,
                              const v1::ImageToTextResponse& response);
absl::StatusOr<int64_t> Units(const v1::SegmentAnything2Request& request,
                              const v1::MasksResponse& response);
absl::StatusOr<int64_t> Units(const v1::AudioToTextRequest& request,
                              const v1::TextResponse& response);
absl::StatusOr<int64_t> Units(const v1::TextToSpeechRequest& request,
                              const v1::AudioResponse& response);
absl::StatusOr<int64_t> Units(const v1::TranscodeRequest& request,
                              const v1::TranscodeResponse& response);

// LLM: prompt_tokens + completion_tokens of the stream's final usage. INVALID_ARGUMENT when the
// usage is inconsistent: negative counts, total_tokens not their sum, more completion tokens than
// the request's max_tokens (`max_tokens` > 0) or fewer than the `content_messages` (messages with
// new text) the stream carried, since each generated token yields at most one.
absl::StatusOr<int64_t> LlmUnits(const v1::LLMTokenUsage& usage, int64_t max_tokens,
                                 int64_t content_messages);

}  // namespace switchyard::metering
