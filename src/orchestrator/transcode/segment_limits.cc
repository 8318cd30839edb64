#include "orchestrator/transcode/segment_limits.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/media/ffmpeg_util.h"

namespace switchyard::orchestrator {
namespace {

// One stream's presentation span while its packets are read (MeasureSegmentSeconds).
class StreamSpan {
 public:
  bool started() const { return first_ != AV_NOPTS_VALUE; }
  void Add(int64_t ts, int64_t duration) {
    times_.push_back(ts);
    if (first_ == AV_NOPTS_VALUE || ts < first_) first_ = ts;
    if (last_ == AV_NOPTS_VALUE || ts > last_) {
      last_ = ts;
      last_duration_ = duration;
    }
    if (end_ == AV_NOPTS_VALUE || ts + duration > end_) end_ = ts + duration;
  }
  // The span so far, each packet counted with its own duration.
  double SoFar(AVRational time_base) const {
    return static_cast<double>(end_ - first_) * av_q2d(time_base);
  }
  // The whole span: when the last packet has no duration, the packet interval (the smallest gap
  // between times) stands in for it.
  double Total(AVRational time_base) {
    int64_t end = end_;
    if (last_duration_ == 0) {
      std::sort(times_.begin(), times_.end());
      int64_t gap = 0;
      for (size_t i = 1; i < times_.size(); ++i) {
        const int64_t d = times_[i] - times_[i - 1];
        if (d > 0 && (gap == 0 || d < gap)) gap = d;
      }
      end = std::max(end, last_ + gap);
    }
    return static_cast<double>(end - first_) * av_q2d(time_base);
  }

 private:
  int64_t first_ = AV_NOPTS_VALUE;
  int64_t last_ = AV_NOPTS_VALUE;  // the latest presentation time...
  int64_t last_duration_ = 0;      // ...and its packet's duration
  int64_t end_ = AV_NOPTS_VALUE;   // max of pts + duration
  std::vector<int64_t> times_;
};

}  // namespace

std::optional<SegmentSeconds> MeasureSegmentSeconds(std::string_view segment,
                                                    const std::string& formats, int64_t max_packets,
                                                    double stop_above) {
  // Opened without avformat_find_stream_info, which may decode frames to probe the streams.
  auto demuxer = media::OpenMemoryDemuxer(segment, formats, media::StreamProbe::kPacketsOnly);
  if (!demuxer.ok()) return std::nullopt;
  AVFormatContext* fmt = (*demuxer)->format.get();
  media::AvPacketPtr pkt(av_packet_alloc());
  if (!pkt) return std::nullopt;

  // The first video stream and the first audio stream (MPEG-TS may add streams while reading).
  // The video's span is the segment's duration; an audio-only segment (a stream's later segment
  // may carry only audio, which is then copied or re-encoded) is measured by its audio.
  struct Tracked {
    int index = -1;
    AVRational time_base{0, 1};
    StreamSpan span;
  };
  Tracked video, audio;
  for (int64_t n = 0; n < max_packets && av_read_frame(fmt, pkt.get()) >= 0; ++n) {
    const AVStream* st = fmt->streams[pkt->stream_index];
    const bool timed = st->time_base.num > 0 && st->time_base.den > 0;
    if (video.index < 0 && timed && st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
        (st->disposition & AV_DISPOSITION_ATTACHED_PIC) == 0) {
      video.index = pkt->stream_index;
      video.time_base = st->time_base;
    } else if (audio.index < 0 && timed && st->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
      audio.index = pkt->stream_index;
      audio.time_base = st->time_base;
    }
    const int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    const int64_t duration = std::max<int64_t>(pkt->duration, 0);
    const int stream = pkt->stream_index;
    av_packet_unref(pkt.get());
    if (ts == AV_NOPTS_VALUE) continue;
    Tracked* t = stream == video.index ? &video : stream == audio.index ? &audio : nullptr;
    if (t == nullptr) continue;
    t->span.Add(ts, duration);
    // Over already: the video's span, or the audio's while no video has been seen.
    if (t == &video || !video.span.started()) {
      const double so_far = t->span.SoFar(t->time_base);
      if (so_far > stop_above) return SegmentSeconds{so_far, t == &video};
    }
  }
  if (video.span.started()) return SegmentSeconds{video.span.Total(video.time_base), true};
  if (audio.span.started()) return SegmentSeconds{audio.span.Total(audio.time_base), false};
  return std::nullopt;
}

absl::Status CheckSegmentLimits(std::string_view segment, int64_t max_bytes, double max_seconds,
                                const std::string& formats, int64_t max_packets,
                                const std::string& what) {
  if (static_cast<int64_t>(segment.size()) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", segment.size(), " bytes, more than the limit of ", max_bytes));
  }
  if (max_seconds <= 0) return absl::OkStatus();
  // A little slack for timestamps in units that do not divide the limit (1/90000 s in MPEG-TS).
  // Measured to the end (demuxing alone is cheap and bounded by max_packets), so that the message
  // gives the segment's whole duration.
  const double slack = 1e-6;
  auto measured =
      MeasureSegmentSeconds(segment, formats, max_packets, std::numeric_limits<double>::infinity());
  if (measured && measured->seconds > max_seconds + slack) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %.3f s of %s, more than the limit of %g s", what, measured->seconds,
                        measured->video ? "video" : "audio", max_seconds));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::orchestrator
