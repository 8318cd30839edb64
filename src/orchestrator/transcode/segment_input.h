// The input stage: the segment's demuxer, its video stream and the checks on what it holds
// (frame size, limits, truncation) before anything is decoded.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/media/ffmpeg_util.h"
#include "orchestrator/transcode/transcode_types.h"

namespace switchyard::orchestrator::transcode {

// Demuxers we accept; anything else (playlists, images, raw streams) is not a segment.
inline constexpr char kSegmentFormats[] = "mpegts,mov,mp4,m4a,3gp,3g2,mj2";

// How many packets one segment may have; every read consumes input, but loops over a demuxer are
// bounded anyway (demuxers can emit empty packets).
int64_t MaxSegmentPackets(const TranscodeOptions& options);

class SegmentInput;
using SegmentInputPtr = std::unique_ptr<SegmentInput>;

class SegmentInput {
 public:
  // Opens `segment` (which must outlive the result) with the accepted demuxers and finds its first
  // video stream (attached pictures are not video). INVALID_ARGUMENT "segment: ..." when it is
  // not a media container.
  static absl::StatusOr<SegmentInputPtr> Open(std::string_view segment);

  AVFormatContext* format() const { return demuxer_->format.get(); }
  std::string_view segment() const { return segment_; }
  AVStream* video() const { return video_; }  // null when the segment has none

  // Checks the video stream: a codec FFmpeg decodes, a frame size within the limits. Finds its
  // display aspect and frame rate (25 fps when none can be guessed). INVALID_ARGUMENT saying what
  // is wrong.
  absl::Status CheckVideo(const TranscodeOptions& options);
  AVRational display_aspect() const { return display_aspect_; }
  AVRational frame_rate() const { return frame_rate_; }

  // A truncated MP4 has samples indexed past the end of the data; a truncated MPEG-TS does not
  // end on a whole transport packet. (A TS cut exactly at a packet boundary looks like a shorter
  // segment and is accepted.) Checks the video stream, or every audio stream when there is none.
  absl::Status CheckTruncation() const;

 private:
  SegmentInput() = default;
  // Whether any video packet of the segment is flagged as a keyframe (a second pass over the
  // input; only used to explain a failure).
  bool HasVideoKeyframe(int64_t max_packets) const;

  std::string_view segment_;
  std::unique_ptr<media::MemoryDemuxer> demuxer_;
  AVStream* video_ = nullptr;
  AVRational display_aspect_{1, 1};
  AVRational frame_rate_{0, 1};
};

}  // namespace switchyard::orchestrator::transcode
