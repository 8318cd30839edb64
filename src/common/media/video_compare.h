// Comparison of two encoded videos by their decoded frames: the renditions two nodes made of one
// transcode request (the gateway's spot checks, gateway/api/spot_check.h). Encoders need not
// agree bit for bit (x264's output depends on its thread count), so the videos are compared as
// a viewer sees them: the same number of frames, at the same timestamps, of the same size, and
// pixels close enough (PSNR over every frame and plane).
//
// The inputs come from orchestrators, i.e. they are untrusted: the container must be one of
// kVideoCompareDemuxers, every frame at most `max_frame_pixels`, each video at most `max_frames`
// frames, and decoding is single-threaded.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace switchyard::media {

// Containers a transcode rendition comes in (names as in `ffmpeg -demuxers`).
inline constexpr const char* kVideoCompareDemuxers = "mpegts,mov";

struct VideoCompareLimits {
  int64_t max_frame_pixels = int64_t{64} << 20;
  int64_t max_frames = 100000;
};

struct VideoComparison {
  int64_t frames_a = 0;
  int64_t frames_b = 0;  // frames compared: the shorter video's count
  // The first frame (0-based) whose timestamp, size or pixel format differs; -1 when none.
  int64_t first_different_frame = -1;
  std::string difference;  // what differs at first_different_frame ("" when none)
  // PSNR in dB over the frames compared, every plane, on the 0..255 scale (infinity when the
  // pixels are identical; 0 when no frame was compared).
  double psnr_db = 0;
  // Whether the videos agree on everything but pixel values: frame counts, each frame's
  // timestamp, size and format.
  bool SameShape() const { return frames_a == frames_b && first_different_frame < 0; }
};

// Decodes the best video stream of `a` and of `b` in lockstep and compares them frame by frame.
// INVALID_ARGUMENT, naming the video ("first"/"second"), when either is not a decodable video in
// an allowed container, has a frame over the limits, or more frames than allowed.
absl::StatusOr<VideoComparison> CompareVideos(std::string_view a, std::string_view b,
                                              const VideoCompareLimits& limits);

}  // namespace switchyard::media
