#include "orchestrator/pipelines/live_video_pipeline.h"

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/media/ffmpeg_util.h"
#include "orchestrator/pipelines/tensor_image.h"
#include "orchestrator/transcode/transcoder.h"

extern "C" {
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
}

namespace switchyard::orchestrator {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status AvError(const std::string& what, int ret) {
  return absl::InternalError(absl::StrCat(what, ": ", media::AvErrorString(ret)));
}

struct DictGuard {
  AVDictionary* dict = nullptr;
  ~DictGuard() { av_dict_free(&dict); }
};

absl::StatusOr<c10::IValue> RunModel(const RunContext& ctx, runner::ModelExecutor::Inputs inputs) {
  runner::CancelToken cancel;
  auto watch = runner::WatchForCancel(ctx.is_cancelled, cancel);
  return ctx.executor->Run(std::move(inputs), ctx.deadline, cancel);
}

// The H.264 encoder and its conversion from the model's RGB output, opened on the first frame the
// model returns (its size is known then).
struct Encoder {
  media::AvCodecContextPtr context;
  media::SwsContextPtr rgb_to_yuv;
  media::AvFramePtr frame;
  int width = 0;
  int height = 0;
};

absl::StatusOr<Encoder> OpenEncoder(int width, int height, AVRational time_base,
                                    AVRational frame_rate, const LiveVideoLimits& limits,
                                    bool global_header) {
  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  if (codec == nullptr) return absl::InternalError("the libx264 encoder is not available");
  Encoder e;
  e.context.reset(avcodec_alloc_context3(codec));
  e.frame.reset(av_frame_alloc());
  if (e.context == nullptr || e.frame == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate the encoder");
  }
  AVCodecContext* c = e.context.get();
  c->width = width;
  c->height = height;
  c->pix_fmt = AV_PIX_FMT_YUV420P;
  c->time_base = time_base;
  if (frame_rate.num > 0 && frame_rate.den > 0) c->framerate = frame_rate;
  // One IDR at the start of every segment (a new encoder), then every 2 s at most.
  const int fps = frame_rate.num > 0 && frame_rate.den > 0
                      ? std::max(1, frame_rate.num / std::max(1, frame_rate.den))
                      : 30;
  c->gop_size = std::max(1, 2 * fps);
  c->max_b_frames = 0;
  c->thread_count = std::clamp(limits.encoder_threads, 1, 16);
  if (global_header) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  DictGuard opts;
  av_dict_set(&opts.dict, "preset", limits.preset.c_str(), 0);
  av_dict_set(&opts.dict, "tune", "zerolatency", 0);
  const int ret = avcodec_open2(c, codec, &opts.dict);
  if (ret < 0) return AvError("cannot open libx264", ret);
  e.rgb_to_yuv.reset(sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height,
                                    AV_PIX_FMT_YUV420P, SWS_BILINEAR, nullptr, nullptr, nullptr));
  if (e.rgb_to_yuv == nullptr) return absl::ResourceExhaustedError("cannot allocate a scaler");
  e.frame->format = AV_PIX_FMT_YUV420P;
  e.frame->width = width;
  e.frame->height = height;
  if (int r = av_frame_get_buffer(e.frame.get(), 0); r < 0) return AvError("frame buffer", r);
  e.width = width;
  e.height = height;
  return e;
}

// A decoded frame as float32 [1, 3, H, W] RGB 0..255.
absl::StatusOr<at::Tensor> FrameToTensor(const AVFrame* frame, media::SwsContextPtr* sws) {
  const int w = frame->width, h = frame->height;
  sws->reset(sws_getCachedContext(sws->release(), w, h, static_cast<AVPixelFormat>(frame->format),
                                  w, h, AV_PIX_FMT_RGB24, SWS_BILINEAR, nullptr, nullptr, nullptr));
  if (*sws == nullptr) return absl::InternalError("cannot convert the decoded frame to RGB");
  at::Tensor rgb = at::empty({h, w, 3}, at::kByte);
  uint8_t* dst[4] = {rgb.data_ptr<uint8_t>(), nullptr, nullptr, nullptr};
  const int dst_stride[4] = {3 * w, 0, 0, 0};
  sws_scale(sws->get(), frame->data, frame->linesize, 0, h, dst, dst_stride);
  return rgb.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).contiguous();
}

}  // namespace

absl::StatusOr<LiveVideoLimits> LiveVideoLimitsFor(const ModelConfig& model) {
  LiveVideoLimits l;
  const auto& o = model.options;
  auto read_int = [&](const char* name, int* field, int min, int max) -> absl::Status {
    if (!o.contains(name)) return absl::OkStatus();
    const auto& v = o.at(name);
    if (!v.is_number_integer() || v.get<int64_t>() < min || v.get<int64_t>() > max) {
      return Invalid(absl::StrCat("model '", model.id, "': option '", name,
                                  "' must be an integer in ", min, "..", max));
    }
    *field = v.get<int>();
    return absl::OkStatus();
  };
  for (auto [name, field, min, max] :
       std::initializer_list<std::tuple<const char*, int*, int, int>>{
           {"max_width", &l.max_width, 2, 8192},
           {"max_height", &l.max_height, 2, 8192},
           {"max_frames", &l.max_frames, 1, 100000},
           {"encoder_threads", &l.encoder_threads, 1, 16}}) {
    if (auto st = read_int(name, field, min, max); !st.ok()) return st;
  }
  if (o.contains("max_segment_bytes")) {
    const auto& v = o.at("max_segment_bytes");
    if (!v.is_number_integer() || v.get<int64_t>() < 1024 || v.get<int64_t>() > (1LL << 31) - 1) {
      return Invalid(absl::StrCat("model '", model.id,
                                  "': option 'max_segment_bytes' must be an integer in 1024..",
                                  (1LL << 31) - 1));
    }
    l.max_input_bytes = v.get<int64_t>();
  }
  if (o.contains("max_segment_seconds")) {
    const auto& v = o.at("max_segment_seconds");
    if (!v.is_number() || !(v.get<double>() >= 0.1 && v.get<double>() <= 3600)) {
      return Invalid(absl::StrCat("model '", model.id,
                                  "': option 'max_segment_seconds' must be a number in 0.1..3600"));
    }
    l.max_input_seconds = v.get<double>();
  }
  if (o.contains("preset")) {
    static const char* const kPresets[] = {"ultrafast", "superfast", "veryfast", "faster",  "fast",
                                           "medium",    "slow",      "slower",   "veryslow"};
    const auto& v = o.at("preset");
    const bool ok = v.is_string() && std::any_of(std::begin(kPresets), std::end(kPresets),
                                                 [&](const char* p) { return v == p; });
    if (!ok) {
      return Invalid(absl::StrCat("model '", model.id,
                                  "': option 'preset' must be a libx264 preset name "
                                  "(ultrafast .. veryslow)"));
    }
    l.preset = v.get<std::string>();
  }
  return l;
}

absl::StatusOr<LiveSegmentResult> RunLiveVideoSegment(const RunContext& ctx,
                                                      std::string_view segment,
                                                      const std::string& params_json,
                                                      const LiveVideoLimits& limits) {
  if (segment.empty()) return Invalid("segment is required (MPEG-TS bytes)");
  // Size, then seconds of video measured by demuxing alone, before anything is decoded.
  if (auto st = CheckSegmentLimits(segment, limits.max_input_bytes, limits.max_input_seconds,
                                   "mpegts", int64_t{limits.max_frames} * 16 + 1024, "segment");
      !st.ok()) {
    return st;
  }
  media::InitFfmpeg();
  auto demuxer = media::OpenMemoryDemuxer(segment, "mpegts");
  if (!demuxer.ok()) {
    return Invalid(absl::StrCat("segment is not MPEG-TS: ", demuxer.status().message()));
  }
  AVFormatContext* in = (*demuxer)->format.get();
  const int video_index = av_find_best_stream(in, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (video_index < 0) return Invalid("segment has no video stream");
  AVStream* in_video = in->streams[video_index];
  const AVCodec* decoder = avcodec_find_decoder(in_video->codecpar->codec_id);
  if (decoder == nullptr) {
    return Invalid(absl::StrCat("segment's video codec '",
                                avcodec_get_name(in_video->codecpar->codec_id),
                                "' cannot be decoded"));
  }
  // max_width/max_height bound the frames a model returns as well as those it takes: an
  // upscaling model (an int attribute `scale`, as the converters write it) takes frames of at
  // most the limits divided by its scale, refused here before anything is decoded or run.
  const int64_t scale =
      ctx.executor == nullptr
          ? 1
          : std::clamp<int64_t>(ctx.executor->model()->IntAttribute("scale").value_or(1), 1, 64);
  const int max_in_width = static_cast<int>(limits.max_width / scale);
  const int max_in_height = static_cast<int>(limits.max_height / scale);
  const std::string takes_at_most =
      absl::StrCat("takes at most ", max_in_width, "x", max_in_height,
                   scale > 1 ? absl::StrCat(" (it upscales x", scale, " and returns at most ",
                                            limits.max_width, "x", limits.max_height, ")")
                             : std::string());
  if (in_video->codecpar->width > max_in_width || in_video->codecpar->height > max_in_height) {
    return Invalid(absl::StrCat("segment's video is ", in_video->codecpar->width, "x",
                                in_video->codecpar->height, "; the model '", ctx.model->id, "' ",
                                takes_at_most));
  }
  media::AvCodecContextPtr dec(avcodec_alloc_context3(decoder));
  if (dec == nullptr) return absl::ResourceExhaustedError("cannot allocate a decoder");
  if (int r = avcodec_parameters_to_context(dec.get(), in_video->codecpar); r < 0) {
    return AvError("decoder parameters", r);
  }
  dec->pkt_timebase = in_video->time_base;
  if (int r = avcodec_open2(dec.get(), decoder, nullptr); r < 0) {
    return Invalid(absl::StrCat("cannot decode the segment's video: ", media::AvErrorString(r)));
  }

  std::string out_ts;
  auto muxer = media::OpenMemoryMuxer("mpegts", &out_ts);
  if (!muxer.ok()) return muxer.status();
  AVFormatContext* out = (*muxer)->format.get();
  // Audio streams the MPEG-TS muxer can carry are copied: input index -> output stream.
  std::vector<AVStream*> audio_out(in->nb_streams, nullptr);
  for (unsigned i = 0; i < in->nb_streams; ++i) {
    const AVCodecParameters* par = in->streams[i]->codecpar;
    if (par->codec_type != AVMEDIA_TYPE_AUDIO) continue;
    // 0: the muxer cannot carry it (the MPEG-TS muxer answers "don't know" for most codecs).
    if (avformat_query_codec(out->oformat, par->codec_id, FF_COMPLIANCE_NORMAL) == 0) continue;
    AVStream* s = avformat_new_stream(out, nullptr);
    if (s == nullptr) return absl::ResourceExhaustedError("cannot allocate a stream");
    if (int r = avcodec_parameters_copy(s->codecpar, par); r < 0) return AvError("audio copy", r);
    s->codecpar->codec_tag = 0;
    s->time_base = in->streams[i]->time_base;
    audio_out[i] = s;
  }

  // Every packet is read first (a segment is bounded); audio is written once the header is.
  std::vector<media::AvPacketPtr> audio_packets;
  std::vector<media::AvPacketPtr> video_packets;  // encoded, in the encoder's time base
  media::AvPacketPtr packet(av_packet_alloc());
  media::AvFramePtr decoded(av_frame_alloc());
  if (packet == nullptr || decoded == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate a packet or frame");
  }
  media::SwsContextPtr to_rgb;
  std::optional<Encoder> encoder;
  AVStream* out_video = nullptr;
  LiveSegmentResult result;
  int64_t last_pts = AV_NOPTS_VALUE;
  int64_t first_pts = AV_NOPTS_VALUE;
  const AVRational tb = in_video->time_base;
  const AVRational rate = av_guess_frame_rate(in, in_video, nullptr);
  // One frame's length in the stream's time base, for frames without a time.
  const int64_t frame_ticks =
      rate.num > 0 ? std::max<int64_t>(1, av_rescale_q(1, av_inv_q(rate), tb)) : 1;
  const std::string params = params_json.empty() ? "{}" : params_json;

  auto drain_encoder = [&]() -> absl::Status {
    media::AvPacketPtr p(av_packet_alloc());
    while (true) {
      if (p == nullptr) return absl::ResourceExhaustedError("cannot allocate a packet");
      const int r = avcodec_receive_packet(encoder->context.get(), p.get());
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return absl::OkStatus();
      if (r < 0) return AvError("encoding", r);
      video_packets.push_back(std::move(p));
      p.reset(av_packet_alloc());
    }
  };

  auto process_frame = [&](AVFrame* frame) -> absl::Status {
    if (ctx.is_cancelled && ctx.is_cancelled()) return absl::CancelledError("cancelled");
    if (++result.frames > limits.max_frames) {
      return Invalid(absl::StrCat("segment has more than ", limits.max_frames,
                                  " frames (the model's max_frames)"));
    }
    if (frame->width > max_in_width || frame->height > max_in_height) {
      return Invalid(absl::StrCat("segment has a ", frame->width, "x", frame->height,
                                  " frame; the model ", takes_at_most));
    }
    int64_t pts = frame->best_effort_timestamp;
    if (pts == AV_NOPTS_VALUE) pts = last_pts == AV_NOPTS_VALUE ? 0 : last_pts + frame_ticks;
    if (last_pts != AV_NOPTS_VALUE && pts <= last_pts) pts = last_pts + 1;  // keep them increasing
    last_pts = pts;
    if (first_pts == AV_NOPTS_VALUE) first_pts = pts;
    auto input = FrameToTensor(frame, &to_rgb);
    if (!input.ok()) return input.status();
    auto value = RunModel(ctx, {c10::IValue(*input), c10::IValue(params)});
    if (!value.ok()) return value.status();
    auto checked = CheckImageBatch(*value, ctx.model->id, 1, -1, -1);
    if (!checked.ok()) return checked.status();
    const int oh = static_cast<int>(checked->size(2)), ow = static_cast<int>(checked->size(3));
    if (oh % 2 != 0 || ow % 2 != 0 || ow > limits.max_width || oh > limits.max_height) {
      return absl::InternalError(absl::StrCat("model '", ctx.model->id, "' returned a ", ow, "x",
                                              oh, " frame; frames must have even sizes within ",
                                              limits.max_width, "x", limits.max_height));
    }
    if (!encoder) {
      auto opened =
          OpenEncoder(ow, oh, tb, rate, limits, (out->oformat->flags & AVFMT_GLOBALHEADER) != 0);
      if (!opened.ok()) return opened.status();
      encoder = std::move(*opened);
    } else if (ow != encoder->width || oh != encoder->height) {
      return absl::InternalError(absl::StrCat("model '", ctx.model->id, "' returned a ", ow, "x",
                                              oh, " frame after ", encoder->width, "x",
                                              encoder->height, " ones in the same segment"));
    }
    auto converted = TensorsToRgb24(*checked);
    if (!converted.ok()) return converted.status();
    const at::Tensor& rgb = *converted;  // [1, H, W, 3]
    AVFrame* yuv = encoder->frame.get();
    if (int r = av_frame_make_writable(yuv); r < 0) return AvError("frame buffer", r);
    const uint8_t* src[4] = {rgb.data_ptr<uint8_t>(), nullptr, nullptr, nullptr};
    const int src_stride[4] = {3 * ow, 0, 0, 0};
    sws_scale(encoder->rgb_to_yuv.get(), src, src_stride, 0, oh, yuv->data, yuv->linesize);
    yuv->pts = pts;
    if (int r = avcodec_send_frame(encoder->context.get(), yuv); r < 0) {
      return AvError("encoding", r);
    }
    return drain_encoder();
  };

  auto drain_decoder = [&]() -> absl::Status {
    while (true) {
      const int r = avcodec_receive_frame(dec.get(), decoded.get());
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return absl::OkStatus();
      if (r < 0) return Invalid(absl::StrCat("decoding the video: ", media::AvErrorString(r)));
      absl::Status st = process_frame(decoded.get());
      av_frame_unref(decoded.get());
      if (!st.ok()) return st;
    }
  };

  while (true) {
    int r = av_read_frame(in, packet.get());
    if (r == AVERROR_EOF) break;
    if (r < 0) return Invalid(absl::StrCat("reading the segment: ", media::AvErrorString(r)));
    if (packet->stream_index == video_index) {
      r = avcodec_send_packet(dec.get(), packet.get());
      av_packet_unref(packet.get());
      // A corrupt packet is skipped, as players do; a segment with no good frame fails below.
      if (r < 0 && r != AVERROR(EAGAIN) && r != AVERROR_INVALIDDATA) {
        return Invalid(absl::StrCat("decoding the video: ", media::AvErrorString(r)));
      }
      if (auto st = drain_decoder(); !st.ok()) return st;
    } else if (packet->stream_index < static_cast<int>(audio_out.size()) &&
               audio_out[packet->stream_index] != nullptr) {
      audio_packets.emplace_back(av_packet_clone(packet.get()));
      av_packet_unref(packet.get());
      if (audio_packets.back() == nullptr) return absl::ResourceExhaustedError("packet copy");
    } else {
      av_packet_unref(packet.get());
    }
  }
  avcodec_send_packet(dec.get(), nullptr);
  if (auto st = drain_decoder(); !st.ok()) return st;
  if (!encoder) return Invalid("segment's video decodes to no frames");
  if (int r = avcodec_send_frame(encoder->context.get(), nullptr); r < 0) {
    return AvError("encoding", r);
  }
  if (auto st = drain_encoder(); !st.ok()) return st;

  out_video = avformat_new_stream(out, nullptr);
  if (out_video == nullptr) return absl::ResourceExhaustedError("cannot allocate a stream");
  if (int r = avcodec_parameters_from_context(out_video->codecpar, encoder->context.get()); r < 0) {
    return AvError("codec parameters", r);
  }
  out_video->time_base = encoder->context->time_base;
  if (rate.num > 0) out_video->avg_frame_rate = rate;
  if (int r = avformat_write_header(out, nullptr); r < 0) {
    return AvError("cannot write the MPEG-TS header", r);
  }
  for (auto& p : video_packets) {
    av_packet_rescale_ts(p.get(), encoder->context->time_base, out_video->time_base);
    p->stream_index = out_video->index;
    if (int r = av_interleaved_write_frame(out, p.get()); r < 0) return AvError("muxing", r);
  }
  for (auto& p : audio_packets) {
    AVStream* s = audio_out[p->stream_index];
    av_packet_rescale_ts(p.get(), in->streams[p->stream_index]->time_base, s->time_base);
    p->stream_index = s->index;
    p->pos = -1;
    if (int r = av_interleaved_write_frame(out, p.get()); r < 0) return AvError("muxing", r);
  }
  if (int r = av_write_trailer(out); r < 0) return AvError("finishing the MPEG-TS", r);
  avio_flush(out->pb);
  muxer->reset();  // nothing may write to `out_ts` after this

  result.ts = std::move(out_ts);
  result.width = encoder->width;
  result.height = encoder->height;
  result.first_pts_seconds = static_cast<double>(first_pts) * av_q2d(tb);
  result.last_pts_seconds = static_cast<double>(last_pts) * av_q2d(tb);
  result.output_pixels = result.frames * encoder->width * encoder->height;
  return result;
}

}  // namespace switchyard::orchestrator
