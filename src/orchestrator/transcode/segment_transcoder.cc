#include "orchestrator/transcode/segment_transcoder.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "orchestrator/transcode/ladder.h"
#include "orchestrator/transcode/thread_policy.h"

namespace switchyard::orchestrator::transcode {

SegmentTranscoder::SegmentTranscoder(std::string_view segment,
                                     const std::vector<RenditionSpec>& ladder,
                                     const TranscodeOptions& options,
                                     const std::function<bool()>& cancelled,
                                     internal::StreamState* state, internal::StreamSegment how)
    : segment_(segment),
      ladder_(ladder),
      options_(options),
      cancellation_(cancelled),
      state_(state),
      how_(how) {}

SegmentTranscoder::~SegmentTranscoder() { workers_.clear(); }

absl::Status SegmentTranscoder::Validate() {
  auto specs = ValidateLadder(ladder_, options_);
  if (!specs.ok()) return specs.status();
  for (size_t i = 0; i < specs->size(); ++i) {
    renditions_.push_back(
        std::make_unique<Rendition>(i, std::move((*specs)[i]), options_, cancellation_));
  }
  if (segment_.empty()) return absl::InvalidArgumentError("segment: input is empty");
  // Size and video duration, before the input is opened for decoding.
  if (auto status =
          CheckSegmentLimits(segment_, options_.max_input_bytes, options_.max_input_seconds,
                             kSegmentFormats, MaxSegmentPackets(options_), "segment");
      !status.ok()) {
    return status;
  }
  return ValidateCodecOptions(options_);
}

absl::Status SegmentTranscoder::OpenInput() {
  auto input = SegmentInput::Open(segment_);
  if (!input.ok()) return input.status();
  input_ = *std::move(input);
  video_ = input_->video();
  if (video_ == nullptr) {
    if (!how_.allow_audio_only) {
      return absl::InvalidArgumentError("segment: input has no video stream");
    }
    audio_only_ = true;
  } else {
    if (auto status = input_->CheckVideo(options_); !status.ok()) return status;
    PlanSegmentThreads();
    bool opened = false;
    auto decoder = VideoDecoder::Open(video_, options_, renditions_.size(),
                                      state_ != nullptr ? &state_->decoder : nullptr, &opened);
    if (!decoder.ok()) return decoder.status();
    decoder_ = *std::move(decoder);
    if (opened) ++state_->stats.decoders_opened;
    timeline_.emplace(video_->time_base, input_->frame_rate());
  }
  if (auto status = input_->CheckTruncation(); !status.ok()) return status;

  // Audio streams carried into every rendition; everything else is discarded while demuxing.
  const int audio_streams = audio_.Select(input_->format(), video_);
  if (audio_only_ && audio_streams == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: input has no video stream and no audio stream that can be copied "
                     "into ",
                     options_.container));
  }
  packet_.reset(av_packet_alloc());
  if (!packet_) return absl::ResourceExhaustedError("cannot allocate frames or packets");
  return absl::OkStatus();
}

void SegmentTranscoder::PlanSegmentThreads() {
  if (options_.thread_policy != "auto") {
    std::vector<std::string> encoders(renditions_.size(),
                                      options_.encoder_threads == 0
                                          ? std::string("libx264's choice")
                                          : std::to_string(options_.encoder_threads));
    thread_plan_ = absl::StrCat("fixed: decoder ", options_.decoder_threads, ", encoders ",
                                absl::StrJoin(encoders, "/"));
    return;
  }
  // Each rendition's output pixels, its size derived from the input's where the spec leaves it
  // open (only the proportions matter here).
  const double in_w = std::max(1, video_->codecpar->width);
  const double in_h = std::max(1, video_->codecpar->height);
  ThreadPolicyInputs inputs;
  inputs.cores = options_.cores;
  inputs.segments_in_flight = options_.segments_in_flight;
  for (const auto& r : renditions_) {
    double w = r->spec().width, h = r->spec().height;
    if (w <= 0 && h <= 0) {
      w = in_w;
      h = in_h;
    } else if (w <= 0) {
      w = h * in_w / in_h;
    } else if (h <= 0) {
      h = w * in_h / in_w;
    }
    inputs.rendition_pixels.push_back(static_cast<int64_t>(w * h));
  }
  ThreadPlan plan = PlanThreads(inputs);
  options_.decoder_threads = plan.decoder_threads;
  for (size_t i = 0; i < renditions_.size(); ++i) {
    renditions_[i]->SetEncoderThreads(plan.encoder_threads[i]);
  }
  thread_plan_ = std::move(plan.description);
}

const std::vector<double>* SegmentTranscoder::AudioFloor(const Rendition& r) const {
  if (state_ == nullptr || !how_.continues_previous ||
      r.index() >= state_->last_audio_seconds.size()) {
    return nullptr;
  }
  return &state_->last_audio_seconds[r.index()];
}

absl::Status SegmentTranscoder::SetUpRendition(Rendition& r) {
  if (state_ != nullptr) {
    if (state_->scalers.size() < ladder_.size()) state_->scalers.resize(ladder_.size());
    r.UseScaler(&state_->scalers[r.index()]);
    if (how_.continues_previous && r.index() < state_->last_pts.size() &&
        state_->last_pts[r.index()] != AV_NOPTS_VALUE) {
      r.SetFloor(state_->last_pts[r.index()], state_->last_time_base[r.index()]);
    }
  }
  if (audio_only_) {
    // Sizes as resolved by the stream's last video segment; no encoder, no video stream.
    if (state_ != nullptr && r.index() < state_->resolved.size()) {
      r.spec() = state_->resolved[r.index()];
    }
    return r.OpenMuxer(audio_, AudioFloor(r));
  }
  VideoSource video;
  video.params = video_->codecpar;
  video.time_base = video_->time_base;
  video.frame_rate = input_->frame_rate();
  video.display_aspect = av_q2d(input_->display_aspect());
  bool nvenc = false;
  if (auto status = r.OpenVideo(video, &nvenc); !status.ok()) return status;
  if (nvenc) hardware_encoded_ = true;
  return r.OpenMuxer(audio_, AudioFloor(r));
}

absl::Status SegmentTranscoder::SetUpRenditions() {
  bool has_audio = audio_.any();
  for (auto& r : renditions_) {
    absl::Status status = SetUpRendition(*r);
    if (!status.ok() && has_audio && r->has_encoder() && !r->has_muxer()) {
      // The muxer rejected the copied audio's parameters (a corrupt input): drop the audio from
      // every rendition rather than fail the video.
      audio_.DropAll();
      has_audio = false;
      for (auto& done : renditions_) {
        if (!done->has_muxer()) continue;
        done->CloseMuxer();
        if (status = done->OpenMuxer(audio_, AudioFloor(*done)); !status.ok()) return status;
      }
      status = r->OpenMuxer(audio_, AudioFloor(*r));
    }
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::OnFrame(AVFrame* frame) {
  if (cancellation_.Cancelled()) return absl::CancelledError("transcode cancelled");
  if (decoder_->BeforeEntry(frame)) return absl::OkStatus();
  if (frame->width <= 0 || frame->height <= 0 || frame->width > options_.max_width ||
      frame->height > options_.max_height) {
    return absl::InvalidArgumentError(absl::StrCat("segment: decoded a ", frame->width, "x",
                                                   frame->height, " frame, outside the limit of ",
                                                   options_.max_width, "x", options_.max_height));
  }
  if (++input_frames_ > options_.max_input_frames) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: input has more than ", options_.max_input_frames, " video frames"));
  }
  const InputTimeline::Timed timed = timeline_->Next(frame);
  const double seconds = timed.ts * av_q2d(video_->time_base);
  media::AvFramePtr base;  // scale_from_larger: the frame at the base rendition's size
  if (cascade_base_ != std::string::npos && frame->format != AV_PIX_FMT_CUDA) {
    const Rendition& b = *renditions_[cascade_base_];
    auto scaled =
        base_scaler_->Scale(frame, b.width(), b.height(), cascade_base_, &base_scalers_created_);
    if (!scaled.ok()) return scaled.status();
    base = *std::move(scaled);
  }
  for (size_t i = 0; i < renditions_.size(); ++i) {
    Rendition& r = *renditions_[i];
    AVFrame* source = base != nullptr && from_base_[i] ? base.get() : frame;
    // A session's segment that starts well before the previous one ended is a discontinuity (the
    // sender restarted), not an overlap: its frames are all kept, on their own timestamps.
    const bool lift_floor = timed.first && r.StartsBeforeFloor(seconds);
    if (workers_.empty()) {
      if (auto status = r.PushFrame(source, timed.ts, lift_floor); !status.ok()) return status;
      continue;
    }
    RenditionWork work;
    work.kind = RenditionWork::Kind::kFrame;
    work.ts = timed.ts;
    work.lift_floor = lift_floor;
    work.frame.reset(av_frame_clone(source));
    if (!work.frame) return absl::ResourceExhaustedError("cannot reference a frame");
    if (auto status = Dispatch(i, std::move(work)); !status.ok()) return status;
  }
  return absl::OkStatus();
}

void SegmentTranscoder::PlanScaleCascade() {
  from_base_.assign(renditions_.size(), false);
  if (!options_.scale_from_larger || audio_only_ || renditions_.size() < 2) return;
  // The base: the largest rendition that keeps every decoded frame (so scaling each frame to its
  // size once costs nothing it would not do anyway) and is no larger than the input (a smaller
  // rendition made from an upscaled frame would lose nothing but gain nothing either).
  const int in_w = video_->codecpar->width;
  const int in_h = video_->codecpar->height;
  size_t base = std::string::npos;
  int64_t base_pixels = 0;
  for (size_t i = 0; i < renditions_.size(); ++i) {
    const Rendition& r = *renditions_[i];
    if (!r.passthrough_rate() || r.width() > in_w || r.height() > in_h) continue;
    const int64_t pixels = static_cast<int64_t>(r.width()) * r.height();
    if (pixels > base_pixels) {
      base = i;
      base_pixels = pixels;
    }
  }
  if (base == std::string::npos) return;
  const Rendition& b = *renditions_[base];
  std::vector<std::string> made;
  for (size_t i = 0; i < renditions_.size(); ++i) {
    const Rendition& r = *renditions_[i];
    if (i == base || r.width() > b.width() || r.height() > b.height()) continue;
    from_base_[i] = true;
    made.push_back(r.spec().name.empty() ? absl::StrCat(r.width(), "x", r.height())
                                         : r.spec().name);
  }
  if (made.empty()) return;
  from_base_[base] = true;  // its own scaler then only takes a new reference
  cascade_base_ = base;
  if (state_ != nullptr) base_scaler_ = &state_->base_scaler;
  scale_plan_ =
      absl::StrCat(absl::StrJoin(made, ", "), " from ",
                   b.spec().name.empty() ? absl::StrCat(b.width(), "x", b.height()) : b.spec().name,
                   "'s scaled frame");
}

void SegmentTranscoder::StartWorkers() {
  if (!options_.parallel_renditions || audio_only_ || renditions_.size() < 2) return;
  for (auto& r : renditions_) {
    workers_.push_back(std::make_unique<RenditionWorker>(
        [rendition = r.get()](RenditionWork& work) { return rendition->Do(work); },
        &worker_failed_));
  }
}

absl::Status SegmentTranscoder::Dispatch(size_t i, RenditionWork work) {
  if (workers_.empty()) return renditions_[i]->Do(work);
  RenditionWorker& worker = *workers_[i];
  if (!worker.Post(std::move(work))) return worker.Drain();
  if (worker_failed_.load()) {
    // Another rendition failed: stop feeding this segment; its error is reported by FinishAll's
    // caller through Drain.
    for (auto& other : workers_) {
      if (absl::Status status = other->Drain(); !status.ok()) return status;
    }
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::FinishAll(int64_t end_ts) {
  for (auto& worker : workers_) {
    RenditionWork work;
    work.kind = RenditionWork::Kind::kFinish;
    work.ts = end_ts;
    if (!worker->Post(std::move(work))) break;  // failed: its error is returned below
  }
  absl::Status first;
  for (size_t i = 0; i < renditions_.size(); ++i) {
    absl::Status status = workers_.empty() ? renditions_[i]->Finish(end_ts) : workers_[i]->Drain();
    if (first.ok() && !status.ok()) first = std::move(status);
    if (!first.ok() && workers_.empty()) break;
  }
  return first;
}

absl::Status SegmentTranscoder::WriteAudio(AVPacket* packet, AVRational time_base) {
  if (packet->pts == AV_NOPTS_VALUE && packet->dts == AV_NOPTS_VALUE) return absl::OkStatus();
  for (size_t i = 0; i < renditions_.size(); ++i) {
    Rendition& r = *renditions_[i];
    if (!r.carries_audio(packet->stream_index)) continue;
    absl::Status status;
    if (!workers_.empty()) {
      RenditionWork work;
      work.kind = RenditionWork::Kind::kAudio;
      work.packet.reset(av_packet_clone(packet));
      if (!work.packet) return absl::ResourceExhaustedError("cannot reference a packet");
      work.time_base = time_base;
      status = Dispatch(i, std::move(work));
    } else {
      status = r.WriteAudio(packet, time_base);
    }
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::ReadAll() {
  AVFormatContext* fmt = input_->format();
  AVPacket* pkt = packet_.get();
  const auto on_frame = [this](AVFrame* frame) { return OnFrame(frame); };
  const auto write_audio = [this](AVPacket* packet, AVRational time_base) {
    return WriteAudio(packet, time_base);
  };
  const int64_t max_packets = MaxSegmentPackets(options_);
  for (int64_t n = 0;; ++n) {
    if (cancellation_.Cancelled()) return absl::CancelledError("transcode cancelled");
    if (n > max_packets) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment: input has more than ", max_packets, " packets"));
    }
    const int ret = av_read_frame(fmt, pkt);
    if (ret == AVERROR_EOF) break;
    if (ret < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "segment: cannot read the input (truncated or corrupt?): ", media::AvErrorString(ret)));
    }
    absl::Status status;
    if (video_ != nullptr && pkt->stream_index == video_->index) {
      status = decoder_->Feed(pkt, on_frame);
    } else if (audio_.carries(static_cast<unsigned>(pkt->stream_index))) {
      if (audio_only_ && pkt->pts != AV_NOPTS_VALUE) {
        const double tb = av_q2d(fmt->streams[pkt->stream_index]->time_base);
        const double start = pkt->pts * tb;
        const double end = (pkt->pts + std::max<int64_t>(pkt->duration, 0)) * tb;
        audio_start_ = have_audio_time_ ? std::min(audio_start_, start) : start;
        audio_end_ = have_audio_time_ ? std::max(audio_end_, end) : end;
        have_audio_time_ = true;
      }
      status = audio_.Process(pkt, write_audio);
    }
    av_packet_unref(pkt);
    if (!status.ok()) return status;
  }
  if (auto status = audio_.Flush(write_audio); !status.ok()) return status;
  if (audio_only_) return absl::OkStatus();
  return decoder_->Finish(on_frame);
}

absl::StatusOr<TranscodeResult> SegmentTranscoder::Run() {
  media::InitFfmpeg();
  if (auto status = Validate(); !status.ok()) return status;
  if (cancellation_.Cancelled()) return absl::CancelledError("transcode cancelled");
  if (auto status = OpenInput(); !status.ok()) return status;
  if (auto status = audio_.PrepareFilters(segment_, MaxSegmentPackets(options_), cancellation_);
      !status.ok()) {
    return status;
  }
  if (auto status = audio_.PrepareEncoders(); !status.ok()) return status;
  if (auto status = SetUpRenditions(); !status.ok()) return status;
  PlanScaleCascade();
  StartWorkers();
  if (auto status = ReadAll(); !status.ok()) return status;
  if (audio_only_) return FinishAudioOnly();
  if (decoder_->packets() == 0) {
    return absl::InvalidArgumentError("segment: the video stream has no packets");
  }
  if (!decoder_->seen_keyframe() && input_frames_ == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment: no keyframe in the video (", decoder_->packets(),
        " packets, none a keyframe or an intra frame): a segment must contain an IDR or I frame; "
        "was it cut mid-GOP?"));
  }
  if (input_frames_ == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: the video stream decoded to no frames (", decoder_->decode_errors(),
                     " decode errors; truncated or corrupt input?)"));
  }
  if (auto status = FinishAll(timeline_->end_of_last()); !status.ok()) return status;

  TranscodeResult result;
  result.input_frames = input_frames_;
  result.hardware_decoded = decoder_->hardware_decoded();
  result.hardware_encoded = hardware_encoded_;
  result.duration_seconds = timeline_->seconds();
  result.thread_plan = thread_plan_;
  result.scale_plan = scale_plan_;
  if (state_ != nullptr) {
    state_->resolved.clear();
    for (auto& r : renditions_) state_->resolved.push_back(r->spec());
  }
  return Collect(std::move(result));
}

absl::StatusOr<TranscodeResult> SegmentTranscoder::FinishAudioOnly() {
  for (auto& r : renditions_) {
    if (auto status = r->Finish(0); !status.ok()) return status;
  }
  TranscodeResult result;
  result.duration_seconds = have_audio_time_ ? std::max(0.0, audio_end_ - audio_start_) : 0;
  return Collect(std::move(result));
}

TranscodeResult SegmentTranscoder::Collect(TranscodeResult result) {
  if (state_ != nullptr) {
    for (auto& r : renditions_) state_->stats.scalers_created += r->scalers_created();
    state_->stats.scalers_created += base_scalers_created_;
    state_->last_pts.resize(renditions_.size(), AV_NOPTS_VALUE);
    state_->last_time_base.resize(renditions_.size(), AVRational{0, 1});
    state_->last_audio_seconds.resize(renditions_.size());
    for (auto& r : renditions_) {
      if (r->last_pts() != AV_NOPTS_VALUE) {
        state_->last_pts[r->index()] = r->last_pts();
        state_->last_time_base[r->index()] = r->time_base();
      }
      state_->last_audio_seconds[r->index()] = r->LastAudioSeconds();
    }
  }
  for (auto& r : renditions_) {
    RenditionOutput out;
    out.spec = r->spec();
    out.data = r->TakeData();
    out.frames = r->frames();
    out.width = r->width();
    out.height = r->height();
    result.renditions.push_back(std::move(out));
  }
  return result;
}

}  // namespace switchyard::orchestrator::transcode
