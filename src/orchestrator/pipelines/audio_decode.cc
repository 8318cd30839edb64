#include "orchestrator/pipelines/audio_decode.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/media/audio_input.h"
#include "common/media/ffmpeg_util.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
}

namespace switchyard::orchestrator {
namespace {

using SwrPtr = std::unique_ptr<SwrContext, media::AvDeleter<swr_free>>;

// An AVChannelLayout that starts zeroed and is uninitialised on every path out.
// av_channel_layout_copy() uninitialises its destination first, so an uninitialised stack
// layout whose garbage reads as AV_CHANNEL_ORDER_CUSTOM frees a garbage pointer: that was a
// crash seen in CI (DecodeAudioTest sine_flac, SEGFAULT, depending on what the stack held).
struct ChannelLayout {
  AVChannelLayout layout{};
  ChannelLayout() = default;
  ChannelLayout(const ChannelLayout&) = delete;
  ChannelLayout& operator=(const ChannelLayout&) = delete;
  ~ChannelLayout() { av_channel_layout_uninit(&layout); }
};

}  // namespace

absl::StatusOr<DecodedAudio> DecodeAudio(std::string_view data, int sample_rate, int channels,
                                         double max_seconds) {
  if (data.empty()) return absl::InvalidArgumentError("audio is required");
  auto input = media::AudioInput::Open(data);
  if (!input.ok()) return input.status();
  AVFormatContext* fmt = (*input)->format();
  AVStream* stream = (*input)->stream();
  const AVCodecContext* dec = (*input)->decoder();
  if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0 &&
      static_cast<double>(fmt->duration) / AV_TIME_BASE > max_seconds + 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio is ", static_cast<double>(fmt->duration) / AV_TIME_BASE,
                     " s long, more than max_audio_seconds (", max_seconds, " s)"));
  }

  DecodedAudio out;
  out.sample_rate = sample_rate;
  out.channels = channels;
  std::vector<float> interleaved;
  const int64_t max_samples = static_cast<int64_t>(std::ceil(max_seconds * sample_rate));
  SwrPtr swr;
  ChannelLayout out_layout;
  av_channel_layout_default(&out_layout.layout, channels);
  // What `swr` was set up for. A decoder may change format mid-stream (an ADTS or MP3 stream
  // that switches from stereo to mono; hostile input does it on purpose), and swr_convert()
  // takes raw planes: a frame with fewer planes than it was set up for would be read past.
  ChannelLayout swr_in_layout;
  int swr_in_format = -1;
  int swr_in_rate = 0;

  auto too_long = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("audio is longer than max_audio_seconds (", max_seconds, " s)"));
  };
  // Runs `in` (nullptr and 0 samples: flush) through `swr` and appends the result.
  auto resample = [&](const uint8_t** in, int in_samples) -> absl::Status {
    int capacity = swr_get_out_samples(swr.get(), in_samples);
    if (capacity < 0) return absl::InternalError("swr_get_out_samples failed");
    if (capacity == 0) return absl::OkStatus();
    size_t offset = interleaved.size();
    interleaved.resize(offset + static_cast<size_t>(capacity) * channels);
    uint8_t* out_planes[1] = {reinterpret_cast<uint8_t*>(interleaved.data() + offset)};
    int got = swr_convert(swr.get(), out_planes, capacity, in, in_samples);
    if (got < 0) {
      interleaved.resize(offset);
      return absl::InvalidArgumentError(
          absl::StrCat("audio cannot be resampled: ", media::AvErrorString(got)));
    }
    interleaved.resize(offset + static_cast<size_t>(got) * channels);
    if (static_cast<int64_t>(interleaved.size() / channels) > max_samples + sample_rate) {
      return too_long();
    }
    return absl::OkStatus();
  };
  // Sets `swr` up for `frame`'s format, first flushing the one set up for an earlier format.
  auto setup = [&](const AVFrame& frame) -> absl::Status {
    ChannelLayout in_layout;
    if (frame.ch_layout.order == AV_CHANNEL_ORDER_UNSPEC || frame.ch_layout.nb_channels == 0) {
      int n = frame.ch_layout.nb_channels > 0 ? frame.ch_layout.nb_channels
                                              : dec->ch_layout.nb_channels;
      if (n <= 0) return absl::InvalidArgumentError("audio has no channels");
      av_channel_layout_default(&in_layout.layout, n);
    } else if (av_channel_layout_copy(&in_layout.layout, &frame.ch_layout) < 0) {
      return absl::ResourceExhaustedError("out of memory copying a channel layout");
    }
    if (frame.sample_rate <= 0) return absl::InvalidArgumentError("audio has no sample rate");
    if (swr && frame.format == swr_in_format && frame.sample_rate == swr_in_rate &&
        av_channel_layout_compare(&in_layout.layout, &swr_in_layout.layout) == 0) {
      return absl::OkStatus();
    }
    if (swr) {
      if (absl::Status st = resample(nullptr, 0); !st.ok()) return st;
    } else {
      out.source_sample_rate = frame.sample_rate;
      out.source_channels = in_layout.layout.nb_channels;
    }
    swr.reset();
    SwrContext* raw = nullptr;
    int err = swr_alloc_set_opts2(&raw, &out_layout.layout, AV_SAMPLE_FMT_FLT, sample_rate,
                                  &in_layout.layout, static_cast<AVSampleFormat>(frame.format),
                                  frame.sample_rate, 0, nullptr);
    swr.reset(raw);
    if (err < 0 || (err = swr_init(swr.get())) < 0) {
      swr.reset();
      return absl::InvalidArgumentError(
          absl::StrCat("audio cannot be resampled: ", media::AvErrorString(err)));
    }
    if (av_channel_layout_copy(&swr_in_layout.layout, &in_layout.layout) < 0) {
      swr.reset();
      return absl::ResourceExhaustedError("out of memory copying a channel layout");
    }
    swr_in_format = frame.format;
    swr_in_rate = frame.sample_rate;
    return absl::OkStatus();
  };
  // Converts `frame` (nullptr: flush) and appends the result.
  auto convert = [&](const AVFrame* frame) -> absl::Status {
    if (frame == nullptr) return swr ? resample(nullptr, 0) : absl::OkStatus();
    if (absl::Status st = setup(*frame); !st.ok()) return st;
    return resample(const_cast<const uint8_t**>(frame->extended_data), frame->nb_samples);
  };

  if (absl::Status st = (*input)->Decode([&](const AVFrame& frame) { return convert(&frame); });
      !st.ok()) {
    return st;
  }
  if (absl::Status st = convert(nullptr); !st.ok()) return st;

  out.samples = static_cast<int64_t>(interleaved.size() / channels);
  // Encoders pad the last frame (AAC in MP4 by up to 1024 samples); the container's duration says
  // where the audio really ends, so trailing padding beyond it is dropped.
  double container_seconds = -1;
  if (stream->duration != AV_NOPTS_VALUE && stream->duration > 0) {
    container_seconds = static_cast<double>(stream->duration) * av_q2d(stream->time_base);
  } else if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0) {
    container_seconds = static_cast<double>(fmt->duration) / AV_TIME_BASE;
  }
  if (container_seconds > 0) {
    const int64_t expected = std::llround(container_seconds * sample_rate);
    if (expected > 0 && out.samples > expected) {
      out.samples = expected;
      interleaved.resize(static_cast<size_t>(expected) * channels);
    }
  }
  if (out.samples == 0) return absl::InvalidArgumentError("audio decodes to no samples");
  if (out.samples > max_samples) return too_long();
  out.planar.resize(interleaved.size());
  // Float PCM (pcm_f32le/f64le WAV, ...) carries any value, NaN and infinities included, and
  // resampling may overshoot a little: the model gets what the contract says, finite samples in
  // -1..1 (NaN as 0, as EncodeWav does). Found by fuzz_audio_decode (corpus regress-float-nan-*).
  for (int c = 0; c < channels; ++c) {
    for (int64_t i = 0; i < out.samples; ++i) {
      const float v = interleaved[i * channels + c];
      out.planar[c * out.samples + i] = std::isnan(v) ? 0.0f : std::clamp(v, -1.0f, 1.0f);
    }
  }
  return out;
}

}  // namespace switchyard::orchestrator
