#include "orchestrator/audio_text_pipelines.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/media/ffmpeg_util.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
}

namespace switchyard::orchestrator {
namespace {

struct SwrDeleter {
  void operator()(SwrContext* s) const { swr_free(&s); }
};
using SwrPtr = std::unique_ptr<SwrContext, SwrDeleter>;

// Reads an optional number from `options`; INVALID_ARGUMENT naming options.<key> when it is not
// a number in [lo, hi].
template <typename T>
absl::Status ReadNumber(const nlohmann::json& options, const char* key, double lo, double hi,
                        T* out) {
  if (!options.is_object() || !options.contains(key)) return absl::OkStatus();
  const auto& v = options.at(key);
  if (!v.is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("options.", key, " must be a number"));
  }
  double d = v.get<double>();
  if (!(d >= lo && d <= hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.", key, " must be between ", lo, " and ", hi));
  }
  *out = static_cast<T>(d);
  return absl::OkStatus();
}

// Demuxers accepted for audio input (names as in `ffmpeg -demuxers`).
constexpr const char* kAudioDemuxers =
    "wav,w64,mp3,mov,ogg,flac,matroska,aac,aiff,caf,amr,au,wv,ape,tta,ac3,eac3,dts,oga";

}  // namespace

// ---------------------------------------------------------------------------------------------
// audio-to-text

absl::StatusOr<AudioToTextOptions> ParseAudioToTextOptions(const nlohmann::json& options) {
  AudioToTextOptions o;
  if (auto st = ReadNumber(options, "sample_rate", 1000, 384000, &o.sample_rate); !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "channels", 1, 8, &o.channels); !st.ok()) return st;
  if (auto st = ReadNumber(options, "max_audio_seconds", 0.001, 86400, &o.max_audio_seconds);
      !st.ok()) {
    return st;
  }
  return o;
}

absl::StatusOr<DecodedAudio> DecodeAudio(std::string_view data, int sample_rate, int channels,
                                         double max_seconds) {
  media::InitFfmpeg();
  if (data.empty()) return absl::InvalidArgumentError("audio is required");
  auto demuxer = media::OpenMemoryDemuxer(data, kAudioDemuxers);
  if (!demuxer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio could not be read: ", demuxer.status().message()));
  }
  AVFormatContext* fmt = (*demuxer)->format.get();
  const AVCodec* codec = nullptr;
  int stream_index = av_find_best_stream(fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
  if (stream_index < 0 || codec == nullptr) {
    return absl::InvalidArgumentError("audio has no decodable audio stream");
  }
  AVStream* stream = fmt->streams[stream_index];
  if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0 &&
      static_cast<double>(fmt->duration) / AV_TIME_BASE > max_seconds + 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio is ", static_cast<double>(fmt->duration) / AV_TIME_BASE,
                     " s long, more than max_audio_seconds (", max_seconds, " s)"));
  }
  media::AvCodecContextPtr dec(avcodec_alloc_context3(codec));
  if (!dec) return absl::ResourceExhaustedError("out of memory allocating the audio decoder");
  if (int err = avcodec_parameters_to_context(dec.get(), stream->codecpar); err < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio stream parameters are invalid: ", media::AvErrorString(err)));
  }
  dec->pkt_timebase = stream->time_base;
  if (int err = avcodec_open2(dec.get(), codec, nullptr); err < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio decoder could not be opened: ", media::AvErrorString(err)));
  }

  DecodedAudio out;
  out.sample_rate = sample_rate;
  out.channels = channels;
  std::vector<float> interleaved;
  const int64_t max_samples = static_cast<int64_t>(std::ceil(max_seconds * sample_rate));
  SwrPtr swr;
  AVChannelLayout out_layout;
  av_channel_layout_default(&out_layout, channels);

  auto too_long = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("audio is longer than max_audio_seconds (", max_seconds, " s)"));
  };
  // Converts `frame` (nullptr: flush) and appends the result.
  auto convert = [&](const AVFrame* frame) -> absl::Status {
    if (frame != nullptr && !swr) {
      AVChannelLayout in_layout;
      if (frame->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC || frame->ch_layout.nb_channels == 0) {
        int n = frame->ch_layout.nb_channels > 0 ? frame->ch_layout.nb_channels
                                                 : dec->ch_layout.nb_channels;
        if (n <= 0) return absl::InvalidArgumentError("audio has no channels");
        av_channel_layout_default(&in_layout, n);
      } else if (int err = av_channel_layout_copy(&in_layout, &frame->ch_layout); err < 0) {
        return absl::ResourceExhaustedError("out of memory copying a channel layout");
      }
      if (frame->sample_rate <= 0) return absl::InvalidArgumentError("audio has no sample rate");
      out.source_sample_rate = frame->sample_rate;
      out.source_channels = in_layout.nb_channels;
      SwrContext* raw = nullptr;
      int err = swr_alloc_set_opts2(&raw, &out_layout, AV_SAMPLE_FMT_FLT, sample_rate, &in_layout,
                                    static_cast<AVSampleFormat>(frame->format), frame->sample_rate,
                                    0, nullptr);
      av_channel_layout_uninit(&in_layout);
      swr.reset(raw);
      if (err < 0 || (err = swr_init(swr.get())) < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("audio cannot be resampled: ", media::AvErrorString(err)));
      }
    }
    if (!swr) return absl::OkStatus();  // flush with nothing decoded
    const int in_samples = frame != nullptr ? frame->nb_samples : 0;
    int capacity = swr_get_out_samples(swr.get(), in_samples);
    if (capacity < 0) return absl::InternalError("swr_get_out_samples failed");
    if (capacity == 0) return absl::OkStatus();
    size_t offset = interleaved.size();
    interleaved.resize(offset + static_cast<size_t>(capacity) * channels);
    uint8_t* out_planes[1] = {reinterpret_cast<uint8_t*>(interleaved.data() + offset)};
    int got = swr_convert(
        swr.get(), out_planes, capacity,
        frame != nullptr ? const_cast<const uint8_t**>(frame->extended_data) : nullptr, in_samples);
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

  media::AvPacketPtr packet(av_packet_alloc());
  media::AvFramePtr frame(av_frame_alloc());
  if (!packet || !frame) return absl::ResourceExhaustedError("out of memory decoding audio");
  auto drain = [&]() -> absl::Status {
    while (true) {
      int err = avcodec_receive_frame(dec.get(), frame.get());
      if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return absl::OkStatus();
      if (err < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("audio is corrupt: ", media::AvErrorString(err)));
      }
      absl::Status st = convert(frame.get());
      av_frame_unref(frame.get());
      if (!st.ok()) return st;
    }
  };
  int corrupt_packets = 0;
  while (true) {
    int err = av_read_frame(fmt, packet.get());
    if (err == AVERROR_EOF) break;
    if (err < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("audio is corrupt: ", media::AvErrorString(err)));
    }
    if (packet->stream_index != stream_index) {
      av_packet_unref(packet.get());
      continue;
    }
    err = avcodec_send_packet(dec.get(), packet.get());
    av_packet_unref(packet.get());
    if (err == AVERROR_INVALIDDATA) {
      // A damaged packet in otherwise good audio is skipped, as ffmpeg does; a stream of them is
      // corrupt input.
      if (++corrupt_packets > 8) {
        return absl::InvalidArgumentError(
            absl::StrCat("audio is corrupt: ", media::AvErrorString(err)));
      }
      continue;
    }
    if (err < 0 && err != AVERROR(EAGAIN)) {
      return absl::InvalidArgumentError(
          absl::StrCat("audio is corrupt: ", media::AvErrorString(err)));
    }
    if (absl::Status st = drain(); !st.ok()) return st;
  }
  avcodec_send_packet(dec.get(), nullptr);
  if (absl::Status st = drain(); !st.ok()) return st;
  if (absl::Status st = convert(nullptr); !st.ok()) return st;
  av_channel_layout_uninit(&out_layout);

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
  for (int c = 0; c < channels; ++c) {
    for (int64_t i = 0; i < out.samples; ++i) {
      out.planar[c * out.samples + i] = interleaved[i * channels + c];
    }
  }
  return out;
}

absl::StatusOr<std::string> TimestampMode(const std::string& return_timestamps) {
  if (return_timestamps.empty() || return_timestamps == "true" || return_timestamps == "sentence") {
    return std::string("sentence");
  }
  if (return_timestamps == "word") return std::string("word");
  if (return_timestamps == "false") return std::string("none");
  return absl::InvalidArgumentError(
      absl::StrCat("return_timestamps must be 'true', 'sentence', 'word' or 'false', not '",
                   return_timestamps, "'"));
}

absl::Status FillTranscription(const c10::IValue& result, const std::string& mode,
                               v1::TextResponse* response) {
  if (result.isString()) {
    response->set_text(result.toStringRef());
    return absl::OkStatus();
  }
  if (!result.isTuple()) {
    return absl::InternalError("model returned neither str nor (str, List[str], Tensor[K, 2])");
  }
  const auto& elems = result.toTupleRef().elements();
  if (elems.empty() || !elems[0].isString()) {
    return absl::InternalError("model's result tuple does not start with the text (str)");
  }
  response->set_text(elems[0].toStringRef());
  if (mode == "none" || elems.size() == 1) return absl::OkStatus();
  if (elems.size() != 3 || !elems[1].isList() || !elems[2].isTensor()) {
    return absl::InternalError("model's result is not (str, List[str], Tensor[K, 2])");
  }
  auto texts = elems[1].toListRef();
  at::Tensor times = elems[2].toTensor();
  const int64_t k = static_cast<int64_t>(texts.size());
  if (k == 0) return absl::OkStatus();
  if (times.dim() != 2 || times.size(0) != k || times.size(1) != 2) {
    return absl::InternalError(absl::StrCat("model returned ", k,
                                            " chunk texts but times of shape ",
                                            c10::str(times.sizes()), ", expected [", k, ", 2]"));
  }
  times = times.to(at::kDouble).contiguous();
  const double* t = times.data_ptr<double>();
  for (int64_t i = 0; i < k; ++i) {
    if (!texts[i].isString()) return absl::InternalError("model returned a chunk text not a str");
    auto* chunk = response->add_chunks();
    chunk->set_text(texts[i].toStringRef());
    chunk->add_timestamp(t[2 * i]);
    chunk->add_timestamp(t[2 * i + 1]);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// text-to-speech

absl::StatusOr<TextToSpeechOptions> ParseTextToSpeechOptions(const nlohmann::json& options) {
  TextToSpeechOptions o;
  if (auto st = ReadNumber(options, "sample_rate", 1000, 384000, &o.sample_rate); !st.ok()) {
    return st;
  }
  // max_text_chars is the option's older name; max_prompt_chars wins when both are given.
  if (auto st = ReadNumber(options, "max_text_chars", 1, 1e9, &o.max_prompt_chars); !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "max_prompt_chars", 1, 1e9, &o.max_prompt_chars); !st.ok()) {
    return st;
  }
  return o;
}

absl::Status ValidateTextToSpeech(const v1::TextToSpeechRequest& request,
                                  const TextToSpeechOptions& options) {
  if (request.text().empty()) return absl::InvalidArgumentError("text is required");
  return CheckPromptChars("text", Utf8Chars(request.text()), options.max_prompt_chars);
}

namespace {
void PutLe(std::string& s, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetLe(std::string_view s, size_t at, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= static_cast<uint32_t>(static_cast<uint8_t>(s[at + i])) << (8 * i);
  return v;
}
}  // namespace

std::string EncodeWav(const std::vector<float>& interleaved, int channels, int sample_rate) {
  const uint32_t data_bytes = static_cast<uint32_t>(interleaved.size() * 2);
  std::string wav;
  wav.reserve(44 + data_bytes);
  wav += "RIFF";
  PutLe(wav, 36 + data_bytes, 4);
  wav += "WAVE";
  wav += "fmt ";
  PutLe(wav, 16, 4);                                                 // fmt chunk size
  PutLe(wav, 1, 2);                                                  // PCM
  PutLe(wav, static_cast<uint32_t>(channels), 2);                    // channels
  PutLe(wav, static_cast<uint32_t>(sample_rate), 4);                 // sample rate
  PutLe(wav, static_cast<uint32_t>(sample_rate * channels * 2), 4);  // byte rate
  PutLe(wav, static_cast<uint32_t>(channels * 2), 2);                // block align
  PutLe(wav, 16, 2);                                                 // bits per sample
  wav += "data";
  PutLe(wav, data_bytes, 4);
  for (float f : interleaved) {
    if (std::isnan(f)) f = 0;
    f = std::clamp(f, -1.0f, 1.0f);
    auto v = static_cast<int16_t>(std::lround(f * 32767.0f));
    PutLe(wav, static_cast<uint16_t>(v), 2);
  }
  return wav;
}

absl::StatusOr<WavInfo> ParseWavHeader(std::string_view wav) {
  if (wav.size() < 44 || wav.substr(0, 4) != "RIFF" || wav.substr(8, 4) != "WAVE" ||
      wav.substr(12, 4) != "fmt " || wav.substr(36, 4) != "data") {
    return absl::InvalidArgumentError("not a canonical PCM WAV file");
  }
  if (GetLe(wav, 4, 4) != wav.size() - 8) return absl::InvalidArgumentError("bad RIFF size");
  WavInfo info;
  if (GetLe(wav, 20, 2) != 1) return absl::InvalidArgumentError("not PCM");
  info.channels = static_cast<int>(GetLe(wav, 22, 2));
  info.sample_rate = static_cast<int>(GetLe(wav, 24, 4));
  info.bits_per_sample = static_cast<int>(GetLe(wav, 34, 2));
  uint32_t data_bytes = GetLe(wav, 40, 4);
  if (data_bytes != wav.size() - 44 || info.channels <= 0 || info.bits_per_sample != 16) {
    return absl::InvalidArgumentError("inconsistent WAV header");
  }
  if (GetLe(wav, 28, 4) != static_cast<uint32_t>(info.sample_rate * info.channels * 2)) {
    return absl::InvalidArgumentError("bad byte rate");
  }
  info.frames = data_bytes / (2 * info.channels);
  return info;
}

absl::StatusOr<std::vector<float>> WaveformToInterleaved(const at::Tensor& waveform,
                                                         int* channels) {
  if (!waveform.is_floating_point() || waveform.dim() < 1 || waveform.dim() > 2) {
    return absl::InternalError(absl::StrCat(
        "model returned a ", c10::toString(waveform.scalar_type()), " tensor of shape ",
        c10::str(waveform.sizes()), ", expected float [S] or [C, S]"));
  }
  at::Tensor w = waveform.dim() == 1 ? waveform.unsqueeze(0) : waveform;
  if (w.size(0) < 1 || w.size(0) > 8 || w.size(1) < 1) {
    return absl::InternalError(absl::StrCat("model returned a waveform of shape ",
                                            c10::str(waveform.sizes()),
                                            ", expected [S] or [C, S] with 1..8 channels, S > 0"));
  }
  *channels = static_cast<int>(w.size(0));
  at::Tensor t = w.t().contiguous().to(at::kFloat).contiguous();
  return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
}

// ---------------------------------------------------------------------------------------------
// llm

absl::StatusOr<LlmOptions> ParseLlmOptions(const nlohmann::json& options) {
  LlmOptions o;
  if (auto st = ReadNumber(options, "max_tokens", 1, 1e7, &o.max_tokens_limit); !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "max_context_tokens", 1, 1e8, &o.max_context_tokens);
      !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "max_prompt_chars", 1, 1e9, &o.max_prompt_chars); !st.ok()) {
    return st;
  }
  if (auto st = ReadNumber(options, "seed", 0, 9e15, &o.seed); !st.ok()) return st;
  if (auto st = ReadNumber(options, "eos_token_id", -1, 1e12, &o.eos_token_id); !st.ok()) {
    return st;
  }
  return o;
}

absl::StatusOr<SamplingParams> ValidateLlmRequest(const v1::LLMRequest& request,
                                                  const LlmOptions& options) {
  if (request.messages().empty()) {
    return absl::InvalidArgumentError("messages is required (at least one message)");
  }
  for (int i = 0; i < request.messages_size(); ++i) {
    const auto& m = request.messages(i);
    if (m.role().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role is required"));
    }
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "].role must be 'system', 'user' or 'assistant', not '", m.role(), "'"));
    }
    if (m.content().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].content is required"));
    }
  }
  int64_t prompt_chars = 0;
  for (const auto& m : request.messages()) prompt_chars += Utf8Chars(m.content());
  if (auto st = CheckPromptChars("messages' content (all messages together)", prompt_chars,
                                 options.max_prompt_chars);
      !st.ok()) {
    return st;
  }
  SamplingParams p;
  if (request.has_temperature()) p.temperature = request.temperature();
  if (request.has_max_tokens()) p.max_tokens = request.max_tokens();
  if (request.has_top_p()) p.top_p = request.top_p();
  if (request.has_top_k()) p.top_k = request.top_k();
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError("temperature must be >= 0");
  }
  if (!request.has_max_tokens()) p.max_tokens = std::min(p.max_tokens, options.max_tokens_limit);
  if (p.max_tokens < 1 || p.max_tokens > options.max_tokens_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be between 1 and ", options.max_tokens_limit));
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError("top_p must be in (0, 1]");
  }
  if (p.top_k != -1 && p.top_k < 1) {
    return absl::InvalidArgumentError("top_k must be -1 (off) or >= 1");
  }
  return p;
}

std::string DefaultChatTemplate(const std::vector<std::string>& roles,
                                const std::vector<std::string>& contents) {
  std::string out;
  for (size_t i = 0; i < roles.size() && i < contents.size(); ++i) {
    absl::StrAppend(&out, "<|", roles[i], "|>\n", contents[i], "\n");
  }
  absl::StrAppend(&out, "<|assistant|>\n");
  return out;
}

int64_t SampleToken(const std::vector<float>& logits, const SamplingParams& params,
                    std::mt19937_64& rng) {
  const int64_t v = static_cast<int64_t>(logits.size());
  if (v == 0) return 0;
  auto argmax = [&] {
    int64_t best = 0;
    for (int64_t i = 1; i < v; ++i) {
      if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
    }
    return best;
  };
  if (params.temperature <= 0) return argmax();
  std::vector<int64_t> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  int64_t keep = v;
  if (params.top_k > 0) keep = std::min<int64_t>(keep, params.top_k);
  const double max_logit = logits[order[0]];
  if (!std::isfinite(max_logit)) return argmax();
  std::vector<double> probs(keep);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    double x = (static_cast<double>(logits[order[i]]) - max_logit) / params.temperature;
    probs[i] = std::isfinite(x) ? std::exp(x) : 0.0;
    sum += probs[i];
  }
  if (!(sum > 0)) return order[0];
  // Nucleus: the smallest prefix (most likely first) whose probability reaches top_p.
  if (params.top_p < 1) {
    double cum = 0;
    int64_t n = 0;
    while (n < keep) {
      cum += probs[n] / sum;
      ++n;
      if (cum >= params.top_p) break;
    }
    keep = std::max<int64_t>(n, 1);
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += probs[i];
  }
  std::uniform_real_distribution<double> uniform(0.0, sum);
  double r = uniform(rng);
  for (int64_t i = 0; i < keep; ++i) {
    if (r < probs[i]) return order[i];
    r -= probs[i];
  }
  return order[keep - 1];
}

std::string NewText(const std::string& decoded_so_far, const std::string& emitted) {
  if (decoded_so_far.size() <= emitted.size() ||
      decoded_so_far.compare(0, emitted.size(), emitted) != 0) {
    return "";
  }
  std::string fresh = decoded_so_far.substr(emitted.size());
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  if (fresh.size() >= 3 && fresh.compare(fresh.size() - 3, 3, kReplacement) == 0) return "";
  // The first bytes of a character whose other bytes come with the next token(s).
  for (size_t back = 1; back <= 3 && back <= fresh.size(); ++back) {
    const auto c = static_cast<unsigned char>(fresh[fresh.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t needed = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (needed > back) fresh.resize(fresh.size() - back);
    break;
  }
  return fresh;
}

std::string ValidUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t len = 0;
    uint32_t min = 0;
    if (c < 0x80) {
      len = 1;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      min = 0x10000;
    }
    bool ok = len > 0 && i + len <= text.size();
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not well-formed either.
    if (ok && len > 1 && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (ok) {
      out.append(text.data() + i, len);
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      ++i;
    }
  }
  return out;
}

}  // namespace switchyard::orchestrator
