// A rendition's scaler: decoded frames to the rendition's size in yuv420p, with swscale on the CPU
// or, for GPU-decoded frames, with scale_cuda (media::FilterScaler). A stream keeps one per
// rendition between segments (StreamState), remade only when what it was made for changes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "common/media/ffmpeg_util.h"
#include "common/media/filter_scaler.h"

namespace switchyard::orchestrator::transcode {

class Scaler {
 public:
  // Scales `src` to width x height, yuv420p, limited range, square pixels, keeping its properties
  // (pts...). A software frame that already is that comes back as a new reference to the same
  // pixels. A GPU frame is scaled on the GPU, or copied to memory and scaled there once the GPU
  // filter could not be built. `*created` counts the scaler contexts made; `rendition` names the
  // rendition in the log. INVALID_ARGUMENT for a pixel format swscale cannot read.
  absl::StatusOr<media::AvFramePtr> Scale(AVFrame* src, int width, int height, size_t rendition,
                                          int64_t* created);

 private:
  absl::StatusOr<media::AvFramePtr> ScaleOnGpu(AVFrame* src, int width, int height,
                                               size_t rendition, int64_t* created);

  // What `sws` was made for.
  media::SwsContextPtr sws_;
  int src_width_ = 0;
  int src_height_ = 0;
  int src_format_ = -1;
  int colorspace_ = -1;
  int range_ = -1;
  int dst_width_ = 0;
  int dst_height_ = 0;
  // GPU-decoded frames: scale_cuda + download, remade when the frames, their surfaces' pool or the
  // output size change. After it failed to build once, frames go to memory and through `sws_`.
  media::FilterScalerPtr gpu_;
  const void* gpu_frames_ctx_ = nullptr;  // identity of the pool `gpu_` was made for
  bool gpu_failed_ = false;
};

}  // namespace switchyard::orchestrator::transcode
