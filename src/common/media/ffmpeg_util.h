// RAII owners and error helpers for FFmpeg's libav* objects, shared by every media component.
#pragma once

#include <memory>
#include <string>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
#include <libswscale/swscale.h>
}

namespace switchyard::media {

// Text of an AVERROR code, e.g. "Invalid data found when processing input".
std::string AvErrorString(int errnum);

struct AvFrameDeleter { void operator()(AVFrame* f) const { av_frame_free(&f); } };
struct AvPacketDeleter { void operator()(AVPacket* p) const { av_packet_free(&p); } };
struct AvCodecContextDeleter { void operator()(AVCodecContext* c) const { avcodec_free_context(&c); } };
struct SwsContextDeleter { void operator()(SwsContext* s) const { sws_freeContext(s); } };

using AvFramePtr = std::unique_ptr<AVFrame, AvFrameDeleter>;
using AvPacketPtr = std::unique_ptr<AVPacket, AvPacketDeleter>;
using AvCodecContextPtr = std::unique_ptr<AVCodecContext, AvCodecContextDeleter>;
using SwsContextPtr = std::unique_ptr<SwsContext, SwsContextDeleter>;

// Helper 2 adds owners for demuxer/muxer contexts and in-memory AVIO here.

}  // namespace switchyard::media
