#include "common/quote_units.h"

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/media/ffmpeg_util.h"
#include "common/media/image_codec.h"
#include "common/metering.h"

namespace switchyard::metering {
namespace {

// The orchestrator's defaults (orchestrator/pipelines/request_validation.h) where a model's
// options do not override them.
constexpr int64_t kDefaultWidth = 1024;
constexpr int64_t kDefaultHeight = 576;
constexpr int64_t kDefaultMaxFrames = 256;
constexpr int64_t kDefaultMaxTokens = 256;
// The LLM prompt bound's allowance for the chat template.
constexpr int64_t kTokensPerMessage = 8;
constexpr int64_t kTokensForTemplate = 32;
constexpr int kMaxRenditions = 8;

absl::Status Invalid(absl::string_view what, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
}

// a x b, or an error when over kMaxQuoteUnits (both >= 0).
absl::StatusOr<int64_t> Mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return absl::InvalidArgumentError("negative count in a quote");
  if (a != 0 && b > kMaxQuoteUnits / a) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request would be more than ", kMaxQuoteUnits, " units"));
  }
  return a * b;
}

absl::StatusOr<int64_t> Add(int64_t a, int64_t b) {
  if (b > kMaxQuoteUnits - a) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request would be more than ", kMaxQuoteUnits, " units"));
  }
  return a + b;
}

absl::StatusOr<int64_t> InputPixels(const std::string& image) {
  if (image.empty()) return absl::InvalidArgumentError("image is required (PNG or JPEG bytes)");
  auto size = media::ReadImageSize(std::string_view(image.data(), image.size()));
  if (!size.ok()) return Invalid("image", size.status().message());
  return Mul(size->width, size->height);
}

QuoteUnits Exact(int64_t units, std::string note) {
  return {units, QuoteBasis::kExact, std::move(note)};
}
QuoteUnits Estimate(int64_t units, std::string note) {
  return {units, QuoteBasis::kEstimate, std::move(note)};
}

absl::StatusOr<QuoteUnits> InputPixelsQuote(const std::string& image) {
  auto pixels = InputPixels(image);
  if (!pixels.ok()) return pixels.status();
  return Exact(*pixels, "input pixels: width x height of the request's image");
}

// The prompt's parts as the orchestrator splits it ('|', blanks trimmed, empty parts dropped).
int64_t PromptCount(const std::string& prompt) {
  int64_t n = 0;
  for (absl::string_view part : absl::StrSplit(prompt, '|')) {
    if (!absl::StripAsciiWhitespace(part).empty()) ++n;
  }
  return n;
}

// prompts x num_images_per_prompt; INVALID_ARGUMENT for no prompt or a count below 1.
template <typename Request>
absl::StatusOr<int64_t> ImageCount(const Request& request) {
  const int64_t prompts = PromptCount(request.prompt());
  if (prompts == 0) return absl::InvalidArgumentError("prompt is required");
  int64_t per_prompt = 1;
  if (request.has_num_images_per_prompt()) {
    per_prompt = request.num_images_per_prompt();
    if (per_prompt < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_images_per_prompt must be >= 1 (got ", per_prompt, ")"));
    }
  }
  return Mul(prompts, per_prompt);
}

// width x height of a request with optional sizes; `exact` says both were given.
template <typename Request>
absl::StatusOr<int64_t> RequestedSize(const Request& request, bool* exact) {
  if (request.has_width() && request.width() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("width must be positive (got ", request.width(), ")"));
  }
  if (request.has_height() && request.height() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("height must be positive (got ", request.height(), ")"));
  }
  *exact = request.has_width() && request.has_height();
  return Mul(request.has_width() ? request.width() : kDefaultWidth,
             request.has_height() ? request.height() : kDefaultHeight);
}

// What a quote needs of a video segment: its video packets, size, display aspect and span.
struct SegmentProbe {
  int64_t frames = 0;
  int64_t width = 0;
  int64_t height = 0;
  double display_aspect = 1;
  double seconds = 0;
};

absl::StatusOr<SegmentProbe> ProbeSegment(const std::string& segment) {
  media::InitFfmpeg();
  if (segment.empty()) return absl::InvalidArgumentError("segment is required");
  auto demuxer =
      media::OpenMemoryDemuxer(std::string_view(segment.data(), segment.size()), "mpegts,mov");
  if (!demuxer.ok()) {
    return Invalid("segment", absl::StrCat("could not be demuxed: ", demuxer.status().message()));
  }
  AVFormatContext* fmt = (*demuxer)->format.get();
  const int index = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (index < 0) return Invalid("segment", "no video stream");
  const AVStream* stream = fmt->streams[index];
  SegmentProbe p;
  p.width = stream->codecpar->width;
  p.height = stream->codecpar->height;
  if (p.width <= 0 || p.height <= 0) return Invalid("segment", "the video has no frame size");
  AVRational sar = stream->codecpar->sample_aspect_ratio;
  if (sar.num <= 0 || sar.den <= 0) sar = AVRational{1, 1};
  p.display_aspect =
      static_cast<double>(p.width) * sar.num / (static_cast<double>(p.height) * sar.den);
  media::AvPacketPtr packet(av_packet_alloc());
  if (!packet) return absl::ResourceExhaustedError("out of memory allocating a packet");
  int64_t first = std::numeric_limits<int64_t>::max(), end = std::numeric_limits<int64_t>::min();
  while (true) {
    const int err = av_read_frame(fmt, packet.get());
    if (err == AVERROR_EOF) break;
    if (err < 0) {
      return Invalid("segment", absl::StrCat("could not be demuxed: ", media::AvErrorString(err)));
    }
    if (packet->stream_index == index) {
      ++p.frames;
      if (packet->pts != AV_NOPTS_VALUE) {
        first = std::min(first, packet->pts);
        end = std::max(end, packet->pts + std::max<int64_t>(packet->duration, 0));
      }
    }
    av_packet_unref(packet.get());
  }
  if (p.frames == 0) return Invalid("segment", "no video frames");
  if (end > first) p.seconds = static_cast<double>(end - first) * av_q2d(stream->time_base);
  return p;
}

// 2 * round(x / 2), at least 2 (the orchestrator's rounding of derived rendition sizes).
int64_t RoundEven(double x) {
  const double r = 2 * std::round(x / 2);
  if (!(r >= 2)) return 2;
  if (r > 1e9) return 1000000000;
  return static_cast<int64_t>(r);
}

}  // namespace

absl::string_view QuoteBasisName(QuoteBasis basis) {
  switch (basis) {
    case QuoteBasis::kExact:
      return "exact";
    case QuoteBasis::kUpperBound:
      return "upper_bound";
    case QuoteBasis::kEstimate:
      return "estimate";
    case QuoteBasis::kUnknown:
      break;
  }
  return "unknown";
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::UpscaleRequest& request) {
  return InputPixelsQuote(request.image());
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::ImageToTextRequest& request) {
  return InputPixelsQuote(request.image());
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::SegmentAnything2Request& request) {
  return InputPixelsQuote(request.image());
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::TextToImageRequest& request) {
  auto images = ImageCount(request);
  if (!images.ok()) return images.status();
  bool exact = false;
  auto size = RequestedSize(request, &exact);
  if (!size.ok()) return size.status();
  auto units = Mul(*images, *size);
  if (!units.ok()) return units.status();
  if (exact) {
    return Exact(*units, "output pixels: prompts x num_images_per_prompt x width x height");
  }
  return Estimate(*units,
                  "output pixels: prompts x num_images_per_prompt x width x height, with the "
                  "default 1024x576 where width or height is unset (a model's options may set "
                  "another default: send both for an exact quote)");
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::ImageToImageRequest& request) {
  auto pixels = InputPixels(request.image());
  if (!pixels.ok()) return pixels.status();
  auto images = ImageCount(request);
  if (!images.ok()) return images.status();
  auto units = Mul(*images, *pixels);
  if (!units.ok()) return units.status();
  return Estimate(*units,
                  "output pixels: prompts x num_images_per_prompt x the input image's pixels "
                  "(the output size is the model's; most keep the input's)");
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::ImageToVideoRequest& request) {
  auto pixels = InputPixels(request.image());  // checked: the job needs a readable image
  if (!pixels.ok()) return pixels.status();
  bool exact = false;
  auto size = RequestedSize(request, &exact);
  if (!size.ok()) return size.status();
  auto units = Mul(kDefaultMaxFrames, *size);
  if (!units.ok()) return units.status();
  return Estimate(*units,
                  "output pixels: at most 256 frames (the orchestrator's default max_frames; a "
                  "model's options may change it, and the model chooses how many) x width x "
                  "height (1024x576 where unset)");
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::AudioToTextRequest& request) {
  if (request.audio().empty()) return absl::InvalidArgumentError("audio is required");
  auto ms = DecodedAudioMilliseconds(request.audio());
  if (!ms.ok()) return Invalid("audio", ms.status().message());
  return Exact(*ms, "the audio's duration in ms, decoded as metering counts it");
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::TextToSpeechRequest& request) {
  if (request.text().empty()) return absl::InvalidArgumentError("text is required");
  return QuoteUnits{0, QuoteBasis::kUnknown,
                    "text-to-speech is billed by the returned audio's length, which is not known "
                    "before the job runs: no total (cap it with x-max-price-per-unit)"};
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::LLMRequest& request) {
  if (request.model().empty()) return absl::InvalidArgumentError("model is required");
  if (request.messages().empty() && !request.has_prompt()) {
    return absl::InvalidArgumentError("messages is required (at least one message)");
  }
  int64_t max_tokens = kDefaultMaxTokens;
  if (request.has_max_tokens()) {
    if (request.max_tokens() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_tokens must be >= 1 (got ", request.max_tokens(), ")"));
    }
    max_tokens = request.max_tokens();
  }
  int64_t prompt = kTokensForTemplate;
  if (request.has_prompt()) prompt += static_cast<int64_t>(request.prompt().size());
  for (const auto& m : request.messages()) {
    prompt += static_cast<int64_t>(m.content().size() + m.role().size()) + kTokensPerMessage;
  }
  auto units = Add(max_tokens, prompt);
  if (!units.ok()) return units.status();
  return Estimate(*units,
                  "tokens: max_tokens (256 when unset) completion tokens plus the prompt, "
                  "bounded by one token per byte of its text, 8 per message and 32 for the chat "
                  "template (a template that adds more text, such as a default system prompt, "
                  "makes more)");
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::LiveVideoSegmentRequest& request) {
  if (request.segment().empty()) {
    return absl::InvalidArgumentError("segment is required (MPEG-TS bytes)");
  }
  auto count = CountVideo(request.segment());
  if (!count.ok()) return Invalid("segment", count.status().message());
  auto size = Mul(count->width, count->height);
  if (!size.ok()) return size.status();
  auto units = Mul(count->frames, *size);
  if (!units.ok()) return units.status();
  return Estimate(*units,
                  "output pixels: the input segment's frames x its frame size (the model "
                  "chooses its output size)");
}

absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::TranscodeRequest& request) {
  if (request.renditions().empty()) {
    return absl::InvalidArgumentError("at least one rendition is required");
  }
  if (request.renditions_size() > kMaxRenditions) {
    return absl::InvalidArgumentError(
        absl::StrCat("renditions: ", request.renditions_size(), ", more than ", kMaxRenditions));
  }
  auto probe = ProbeSegment(request.segment());
  if (!probe.ok()) return probe.status();
  int64_t total = 0;
  for (int i = 0; i < request.renditions_size(); ++i) {
    const v1::Rendition& r = request.renditions(i);
    if (r.width() < 0 || r.height() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("renditions[", i, "]: width and height must be >= 0"));
    }
    int64_t w = r.width(), h = r.height();
    if (w == 0 && h == 0) {
      w = RoundEven(static_cast<double>(probe->height) * probe->display_aspect);
      h = RoundEven(static_cast<double>(probe->height));
    } else if (w == 0) {
      w = RoundEven(static_cast<double>(h) * probe->display_aspect);
    } else if (h == 0) {
      h = RoundEven(static_cast<double>(w) / probe->display_aspect);
    }
    int64_t frames = probe->frames;
    if (r.fps_num() > 0 && r.fps_den() > 0) {
      const double fps = static_cast<double>(r.fps_num()) / r.fps_den();
      const double f = std::ceil(probe->seconds * fps);
      if (!(f >= 1) || f > 1e9) {
        frames = probe->frames;
      } else {
        frames = static_cast<int64_t>(f);
      }
    }
    auto size = Mul(w, h);
    if (!size.ok()) return size.status();
    auto pixels = Mul(frames, *size);
    if (!pixels.ok()) return pixels.status();
    auto sum = Add(total, *pixels);
    if (!sum.ok()) return sum.status();
    total = *sum;
  }
  return Estimate(total,
                  "output pixels: per rendition, the input's video frames (with another frame "
                  "rate, its duration x that rate) x the rendition's size (0 derived from the "
                  "input's aspect); the encoder may make a few more or fewer frames");
}

bool SetQuoteRequest(const google::protobuf::Message& request, v1::QuoteRequest* quote) {
  const google::protobuf::OneofDescriptor* oneof =
      v1::QuoteRequest::descriptor()->FindOneofByName("request");
  for (int i = 0; oneof != nullptr && i < oneof->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = oneof->field(i);
    if (field->message_type() == request.GetDescriptor()) {
      quote->GetReflection()->MutableMessage(quote, field)->CopyFrom(request);
      return true;
    }
  }
  return false;
}

double PriceWithinTotal(double max_total, int64_t units) {
  if (!(max_total > 0) || !std::isfinite(max_total) || units <= 0) return 0;
  const double n = static_cast<double>(units);
  double p = max_total / n;
  // Division rounds to nearest: the product may come out one ulp above; step down until it fits.
  for (int i = 0; i < 64 && p > 0 && n * p > max_total; ++i) p = std::nextafter(p, 0.0);
  if (n * p > max_total) return 0;
  // ... or one below the largest that fits: step up while the next still fits.
  const double inf = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 64 && n * std::nextafter(p, inf) <= max_total; ++i) {
    p = std::nextafter(p, inf);
  }
  return p;
}

absl::StatusOr<double> ParseMaxTotalPrice(absl::string_view text, absl::string_view what) {
  double value = 0;
  if (!absl::SimpleAtod(text, &value) || !std::isfinite(value) || !(value > 0) ||
      value > kMaxTotalPrice) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " must be a number > 0 and at most 1e15 (the most the job may cost in all), got '",
        LogSafe(std::string(text)), "'"));
  }
  return value;
}

}  // namespace switchyard::metering
