// Wires the stages of one segment's transcode: the input is demuxed (SegmentInput), its video
// decoded once (VideoDecoder) and timed (InputTimeline), each decoded frame handed to every
// rendition (Rendition: rate conversion, scaler, encoder, muxer), on its own thread when they run
// in parallel (RenditionWorker), and the audio copied or re-encoded into each (SegmentAudio).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "orchestrator/transcode/cancellation.h"
#include "orchestrator/transcode/rendition.h"
#include "orchestrator/transcode/rendition_worker.h"
#include "orchestrator/transcode/segment_audio.h"
#include "orchestrator/transcode/segment_input.h"
#include "orchestrator/transcode/stream_state.h"
#include "orchestrator/transcode/timestamps.h"
#include "orchestrator/transcode/transcoder.h"
#include "orchestrator/transcode/video_decoder.h"

namespace switchyard::orchestrator::transcode {

// One call of TranscodeSegment / TranscodeStreamSegment (their contract is in transcoder.h).
class SegmentTranscoder {
 public:
  // Everything given outlives this object. `state`: null for a one-off segment.
  SegmentTranscoder(std::string_view segment, const std::vector<RenditionSpec>& ladder,
                    const TranscodeOptions& options, const std::function<bool()>& cancelled,
                    internal::StreamState* state = nullptr, internal::StreamSegment how = {});
  // Joins the rendition threads first: they use the renditions until then.
  ~SegmentTranscoder();
  SegmentTranscoder(const SegmentTranscoder&) = delete;
  SegmentTranscoder& operator=(const SegmentTranscoder&) = delete;

  absl::StatusOr<TranscodeResult> Run();

 private:
  absl::Status Validate();
  absl::Status OpenInput();
  // Sizes the decoder's and encoders' threads (thread_policy.h, or the fixed counts) before they
  // open; the plan's description goes in the result.
  void PlanSegmentThreads();
  absl::Status SetUpRenditions();
  // TranscodeOptions::scale_from_larger: picks the base rendition and those made from its frames
  // (after the renditions resolved their sizes).
  void PlanScaleCascade();
  // A session's segment continuing the previous one: the previous segment's last audio times for
  // `r` (RenditionMuxer::Open); else null.
  const std::vector<double>* AudioFloor(const Rendition& r) const;
  absl::Status SetUpRendition(Rendition& r);
  absl::Status ReadAll();
  absl::Status OnFrame(AVFrame* frame);
  absl::Status WriteAudio(AVPacket* packet, AVRational time_base);
  // Starts one worker per rendition when they are to run in parallel.
  void StartWorkers();
  // Does `work` for rendition `i` now, or queues it on its worker.
  absl::Status Dispatch(size_t i, RenditionWork work);
  // Finishes every rendition (on its worker, if it has one) and returns the first error.
  absl::Status FinishAll(int64_t end_ts);
  absl::StatusOr<TranscodeResult> FinishAudioOnly();
  // Moves the outputs into `result` and remembers, for the stream, where each rendition ended.
  TranscodeResult Collect(TranscodeResult result);

  std::string_view segment_;
  const std::vector<RenditionSpec>& ladder_;
  TranscodeOptions options_;
  Cancellation cancellation_;
  internal::StreamState* state_;
  internal::StreamSegment how_;

  SegmentInputPtr input_;
  AVStream* video_ = nullptr;
  bool audio_only_ = false;  // no video stream (a session's later segment)
  std::string thread_plan_;
  VideoDecoderPtr decoder_;
  std::optional<InputTimeline> timeline_;
  SegmentAudio audio_{options_};
  double audio_start_ = 0;  // audio-only: seconds covered by the copied audio
  double audio_end_ = 0;
  bool have_audio_time_ = false;
  media::AvPacketPtr packet_;
  std::vector<std::unique_ptr<Rendition>> renditions_;
  std::vector<std::unique_ptr<RenditionWorker>> workers_;  // per rendition, when parallel
  std::atomic<bool> worker_failed_{false};
  // scale_from_larger: the rendition whose size each decoded frame is scaled to once (npos: none)
  // and, per rendition, whether it is made from that frame.
  size_t cascade_base_ = std::string::npos;
  std::vector<bool> from_base_;
  transcode::Scaler own_base_scaler_;
  transcode::Scaler* base_scaler_ = &own_base_scaler_;  // or the stream's
  int64_t base_scalers_created_ = 0;
  std::string scale_plan_ = "each from the decoded frame";
  bool hardware_encoded_ = false;
  int64_t input_frames_ = 0;
};

}  // namespace switchyard::orchestrator::transcode
