#include "orchestrator/transcode/rendition_muxer.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace switchyard::orchestrator::transcode {
namespace {

// A muxer rejecting data (bad timestamps or codec parameters copied from the input) means a corrupt
// input; anything else (out of memory, I/O) is our failure.
absl::Status MuxError(size_t index, const char* what, int err) {
  const std::string message =
      absl::StrCat("rendition ", index, ": ", what, " failed: ", media::AvErrorString(err));
  if (err == AVERROR_INVALIDDATA || err == AVERROR(EINVAL) || err == AVERROR_PATCHWELCOME) {
    return absl::InvalidArgumentError(absl::StrCat("segment: corrupt input? ", message));
  }
  return absl::InternalError(message);
}

}  // namespace

RenditionMuxer::RenditionMuxer(size_t rendition, const std::string& container)
    : rendition_(rendition), container_(container) {}

absl::StatusOr<RenditionMuxerPtr> RenditionMuxer::Open(
    size_t rendition, const std::string& container, const AVCodecContext* encoder,
    AVRational frame_rate, const SegmentAudio& audio, const std::vector<double>* audio_floor) {
  RenditionMuxerPtr self(new RenditionMuxer(rendition, container));
  self->packet_.reset(av_packet_alloc());
  if (!self->packet_) return absl::ResourceExhaustedError("cannot allocate a packet");
  auto muxer = media::OpenMemoryMuxer(container, &self->data_);
  if (!muxer.ok()) return absl::InternalError(muxer.status().message());
  self->muxer_ = std::move(*muxer);
  if (auto status = self->WriteHeader(encoder, frame_rate, audio, audio_floor); !status.ok()) {
    return status;
  }
  return self;
}

absl::Status RenditionMuxer::WriteHeader(const AVCodecContext* encoder, AVRational frame_rate,
                                         const SegmentAudio& audio,
                                         const std::vector<double>* audio_floor) {
  AVFormatContext* out = muxer_->format.get();
  if (encoder != nullptr) {
    video_ = avformat_new_stream(out, nullptr);
    if (video_ == nullptr) return absl::ResourceExhaustedError("cannot add a stream");
    if (avcodec_parameters_from_context(video_->codecpar, encoder) < 0) {
      return absl::InternalError("cannot set the output video parameters");
    }
    video_->time_base = encoder->time_base;
    video_->avg_frame_rate = frame_rate;
  }
  // Every input stream `audio` was set up for (carried or not).
  const unsigned inputs = audio.input_streams();
  audio_map_.assign(inputs, -1);
  for (unsigned i = 0; i < inputs; ++i) {
    if (!audio.carries(i)) continue;
    auto index = audio.AddOutputStream(i, out);
    if (!index.ok()) return index.status();
    audio_map_[i] = *index;
  }
  last_audio_dts_.assign(out->nb_streams, AV_NOPTS_VALUE);

  AVDictionary* opts = nullptr;
  if (container_ == "mp4") {
    // frag_discont + no edit list: each fragment's tfdt carries the input's timestamps instead of
    // restarting at zero, so consecutive segments continue each other.
    av_dict_set(&opts, "movflags", "frag_keyframe+empty_moov+default_base_moof+frag_discont", 0);
    av_dict_set(&opts, "use_editlist", "0", 0);
    out->avoid_negative_ts = AVFMT_AVOID_NEG_TS_MAKE_NON_NEGATIVE;
  }
  const int ret = avformat_write_header(out, &opts);
  av_dict_free(&opts);
  if (ret < 0) return MuxError(rendition_, "writing the container header", ret);
  // A session's segment following the previous one: its audio starts after that one's did end
  // (the stream time bases are only final now).
  audio_floor_.assign(out->nb_streams, false);
  audio_time_bases_.assign(out->nb_streams, AVRational{0, 0});
  for (unsigned i = 0; i < out->nb_streams; ++i) {
    if (out->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
      audio_time_bases_[i] = out->streams[i]->time_base;
    }
  }
  if (audio_floor != nullptr) {
    size_t k = 0;
    for (unsigned i = 0; i < out->nb_streams; ++i) {
      const AVStream* st = out->streams[i];
      if (st->codecpar->codec_type != AVMEDIA_TYPE_AUDIO) continue;
      if (k < audio_floor->size() && std::isfinite((*audio_floor)[k])) {
        last_audio_dts_[i] =
            static_cast<int64_t>(std::floor((*audio_floor)[k] / av_q2d(st->time_base)));
        audio_floor_[i] = true;
      }
      ++k;
    }
  }
  return absl::OkStatus();
}

absl::Status RenditionMuxer::WriteVideo(AVPacket* pkt, AVRational time_base) {
  pkt->stream_index = video_->index;
  av_packet_rescale_ts(pkt, time_base, video_->time_base);
  // With B-frames the encoder's first DTS come before the first PTS: at a stream starting at 0
  // they are negative, and the muxer would shift this whole output later (but not the next
  // segment's, which would then overlap it). Instead squeeze them in just after 0, a tick
  // apart (the stream time base is at least 1/10000 s, far finer than a frame).
  if (pkt->dts != AV_NOPTS_VALUE) {
    int64_t dts = pkt->dts;
    if (dts < 0 && pkt->pts != AV_NOPTS_VALUE && pkt->pts >= 0) dts = 0;
    if (last_dts_ != AV_NOPTS_VALUE && dts <= last_dts_) dts = last_dts_ + 1;
    if (pkt->pts != AV_NOPTS_VALUE && dts > pkt->pts) {
      av_packet_unref(pkt);
      return absl::InternalError(
          absl::StrCat("rendition ", rendition_, ": the encoder's timestamps cannot be muxed"));
    }
    pkt->dts = dts;
    last_dts_ = dts;
  }
  const int ret = av_interleaved_write_frame(muxer_->format.get(), pkt);  // takes the data
  av_packet_unref(pkt);
  if (ret < 0) return MuxError(rendition_, "muxing video", ret);
  return absl::OkStatus();
}

absl::Status RenditionMuxer::WriteAudio(const AVPacket* packet, AVRational time_base) {
  if (!carries_audio(packet->stream_index)) return absl::OkStatus();
  const int out_index = audio_map_[packet->stream_index];
  AVStream* out = muxer_->format->streams[out_index];
  AVPacket* pkt = packet_.get();
  if (av_packet_ref(pkt, packet) < 0) return absl::ResourceExhaustedError("out of memory");
  if (container_ == "mpegts" && out->codecpar->codec_id == AV_CODEC_ID_AAC &&
      out->codecpar->extradata_size < 2 &&
      (pkt->size < 7 || pkt->data[0] != 0xFF || (pkt->data[1] & 0xF0) != 0xF0)) {
    av_packet_unref(pkt);  // raw AAC with no config: MPEG-TS cannot carry it
    return absl::OkStatus();
  }
  if (pkt->dts == AV_NOPTS_VALUE) pkt->dts = pkt->pts;
  if (pkt->pts == AV_NOPTS_VALUE) pkt->pts = pkt->dts;
  av_packet_rescale_ts(pkt, time_base, out->time_base);
  int64_t& last = last_audio_dts_[out_index];
  if (audio_floor_[out_index]) {
    // The first packet against the previous segment's end: starting well before it is a
    // discontinuity (kept), not an overlap (dropped).
    audio_floor_[out_index] = false;
    if (last != AV_NOPTS_VALUE &&
        (pkt->dts - last) * av_q2d(out->time_base) < -kMaxOverlapSeconds) {
      last = AV_NOPTS_VALUE;
    }
  }
  if (last != AV_NOPTS_VALUE && pkt->dts <= last) {  // not monotonic or overlapping: drop it
    av_packet_unref(pkt);
    return absl::OkStatus();
  }
  last = pkt->dts;
  pkt->stream_index = out_index;
  pkt->pos = -1;
  const int ret = av_interleaved_write_frame(muxer_->format.get(), pkt);
  av_packet_unref(pkt);
  if (ret < 0) return MuxError(rendition_, "muxing audio", ret);
  return absl::OkStatus();
}

absl::Status RenditionMuxer::Finish() {
  AVFormatContext* out = muxer_->format.get();
  const int ret = av_write_trailer(out);
  if (ret < 0) {
    return absl::InternalError(absl::StrCat(
        "rendition ", rendition_, ": cannot finish the container: ", media::AvErrorString(ret)));
  }
  avio_flush(out->pb);
  muxer_.reset();  // the output is complete in data_
  return absl::OkStatus();
}

std::vector<double> RenditionMuxer::LastAudioSeconds() const {
  std::vector<double> seconds;
  for (size_t i = 0; i < last_audio_dts_.size(); ++i) {
    if (audio_time_bases_.size() <= i || audio_time_bases_[i].den == 0) continue;
    seconds.push_back(last_audio_dts_[i] == AV_NOPTS_VALUE
                          ? std::nan("")
                          : last_audio_dts_[i] * av_q2d(audio_time_bases_[i]));
  }
  return seconds;
}

}  // namespace switchyard::orchestrator::transcode
