// RAII owners and error helpers for FFmpeg's libav* objects, shared by every media component.
//
// Every libav* object we create is owned by one of the std::unique_ptr aliases below (or by one
// of the small classes built from them), so every error path releases everything it allocated.
// None of these types are shared between threads; each call builds its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/statusor.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavcodec/bsf.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
#include <libswscale/swscale.h>
}

namespace switchyard::media {

// Text of an AVERROR code, e.g. "Invalid data found when processing input".
std::string AvErrorString(int errnum);

// One-time process-wide libav* setup: routes libav logging to stderr at AV_LOG_ERROR and above
// only (libav is chatty on corrupt input). Thread-safe and idempotent; every media entry point
// calls it.
void InitFfmpeg();

// Maps the deprecated full-range "J" pixel formats (yuvj420p...) to their plain equivalents,
// setting `*full_range` for them (the range travels separately); other formats are returned as
// they are, with `*full_range` untouched.
AVPixelFormat NormalizePixelFormat(AVPixelFormat fmt, bool* full_range);

// The deleter of a libav object: `kFree` is its free function, taking either the object's
// address (and nulling it, e.g. av_frame_free(AVFrame**)) or the object (sws_freeContext).
// Every libav free function accepts null.
template <auto kFree>
struct AvDeleter {
  template <typename T>
  void operator()(T* p) const {
    if constexpr (std::is_invocable_v<decltype(kFree), T**>) {
      kFree(&p);
    } else {
      kFree(p);
    }
  }
};
// An AVIOContext from avio_alloc_context, together with its (possibly reallocated) buffer.
struct AvioContextDeleter {
  void operator()(AVIOContext* c) const;
};

using AvFramePtr = std::unique_ptr<AVFrame, AvDeleter<av_frame_free>>;
using AvPacketPtr = std::unique_ptr<AVPacket, AvDeleter<av_packet_free>>;
using AvCodecContextPtr = std::unique_ptr<AVCodecContext, AvDeleter<avcodec_free_context>>;
using AvCodecParametersPtr = std::unique_ptr<AVCodecParameters, AvDeleter<avcodec_parameters_free>>;
using SwsContextPtr = std::unique_ptr<SwsContext, AvDeleter<sws_freeContext>>;
using AvBsfContextPtr = std::unique_ptr<AVBSFContext, AvDeleter<av_bsf_free>>;
using AvDictionaryPtr = std::unique_ptr<AVDictionary, AvDeleter<av_dict_free>>;
// A demuxer context opened with avformat_open_input.
using AvInputFormatContextPtr = std::unique_ptr<AVFormatContext, AvDeleter<avformat_close_input>>;
// A muxer context from avformat_alloc_output_context2. Its pb is never owned by it (we always
// use custom IO), so this only frees the context (and runs the muxer's deinit if needed).
using AvOutputFormatContextPtr = std::unique_ptr<AVFormatContext, AvDeleter<avformat_free_context>>;
using AvioContextPtr = std::unique_ptr<AVIOContext, AvioContextDeleter>;

// A read-only, seekable AVIOContext over caller-owned bytes (which must outlive it).
// Not copyable or movable: the AVIOContext points back at this object.
class MemoryReader {
 public:
  explicit MemoryReader(std::string_view data);
  MemoryReader(const MemoryReader&) = delete;
  MemoryReader& operator=(const MemoryReader&) = delete;

  // Null if allocation failed.
  AVIOContext* io() const { return io_.get(); }

 private:
  static int Read(void* opaque, uint8_t* buf, int buf_size);
  static int64_t Seek(void* opaque, int64_t offset, int whence);

  std::string_view data_;
  int64_t pos_ = 0;
  AvioContextPtr io_;
};

// A write-only, non-seekable AVIOContext appending everything written to `*sink` (which must
// outlive it). Suitable for streaming muxers (mpegts, fragmented mp4). Not copyable or movable.
class MemoryWriter {
 public:
  explicit MemoryWriter(std::string* sink);
  MemoryWriter(const MemoryWriter&) = delete;
  MemoryWriter& operator=(const MemoryWriter&) = delete;

  // Null if allocation failed.
  AVIOContext* io() const { return io_.get(); }

 private:
  static int Write(void* opaque, uint8_t* buf, int buf_size);

  std::string* sink_;
  AvioContextPtr io_;
};

// A demuxer reading from memory. Members are destroyed in reverse order: the format context is
// closed before the AVIOContext it reads from is freed.
struct MemoryDemuxer {
  std::unique_ptr<MemoryReader> reader;
  AvInputFormatContextPtr format;
};

// Whether OpenMemoryDemuxer probes the streams (avformat_find_stream_info, which may decode
// frames to learn codec parameters), or only opens the container to read its packets.
enum class StreamProbe { kStreamInfo, kPacketsOnly };

// Opens a demuxer over `data` (which must outlive the result) and reads stream info (unless
// `probe` is kPacketsOnly). `format_whitelist` is a comma-separated list of demuxer names (e.g.
// "mpegts,mov"); empty allows any. The demuxer may not open other files or URLs. INVALID_ARGUMENT
// when the data is not a recognized container or its streams cannot be probed;
// RESOURCE_EXHAUSTED on allocation failure.
absl::StatusOr<std::unique_ptr<MemoryDemuxer>> OpenMemoryDemuxer(
    std::string_view data, const std::string& format_whitelist,
    StreamProbe probe = StreamProbe::kStreamInfo);

// A muxer writing into memory. Members are destroyed in reverse order: the format context is
// freed before the AVIOContext it writes to.
struct MemoryMuxer {
  std::unique_ptr<MemoryWriter> writer;
  AvOutputFormatContextPtr format;
};

// Allocates a muxer for `format_name` (e.g. "mpegts", "mp4") appending its output to `*sink`.
// The caller adds streams and writes the header. INVALID_ARGUMENT for an unknown format.
absl::StatusOr<std::unique_ptr<MemoryMuxer>> OpenMemoryMuxer(const std::string& format_name,
                                                             std::string* sink);

}  // namespace switchyard::media
