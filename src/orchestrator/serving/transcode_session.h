// A live stream's transcoding state, kept between its segments.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "orchestrator/transcode/transcoder.h"

namespace switchyard::orchestrator {

// One stream's segments, transcoded with one ladder and one output container. Segments may arrive
// out of order or with gaps (the caller passes each one's sequence number); each output follows
// its input's timestamps, so the renditions of consecutive segments continue each other.
//
// Between segments the session keeps what can be reused: the decoder while the input's codec
// parameters stay the same, and each rendition's scaler while the decoded size and format do.
// A resolution change between segments is handled (sizes derived from the input are derived
// again, aspect kept); input containers may differ between segments (MPEG-TS and MP4 mixed).
//
// Stream rules: the first segment must carry video (INVALID_ARGUMENT otherwise: the ladder's
// sizes cannot be known); a later audio-only segment is accepted and gives audio-only renditions
// with 0 video frames (width and height 0; spec as resolved by the last video segment). Every
// error of TranscodeSegment applies per segment; a failed segment does not end the session.
//
// Timestamps: a segment whose sequence is one more than the last successful segment's continues
// it: its outputs never repeat or go back before that segment's last frame (input frames that
// overlap it are dropped), so a stream sent in order has increasing output timestamps throughout.
// Out-of-order, repeated or skipped segments are transcoded on their own timestamps.
//
// Not thread-safe: the caller runs one segment of a session at a time.
class TranscodeSession {
 public:
  // INVALID_ARGUMENT for a bad ladder or options (as TranscodeSegment would answer).
  static absl::StatusOr<std::unique_ptr<TranscodeSession>> Create(std::vector<RenditionSpec> ladder,
                                                                  TranscodeOptions options);
  ~TranscodeSession();

  TranscodeSession(const TranscodeSession&) = delete;
  TranscodeSession& operator=(const TranscodeSession&) = delete;

  // Transcodes segment number `sequence` of the stream. `cancelled` as for TranscodeSegment;
  // `segments_in_flight` (this one included) feeds the "auto" thread policy.
  absl::StatusOr<TranscodeResult> Transcode(int64_t sequence, std::string_view segment,
                                            const std::function<bool()>& cancelled = {},
                                            int segments_in_flight = 1);

  // Segments transcoded successfully so far.
  int64_t segments_done() const { return segments_done_; }
  // Video decoders opened so far (1 while the input's codec parameters never changed).
  int64_t decoders_opened() const;
  // Scaler contexts created so far, all renditions together.
  int64_t scalers_created() const;
  const std::vector<RenditionSpec>& ladder() const { return ladder_; }
  const TranscodeOptions& options() const { return options_; }

 private:
  TranscodeSession(std::vector<RenditionSpec> ladder, TranscodeOptions options);

  std::vector<RenditionSpec> ladder_;
  TranscodeOptions options_;
  int64_t segments_done_ = 0;
  bool seen_video_ = false;
  bool have_last_ = false;     // a segment succeeded...
  int64_t last_sequence_ = 0;  // ...with this sequence number
  internal::StreamStatePtr state_;
};

using TranscodeSessionPtr = std::unique_ptr<TranscodeSession>;

}  // namespace switchyard::orchestrator
