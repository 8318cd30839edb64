#include "orchestrator/transcode/scaler.h"

#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

extern "C" {
#include <libavutil/hwcontext.h>
#include <libavutil/pixdesc.h>
}

namespace switchyard::orchestrator::transcode {

using media::AvErrorString;
using media::AvFramePtr;

absl::StatusOr<AvFramePtr> Scaler::ScaleOnGpu(AVFrame* src, int width, int height, size_t rendition,
                                              int64_t* created) {
  const void* pool = src->hw_frames_ctx != nullptr ? src->hw_frames_ctx->data : nullptr;
  if (!gpu_failed_ && (!gpu_ || !gpu_->Accepts(src) || gpu_frames_ctx_ != pool ||
                       gpu_->out_width() != width || gpu_->out_height() != height)) {
    gpu_.reset();
    auto made = media::FilterScaler::Create({.width = src->width,
                                             .height = src->height,
                                             .format = src->format,
                                             .hw_frames_ctx = src->hw_frames_ctx},
                                            width, height);
    if (made.ok()) {
      gpu_ = std::move(*made);
      gpu_frames_ctx_ = pool;
      ++*created;
    } else {
      // E.g. an FFmpeg built without CUDA filters: the frames go through memory instead.
      spdlog::warn("rendition {}: no GPU scaling ({}); scaling on the CPU", rendition,
                   std::string(made.status().message()));
      gpu_failed_ = true;
    }
  }
  if (gpu_) return gpu_->Scale(src);
  AvFramePtr memory(av_frame_alloc());
  if (!memory) return absl::ResourceExhaustedError("cannot allocate a frame");
  if (int err = av_hwframe_transfer_data(memory.get(), src, 0); err < 0) {
    return absl::InternalError(
        absl::StrCat("copying a GPU-decoded frame to memory failed: ", AvErrorString(err)));
  }
  av_frame_copy_props(memory.get(), src);
  return Scale(memory.get(), width, height, rendition, created);
}

absl::StatusOr<AvFramePtr> Scaler::Scale(AVFrame* src, int width, int height, size_t rendition,
                                         int64_t* created) {
  if (src->format == AV_PIX_FMT_CUDA) return ScaleOnGpu(src, width, height, rendition, created);
  const auto src_format = static_cast<AVPixelFormat>(src->format);
  bool full_range = src->color_range == AVCOL_RANGE_JPEG;
  const AVPixelFormat fmt = media::NormalizePixelFormat(src_format, &full_range);
  if (src->width == width && src->height == height && src_format == AV_PIX_FMT_YUV420P &&
      !full_range) {
    AvFramePtr out(av_frame_clone(src));  // a new reference to the same pixels
    if (!out) return absl::ResourceExhaustedError("cannot reference a frame");
    return out;
  }
  if (!sws_ || src_width_ != src->width || src_height_ != src->height ||
      src_format_ != src->format || colorspace_ != src->colorspace ||
      range_ != static_cast<int>(full_range) || dst_width_ != width || dst_height_ != height) {
    if (sws_isSupportedInput(fmt) <= 0) {
      const char* name = av_get_pix_fmt_name(fmt);
      return absl::InvalidArgumentError(absl::StrCat("segment: unsupported decoded pixel format ",
                                                     name != nullptr ? name : "unknown"));
    }
    sws_.reset(sws_getContext(src->width, src->height, fmt, width, height, AV_PIX_FMT_YUV420P,
                              SWS_BICUBIC, nullptr, nullptr, nullptr));
    if (!sws_) return absl::InternalError("cannot create a scaler");
    ++*created;
    int cs = SWS_CS_DEFAULT;
    if (src->colorspace == AVCOL_SPC_BT709) cs = SWS_CS_ITU709;
    if (src->colorspace == AVCOL_SPC_BT2020_NCL || src->colorspace == AVCOL_SPC_BT2020_CL) {
      cs = SWS_CS_BT2020;
    }
    const int* coeffs = sws_getCoefficients(cs);
    sws_setColorspaceDetails(sws_.get(), coeffs, full_range ? 1 : 0, coeffs, 0, 0, 1 << 16,
                             1 << 16);
    src_width_ = src->width;
    src_height_ = src->height;
    src_format_ = src->format;
    colorspace_ = src->colorspace;
    range_ = static_cast<int>(full_range);
    dst_width_ = width;
    dst_height_ = height;
  }
  AvFramePtr out(av_frame_alloc());
  if (!out) return absl::ResourceExhaustedError("cannot allocate a frame");
  out->format = AV_PIX_FMT_YUV420P;
  out->width = width;
  out->height = height;
  if (av_frame_get_buffer(out.get(), 0) < 0) {
    return absl::ResourceExhaustedError("cannot allocate a scaled frame");
  }
  av_frame_copy_props(out.get(), src);
  out->color_range = AVCOL_RANGE_MPEG;
  out->sample_aspect_ratio = AVRational{1, 1};
  const int ret =
      sws_scale(sws_.get(), src->data, src->linesize, 0, src->height, out->data, out->linesize);
  if (ret < 0) return absl::InternalError(absl::StrCat("scaling failed: ", AvErrorString(ret)));
  return out;
}

}  // namespace switchyard::orchestrator::transcode
