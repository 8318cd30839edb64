#include "common/metering.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/media/audio_input.h"
#include "common/media/ffmpeg_util.h"
#include "common/media/image_codec.h"
#include "common/pipelines.h"

namespace switchyard::metering {
namespace {

// Demuxers the counts accept: what the pipelines produce (video) or the orchestrator decodes.
constexpr const char* kVideoDemuxers = "mpegts,mov";

absl::Status Invalid(absl::string_view what, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
}

absl::StatusOr<int64_t> ImagePixels(absl::string_view encoded, absl::string_view what) {
  auto size = media::ReadImageSize(std::string_view(encoded.data(), encoded.size()));
  if (!size.ok()) return Invalid(what, size.status().message());
  return size->width * size->height;
}

template <typename Images>
absl::StatusOr<int64_t> OutputImagePixels(const Images& images) {
  int64_t total = 0;
  for (int i = 0; i < images.size(); ++i) {
    auto pixels = ImagePixels(images[i].data(), absl::StrCat("images[", i, "]"));
    if (!pixels.ok()) return pixels.status();
    total += *pixels;
  }
  return total;
}

uint32_t Le(absl::string_view s, size_t pos, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[pos + i]);
  return v;
}

// The most elements one input tensor, or a whole request, may have (as the orchestrator allows;
// keeps the shape product from overflowing).
constexpr int64_t kMaxInferElements = int64_t{1} << 40;

// Bytes per element of an Open Inference Protocol datatype; 0 for BYTES (length-prefixed), -1 for
// an unknown one.
int ElementBytes(absl::string_view datatype) {
  if (datatype == "BOOL" || datatype == "INT8" || datatype == "UINT8") return 1;
  if (datatype == "INT16" || datatype == "UINT16" || datatype == "FP16" || datatype == "BF16") {
    return 2;
  }
  if (datatype == "INT32" || datatype == "UINT32" || datatype == "FP32") return 4;
  if (datatype == "INT64" || datatype == "UINT64" || datatype == "FP64") return 8;
  if (datatype == "BYTES") return 0;
  return -1;
}

// Strings in a raw BYTES tensor: each a 4-byte little-endian length and that many bytes. -1 when
// the data does not split exactly into such strings.
int64_t RawStrings(absl::string_view raw) {
  int64_t n = 0;
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) return -1;
    const uint32_t len = Le(raw, pos, 4);
    pos += 4;
    if (raw.size() - pos < len) return -1;
    pos += len;
    ++n;
  }
  return n;
}

}  // namespace

std::string UnitOf(absl::string_view pipeline) {
  const pipelines::PipelineInfo* info =
      pipelines::Find(std::string_view(pipeline.data(), pipeline.size()));
  return info == nullptr ? "" : std::string(info->unit);
}

absl::StatusOr<VideoCount> CountVideo(absl::string_view container) {
  media::InitFfmpeg();
  if (container.empty()) return absl::InvalidArgumentError("video is empty");
  auto demuxer = media::OpenMemoryDemuxer(std::string_view(container.data(), container.size()),
                                          kVideoDemuxers);
  if (!demuxer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("video could not be demuxed: ", demuxer.status().message()));
  }
  AVFormatContext* fmt = (*demuxer)->format.get();
  int index = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (index < 0) return absl::InvalidArgumentError("video has no video stream");
  const AVCodecParameters* par = fmt->streams[index]->codecpar;
  VideoCount count;
  count.width = par->width;
  count.height = par->height;
  if (count.width <= 0 || count.height <= 0) {
    return absl::InvalidArgumentError("video stream has no frame size");
  }
  media::AvPacketPtr packet(av_packet_alloc());
  if (!packet) return absl::ResourceExhaustedError("out of memory allocating a packet");
  while (true) {
    int err = av_read_frame(fmt, packet.get());
    if (err == AVERROR_EOF) break;
    if (err < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("video could not be demuxed: ", media::AvErrorString(err)));
    }
    if (packet->stream_index == index) ++count.frames;
    av_packet_unref(packet.get());
  }
  if (count.frames == 0) return absl::InvalidArgumentError("video has no frames");
  return count;
}

absl::StatusOr<int64_t> DecodedAudioMilliseconds(absl::string_view audio) {
  auto input = media::AudioInput::Open(std::string_view(audio.data(), audio.size()));
  if (!input.ok()) return input.status();
  // Milliseconds summed frame by frame, so a rate change mid-stream is counted right.
  double ms = 0;
  int64_t frames = 0;
  absl::Status st = (*input)->Decode([&](const AVFrame& frame) {
    if (frame.sample_rate <= 0) return absl::InvalidArgumentError("audio has no sample rate");
    ms += static_cast<double>(frame.nb_samples) * 1000.0 / frame.sample_rate;
    ++frames;
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  if (frames == 0) return absl::InvalidArgumentError("audio decodes to nothing");
  return static_cast<int64_t>(std::llround(ms));
}

absl::StatusOr<WavFormat> ReadWavFormat(absl::string_view wav) {
  if (wav.size() < 12 || wav.substr(0, 4) != "RIFF" || wav.substr(8, 4) != "WAVE") {
    return absl::InvalidArgumentError("audio is not a RIFF WAVE file");
  }
  WavFormat format;
  int64_t block_align = 0, data_bytes = -1;
  size_t pos = 12;
  while (pos + 8 <= wav.size()) {
    const absl::string_view id = wav.substr(pos, 4);
    const uint32_t size = Le(wav, pos + 4, 4);
    const size_t body = pos + 8;
    if (id == "fmt ") {
      if (size < 16 || body + 16 > wav.size()) {
        return absl::InvalidArgumentError("WAV fmt chunk is truncated");
      }
      format.channels = static_cast<int>(Le(wav, body + 2, 2));
      format.sample_rate = static_cast<int>(std::min<int64_t>(Le(wav, body + 4, 4), INT32_MAX));
      block_align = Le(wav, body + 12, 2);
    } else if (id == "data") {
      data_bytes = std::min<int64_t>(size, static_cast<int64_t>(wav.size() - body));
      break;
    }
    pos = body + size + (size & 1);
  }
  if (format.sample_rate <= 0 || block_align <= 0) {
    return absl::InvalidArgumentError("WAV has no valid fmt chunk");
  }
  if (data_bytes < 0) return absl::InvalidArgumentError("WAV has no data chunk");
  format.frames = data_bytes / block_align;
  return format;
}

absl::StatusOr<int64_t> WavMilliseconds(absl::string_view wav) {
  auto format = ReadWavFormat(wav);
  if (!format.ok()) return format.status();
  return static_cast<int64_t>(
      std::llround(static_cast<double>(format->frames) * 1000.0 / format->sample_rate));
}

absl::StatusOr<int64_t> Units(const v1::TextToImageRequest&, const v1::ImageResponse& response) {
  return OutputImagePixels(response.images());
}

absl::StatusOr<int64_t> Units(const v1::ImageToImageRequest&, const v1::ImageResponse& response) {
  return OutputImagePixels(response.images());
}

absl::StatusOr<int64_t> Units(const v1::ImageToVideoRequest&, const v1::VideoResponse& response) {
  int64_t total = 0;
  for (int i = 0; i < response.images_size(); ++i) {
    auto count = CountVideo(response.images(i).data());
    if (!count.ok()) return Invalid(absl::StrCat("images[", i, "]"), count.status().message());
    total += count->frames * count->width * count->height;
  }
  return total;
}

absl::StatusOr<int64_t> Units(const v1::UpscaleRequest& request, const v1::ImageResponse&) {
  return ImagePixels(request.image(), "image");
}

absl::StatusOr<int64_t> Units(const v1::ImageToTextRequest& request,
                              const v1::ImageToTextResponse&) {
  return ImagePixels(request.image(), "image");
}

absl::StatusOr<int64_t> Units(const v1::SegmentAnything2Request& request,
                              const v1::MasksResponse&) {
  return ImagePixels(request.image(), "image");
}

absl::StatusOr<int64_t> Units(const v1::AudioToTextRequest& request, const v1::TextResponse&) {
  return DecodedAudioMilliseconds(request.audio());
}

absl::StatusOr<int64_t> Units(const v1::TextToSpeechRequest&, const v1::AudioResponse& response) {
  auto ms = WavMilliseconds(response.audio().data());
  if (!ms.ok()) return Invalid("audio", ms.status().message());
  return ms;
}

absl::StatusOr<int64_t> Units(const v1::TranscodeRequest&, const v1::TranscodeResponse& response) {
  int64_t total = 0;
  for (int i = 0; i < response.renditions_size(); ++i) {
    auto count = CountVideo(response.renditions(i).data());
    if (!count.ok()) return Invalid(absl::StrCat("renditions[", i, "]"), count.status().message());
    total += count->frames * count->width * count->height;
  }
  return total;
}

absl::StatusOr<int64_t> Units(const v1::LiveVideoSegmentRequest&,
                              const v1::LiveVideoSegmentResponse& response) {
  auto count = CountVideo(response.segment());
  if (!count.ok()) return Invalid("segment", count.status().message());
  return count->frames * count->width * count->height;
}

absl::StatusOr<int64_t> InferElements(const inference::ModelInferRequest& request) {
  if (request.inputs_size() == 0) return absl::InvalidArgumentError("the request has no inputs");
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(), " entries for ",
                     request.inputs_size(), " inputs (one per input expected)"));
  }
  int64_t total = 0;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const auto& input = request.inputs(i);
    const std::string what = absl::StrCat("input '", input.name(), "'");
    const int element_bytes = ElementBytes(input.datatype());
    if (element_bytes < 0) {
      return Invalid(what, absl::StrCat("unknown datatype '", input.datatype(), "'"));
    }
    int64_t numel = 1;
    for (int64_t d : input.shape()) {
      if (d < 0) return Invalid(what, absl::StrCat("negative dimension ", d));
      if (d > 0 && numel > kMaxInferElements / d) {
        return Invalid(what, absl::StrCat("more than ", kMaxInferElements, " elements"));
      }
      numel *= d;
    }
    const auto& c = input.contents();
    const int populated = (c.bool_contents_size() > 0) + (c.int_contents_size() > 0) +
                          (c.int64_contents_size() > 0) + (c.uint_contents_size() > 0) +
                          (c.uint64_contents_size() > 0) + (c.fp32_contents_size() > 0) +
                          (c.fp64_contents_size() > 0) + (c.bytes_contents_size() > 0);
    if (raw) {
      if (populated > 0) return Invalid(what, "has both contents and raw_input_contents");
      const std::string& data = request.raw_input_contents(i);
      if (element_bytes == 0) {
        const int64_t strings = RawStrings(data);
        if (strings < 0) {
          return Invalid(what, "raw BYTES contents are not 4-byte-length-prefixed strings");
        }
        if (strings != numel) {
          return Invalid(what, absl::StrCat("shape has ", numel, " elements but the raw contents ",
                                            "hold ", strings, " strings"));
        }
      } else if (static_cast<int64_t>(data.size()) != numel * element_bytes) {
        return Invalid(what, absl::StrCat("shape has ", numel, " elements of ", input.datatype(),
                                          " (", numel * element_bytes, " bytes) but the raw ",
                                          "contents have ", data.size(), " bytes"));
      }
    } else {
      if (populated > 1) return Invalid(what, "more than one contents field is set");
      const int64_t values = c.bool_contents_size() + c.int_contents_size() +
                             c.int64_contents_size() + c.uint_contents_size() +
                             c.uint64_contents_size() + c.fp32_contents_size() +
                             c.fp64_contents_size() + c.bytes_contents_size();
      if (values != numel) {
        return Invalid(what, absl::StrCat("shape has ", numel, " elements but the contents hold ",
                                          values, " values"));
      }
    }
    if (total > kMaxInferElements - numel) {
      return absl::InvalidArgumentError(
          absl::StrCat("the inputs have more than ", kMaxInferElements, " elements in all"));
    }
    total += numel;
  }
  return total;
}

absl::StatusOr<int64_t> Units(const inference::ModelInferRequest& request,
                              const inference::ModelInferResponse&) {
  return InferElements(request);
}

void SetInferReport(int64_t units, double price_per_unit, inference::ModelInferResponse* response) {
  auto& params = *response->mutable_parameters();
  params[kInferUnitsParameter].set_int64_param(units);
  params[kInferPriceParameter].set_double_param(price_per_unit);
}

absl::StatusOr<InferReport> InferReportOf(const inference::ModelInferResponse& response) {
  const auto& params = response.parameters();
  auto units = params.find(kInferUnitsParameter);
  if (units == params.end() ||
      units->second.parameter_choice_case() != inference::InferParameter::kInt64Param) {
    return absl::InvalidArgumentError(
        absl::StrCat("the response has no int64 parameter '", kInferUnitsParameter, "'"));
  }
  auto price = params.find(kInferPriceParameter);
  if (price == params.end() ||
      price->second.parameter_choice_case() != inference::InferParameter::kDoubleParam) {
    return absl::InvalidArgumentError(
        absl::StrCat("the response has no double parameter '", kInferPriceParameter, "'"));
  }
  return InferReport{units->second.int64_param(), price->second.double_param()};
}

absl::StatusOr<int64_t> LlmUnits(const v1::LLMTokenUsage& usage, int64_t max_tokens,
                                 int64_t content_messages) {
  const int64_t prompt = usage.prompt_tokens(), completion = usage.completion_tokens();
  if (prompt < 0 || completion < 0) {
    return absl::InvalidArgumentError("usage: negative token counts");
  }
  if (usage.total_tokens() != prompt + completion) {
    return absl::InvalidArgumentError(absl::StrCat("usage: total_tokens ", usage.total_tokens(),
                                                   " is not prompt_tokens + completion_tokens (",
                                                   prompt + completion, ")"));
  }
  if (max_tokens > 0 && completion > max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("usage: ", completion,
                     " completion tokens, more than the request's max_tokens ", max_tokens));
  }
  if (completion < content_messages) {
    return absl::InvalidArgumentError(absl::StrCat("usage: ", completion,
                                                   " completion tokens, fewer than the ",
                                                   content_messages, " messages streamed"));
  }
  return prompt + completion;
}

}  // namespace switchyard::metering
