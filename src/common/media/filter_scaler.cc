#include "common/media/filter_scaler.h"

extern "C" {
#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/buffer.h>
#include <libavutil/frame.h>
#include <libavutil/mem.h>
#include <libavutil/pixdesc.h>
}

#include "absl/strings/str_cat.h"

namespace switchyard::media {
namespace {

using AvFilterInOutPtr = std::unique_ptr<AVFilterInOut, AvDeleter<avfilter_inout_free>>;

absl::Status GraphError(const std::string& what, int err) {
  return absl::InternalError(absl::StrCat("scaler: ", what, ": ", AvErrorString(err)));
}

}  // namespace

FilterScaler::~FilterScaler() = default;

absl::StatusOr<FilterScalerPtr> FilterScaler::Create(const FilterScalerInput& input, int width,
                                                     int height) {
  if (input.width <= 0 || input.height <= 0 || width <= 0 || height <= 0 || width % 2 != 0 ||
      height % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("scaler: bad sizes ", input.width, "x",
                                                   input.height, " -> ", width, "x", height));
  }
  const bool gpu = input.format == AV_PIX_FMT_CUDA;
  if (gpu && input.hw_frames_ctx == nullptr) {
    return absl::InvalidArgumentError("scaler: GPU frames without a frames context");
  }
  if (!gpu && av_pix_fmt_desc_get(static_cast<AVPixelFormat>(input.format)) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("scaler: bad pixel format ", input.format));
  }
  FilterScalerPtr s(new FilterScaler());
  s->input_ = input;
  s->input_.hw_frames_ctx = nullptr;
  s->out_width_ = width;
  s->out_height_ = height;
  // Bicubic like the swscale path; limited-range yuv420p in memory, what the encoders take.
  s->description_ =
      gpu ? absl::StrCat("scale_cuda=w=", width, ":h=", height,
                         ":interp_algo=bicubic:format=yuv420p,hwdownload,format=pix_fmts=yuv420p")
          : absl::StrCat("scale=w=", width, ":h=", height,
                         ":flags=bicubic,format=pix_fmts=yuv420p");

  s->graph_.reset(avfilter_graph_alloc());
  if (!s->graph_) return absl::ResourceExhaustedError("scaler: cannot allocate a filter graph");
  // One thread: callers already run one scaler per rendition thread.
  s->graph_->nb_threads = 1;

  const AVFilter* buffer = avfilter_get_by_name("buffer");
  const AVFilter* buffersink = avfilter_get_by_name("buffersink");
  if (buffer == nullptr || buffersink == nullptr) {
    return absl::InternalError("scaler: libavfilter lacks buffer/buffersink");
  }
  s->source_ = avfilter_graph_alloc_filter(s->graph_.get(), buffer, "in");
  if (s->source_ == nullptr) return absl::ResourceExhaustedError("scaler: cannot add a source");
  AVBufferSrcParameters* par = av_buffersrc_parameters_alloc();
  if (par == nullptr) return absl::ResourceExhaustedError("scaler: out of memory");
  par->format = input.format;
  par->width = input.width;
  par->height = input.height;
  par->time_base = AVRational{1, 90000};  // timestamps pass through untouched
  par->sample_aspect_ratio = AVRational{1, 1};
  par->hw_frames_ctx = input.hw_frames_ctx;  // the source takes its own reference
  int ret = av_buffersrc_parameters_set(s->source_, par);
  av_free(par);
  if (ret < 0) return GraphError("source parameters", ret);
  if ((ret = avfilter_init_str(s->source_, nullptr)) < 0) return GraphError("source", ret);
  ret =
      avfilter_graph_create_filter(&s->sink_, buffersink, "out", nullptr, nullptr, s->graph_.get());
  if (ret < 0) return GraphError("sink", ret);

  AvFilterInOutPtr outputs(avfilter_inout_alloc());
  AvFilterInOutPtr inputs(avfilter_inout_alloc());
  if (!outputs || !inputs) return absl::ResourceExhaustedError("scaler: out of memory");
  outputs->name = av_strdup("in");
  outputs->filter_ctx = s->source_;
  outputs->pad_idx = 0;
  outputs->next = nullptr;
  inputs->name = av_strdup("out");
  inputs->filter_ctx = s->sink_;
  inputs->pad_idx = 0;
  inputs->next = nullptr;
  AVFilterInOut* in_raw = inputs.release();
  AVFilterInOut* out_raw = outputs.release();
  ret = avfilter_graph_parse_ptr(s->graph_.get(), s->description_.c_str(), &in_raw, &out_raw,
                                 nullptr);
  inputs.reset(in_raw);
  outputs.reset(out_raw);
  if (ret < 0) return GraphError(absl::StrCat("parsing \"", s->description_, "\""), ret);
  if ((ret = avfilter_graph_config(s->graph_.get(), nullptr)) < 0) {
    return GraphError(absl::StrCat("configuring \"", s->description_, "\""), ret);
  }
  return s;
}

bool FilterScaler::Accepts(const AVFrame* frame) const {
  return frame->width == input_.width && frame->height == input_.height &&
         frame->format == input_.format;
}

absl::StatusOr<AvFramePtr> FilterScaler::Scale(const AVFrame* frame) {
  if (!Accepts(frame)) {
    return absl::InternalError(absl::StrCat("scaler: made for ", input_.width, "x", input_.height,
                                            ", given ", frame->width, "x", frame->height));
  }
  int ret = av_buffersrc_add_frame_flags(source_, const_cast<AVFrame*>(frame),
                                         AV_BUFFERSRC_FLAG_KEEP_REF);
  if (ret < 0) return GraphError("feeding a frame", ret);
  AvFramePtr out(av_frame_alloc());
  if (!out) return absl::ResourceExhaustedError("scaler: cannot allocate a frame");
  ret = av_buffersink_get_frame(sink_, out.get());
  if (ret < 0) return GraphError("no scaled frame", ret);  // scale is one in, one out
  av_frame_copy_props(out.get(), frame);
  out->color_range = AVCOL_RANGE_MPEG;
  out->sample_aspect_ratio = AVRational{1, 1};
  return out;
}

}  // namespace switchyard::media
