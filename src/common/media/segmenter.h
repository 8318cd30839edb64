// Cuts a media file into MPEG-TS segments at video keyframes (stream copy, no re-encode), for
// clients that send a whole file as a stream of segments.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace switchyard::media {

struct SegmentInfo {
  int64_t index = 0;         // 0, 1, 2, ...
  double start_seconds = 0;  // of its first video packet, from the file's start
  double end_seconds = 0;    // where the next segment starts (or the file ends)
  double file_seconds = 0;   // the whole file's duration, when the container says (else 0)
};

// Reads `path` (any container FFmpeg demuxes with an H.264 or HEVC video stream; audio streams
// are kept) and calls `sink` with each segment in order: a new segment starts at the first video
// keyframe at least `segment_seconds` after the current one began, so every segment starts with
// a keyframe. Stops at the first error `sink` returns and returns it. INVALID_ARGUMENT when the
// file cannot be opened or has no video; NOT_FOUND when it does not exist.
absl::Status SplitIntoSegments(
    const std::string& path, double segment_seconds,
    const std::function<absl::Status(std::string segment, const SegmentInfo& info)>& sink);

}  // namespace switchyard::media
