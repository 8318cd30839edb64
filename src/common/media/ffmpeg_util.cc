#include "common/media/ffmpeg_util.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

extern "C" {
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/mem.h>
}

namespace switchyard::media {
namespace {

constexpr int kIoBufferSize = 64 * 1024;

// Refuses every nested open (playlists, external references): our demuxers and muxers only
// ever see the one in-memory buffer they were given.
int DenyIoOpen(AVFormatContext*, AVIOContext**, const char* url, int, AVDictionary**) {
  return AVERROR(EPERM);
}

}  // namespace

std::string AvErrorString(int errnum) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  if (av_strerror(errnum, buf, sizeof(buf)) < 0) {
    return absl::StrCat("libav error ", errnum);
  }
  return buf;
}

AVPixelFormat NormalizePixelFormat(AVPixelFormat fmt, bool* full_range) {
  switch (fmt) {
    case AV_PIX_FMT_YUVJ420P:
      *full_range = true;
      return AV_PIX_FMT_YUV420P;
    case AV_PIX_FMT_YUVJ422P:
      *full_range = true;
      return AV_PIX_FMT_YUV422P;
    case AV_PIX_FMT_YUVJ444P:
      *full_range = true;
      return AV_PIX_FMT_YUV444P;
    case AV_PIX_FMT_YUVJ440P:
      *full_range = true;
      return AV_PIX_FMT_YUV440P;
    case AV_PIX_FMT_YUVJ411P:
      *full_range = true;
      return AV_PIX_FMT_YUV411P;
    default:
      return fmt;
  }
}

void InitFfmpeg() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_level(AV_LOG_ERROR); });
}

void AvioContextDeleter::operator()(AVIOContext* c) const {
  if (c == nullptr) return;
  // libav may have replaced the buffer we gave it; free whatever it holds now.
  av_freep(&c->buffer);
  avio_context_free(&c);
}

MemoryReader::MemoryReader(std::string_view data) : data_(data) {
  auto* buffer = static_cast<unsigned char*>(av_malloc(kIoBufferSize));
  if (buffer == nullptr) return;
  io_.reset(avio_alloc_context(buffer, kIoBufferSize, /*write_flag=*/0, this, &MemoryReader::Read,
                               nullptr, &MemoryReader::Seek));
  if (!io_) av_free(buffer);
}

int MemoryReader::Read(void* opaque, uint8_t* buf, int buf_size) {
  auto* self = static_cast<MemoryReader*>(opaque);
  const auto size = static_cast<int64_t>(self->data_.size());
  if (self->pos_ >= size || buf_size <= 0) return AVERROR_EOF;
  const int n = static_cast<int>(std::min<int64_t>(buf_size, size - self->pos_));
  std::memcpy(buf, self->data_.data() + self->pos_, n);
  self->pos_ += n;
  return n;
}

int64_t MemoryReader::Seek(void* opaque, int64_t offset, int whence) {
  auto* self = static_cast<MemoryReader*>(opaque);
  const auto size = static_cast<int64_t>(self->data_.size());
  int64_t target;
  switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE:
      return size;
    case SEEK_SET:
      target = offset;
      break;
    case SEEK_CUR:
      target = self->pos_ + offset;
      break;
    case SEEK_END:
      target = size + offset;
      break;
    default:
      return AVERROR(EINVAL);
  }
  // Seeking past the end is allowed (reads then hit EOF); before the start is not.
  if (target < 0) return AVERROR(EINVAL);
  self->pos_ = target;
  return target;
}

MemoryWriter::MemoryWriter(std::string* sink) : sink_(sink) {
  auto* buffer = static_cast<unsigned char*>(av_malloc(kIoBufferSize));
  if (buffer == nullptr) return;
  io_.reset(avio_alloc_context(buffer, kIoBufferSize, /*write_flag=*/1, this, nullptr,
                               &MemoryWriter::Write, nullptr));
  if (!io_) {
    av_free(buffer);
    return;
  }
  io_->seekable = 0;
}

int MemoryWriter::Write(void* opaque, uint8_t* buf, int buf_size) {
  auto* self = static_cast<MemoryWriter*>(opaque);
  if (buf_size <= 0) return 0;
  try {
    self->sink_->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(buf_size));
  } catch (const std::bad_alloc&) {
    return AVERROR(ENOMEM);
  }
  return buf_size;
}

absl::StatusOr<std::unique_ptr<MemoryDemuxer>> OpenMemoryDemuxer(
    std::string_view data, const std::string& format_whitelist, StreamProbe probe) {
  InitFfmpeg();
  if (data.empty()) return absl::InvalidArgumentError("input is empty");
  auto demuxer = std::make_unique<MemoryDemuxer>();
  demuxer->reader = std::make_unique<MemoryReader>(data);
  if (demuxer->reader->io() == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate an AVIOContext");
  }
  AVFormatContext* raw = avformat_alloc_context();
  if (raw == nullptr) return absl::ResourceExhaustedError("cannot allocate an AVFormatContext");
  raw->pb = demuxer->reader->io();
  raw->flags |= AVFMT_FLAG_CUSTOM_IO;
  raw->io_open = &DenyIoOpen;
  AVDictionary* opts = nullptr;
  if (!format_whitelist.empty()) {
    av_dict_set(&opts, "format_whitelist", format_whitelist.c_str(), 0);
  }
  // On failure avformat_open_input frees `raw` (but never our custom pb).
  int ret = avformat_open_input(&raw, nullptr, nullptr, &opts);
  av_dict_free(&opts);
  if (ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("input is not a recognized media container (", AvErrorString(ret), ")"));
  }
  demuxer->format.reset(raw);
  if (probe == StreamProbe::kPacketsOnly) return demuxer;
  ret = avformat_find_stream_info(raw, nullptr);
  if (ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read stream info from input: ", AvErrorString(ret)));
  }
  return demuxer;
}

absl::StatusOr<std::unique_ptr<MemoryMuxer>> OpenMemoryMuxer(const std::string& format_name,
                                                             std::string* sink) {
  InitFfmpeg();
  auto muxer = std::make_unique<MemoryMuxer>();
  muxer->writer = std::make_unique<MemoryWriter>(sink);
  if (muxer->writer->io() == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate an AVIOContext");
  }
  AVFormatContext* raw = nullptr;
  int ret = avformat_alloc_output_context2(&raw, nullptr, format_name.c_str(), nullptr);
  if (ret < 0 || raw == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown output container \"", format_name, "\": ", AvErrorString(ret)));
  }
  muxer->format.reset(raw);
  raw->pb = muxer->writer->io();
  raw->flags |= AVFMT_FLAG_CUSTOM_IO;
  raw->io_open = &DenyIoOpen;
  return muxer;
}

}  // namespace switchyard::media
