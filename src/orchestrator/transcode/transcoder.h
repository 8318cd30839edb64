// Segment transcoder: one decode feeding a ladder of H.264 encodes, in-process with libav*. The
// stages live beside this header: segment_input (demux), video_decoder, timestamps, rendition
// (scaler, video_encoder, rendition_muxer), segment_audio, rendition_worker (threads),
// segment_limits; segment_transcoder wires them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "orchestrator/transcode/segment_limits.h"
#include "orchestrator/transcode/transcode_types.h"

namespace switchyard::orchestrator {

// Transcodes one MPEG-TS or MP4 segment (H.264, HEVC or any video FFmpeg decodes; optional audio:
// audio packets are copied into every rendition). `cancelled`, if set, is polled between frames;
// when it returns true the call stops and returns CANCELLED.
// Decoding starts at the segment's first keyframe (or, when no packet is flagged as one, at the
// first intra frame the decoder finds): frames before it (a segment cut mid-GOP) are skipped.
// Output timestamps follow the input's (scaled to the output rate), so the outputs of consecutive
// segments of one stream continue each other; where the input's presentation times go backwards the
// frames that follow are shifted to continue (none is lost), and missing times are filled in from
// the frame rate. Every output starts with an IDR frame and its DTS strictly increase from 0 or
// later (the encoder's negative DTS at a stream starting at 0 are squeezed in after 0 rather than
// the whole output shifted). Thread-safe: concurrent calls share no mutable state. Errors:
// INVALID_ARGUMENT for a bad ladder (empty, more than max_renditions, bad sizes/bitrate/
// preset/profile), an input over max_input_bytes or max_input_seconds (both checked before
// anything is decoded: CheckSegmentLimits), or an input that is empty, not a media container,
// truncated, has no video stream, has no keyframe, or decodes to no frames; each message says
// what was wrong. INTERNAL for encoder failures.
absl::StatusOr<TranscodeResult> TranscodeSegment(std::string_view segment,
                                                 const std::vector<RenditionSpec>& ladder,
                                                 const TranscodeOptions& options,
                                                 const std::function<bool()>& cancelled = {});

namespace internal {

// What TranscodeSession keeps between the segments of one stream: the video decoder (reused while
// the input's codec parameters stay the same), each rendition's scaler (reused while the decoded
// size/format and the output size stay the same), the last output timestamp of each rendition
// and the ladder as last resolved. Opaque; owned by one session, used by one call at a time.
struct StreamState;
struct StreamStateDeleter {
  void operator()(StreamState* state) const;
};
using StreamStatePtr = std::unique_ptr<StreamState, StreamStateDeleter>;
StreamStatePtr NewStreamState();

struct StreamStateStats {
  int64_t decoders_opened = 0;  // video decoders opened over the stream's life
  int64_t scalers_created = 0;  // scaler contexts created, all renditions together
};
StreamStateStats GetStreamStateStats(const StreamState& state);

struct StreamSegment {
  // The stream has had a video segment: a segment without video gives audio-only renditions
  // (0 frames, 0x0) instead of INVALID_ARGUMENT.
  bool allow_audio_only = false;
  // This segment directly follows the last one transcoded with this state: outputs never repeat
  // or go back before that one's last timestamps (overlapping input frames are dropped).
  bool continues_previous = false;
};

// TranscodeSegment, borrowing long-lived state from `state`.
absl::StatusOr<TranscodeResult> TranscodeStreamSegment(StreamState& state, std::string_view segment,
                                                       const std::vector<RenditionSpec>& ladder,
                                                       const TranscodeOptions& options,
                                                       const StreamSegment& how,
                                                       const std::function<bool()>& cancelled);

}  // namespace internal

}  // namespace switchyard::orchestrator
