#include "orchestrator/transcode/segment_input.h"

#include <climits>

#include "absl/strings/str_cat.h"

extern "C" {
#include <libavutil/opt.h>
}

namespace switchyard::orchestrator::transcode {

int64_t MaxSegmentPackets(const TranscodeOptions& options) {
  return options.max_input_frames * 16 + 1024;
}

absl::StatusOr<SegmentInputPtr> SegmentInput::Open(std::string_view segment) {
  auto demuxer = media::OpenMemoryDemuxer(segment, kSegmentFormats);
  if (!demuxer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("segment: ", demuxer.status().message()));
  }
  SegmentInputPtr input(new SegmentInput());
  input->segment_ = segment;
  input->demuxer_ = std::move(*demuxer);
  AVFormatContext* fmt = input->format();
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    AVStream* st = fmt->streams[i];
    if (input->video_ == nullptr && st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
        (st->disposition & AV_DISPOSITION_ATTACHED_PIC) == 0) {
      input->video_ = st;
    }
  }
  return input;
}

absl::Status SegmentInput::CheckVideo(const TranscodeOptions& options) {
  const AVCodecParameters* par = video_->codecpar;
  if (avcodec_find_decoder(par->codec_id) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment: video codec \"", avcodec_get_name(par->codec_id), "\" cannot be decoded"));
  }
  if (par->width <= 0 || par->height <= 0) {
    // The sequence header (and so the frame size) usually comes with a keyframe: say so when
    // there is none.
    if (!HasVideoKeyframe(MaxSegmentPackets(options))) {
      return absl::InvalidArgumentError(
          "segment: no keyframe in the video: a segment must contain an IDR frame (with its "
          "sequence header); was it cut mid-GOP?");
    }
    return absl::InvalidArgumentError(
        "segment: the video stream has no frame size (truncated or corrupt input?)");
  }
  if (par->width > options.max_width || par->height > options.max_height) {
    return absl::InvalidArgumentError(absl::StrCat("segment: input video is ", par->width, "x",
                                                   par->height, ", larger than the limit of ",
                                                   options.max_width, "x", options.max_height));
  }
  AVFormatContext* fmt = format();
  AVRational sar = av_guess_sample_aspect_ratio(fmt, video_, nullptr);
  if (sar.num <= 0 || sar.den <= 0) sar = AVRational{1, 1};
  av_reduce(&display_aspect_.num, &display_aspect_.den, int64_t{par->width} * sar.num,
            int64_t{par->height} * sar.den, INT_MAX);
  frame_rate_ = av_guess_frame_rate(fmt, video_, nullptr);
  if (frame_rate_.num <= 0 || frame_rate_.den <= 0 || av_q2d(frame_rate_) > 1000 ||
      av_q2d(frame_rate_) < 0.1) {
    frame_rate_ = AVRational{25, 1};
  }
  return absl::OkStatus();
}

bool SegmentInput::HasVideoKeyframe(int64_t max_packets) const {
  auto scan = media::OpenMemoryDemuxer(segment_, kSegmentFormats);
  if (!scan.ok()) return false;
  AVFormatContext* fmt = (*scan)->format.get();
  media::AvPacketPtr pkt(av_packet_alloc());
  if (!pkt) return false;
  for (int64_t n = 0; n < max_packets && av_read_frame(fmt, pkt.get()) >= 0; ++n) {
    const bool key = pkt->stream_index == video_->index && (pkt->flags & AV_PKT_FLAG_KEY) != 0;
    av_packet_unref(pkt.get());
    if (key) return true;
  }
  return false;
}

absl::Status SegmentInput::CheckTruncation() const {
  AVFormatContext* fmt = format();
  const auto size = static_cast<int64_t>(segment_.size());
  for (unsigned s = 0; s < fmt->nb_streams; ++s) {
    AVStream* st = fmt->streams[s];
    // The video stream; or, for an audio-only segment, every audio stream.
    if (video_ != nullptr ? st != video_ : st->codecpar->codec_type != AVMEDIA_TYPE_AUDIO) continue;
    const int entries = avformat_index_get_entries_count(st);
    for (int i = 0; i < entries; ++i) {
      const AVIndexEntry* e = avformat_index_get_entry(st, i);
      if (e != nullptr && e->size > 0 && e->pos + e->size > size) {
        return absl::InvalidArgumentError(
            absl::StrCat("segment: input is truncated: ", video_ != nullptr ? "video" : "audio",
                         " sample ", i, " at byte ", e->pos, " (", e->size,
                         " bytes) extends past the end of the data (", size, " bytes)"));
      }
    }
  }
  if (std::string_view(fmt->iformat->name) == "mpegts") {
    int64_t packet_size = 0;
    if (av_opt_get_int(fmt, "ts_packetsize", AV_OPT_SEARCH_CHILDREN, &packet_size) >= 0 &&
        (packet_size == 188 || packet_size == 192 || packet_size == 204)) {
      const int64_t sync = size - packet_size + (packet_size == 192 ? 4 : 0);
      if (sync < 0 || segment_[sync] != 0x47) {
        return absl::InvalidArgumentError(
            absl::StrCat("segment: input is truncated: the data does not end on a whole ",
                         packet_size, "-byte transport stream packet"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace switchyard::orchestrator::transcode
