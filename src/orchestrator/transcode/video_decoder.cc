#include "orchestrator/transcode/video_decoder.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/media/hardware.h"

extern "C" {
#include <libavutil/hwcontext.h>
#include <libavutil/pixdesc.h>
}

namespace switchyard::orchestrator::transcode {
namespace {

using media::AvCodecContextPtr;
using media::AvErrorString;

// Whether `codec` can decode through a CUDA device here (its hwaccel, NVDEC) and one is open.
bool CudaDecodes(const AVCodec* codec) {
  if (media::SharedCudaDevice() == nullptr) return false;
  for (int i = 0;; ++i) {
    const AVCodecHWConfig* config = avcodec_get_hw_config(codec, i);
    if (config == nullptr) return false;
    if ((config->methods & AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX) != 0 &&
        config->device_type == AV_HWDEVICE_TYPE_CUDA) {
      return true;
    }
  }
}

// get_format for a decoder given a CUDA device: the GPU format when the hwaccel takes the stream,
// else the first software format (e.g. 4:4:4 that NVDEC does not decode).
AVPixelFormat PickCudaFormat(AVCodecContext*, const AVPixelFormat* formats) {
  for (const AVPixelFormat* f = formats; *f != AV_PIX_FMT_NONE; ++f) {
    if (*f == AV_PIX_FMT_CUDA) return *f;
  }
  for (const AVPixelFormat* f = formats; *f != AV_PIX_FMT_NONE; ++f) {
    const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(*f);
    if (desc != nullptr && (desc->flags & AV_PIX_FMT_FLAG_HWACCEL) == 0) return *f;
  }
  return AV_PIX_FMT_NONE;
}

// Decoders are reused while these match (TS and MP4 carry H.264 differently: extradata differs).
bool SameCodecParameters(const AVCodecParameters* a, const AVCodecParameters* b) {
  return a->codec_id == b->codec_id && a->width == b->width && a->height == b->height &&
         a->format == b->format && a->profile == b->profile && a->level == b->level &&
         a->bits_per_raw_sample == b->bits_per_raw_sample &&
         a->extradata_size == b->extradata_size &&
         (a->extradata_size == 0 ||
          std::memcmp(a->extradata, b->extradata, static_cast<size_t>(a->extradata_size)) == 0);
}

// Whether a GPU-decoded frame is scaled on the GPU: gpu_scale on, 8-bit 4:2:0 surfaces and
// limited range (what scale_cuda converts to yuv420p without a colour change).
bool ScalesOnGpu(bool gpu_scale, const AVFrame* frame) {
  if (!gpu_scale || frame->hw_frames_ctx == nullptr) return false;
  const auto* frames = reinterpret_cast<const AVHWFramesContext*>(frame->hw_frames_ctx->data);
  return (frames->sw_format == AV_PIX_FMT_NV12 || frames->sw_format == AV_PIX_FMT_YUV420P) &&
         frame->color_range != AVCOL_RANGE_JPEG;
}

// A software decoder context for `video`, not yet opened.
absl::StatusOr<AvCodecContextPtr> NewDecoder(const AVCodec* codec, const AVStream* video,
                                             const TranscodeOptions& options) {
  AvCodecContextPtr decoder(avcodec_alloc_context3(codec));
  if (!decoder) return absl::ResourceExhaustedError("cannot allocate a decoder");
  const int ret = avcodec_parameters_to_context(decoder.get(), video->codecpar);
  if (ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: bad video codec parameters: ", AvErrorString(ret)));
  }
  decoder->pkt_timebase = video->time_base;
  // Frame threads when the thread plan gives more than one (thread_policy.h); the decoded frames
  // are the same either way.
  decoder->thread_count = std::clamp(options.decoder_threads, 1, 16);
  decoder->max_pixels = int64_t{options.max_width} * options.max_height;
  return decoder;
}

}  // namespace

absl::StatusOr<VideoDecoderPtr> VideoDecoder::Open(const AVStream* video,
                                                   const TranscodeOptions& options,
                                                   size_t renditions, DecoderCache* cache,
                                                   bool* opened) {
  VideoDecoderPtr self(new VideoDecoder());
  self->gpu_scale_ = options.gpu_scale;
  self->frame_.reset(av_frame_alloc());
  if (!self->frame_) return absl::ResourceExhaustedError("cannot allocate frames or packets");
  *opened = false;
  const AVCodecParameters* par = video->codecpar;
  // A stream's decoder is kept while its parameters stay the same: flushed (it was drained at the
  // end of the previous segment, or left mid-way by a failed one) and pointed at this segment's
  // time base.
  if (cache != nullptr && cache->decoder && cache->params &&
      SameCodecParameters(cache->params.get(), par) &&
      cache->threads == std::clamp(options.decoder_threads, 1, 16)) {
    self->decoder_ = cache->decoder.get();
    avcodec_flush_buffers(self->decoder_);
    self->decoder_->pkt_timebase = video->time_base;
    return self;
  }
  const AVCodec* codec = avcodec_find_decoder(par->codec_id);  // found: SegmentInput::CheckVideo
  auto decoder = NewDecoder(codec, video, options);
  if (!decoder.ok()) return decoder.status();
  const bool want_gpu = options.hw_decode != "none" && CudaDecodes(codec);
  if (want_gpu) {
    (*decoder)->hw_device_ctx = av_buffer_ref(media::SharedCudaDevice());
    if ((*decoder)->hw_device_ctx == nullptr) return absl::ResourceExhaustedError("out of memory");
    (*decoder)->get_format = PickCudaFormat;
    // Scaling on the GPU, renditions hold references to decoded surfaces (their queues, the fps
    // converter's pending frame): room in the pool for them beyond the decoder's own.
    (*decoder)->extra_hw_frames = static_cast<int>(renditions) * 6 + 2;
  } else if (options.hw_decode == "cuda") {
    return absl::FailedPreconditionError(absl::StrCat("hw_decode: \"cuda\" asked for, but ",
                                                      codec->name, " cannot decode on CUDA here"));
  }
  int ret = avcodec_open2(decoder->get(), codec, nullptr);
  if (ret < 0 && want_gpu && options.hw_decode == "auto") {
    // The GPU would not take this stream: decode it in software instead.
    decoder = NewDecoder(codec, video, options);
    if (!decoder.ok()) {
      if (absl::IsInvalidArgument(decoder.status())) {
        return absl::InvalidArgumentError("segment: bad video codec parameters");
      }
      return decoder.status();
    }
    ret = avcodec_open2(decoder->get(), codec, nullptr);
  }
  if (ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: cannot open the video decoder: ", AvErrorString(ret)));
  }
  self->decoder_ = decoder->get();
  if (cache == nullptr) {
    self->own_ = *std::move(decoder);
    return self;
  }
  media::AvCodecParametersPtr params(avcodec_parameters_alloc());
  if (!params || avcodec_parameters_copy(params.get(), par) < 0) {
    return absl::ResourceExhaustedError("cannot copy the video codec parameters");
  }
  cache->decoder = *std::move(decoder);
  cache->params = std::move(params);
  cache->threads = std::clamp(options.decoder_threads, 1, 16);
  *opened = true;
  return self;
}

absl::Status VideoDecoder::Feed(const AVPacket* packet, const FrameSink& sink) {
  ++packets_;
  if (!seen_keyframe_ && (packet->flags & AV_PKT_FLAG_KEY) != 0) {
    seen_keyframe_ = true;
    before_keyframe_.clear();
  }
  if (seen_keyframe_) return Decode(packet, sink);
  media::AvPacketPtr copy(av_packet_clone(packet));
  if (!copy) return absl::ResourceExhaustedError("cannot reference a packet");
  before_keyframe_.push_back(std::move(copy));
  return absl::OkStatus();
}

absl::Status VideoDecoder::Finish(const FrameSink& sink) {
  if (!seen_keyframe_ && !before_keyframe_.empty()) {
    // No packet is flagged as a keyframe: decode, starting at the first intra frame the decoder
    // finds; a segment without one still fails (no frames).
    intra_entry_ = true;
    for (media::AvPacketPtr& p : before_keyframe_) {
      if (auto status = Decode(p.get(), sink); !status.ok()) return status;
      p.reset();
    }
    before_keyframe_.clear();
  }
  return Decode(nullptr, sink);  // flush
}

bool VideoDecoder::BeforeEntry(const AVFrame* frame) {
  if (!intra_entry_ || seen_intra_) return false;
  if (frame->key_frame == 0 && frame->pict_type != AV_PICTURE_TYPE_I) return true;
  seen_intra_ = true;
  return false;
}

absl::Status VideoDecoder::Decode(const AVPacket* packet, const FrameSink& sink) {
  int ret = avcodec_send_packet(decoder_, packet);
  if (ret < 0 && ret != AVERROR_EOF) {
    if (ret == AVERROR(ENOMEM)) return absl::ResourceExhaustedError("out of memory decoding");
    ++decode_errors_;  // a corrupt packet: skip it, as players do
    return absl::OkStatus();
  }
  while (true) {
    ret = avcodec_receive_frame(decoder_, frame_.get());
    if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return absl::OkStatus();
    if (ret < 0) {
      if (ret == AVERROR(ENOMEM)) return absl::ResourceExhaustedError("out of memory decoding");
      ++decode_errors_;
      // After an error the decoder may still hold frames when flushing; otherwise move on.
      if (packet != nullptr) return absl::OkStatus();
      continue;
    }
    AVFrame* frame = frame_.get();
    if (frame->format == AV_PIX_FMT_CUDA && ScalesOnGpu(gpu_scale_, frame)) {
      // Decoded on the GPU and scaled there by each rendition (Scaler): only the scaled pictures
      // come to memory.
      hardware_decoded_ = true;
    } else if (frame->format == AV_PIX_FMT_CUDA) {
      // Decoded on the GPU: copy to system memory (NV12) for the scalers and libx264.
      if (!memory_frame_) memory_frame_.reset(av_frame_alloc());
      if (!memory_frame_) return absl::ResourceExhaustedError("cannot allocate a frame");
      av_frame_unref(memory_frame_.get());
      if (int err = av_hwframe_transfer_data(memory_frame_.get(), frame, 0); err < 0) {
        av_frame_unref(frame);
        return absl::InternalError(
            absl::StrCat("copying a GPU-decoded frame to memory failed: ", AvErrorString(err)));
      }
      av_frame_copy_props(memory_frame_.get(), frame);
      hardware_decoded_ = true;
      frame = memory_frame_.get();
    }
    absl::Status status = sink(frame);
    av_frame_unref(frame_.get());
    if (memory_frame_) av_frame_unref(memory_frame_.get());
    if (!status.ok()) return status;
  }
}

}  // namespace switchyard::orchestrator::transcode
