// Segment transcoder: one decode feeding a ladder of libx264 encodes, in-process with libav*.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::orchestrator {

// One output rendition. Validated by TranscodeSegment.
struct RenditionSpec {
  std::string name;         // defaults to "<height>p"
  int width = 0;            // even, > 0; or 0 to derive from height keeping the input aspect
  int height = 0;           // even, > 0; or 0 to derive from width keeping the input aspect
  int64_t bitrate_bps = 0;  // > 0
  int fps_num = 0;          // 0/0: keep the input frame rate
  int fps_den = 0;
  double gop_seconds = 0;  // 0: 2 seconds; ignored when intra_only
  // Every output frame an IDR (keyframe interval 1, no B-frames), for editing/scrubbing outputs.
  bool intra_only = false;
  std::string preset = "veryfast";
  std::string profile = "main";  // baseline | main | high
};

struct RenditionOutput {
  RenditionSpec spec;  // with defaults filled in
  std::string data;    // the encoded segment, in the requested container
  int64_t frames = 0;  // video frames encoded
  int width = 0;
  int height = 0;
};

struct TranscodeResult {
  std::vector<RenditionOutput> renditions;  // one per spec, same order
  int64_t input_frames = 0;                 // video frames decoded
  double duration_seconds = 0;              // input video duration
  bool hardware_decoded = false;            // the video was decoded on the GPU
  bool hardware_encoded = false;            // at least one rendition was encoded with NVENC
};

struct TranscodeOptions {
  std::string container = "mpegts";  // "mpegts" or "mp4" (fragmented)
  int max_renditions = 8;
  int max_width = 3840;  // per rendition, and for the input
  int max_height = 3840;
  int64_t max_input_bytes = 64 << 20;  // segment size (config: transcode.max_segment_bytes)
  // Duration of the segment (its video; its audio when it has none), measured by demuxing its
  // packets before anything is decoded (MeasureSegmentSeconds); config:
  // transcode.max_segment_seconds. <= 0: not checked.
  double max_input_seconds = 30;
  int encoder_threads = 1;  // libx264 threads per rendition
  // Scale and encode the renditions of a segment on one thread each (fed from the one decode),
  // rather than one after another on the calling thread. Outputs are identical either way.
  bool parallel_renditions = true;
  // "copy": audio packets are copied into every rendition (audio the output container cannot
  // carry is left out). "aac": each audio stream is decoded once and re-encoded to AAC at
  // audio_bitrate_bps (8000..512000), at most stereo, for every rendition.
  std::string audio_codec = "copy";
  // Video decoding: "auto" decodes on the GPU (NVDEC through a CUDA device) when this machine has
  // one and the codec supports it, else in software; "cuda" requires the GPU (FAILED_PRECONDITION
  // without one); "none" always decodes in software. Decoded frames are copied to system memory
  // and scaled there unless gpu_scale.
  std::string hw_decode = "auto";
  // GPU-decoded frames (8-bit 4:2:0, limited range) are scaled on the GPU (libavfilter's
  // scale_cuda) and only the scaled pictures copied to memory for the encoder; false copies every
  // full-size frame to memory and scales it with swscale. Falls back to that by itself when the
  // GPU filter cannot be built.
  bool gpu_scale = true;
  // Video encoding: "auto" encodes with NVENC (h264_nvenc) when this machine's GPU has it (found
  // by opening a session at start, media::ProbeVideoHardware) and falls back to libx264 for a
  // rendition whose NVENC session does not open (consumer GPUs limit concurrent sessions);
  // "nvenc" requires it (FAILED_PRECONDITION without, INTERNAL if a session does not open);
  // "none" always uses libx264. H100/H200 have NVDEC but no NVENC: "auto" gives libx264 there.
  // The x264 preset maps onto NVENC's p1..p7; frames reach NVENC from system memory.
  std::string hw_encode = "auto";
  int64_t audio_bitrate_bps = 128'000;
  // Bounds that keep hostile inputs (huge frame counts, timestamps with gaps that fps conversion
  // would fill with duplicates) from turning into unbounded work: INVALID_ARGUMENT beyond them.
  int64_t max_input_frames = 18000;   // decoded video frames
  int64_t max_output_frames = 36000;  // encoded frames per rendition
};

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
