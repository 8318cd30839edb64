#include "common/media/video_compare.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/media/ffmpeg_util.h"

extern "C" {
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
}

namespace switchyard::media {
namespace {

// Damaged packets skipped (as ffmpeg skips them) before a video counts as corrupt.
constexpr int kMaxCorruptPackets = 8;

// One video's frames, decoded on demand.
class FrameReader {
 public:
  static absl::StatusOr<std::unique_ptr<FrameReader>> Open(std::string_view data,
                                                           const char* name) {
    auto reader = std::unique_ptr<FrameReader>(new FrameReader(name));
    auto demuxer = OpenMemoryDemuxer(data, kVideoCompareDemuxers);
    if (!demuxer.ok()) return reader->Error(demuxer.status().message());
    reader->demuxer_ = *std::move(demuxer);
    AVFormatContext* fmt = reader->demuxer_->format.get();
    const AVCodec* codec = nullptr;
    reader->stream_ = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (reader->stream_ < 0 || codec == nullptr) return reader->Error("has no decodable video");
    reader->time_base_ = fmt->streams[reader->stream_]->time_base;
    reader->decoder_.reset(avcodec_alloc_context3(codec));
    reader->packet_.reset(av_packet_alloc());
    reader->frame_.reset(av_frame_alloc());
    if (!reader->decoder_ || !reader->packet_ || !reader->frame_) {
      return absl::ResourceExhaustedError("out of memory allocating a video decoder");
    }
    AVCodecContext* dec = reader->decoder_.get();
    if (int err = avcodec_parameters_to_context(dec, fmt->streams[reader->stream_]->codecpar);
        err < 0) {
      return reader->Error(absl::StrCat("has invalid stream parameters: ", AvErrorString(err)));
    }
    dec->pkt_timebase = reader->time_base_;
    dec->thread_count = 1;  // a spot check is background work: one core per video at most
    if (int err = avcodec_open2(dec, codec, nullptr); err < 0) {
      return reader->Error(absl::StrCat("decoder could not be opened: ", AvErrorString(err)));
    }
    return reader;
  }

  // The next frame (valid until the next call), or null after the last.
  absl::StatusOr<const AVFrame*> Next(const VideoCompareLimits& limits) {
    av_frame_unref(frame_.get());
    while (true) {
      int err = avcodec_receive_frame(decoder_.get(), frame_.get());
      if (err == 0) {
        if (static_cast<int64_t>(frame_->width) * frame_->height > limits.max_frame_pixels) {
          return Error(absl::StrCat("has a ", frame_->width, "x", frame_->height,
                                    " frame, more than ", limits.max_frame_pixels, " pixels"));
        }
        if (++frames_ > limits.max_frames) {
          return Error(absl::StrCat("has more than ", limits.max_frames, " frames"));
        }
        return frame_.get();
      }
      if (err == AVERROR_EOF) return nullptr;
      if (err != AVERROR(EAGAIN)) return Corrupt(err);
      if (flushed_) return nullptr;
      err = av_read_frame(demuxer_->format.get(), packet_.get());
      if (err == AVERROR_EOF) {
        avcodec_send_packet(decoder_.get(), nullptr);
        flushed_ = true;
        continue;
      }
      if (err < 0) return Corrupt(err);
      if (packet_->stream_index != stream_) {
        av_packet_unref(packet_.get());
        continue;
      }
      err = avcodec_send_packet(decoder_.get(), packet_.get());
      av_packet_unref(packet_.get());
      if (err == AVERROR_INVALIDDATA && ++corrupt_packets_ <= kMaxCorruptPackets) continue;
      if (err < 0) return Corrupt(err);
    }
  }

  // The frame's presentation time in microseconds (AV_NOPTS_VALUE when it has none).
  int64_t TimestampUs(const AVFrame& frame) const {
    const int64_t ts = frame.best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE) return AV_NOPTS_VALUE;
    return av_rescale_q(ts, time_base_, AV_TIME_BASE_Q);
  }

 private:
  explicit FrameReader(const char* name) : name_(name) {}
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("the ", name_, " video ", what));
  }
  absl::Status Corrupt(int err) const {
    return Error(absl::StrCat("is corrupt: ", AvErrorString(err)));
  }

  const char* const name_;
  std::unique_ptr<MemoryDemuxer> demuxer_;
  int stream_ = -1;
  AVRational time_base_{1, 1};
  AvCodecContextPtr decoder_;
  AvPacketPtr packet_;
  AvFramePtr frame_;
  bool flushed_ = false;
  int corrupt_packets_ = 0;
  int64_t frames_ = 0;
};

// Whether frames of `fmt` are compared byte by byte: every component 8 bits, no palette, not a
// hardware or bitstream format.
bool EightBitFormat(AVPixelFormat fmt) {
  const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(fmt);
  if (desc == nullptr || desc->nb_components == 0) return false;
  if (desc->flags & (AV_PIX_FMT_FLAG_PAL | AV_PIX_FMT_FLAG_HWACCEL | AV_PIX_FMT_FLAG_BITSTREAM)) {
    return false;
  }
  for (int i = 0; i < desc->nb_components; ++i) {
    if (desc->comp[i].depth != 8) return false;
  }
  return true;
}

// Adds the squared differences of two frames of the same size and 8-bit format to `*squares` and
// their sample count to `*samples`.
void AddSquaredDifferences(const AVFrame& x, const AVFrame& y, double* squares, double* samples) {
  const auto fmt = static_cast<AVPixelFormat>(x.format);
  const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(fmt);
  const int planes = av_pix_fmt_count_planes(fmt);
  for (int p = 0; p < planes; ++p) {
    const int row_bytes = av_image_get_linesize(fmt, x.width, p);
    const bool chroma = (p == 1 || p == 2) && !(desc->flags & AV_PIX_FMT_FLAG_RGB);
    const int rows = chroma ? AV_CEIL_RSHIFT(x.height, desc->log2_chroma_h) : x.height;
    if (row_bytes <= 0) continue;
    for (int r = 0; r < rows; ++r) {
      const uint8_t* a = x.data[p] + static_cast<ptrdiff_t>(r) * x.linesize[p];
      const uint8_t* b = y.data[p] + static_cast<ptrdiff_t>(r) * y.linesize[p];
      int64_t row_sum = 0;
      for (int i = 0; i < row_bytes; ++i) {
        const int d = static_cast<int>(a[i]) - static_cast<int>(b[i]);
        row_sum += d * d;
      }
      *squares += static_cast<double>(row_sum);
      *samples += row_bytes;
    }
  }
}

}  // namespace

absl::StatusOr<VideoComparison> CompareVideos(std::string_view a, std::string_view b,
                                              const VideoCompareLimits& limits) {
  InitFfmpeg();
  auto first = FrameReader::Open(a, "first");
  if (!first.ok()) return first.status();
  auto second = FrameReader::Open(b, "second");
  if (!second.ok()) return second.status();
  VideoComparison c;
  double squares = 0, samples = 0;
  bool a_done = false, b_done = false;
  // Bounded: each reader refuses more than max_frames frames.
  while (!a_done || !b_done) {
    const AVFrame* x = nullptr;
    const AVFrame* y = nullptr;
    if (!a_done) {
      auto next = (*first)->Next(limits);
      if (!next.ok()) return next.status();
      x = *next;
      a_done = x == nullptr;
      if (x != nullptr) ++c.frames_a;
    }
    if (!b_done) {
      auto next = (*second)->Next(limits);
      if (!next.ok()) return next.status();
      y = *next;
      b_done = y == nullptr;
      if (y != nullptr) ++c.frames_b;
    }
    if (x == nullptr || y == nullptr || c.first_different_frame >= 0) continue;
    const int64_t index = c.frames_a - 1;
    const int64_t tx = (*first)->TimestampUs(*x), ty = (*second)->TimestampUs(*y);
    if (tx != ty) {
      c.first_different_frame = index;
      c.difference = absl::StrCat("frame ", index, " is at ", tx, " us against ", ty, " us");
    } else if (x->width != y->width || x->height != y->height) {
      c.first_different_frame = index;
      c.difference = absl::StrCat("frame ", index, " is ", x->width, "x", x->height, " against ",
                                  y->width, "x", y->height);
    } else if (x->format != y->format || !EightBitFormat(static_cast<AVPixelFormat>(x->format))) {
      const char* fx = av_get_pix_fmt_name(static_cast<AVPixelFormat>(x->format));
      const char* fy = av_get_pix_fmt_name(static_cast<AVPixelFormat>(y->format));
      c.first_different_frame = index;
      c.difference = absl::StrCat("frame ", index, " is ", fx ? fx : "?", " against ",
                                  fy ? fy : "?", x->format == y->format ? " (not compared)" : "");
    } else {
      AddSquaredDifferences(*x, *y, &squares, &samples);
    }
  }
  if (samples > 0) {
    const double mse = squares / samples;
    c.psnr_db =
        mse == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(255.0 * 255.0 / mse);
  }
  return c;
}

}  // namespace switchyard::media
