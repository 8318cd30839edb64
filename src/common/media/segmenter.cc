#include "common/media/segmenter.h"

#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/media/ffmpeg_util.h"

namespace switchyard::media {
namespace {

// One output segment being written.
class SegmentWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SegmentWriter>> Open(const AVFormatContext* in,
                                                             const std::vector<int>& map) {
    auto w = std::unique_ptr<SegmentWriter>(new SegmentWriter());
    auto muxer = OpenMemoryMuxer("mpegts", &w->data_);
    if (!muxer.ok()) return muxer.status();
    w->muxer_ = *std::move(muxer);
    AVFormatContext* out = w->muxer_->format.get();
    for (unsigned i = 0; i < in->nb_streams; ++i) {
      if (map[i] < 0) continue;
      AVStream* s = avformat_new_stream(out, nullptr);
      if (s == nullptr) return absl::ResourceExhaustedError("cannot add a stream to a segment");
      if (avcodec_parameters_copy(s->codecpar, in->streams[i]->codecpar) < 0) {
        return absl::ResourceExhaustedError("cannot copy codec parameters");
      }
      s->codecpar->codec_tag = 0;
      s->time_base = in->streams[i]->time_base;
    }
    if (int ret = avformat_write_header(out, nullptr); ret < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot start an MPEG-TS segment: ", AvErrorString(ret)));
    }
    return w;
  }

  absl::Status Write(AVPacket* packet, int out_index, AVRational in_time_base) {
    AVFormatContext* out = muxer_->format.get();
    packet->stream_index = out_index;
    av_packet_rescale_ts(packet, in_time_base, out->streams[out_index]->time_base);
    packet->pos = -1;
    if (int ret = av_interleaved_write_frame(out, packet); ret < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write a packet into a segment: ", AvErrorString(ret)));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Finish() {
    if (int ret = av_write_trailer(muxer_->format.get()); ret < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot finish a segment: ", AvErrorString(ret)));
    }
    avio_flush(muxer_->format->pb);
    muxer_.reset();  // the segment is complete in data_
    return std::move(data_);
  }

 private:
  SegmentWriter() = default;
  std::string data_;  // declared before the muxer that writes into it
  std::unique_ptr<MemoryMuxer> muxer_;
};

}  // namespace

absl::Status SplitIntoSegments(
    const std::string& path, double segment_seconds,
    const std::function<absl::Status(std::string segment, const SegmentInfo& info)>& sink) {
  InitFfmpeg();
  if (!(segment_seconds > 0)) {
    return absl::InvalidArgumentError("the segment length must be positive");
  }
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  AVFormatContext* raw = nullptr;
  if (int ret = avformat_open_input(&raw, path.c_str(), nullptr, nullptr); ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a media file FFmpeg can read: ", AvErrorString(ret)));
  }
  AvInputFormatContextPtr in(raw);
  if (int ret = avformat_find_stream_info(in.get(), nullptr); ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot read its streams: ", AvErrorString(ret)));
  }
  const int video = av_find_best_stream(in.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (video < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": has no video stream"));
  // Video and audio are kept; anything else (subtitles, data) is dropped.
  std::vector<int> map(in->nb_streams, -1);
  int next = 0;
  for (unsigned i = 0; i < in->nb_streams; ++i) {
    const AVMediaType type = in->streams[i]->codecpar->codec_type;
    if (type == AVMEDIA_TYPE_VIDEO && static_cast<int>(i) != video) continue;
    if (type == AVMEDIA_TYPE_VIDEO || type == AVMEDIA_TYPE_AUDIO) map[i] = next++;
  }
  const AVRational video_tb = in->streams[video]->time_base;
  const double file_seconds =
      in->duration > 0 ? static_cast<double>(in->duration) / AV_TIME_BASE : 0.0;

  AvPacketPtr packet(av_packet_alloc());
  if (!packet) return absl::ResourceExhaustedError("cannot allocate a packet");
  std::unique_ptr<SegmentWriter> writer;
  SegmentInfo info;
  info.file_seconds = file_seconds;
  int64_t segment_start = AV_NOPTS_VALUE;  // video time base
  int64_t first_ts = AV_NOPTS_VALUE;
  auto seconds = [&](int64_t ts) {
    return static_cast<double>(ts - (first_ts == AV_NOPTS_VALUE ? 0 : first_ts)) * av_q2d(video_tb);
  };
  auto emit = [&](double end) -> absl::Status {
    auto data = writer->Finish();
    writer.reset();
    if (!data.ok()) return data.status();
    info.end_seconds = end;
    absl::Status st = sink(*std::move(data), info);
    ++info.index;
    return st;
  };
  for (;;) {
    int ret = av_read_frame(in.get(), packet.get());
    if (ret == AVERROR_EOF) break;
    if (ret < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": read error after ", info.index, " segments: ", AvErrorString(ret)));
    }
    const int si = packet->stream_index;
    if (si < 0 || si >= static_cast<int>(map.size()) || map[si] < 0) {
      av_packet_unref(packet.get());
      continue;
    }
    if (si == video) {
      const int64_t ts = packet->pts != AV_NOPTS_VALUE ? packet->pts : packet->dts;
      const bool key = (packet->flags & AV_PKT_FLAG_KEY) != 0;
      if (ts != AV_NOPTS_VALUE && first_ts == AV_NOPTS_VALUE) first_ts = ts;
      if (key && ts != AV_NOPTS_VALUE &&
          (writer == nullptr || seconds(ts) - seconds(segment_start) >= segment_seconds - 1e-6)) {
        if (writer != nullptr) {
          if (absl::Status st = emit(seconds(ts)); !st.ok()) return st;
        }
        auto opened = SegmentWriter::Open(in.get(), map);
        if (!opened.ok()) return opened.status();
        writer = *std::move(opened);
        segment_start = ts;
        info.start_seconds = seconds(ts);
      }
    }
    // Packets before the first keyframe cannot be decoded on their own: dropped.
    if (writer != nullptr) {
      absl::Status st = writer->Write(packet.get(), map[si], in->streams[si]->time_base);
      if (!st.ok()) return st;
    }
    av_packet_unref(packet.get());
  }
  if (writer != nullptr) return emit(std::max(file_seconds, info.start_seconds));
  if (info.index == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no video keyframe found"));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::media
