// Re-encodes one audio stream to AAC: decode whatever FFmpeg decodes, resample to what the AAC
// encoder takes (planar float, at most stereo), cut into the encoder's frame size, encode.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/media/ffmpeg_util.h"

extern "C" {
#include <libavutil/audio_fifo.h>
#include <libswresample/swresample.h>
}

namespace switchyard::media {

using SwrContextPtr = std::unique_ptr<SwrContext, AvDeleter<swr_free>>;
using AvAudioFifoPtr = std::unique_ptr<AVAudioFifo, AvDeleter<av_audio_fifo_free>>;

class AacEncoder;
using AacEncoderPtr = std::unique_ptr<AacEncoder>;

class AacEncoder {
 public:
  static constexpr int64_t kMinBitrate = 8'000;
  static constexpr int64_t kMaxBitrate = 512'000;

  // `in`: the input stream's parameters; `in_time_base`: its packets' time base. The output keeps
  // the input's sample rate when AAC has it (else 48 kHz) and has its channel count, at most 2.
  // INVALID_ARGUMENT when the input cannot be decoded or `bitrate_bps` is out of range.
  static absl::StatusOr<AacEncoderPtr> Create(const AVCodecParameters* in, AVRational in_time_base,
                                              int64_t bitrate_bps);

  AacEncoder(const AacEncoder&) = delete;
  AacEncoder& operator=(const AacEncoder&) = delete;

  // The encoder, for the output stream's parameters (avcodec_parameters_from_context).
  const AVCodecContext* encoder() const { return encoder_.get(); }
  // The time base of the packets Encode returns (1 / sample rate).
  AVRational time_base() const { return encoder_->time_base; }

  // Decodes `packet` (an input packet; null flushes everything) and appends the AAC packets that
  // are complete to `out`. A corrupt input packet is skipped, as players do; only resource and
  // encoder failures are errors.
  absl::Status Encode(const AVPacket* packet, std::vector<AvPacketPtr>* out);

 private:
  AacEncoder() = default;
  absl::Status Resample(const AVFrame* frame);
  // Encodes whole frames from the FIFO (and, when flushing, the last partial one, then drains).
  absl::Status Drain(bool flush, std::vector<AvPacketPtr>* out);
  absl::Status Receive(std::vector<AvPacketPtr>* out);

  AvCodecContextPtr decoder_;
  AvCodecContextPtr encoder_;
  SwrContextPtr swr_;
  AvAudioFifoPtr fifo_;
  AvFramePtr decoded_;
  AVRational in_time_base_{1, 1};
  int64_t next_pts_ = AV_NOPTS_VALUE;  // in the encoder's time base
  bool flushed_ = false;
};

}  // namespace switchyard::media
