#include "orchestrator/transcode/rendition.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "orchestrator/transcode/ladder.h"
#include "orchestrator/transcode/video_encoder.h"

extern "C" {
#include <libavutil/mathematics.h>
}

namespace switchyard::orchestrator::transcode {
namespace {

// Frame rate conversion fills timestamp gaps up to this long with duplicates; a longer gap is a
// discontinuity and is skipped over instead.
constexpr double kMaxFillSeconds = 1.0;

}  // namespace

Rendition::Rendition(size_t index, RenditionSpec spec, const TranscodeOptions& options,
                     const Cancellation& cancellation)
    : index_(index), spec_(std::move(spec)), options_(options), cancellation_(cancellation) {}

void Rendition::SetFloor(int64_t pts, AVRational time_base) {
  floor_pts_ = pts;
  floor_time_base_ = time_base;
}

bool Rendition::StartsBeforeFloor(double seconds) const {
  return floor_pts_ != AV_NOPTS_VALUE &&
         seconds < floor_pts_ * av_q2d(floor_time_base_) - kMaxOverlapSeconds;
}

absl::Status Rendition::OpenVideo(const VideoSource& video, bool* nvenc) {
  if (auto status =
          ResolveRenditionSize(index_, video.display_aspect, video.params->height, options_, spec_);
      !status.ok()) {
    return status;
  }
  width_ = spec_.width;
  height_ = spec_.height;
  input_time_base_ = video.time_base;
  passthrough_rate_ = spec_.fps_num == 0;
  if (passthrough_rate_) {
    rate_ = video.frame_rate;
    time_base_ = video.time_base;
  } else {
    av_reduce(&rate_.num, &rate_.den, spec_.fps_num, spec_.fps_den, INT_MAX);
    time_base_ = av_inv_q(rate_);
    max_fill_slots_ =
        std::max<int64_t>(1, static_cast<int64_t>(std::ceil(kMaxFillSeconds * av_q2d(rate_))));
  }
  if (floor_pts_ != AV_NOPTS_VALUE) {
    // Nothing at or before the previous segment's last frame.
    last_pts_ = av_rescale_q_rnd(floor_pts_, floor_time_base_, time_base_,
                                 static_cast<AVRounding>(AV_ROUND_DOWN));
  }
  packet_.reset(av_packet_alloc());
  if (!packet_) return absl::ResourceExhaustedError("cannot allocate a packet");
  VideoEncoderSettings settings;
  settings.rendition = index_;
  settings.spec = &spec_;
  settings.width = width_;
  settings.height = height_;
  settings.time_base = time_base_;
  settings.frame_rate = rate_;
  settings.threads = encoder_threads_ >= 0 ? encoder_threads_ : options_.encoder_threads;
  settings.global_header = options_.container == "mp4";  // mp4: SPS/PPS in the sample description
  settings.input = video.params;
  auto encoder = OpenVideoEncoder(settings, options_.hw_encode, nvenc);
  if (!encoder.ok()) return encoder.status();
  encoder_ = *std::move(encoder);
  return absl::OkStatus();
}

absl::Status Rendition::OpenMuxer(const SegmentAudio& audio,
                                  const std::vector<double>* audio_floor) {
  auto muxer =
      RenditionMuxer::Open(index_, options_.container, encoder_.get(), rate_, audio, audio_floor);
  if (!muxer.ok()) return muxer.status();
  muxer_ = *std::move(muxer);
  return absl::OkStatus();
}

absl::Status Rendition::Encode(AVFrame* frame) {
  return EncodeFrame(encoder_.get(), frame, packet_.get(), index_, [this](AVPacket* packet) {
    return muxer_->WriteVideo(packet, encoder_->time_base);
  });
}

absl::Status Rendition::Emit(int64_t pts) {
  // Never at or before the last frame (of this output, or of the previous segment's).
  if (last_pts_ != AV_NOPTS_VALUE && pts <= last_pts_) return absl::OkStatus();
  if (frames_ >= options_.max_output_frames) {
    return RenditionError(
        index_, "fps_num/fps_den",
        absl::StrCat("the output would have more than ", options_.max_output_frames, " frames"));
  }
  if (!pending_scaled_) {
    auto scaled = scaler_->Scale(pending_.get(), width_, height_, index_, &scalers_created_);
    if (!scaled.ok()) return scaled.status();
    pending_scaled_ = std::move(*scaled);
  }
  // A fresh reference per output frame: the encoder may hold on to the previous one.
  media::AvFramePtr out(av_frame_clone(pending_scaled_.get()));
  if (!out) return absl::ResourceExhaustedError("cannot reference a frame");
  out->pts = pts;
  // The first frame of every output is an IDR; after that the encoder decides (every gop frames).
  out->pict_type = frames_ == 0 ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
  out->key_frame = frames_ == 0 ? 1 : 0;
  last_pts_ = pts;
  ++frames_;
  return Encode(out.get());
}

absl::Status Rendition::PushFrame(AVFrame* frame, int64_t ts, bool lift_floor) {
  if (lift_floor && frames_ == 0) last_pts_ = AV_NOPTS_VALUE;
  return Push(frame, ts);
}

absl::Status Rendition::Push(AVFrame* frame, int64_t ts) {
  if (passthrough_rate_) {
    if (last_pts_ != AV_NOPTS_VALUE && ts <= last_pts_) return absl::OkStatus();  // not after
    pending_.reset(av_frame_clone(frame));
    if (!pending_) return absl::ResourceExhaustedError("cannot reference a frame");
    pending_scaled_.reset();
    return Emit(ts);
  }
  const int64_t slot = av_rescale_q_rnd(ts, input_time_base_, time_base_,
                                        static_cast<AVRounding>(AV_ROUND_NEAR_INF));
  if (!have_pending_) {
    next_slot_ = slot;
    have_pending_ = true;
  } else if (slot > next_slot_) {
    if (slot - next_slot_ > max_fill_slots_) {
      // A discontinuity: show the previous frame once and carry on at the new time.
      if (auto status = Emit(next_slot_); !status.ok()) return status;
      next_slot_ = slot;
    } else {
      while (next_slot_ < slot) {
        if (cancellation_.Cancelled()) return absl::CancelledError("transcode cancelled");
        if (auto status = Emit(next_slot_++); !status.ok()) return status;
      }
    }
  }
  // Frames landing on an already-filled slot replace the pending one (dropped if superseded).
  pending_.reset(av_frame_clone(frame));
  if (!pending_) return absl::ResourceExhaustedError("cannot reference a frame");
  pending_scaled_.reset();
  return absl::OkStatus();
}

absl::Status Rendition::WriteAudio(const AVPacket* packet, AVRational time_base) {
  return muxer_->WriteAudio(packet, time_base);
}

absl::Status Rendition::Finish(int64_t end_ts) {
  if (!passthrough_rate_ && have_pending_) {
    // Show the last frame until the end of its duration.
    int64_t end_slot = av_rescale_q_rnd(end_ts, input_time_base_, time_base_,
                                        static_cast<AVRounding>(AV_ROUND_NEAR_INF));
    end_slot = std::min(end_slot, next_slot_ + max_fill_slots_);
    while (next_slot_ < end_slot) {
      if (cancellation_.Cancelled()) return absl::CancelledError("transcode cancelled");
      if (auto status = Emit(next_slot_++); !status.ok()) return status;
    }
    if (frames_ == 0) {
      if (auto status = Emit(next_slot_++); !status.ok()) return status;
    }
  }
  pending_.reset();
  pending_scaled_.reset();
  if (encoder_) {
    if (auto status = Encode(nullptr); !status.ok()) return status;  // flush
  }
  return muxer_->Finish();
}

absl::Status Rendition::Do(RenditionWork& work) {
  switch (work.kind) {
    case RenditionWork::Kind::kFrame:
      return PushFrame(work.frame.get(), work.ts, work.lift_floor);
    case RenditionWork::Kind::kAudio:
      return WriteAudio(work.packet.get(), work.time_base);
    case RenditionWork::Kind::kFinish:
      return Finish(work.ts);
  }
  return absl::InternalError("unknown rendition work");
}

}  // namespace switchyard::orchestrator::transcode
