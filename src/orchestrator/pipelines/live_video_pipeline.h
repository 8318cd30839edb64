// The live-video-to-video pipeline of the orchestrator: one MPEG-TS segment of a live stream in,
// every video frame run through a TorchScript model, the frames encoded again (H.264, libx264,
// no B-frames, zero-latency tuning) into MPEG-TS with the input's audio copied. Stateless: the
// output keeps the input's presentation times, so the outputs of consecutive segments of one
// stream continue each other, whichever node ran each one.
//
// TorchScript contract (docs/pipelines-image.md):
//   live-video-to-video: forward(frame: float32 [1, 3, H, W] RGB 0..255, params: str)
//                        -> float32 [1, 3, H', W'] RGB 0..255
//   `params` is the stream's parameters as a JSON object text ("{}" when none). H' and W' must be
//   even and the same for every frame of a segment.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "orchestrator/orchestrator_config.h"

namespace switchyard::orchestrator {

// The limits a model's `options` may override (docs/pipelines-image.md).
struct LiveVideoLimits {
  int max_width = 1920;  // input and output frames
  int max_height = 1920;
  int max_frames = 1800;               // decoded frames per segment
  // Segment limits, checked before anything is decoded (transcode/segment_limits.h CheckSegmentLimits):
  // options max_segment_bytes and max_segment_seconds (seconds of video, or of audio
  // without video, measured by demuxing).
  // Per model, as the model's per-frame cost sets what a segment may ask; the defaults are those
  // of transcode.max_segment_bytes / max_segment_seconds.
  int64_t max_input_bytes = 64 << 20;
  double max_input_seconds = 30;
  int encoder_threads = 1;             // libx264 threads
  std::string preset = "veryfast";     // libx264 preset
};
// Reads `model.options` over the defaults; INVALID_ARGUMENT naming the model and the option when
// one is out of range (the config is wrong, not the request).
absl::StatusOr<LiveVideoLimits> LiveVideoLimitsFor(const ModelConfig& model);

struct LiveSegmentResult {
  std::string ts;  // MPEG-TS: H.264 video, the input's audio streams copied
  int64_t frames = 0;
  int width = 0;
  int height = 0;
  double first_pts_seconds = 0;
  double last_pts_seconds = 0;
  int64_t output_pixels = 0;  // frames * width * height (billing unit)
};

// Runs the model over every frame of `segment` (MPEG-TS). INVALID_ARGUMENT when the segment is
// empty, over max_input_bytes or max_input_seconds, not MPEG-TS, has no video stream, decodes to no
// frames, or has frames over the limits; INTERNAL when the model returns something that is not a
// [1, 3, H', W'] float tensor with even H', W' (the same for every frame) or the encoder fails; the
// model's own errors, DEADLINE_EXCEEDED and CANCELLED as the other pipelines report them.
absl::StatusOr<LiveSegmentResult> RunLiveVideoSegment(const RunContext& ctx,
                                                      std::string_view segment,
                                                      const std::string& params_json,
                                                      const LiveVideoLimits& limits);

}  // namespace switchyard::orchestrator
