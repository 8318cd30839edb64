// A video scaler built on a libavfilter graph: on the GPU (scale_cuda, then one download of the
// scaled picture to system memory) for frames decoded with NVDEC, or on the CPU (scale) for
// software frames. The GPU form lets a 1080p NVDEC stream feed a ladder without copying the full
// size picture to memory once per frame and scaling it on the CPU per rendition. (The transcoder
// scales software frames with swscale directly; the CPU form is what tests exercise the graph
// plumbing with on machines without a GPU.)
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/media/ffmpeg_util.h"

extern "C" {
#include <libavfilter/avfilter.h>
}

namespace switchyard::media {

using AvFilterGraphPtr = std::unique_ptr<AVFilterGraph, AvDeleter<avfilter_graph_free>>;

// What a scaler is made for: the input frames' geometry and format, and the output size. Frames
// that differ need a new scaler (see Accepts).
struct FilterScalerInput {
  int width = 0;
  int height = 0;
  int format = -1;  // AVPixelFormat; AV_PIX_FMT_CUDA for GPU frames
  // GPU frames: the frames context of the decoder's surfaces (a reference is taken).
  AVBufferRef* hw_frames_ctx = nullptr;
};

class FilterScaler;
using FilterScalerPtr = std::unique_ptr<FilterScaler>;

class FilterScaler {
 public:
  // Builds the graph for frames like `input`, scaled (bicubic) to width x height, yuv420p, in
  // system memory. GPU input (format AV_PIX_FMT_CUDA with hw_frames_ctx): scale_cuda +
  // hwdownload. Software input: scale + format. INVALID_ARGUMENT for bad sizes; INTERNAL when
  // FFmpeg cannot build the graph (e.g. a libavfilter without scale_cuda), with its message.
  static absl::StatusOr<FilterScalerPtr> Create(const FilterScalerInput& input, int width,
                                                int height);
  ~FilterScaler();
  FilterScaler(const FilterScaler&) = delete;
  FilterScaler& operator=(const FilterScaler&) = delete;

  // Whether `frame` has the geometry and format this scaler was made for.
  bool Accepts(const AVFrame* frame) const;
  // Scales one frame (the caller's reference is kept); the result carries the input's
  // properties (pts, colorspace) with the output size, limited range, square pixels.
  absl::StatusOr<AvFramePtr> Scale(const AVFrame* frame);

  int out_width() const { return out_width_; }
  int out_height() const { return out_height_; }
  const std::string& description() const { return description_; }  // the filter chain

 private:
  FilterScaler() = default;

  AvFilterGraphPtr graph_;
  AVFilterContext* source_ = nullptr;  // owned by graph_
  AVFilterContext* sink_ = nullptr;    // owned by graph_
  FilterScalerInput input_;            // hw_frames_ctx not kept (the graph holds its reference)
  int out_width_ = 0;
  int out_height_ = 0;
  std::string description_;
};

}  // namespace switchyard::media
