// The audio stage: which of a segment's audio streams go into the renditions, and their packets,
// copied (through aac_adtstoasc for ADTS AAC going into MP4) or re-encoded once to AAC for every
// rendition.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/media/audio_encoder.h"
#include "common/media/ffmpeg_util.h"
#include "orchestrator/transcode/cancellation.h"
#include "orchestrator/transcode/transcode_types.h"

namespace switchyard::orchestrator::transcode {

class SegmentAudio {
 public:
  // Receives each packet for the renditions, with its time base; `stream_index` is the input
  // stream's.
  using PacketSink = std::function<absl::Status(AVPacket*, AVRational)>;

  // `options`: container, audio_codec and audio_bitrate_bps (validated).
  explicit SegmentAudio(const TranscodeOptions& options);
  SegmentAudio(const SegmentAudio&) = delete;
  SegmentAudio& operator=(const SegmentAudio&) = delete;

  // Picks the audio streams of `fmt` to carry (at most 8, that the output container can carry or,
  // re-encoding, that FFmpeg decodes); every other stream but `video` is discarded while
  // demuxing. Returns how many were picked.
  int Select(AVFormatContext* fmt, const AVStream* video);
  // Copying ADTS AAC into MP4: sets up aac_adtstoasc and finds each stream's AudioSpecificConfig
  // (a second pass over `segment`, at most `max_packets` packets) for the MP4 header. A stream
  // without a usable ADTS header is left out.
  absl::Status PrepareFilters(std::string_view segment, int64_t max_packets,
                              const Cancellation& cancellation);
  // Re-encoding: one AAC encoder per stream (undecodable audio is left out, as copying leaves out
  // audio the container cannot carry).
  absl::Status PrepareEncoders();

  bool any() const;
  // How many input streams Select saw (carried or not).
  unsigned input_streams() const { return static_cast<unsigned>(carried_.size()); }
  bool carries(unsigned stream) const { return stream < carried_.size() && carried_[stream]; }
  // Leaves every audio stream out (a muxer rejected their parameters: a corrupt input).
  void DropAll();
  // Adds the output stream for input stream `stream` (carried) to `out`; returns its index.
  absl::StatusOr<int> AddOutputStream(unsigned stream, AVFormatContext* out) const;

  // One demuxed packet of a carried stream: copied or re-encoded, the result to `sink`. Takes the
  // packet's data.
  absl::Status Process(AVPacket* packet, const PacketSink& sink);
  // End of the segment: what the AAC encoders still hold, to `sink`.
  absl::Status Flush(const PacketSink& sink);

 private:
  const TranscodeOptions& options_;
  AVFormatContext* fmt_ = nullptr;
  std::vector<bool> carried_;  // per input stream
  // Per input stream: aac_adtstoasc for ADTS AAC going into MP4 (which wants raw AAC and an
  // AudioSpecificConfig in the header); null otherwise.
  std::vector<media::AvBsfContextPtr> filters_;
  std::vector<std::string> configs_;  // per input stream: the AudioSpecificConfig found
  // Per input stream, when audio is re-encoded: its AAC encoder (one for all renditions).
  std::vector<media::AacEncoderPtr> encoders_;
  media::AvPacketPtr filtered_;
};

}  // namespace switchyard::orchestrator::transcode
