// The mux stage: one rendition's output container in memory (MPEG-TS, or fragmented MP4 that
// keeps the input's timestamps), with its video stream and the audio streams carried.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/media/ffmpeg_util.h"
#include "orchestrator/transcode/segment_audio.h"

namespace switchyard::orchestrator::transcode {

// A session's segment may overlap the previous one by up to this much (the overlap is dropped);
// starting further back is a discontinuity.
inline constexpr double kMaxOverlapSeconds = 1.0;

class RenditionMuxer;
using RenditionMuxerPtr = std::unique_ptr<RenditionMuxer>;

class RenditionMuxer {
 public:
  // Opens a `container` muxer and writes its header: a video stream from `encoder` at
  // `frame_rate` (none when `encoder` is null: an audio-only segment), then an output stream per
  // input audio stream `audio` carries. `audio_floor`, when given, holds the previous segment's
  // last audio time (seconds, NaN for none) per output audio stream: this one's audio continues
  // after it. INVALID_ARGUMENT when the muxer rejects what came from the input (corrupt),
  // INTERNAL otherwise.
  static absl::StatusOr<RenditionMuxerPtr> Open(size_t rendition, const std::string& container,
                                                const AVCodecContext* encoder,
                                                AVRational frame_rate, const SegmentAudio& audio,
                                                const std::vector<double>* audio_floor);
  RenditionMuxer(const RenditionMuxer&) = delete;
  RenditionMuxer& operator=(const RenditionMuxer&) = delete;

  bool has_video() const { return video_ != nullptr; }
  bool carries_audio(int input_stream) const {
    return input_stream >= 0 && static_cast<size_t>(input_stream) < audio_map_.size() &&
           audio_map_[input_stream] >= 0;
  }

  // Muxes an encoded video packet (in `time_base`, the encoder's); takes its data. DTS are kept
  // strictly increasing: with B-frames the encoder's first DTS come before the first PTS, and at
  // a stream starting at 0 they are squeezed in just after 0 rather than the whole output
  // shifted.
  absl::Status WriteVideo(AVPacket* packet, AVRational time_base);
  // Muxes a copy of an audio packet of input stream `packet->stream_index` (in `time_base`).
  // Packets that do not advance their stream (overlapping the previous segment) are dropped.
  absl::Status WriteAudio(const AVPacket* packet, AVRational time_base);
  // Writes the trailer; the output is then complete (data()).
  absl::Status Finish();

  std::string& data() { return data_; }
  // Per output audio stream, in order: the last audio DTS muxed in seconds, or NaN.
  std::vector<double> LastAudioSeconds() const;

 private:
  RenditionMuxer(size_t rendition, const std::string& container);
  absl::Status WriteHeader(const AVCodecContext* encoder, AVRational frame_rate,
                           const SegmentAudio& audio, const std::vector<double>* audio_floor);

  size_t rendition_;
  std::string container_;
  std::string data_;  // muxer output; declared before the muxer writing into it
  std::unique_ptr<media::MemoryMuxer> muxer_;
  AVStream* video_ = nullptr;
  std::vector<int> audio_map_;           // input stream index -> output stream index, or -1
  int64_t last_dts_ = AV_NOPTS_VALUE;    // last video dts muxed, in the output stream's time base
  std::vector<int64_t> last_audio_dts_;  // per output stream, in its time base
  std::vector<AVRational> audio_time_bases_;  // per output stream; {0, 0} if not audio
  // Per output stream: last_audio_dts_ is the previous segment's, not yet checked against this
  // one.
  std::vector<bool> audio_floor_;
  media::AvPacketPtr packet_;  // audio copies
};

}  // namespace switchyard::orchestrator::transcode
