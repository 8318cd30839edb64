// One rendition of a segment: frame rate conversion, scaling, encoding and muxing of the decoded
// frames, and the audio carried into its container. Used by one thread at a time (the decoding
// thread's, or its RenditionWorker's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/media/ffmpeg_util.h"
#include "orchestrator/transcode/cancellation.h"
#include "orchestrator/transcode/rendition_muxer.h"
#include "orchestrator/transcode/scaler.h"
#include "orchestrator/transcode/segment_audio.h"
#include "orchestrator/transcode/transcode_types.h"

namespace switchyard::orchestrator::transcode {

// The decoded video every rendition of a segment is made from.
struct VideoSource {
  const AVCodecParameters* params = nullptr;
  AVRational time_base{0, 1};
  AVRational frame_rate{0, 1};  // as guessed for the input
  double display_aspect = 1;
};

// One unit of a rendition's work, in stream order: a decoded frame to convert, scale and encode,
// an audio packet to copy into its muxer, or the end of the segment (flush and finish).
struct RenditionWork {
  enum class Kind { kFrame, kAudio, kFinish };
  Kind kind = Kind::kFrame;
  media::AvFramePtr frame;  // kFrame: a new reference to the decoded frame
  // kFrame: its timestamp in the input video time base; kFinish: the end of the last frame.
  int64_t ts = 0;
  // kFrame: the first frame of a session's segment that starts well before the previous one
  // ended (a discontinuity): this rendition's floor is lifted if it has not encoded yet.
  bool lift_floor = false;
  media::AvPacketPtr packet;   // kAudio
  AVRational time_base{0, 1};  // kAudio: the packet's time base
};

class Rendition {
 public:
  // `options` and `cancellation` outlive this rendition.
  Rendition(size_t index, RenditionSpec spec, const TranscodeOptions& options,
            const Cancellation& cancellation);
  Rendition(const Rendition&) = delete;
  Rendition& operator=(const Rendition&) = delete;

  // Set-up, in this order, before any work. A stream's segment borrows the stream's scaler and
  // continues after the previous segment's last frame (`pts` in `time_base`).
  void UseScaler(Scaler* scaler) { scaler_ = scaler; }
  // libx264 threads of this rendition's encoder (the segment's thread plan); without it,
  // options.encoder_threads.
  void SetEncoderThreads(int threads) { encoder_threads_ = threads; }
  void SetFloor(int64_t pts, AVRational time_base);
  // Resolves the output size and rate from `video` and opens the encoder; `*nvenc` says whether it
  // is NVENC.
  absl::Status OpenVideo(const VideoSource& video, bool* nvenc);
  // Opens the muxer (after OpenVideo, unless the segment has no video); see RenditionMuxer::Open.
  absl::Status OpenMuxer(const SegmentAudio& audio, const std::vector<double>* audio_floor);
  void CloseMuxer() { muxer_.reset(); }

  // A decoded frame at `ts` (input video time base).
  absl::Status PushFrame(AVFrame* frame, int64_t ts, bool lift_floor);
  absl::Status WriteAudio(const AVPacket* packet, AVRational time_base);
  // Emits what frame rate conversion still holds (the last frame shown until `end_ts`), flushes
  // the encoder and finishes the container.
  absl::Status Finish(int64_t end_ts);
  // Does `work` (on a RenditionWorker's thread).
  absl::Status Do(RenditionWork& work);

  size_t index() const { return index_; }
  RenditionSpec& spec() { return spec_; }
  const RenditionSpec& spec() const { return spec_; }
  int width() const { return width_; }
  // Every decoded frame becomes an output frame (no frame rate conversion); after OpenVideo.
  bool passthrough_rate() const { return passthrough_rate_; }
  int height() const { return height_; }
  bool has_encoder() const { return encoder_ != nullptr; }
  bool has_muxer() const { return muxer_ != nullptr; }
  bool carries_audio(int input_stream) const {
    return muxer_ != nullptr && muxer_->carries_audio(input_stream);
  }
  // Whether a frame `seconds` into the input starts well before the floor (a discontinuity).
  bool StartsBeforeFloor(double seconds) const;
  int64_t frames() const { return frames_; }
  int64_t scalers_created() const { return scalers_created_; }
  // The last pts encoded, in time_base(); AV_NOPTS_VALUE when none (or no video).
  int64_t last_pts() const {
    return muxer_ != nullptr && muxer_->has_video() ? last_pts_ : AV_NOPTS_VALUE;
  }
  AVRational time_base() const { return time_base_; }
  std::vector<double> LastAudioSeconds() const { return muxer_->LastAudioSeconds(); }
  // The finished output (after Finish).
  std::string TakeData() { return std::move(muxer_->data()); }

 private:
  absl::Status Push(AVFrame* frame, int64_t ts);
  absl::Status Emit(int64_t pts);
  absl::Status Encode(AVFrame* frame);

  size_t index_;
  RenditionSpec spec_;
  const TranscodeOptions& options_;
  const Cancellation& cancellation_;
  int width_ = 0;
  int height_ = 0;
  int encoder_threads_ = -1;  // -1: options_.encoder_threads
  AVRational input_time_base_{0, 1};
  bool passthrough_rate_ = false;
  AVRational rate_{0, 1};       // output frame rate (the guessed input rate when passing through)
  AVRational time_base_{0, 1};  // encoder time base
  int64_t max_fill_slots_ = 0;  // fps conversion: longest gap filled with duplicates

  media::AvCodecContextPtr encoder_;
  media::AvPacketPtr packet_;  // the encoder's
  RenditionMuxerPtr muxer_;
  Scaler own_scaler_;
  Scaler* scaler_ = &own_scaler_;  // or the stream's, kept between segments

  // Frame rate conversion: the latest input frame and the next output slot (in time_base units).
  media::AvFramePtr pending_;
  media::AvFramePtr pending_scaled_;
  int64_t next_slot_ = 0;
  bool have_pending_ = false;

  int64_t last_pts_ = AV_NOPTS_VALUE;  // last pts sent to the encoder
  // A session's segment following the previous one: its last pts (in floor_time_base_).
  int64_t floor_pts_ = AV_NOPTS_VALUE;
  AVRational floor_time_base_{0, 1};
  int64_t frames_ = 0;
  int64_t scalers_created_ = 0;
};

}  // namespace switchyard::orchestrator::transcode
