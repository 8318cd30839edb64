#include "orchestrator/pipelines/audio_text_pipelines.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/pipelines.h"
#include "orchestrator/pipelines/llm_pipeline.h"
#include "orchestrator/pipelines/warmup.h"

namespace switchyard::orchestrator {

// ---------------------------------------------------------------------------------------------
// audio-to-text

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

std::string DefaultChatTemplate(const std::vector<std::string>& roles,
                                const std::vector<std::string>& contents) {
  std::string out;
  for (size_t i = 0; i < roles.size() && i < contents.size(); ++i) {
    absl::StrAppend(&out, "<|", roles[i], "|>\n", contents[i], "\n");
  }
  absl::StrAppend(&out, "<|assistant|>\n");
  return out;
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
    const size_t needed = (c & 0xE0) == 0xC0   ? 2
                          : (c & 0xF0) == 0xE0 ? 3
                          : (c & 0xF8) == 0xF0 ? 4
                                               : 1;
    // substr, not resize: GCC 12 reports a false -Werror=restrict in a shrinking resize here.
    if (needed > back) return fresh.substr(0, fresh.size() - back);
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

absl::Status RunAudioToText(const RunContext& ctx, DecodedAudio& audio, const std::string& mode,
                            v1::TextResponse* response) {
  at::Tensor input =
      at::from_blob(audio.planar.data(), {audio.channels, audio.samples}, at::kFloat).clone();
  auto result = RunForward(ctx, {input, c10::IValue(mode)}, false);
  if (!result.ok()) return result.status();
  return FillTranscription(*result, mode, response);
}

absl::StatusOr<Speech> RunTextToSpeech(const RunContext& ctx, const std::string& text,
                                       const std::string& description,
                                       const TextToSpeechOptions& options) {
  Speech speech;
  speech.sample_rate = options.sample_rate;
  if (speech.sample_rate <= 0) {
    auto attr = ctx.executor->model()->IntAttribute("sample_rate");
    speech.sample_rate = attr && *attr >= 1000 && *attr <= 384000 ? static_cast<int>(*attr) : 24000;
  }
  auto result = RunForward(ctx, {c10::IValue(text), c10::IValue(description)}, false);
  if (!result.ok()) return result.status();
  if (!result->isTensor()) return absl::InternalError("model did not return a waveform tensor");
  int channels = 1;
  auto samples = WaveformToInterleaved(result->toTensor(), &channels);
  if (!samples.ok()) return samples.status();
  speech.frames = static_cast<int64_t>(samples->size()) / channels;
  speech.wav = EncodeWav(*samples, channels, speech.sample_rate);
  return speech;
}

WarmupInputs AudioTextWarmupInputs(const ModelConfig& model) {
  if (model.warmup_size <= 0) return std::nullopt;
  if (model.pipeline == pipelines::kAudioToText) {
    auto options = ParseAudioToTextOptions(model.options);
    if (!options.ok()) return std::nullopt;
    // 100 ms of silence.
    return runner::ModelExecutor::Inputs{
        at::zeros({options->channels, options->sample_rate / 10}, at::kFloat),
        c10::IValue(std::string("none"))};
  }
  if (model.pipeline == pipelines::kTextToSpeech) {
    return runner::ModelExecutor::Inputs{c10::IValue(std::string("Hello.")),
                                         c10::IValue(std::string(kDefaultSpeakerDescription))};
  }
  if (model.pipeline == pipelines::kLlm) {
    return runner::ModelExecutor::Inputs{at::zeros({1, 1}, at::kLong)};
  }
  return std::nullopt;
}

}  // namespace switchyard::orchestrator
