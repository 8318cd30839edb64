// Segment limits checked before anything is decoded: the size, and the duration measured by
// demuxing the packets alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace switchyard::orchestrator {

// How long a segment plays, and whether that was measured on its video (else on its audio).
struct SegmentSeconds {
  double seconds = 0;
  bool video = true;
};

// The duration of a media segment in memory, measured by demuxing its packets only (no stream
// probing, nothing decoded): from the first video stream's earliest presentation time to its
// latest one plus that packet's duration (when a packet has no duration, the smallest gap between
// the stream's presentation times stands in for it). A segment without video (a stream's later
// segment may carry audio only) is measured the same way on its first audio stream. Packets
// without a timestamp are skipped; at most `max_packets` packets are read. Stops as soon as the
// span exceeds `stop_above` seconds (the span so far is returned then: already over the limit).
// nullopt when `segment` cannot be demuxed with `formats` (a comma-separated demuxer whitelist)
// or has no timed video or audio packet: the caller's own demuxing then reports what is wrong.
std::optional<SegmentSeconds> MeasureSegmentSeconds(std::string_view segment,
                                                    const std::string& formats, int64_t max_packets,
                                                    double stop_above);

// The segment limits checked before any demuxing for decode, decoding or encoding: at most
// `max_bytes` bytes (checked first, on the size alone), and at most `max_seconds` of video (of
// audio, for a segment without video) as MeasureSegmentSeconds measures it (skipped when
// max_seconds <= 0). INVALID_ARGUMENT naming the measured value and the limit, prefixed with `what`
// (e.g. "segment"):
//   "segment: 31.000 s of video, more than the limit of 30 s".
absl::Status CheckSegmentLimits(std::string_view segment, int64_t max_bytes, double max_seconds,
                                const std::string& formats, int64_t max_packets,
                                const std::string& what);

}  // namespace switchyard::orchestrator
