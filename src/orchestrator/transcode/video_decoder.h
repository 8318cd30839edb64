// The decode stage: the video decoder (software, or NVDEC through a CUDA device), entered at the
// segment's first keyframe, handing decoded frames on in system memory unless they are to be
// scaled on the GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/media/ffmpeg_util.h"
#include "orchestrator/transcode/transcode_types.h"

namespace switchyard::orchestrator::transcode {

// A stream's decoder, kept between its segments while the codec parameters stay the same.
struct DecoderCache {
  media::AvCodecContextPtr decoder;
  media::AvCodecParametersPtr params;  // what `decoder` was opened for
  int threads = 1;                     // and with how many threads
};

class VideoDecoder;
using VideoDecoderPtr = std::unique_ptr<VideoDecoder>;

class VideoDecoder {
 public:
  // Receives each decoded frame (the decoder's: valid until the call returns).
  using FrameSink = std::function<absl::Status(AVFrame*)>;

  // Opens a decoder for `video` as options.hw_decode says ("auto" falls back to software when the
  // GPU will not take the stream), or reuses `cache`'s (flushed, pointed at this segment's time
  // base) while the codec parameters match; a new one is kept in `cache` (when given) and
  // `*opened` set. `renditions`: the ladder's size (GPU surfaces to reserve for them).
  // INVALID_ARGUMENT when it cannot be opened; FAILED_PRECONDITION when "cuda" cannot be had.
  static absl::StatusOr<VideoDecoderPtr> Open(const AVStream* video,
                                              const TranscodeOptions& options, size_t renditions,
                                              DecoderCache* cache, bool* opened);

  // Decodes one video packet. Decoding starts at the first keyframe: packets before it (a segment
  // cut mid-GOP) reference pictures that are not in the segment and are held back, in case none
  // is flagged (Finish). A corrupt packet is skipped, as players do.
  absl::Status Feed(const AVPacket* packet, const FrameSink& sink);
  // End of the input. When no packet was flagged as a keyframe (demuxers do not flag an I-frame
  // that is neither an IDR nor a recovery point: open GOPs), decodes the held-back packets from
  // the first intra frame the decoder finds. Then drains the decoder.
  absl::Status Finish(const FrameSink& sink);
  // Whether `frame` comes before the entry point (no keyframe was flagged and no intra frame has
  // been decoded yet): such frames are skipped.
  bool BeforeEntry(const AVFrame* frame);

  int64_t packets() const { return packets_; }
  bool seen_keyframe() const { return seen_keyframe_; }
  int64_t decode_errors() const { return decode_errors_; }
  bool hardware_decoded() const { return hardware_decoded_; }

 private:
  VideoDecoder() = default;
  absl::Status Decode(const AVPacket* packet, const FrameSink& sink);

  media::AvCodecContextPtr own_;       // a one-off segment's decoder
  AVCodecContext* decoder_ = nullptr;  // own_ or the stream's
  bool gpu_scale_ = false;
  media::AvFramePtr frame_;
  media::AvFramePtr memory_frame_;  // frame_ copied from GPU memory, when decoded there
  bool hardware_decoded_ = false;
  int64_t decode_errors_ = 0;
  int64_t packets_ = 0;
  bool seen_keyframe_ = false;
  std::vector<media::AvPacketPtr> before_keyframe_;  // video packets read before any keyframe
  bool intra_entry_ = false;  // none was flagged: decoding starts at the first intra frame
  bool seen_intra_ = false;
};

}  // namespace switchyard::orchestrator::transcode
