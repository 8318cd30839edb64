#include "common/media/audio_encoder.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavutil/channel_layout.h>
#include <libavutil/mathematics.h>
}

namespace switchyard::media {
namespace {

// A rate AAC has; the input's when it is one, else 48 kHz.
int PickSampleRate(const AVCodec* codec, int wanted) {
  if (codec->supported_samplerates == nullptr) return wanted;
  for (const int* r = codec->supported_samplerates; *r != 0; ++r) {
    if (*r == wanted) return wanted;
  }
  return 48000;
}

}  // namespace

absl::StatusOr<AacEncoderPtr> AacEncoder::Create(const AVCodecParameters* in,
                                                 AVRational in_time_base, int64_t bitrate_bps) {
  InitFfmpeg();
  if (bitrate_bps < kMinBitrate || bitrate_bps > kMaxBitrate) {
    return absl::InvalidArgumentError(absl::StrCat("audio_bitrate_bps: ", bitrate_bps,
                                                   " is outside ", kMinBitrate, "..", kMaxBitrate));
  }
  const AVCodec* decoder = avcodec_find_decoder(in->codec_id);
  if (decoder == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio: no decoder for ", avcodec_get_name(in->codec_id)));
  }
  const AVCodec* encoder = avcodec_find_encoder(AV_CODEC_ID_AAC);
  if (encoder == nullptr) return absl::InternalError("this FFmpeg has no AAC encoder");

  AacEncoderPtr e(new AacEncoder());
  e->in_time_base_ = in_time_base;
  e->decoder_.reset(avcodec_alloc_context3(decoder));
  e->encoder_.reset(avcodec_alloc_context3(encoder));
  e->decoded_.reset(av_frame_alloc());
  if (!e->decoder_ || !e->encoder_ || !e->decoded_) {
    return absl::ResourceExhaustedError("cannot allocate the audio codecs");
  }
  if (avcodec_parameters_to_context(e->decoder_.get(), in) < 0) {
    return absl::InvalidArgumentError("audio: cannot use the input's codec parameters");
  }
  e->decoder_->pkt_timebase = in_time_base;
  if (int ret = avcodec_open2(e->decoder_.get(), decoder, nullptr); ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio: cannot open the ", decoder->name, " decoder: ", AvErrorString(ret)));
  }

  AVCodecContext* enc = e->encoder_.get();
  const int channels = std::clamp(in->ch_layout.nb_channels, 1, 2);
  av_channel_layout_default(&enc->ch_layout, channels);
  enc->sample_rate = PickSampleRate(encoder, in->sample_rate > 0 ? in->sample_rate : 48000);
  enc->sample_fmt = AV_SAMPLE_FMT_FLTP;  // what FFmpeg's AAC encoder takes
  enc->bit_rate = bitrate_bps;
  enc->time_base = AVRational{1, enc->sample_rate};
  // The AudioSpecificConfig in extradata: MP4 needs it in its header; MPEG-TS makes ADTS from it.
  enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  if (int ret = avcodec_open2(enc, encoder, nullptr); ret < 0) {
    return absl::InternalError(absl::StrCat("cannot open the AAC encoder: ", AvErrorString(ret)));
  }
  e->fifo_.reset(av_audio_fifo_alloc(enc->sample_fmt, channels, std::max(enc->frame_size, 1024)));
  if (!e->fifo_) return absl::ResourceExhaustedError("cannot allocate an audio FIFO");
  return e;
}

absl::Status AacEncoder::Resample(const AVFrame* frame) {
  if (!swr_) {
    SwrContext* raw = nullptr;
    if (swr_alloc_set_opts2(&raw, &encoder_->ch_layout, encoder_->sample_fmt,
                            encoder_->sample_rate,
                            // FFmpeg 5.1 takes the layout as non-const; it only reads it.
                            const_cast<AVChannelLayout*>(&frame->ch_layout),
                            static_cast<AVSampleFormat>(frame->format), frame->sample_rate, 0,
                            nullptr) < 0 ||
        raw == nullptr) {
      swr_free(&raw);
      return absl::InvalidArgumentError("audio: cannot convert the decoded audio's format");
    }
    swr_.reset(raw);
    if (swr_init(swr_.get()) < 0) {
      return absl::InvalidArgumentError("audio: cannot convert the decoded audio's format");
    }
  }
  const int in_samples = frame != nullptr ? frame->nb_samples : 0;
  const int room = swr_get_out_samples(swr_.get(), in_samples);
  if (room <= 0) return absl::OkStatus();
  AvFramePtr converted(av_frame_alloc());
  if (!converted) return absl::ResourceExhaustedError("cannot allocate an audio frame");
  converted->format = encoder_->sample_fmt;
  converted->sample_rate = encoder_->sample_rate;
  converted->nb_samples = room;
  if (av_channel_layout_copy(&converted->ch_layout, &encoder_->ch_layout) < 0 ||
      av_frame_get_buffer(converted.get(), 0) < 0) {
    return absl::ResourceExhaustedError("cannot allocate an audio frame");
  }
  const int n = swr_convert(swr_.get(), converted->data, room,
                            frame != nullptr ? const_cast<const uint8_t**>(frame->extended_data)
                                             : nullptr,
                            in_samples);
  if (n < 0) return absl::InvalidArgumentError("audio: resampling failed");
  if (n > 0 && av_audio_fifo_write(fifo_.get(), reinterpret_cast<void**>(converted->data), n) < n) {
    return absl::ResourceExhaustedError("cannot buffer audio");
  }
  return absl::OkStatus();
}

absl::Status AacEncoder::Receive(std::vector<AvPacketPtr>* out) {
  for (;;) {
    AvPacketPtr pkt(av_packet_alloc());
    if (!pkt) return absl::ResourceExhaustedError("cannot allocate a packet");
    const int ret = avcodec_receive_packet(encoder_.get(), pkt.get());
    if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return absl::OkStatus();
    if (ret < 0) return absl::InternalError(absl::StrCat("AAC encoding: ", AvErrorString(ret)));
    out->push_back(std::move(pkt));
  }
}

absl::Status AacEncoder::Drain(bool flush, std::vector<AvPacketPtr>* out) {
  const int frame_size = std::max(encoder_->frame_size, 1);
  for (;;) {
    const int available = av_audio_fifo_size(fifo_.get());
    if (available == 0 || (available < frame_size && !flush)) break;
    AvFramePtr frame(av_frame_alloc());
    if (!frame) return absl::ResourceExhaustedError("cannot allocate an audio frame");
    frame->nb_samples = std::min(available, frame_size);
    frame->format = encoder_->sample_fmt;
    frame->sample_rate = encoder_->sample_rate;
    if (av_channel_layout_copy(&frame->ch_layout, &encoder_->ch_layout) < 0 ||
        av_frame_get_buffer(frame.get(), 0) < 0) {
      return absl::ResourceExhaustedError("cannot allocate an audio frame");
    }
    if (av_audio_fifo_read(fifo_.get(), reinterpret_cast<void**>(frame->data),
                           frame->nb_samples) < frame->nb_samples) {
      return absl::InternalError("cannot read buffered audio");
    }
    frame->pts = next_pts_ == AV_NOPTS_VALUE ? 0 : next_pts_;
    next_pts_ = frame->pts + frame->nb_samples;
    if (int ret = avcodec_send_frame(encoder_.get(), frame.get()); ret < 0) {
      return absl::InternalError(absl::StrCat("AAC encoding: ", AvErrorString(ret)));
    }
    if (auto status = Receive(out); !status.ok()) return status;
  }
  if (flush) {
    if (int ret = avcodec_send_frame(encoder_.get(), nullptr); ret < 0 && ret != AVERROR_EOF) {
      return absl::InternalError(absl::StrCat("AAC encoding: ", AvErrorString(ret)));
    }
    return Receive(out);
  }
  return absl::OkStatus();
}

absl::Status AacEncoder::Encode(const AVPacket* packet, std::vector<AvPacketPtr>* out) {
  if (flushed_) return absl::OkStatus();
  int ret = avcodec_send_packet(decoder_.get(), packet);
  if (ret < 0 && ret != AVERROR_EOF && packet != nullptr) {
    if (ret == AVERROR(ENOMEM)) return absl::ResourceExhaustedError("out of memory decoding");
    return absl::OkStatus();  // a corrupt packet: skip it
  }
  for (;;) {
    ret = avcodec_receive_frame(decoder_.get(), decoded_.get());
    if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
    if (ret < 0) {
      if (ret == AVERROR(ENOMEM)) return absl::ResourceExhaustedError("out of memory decoding");
      if (packet != nullptr) break;
      continue;
    }
    if (next_pts_ == AV_NOPTS_VALUE && decoded_->best_effort_timestamp != AV_NOPTS_VALUE) {
      // The output starts where the input's first decoded samples are; after that, samples are
      // counted, so the AAC frames are evenly spaced whatever the input's packet timing.
      next_pts_ = av_rescale_q(decoded_->best_effort_timestamp, in_time_base_,
                               encoder_->time_base);
    }
    absl::Status status = Resample(decoded_.get());
    av_frame_unref(decoded_.get());
    if (!status.ok()) return status;
  }
  if (packet == nullptr) {
    flushed_ = true;
    if (swr_) {
      if (auto status = Resample(nullptr); !status.ok()) return status;  // swr's delayed samples
    }
    return Drain(/*flush=*/true, out);
  }
  return Drain(/*flush=*/false, out);
}

}  // namespace switchyard::media
