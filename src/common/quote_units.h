// Quotes: the units of a job as far as its request alone says them, before it runs (the gateway's
// Gateway.Quote and x-max-total-price; docs/metering.md, "Quotes"). Next to metering.h, whose
// Units(request, response) counts a completed job: where the request fixes the count (an input
// image's pixels, an audio's length, a requested output size) both use the same functions, so a
// quote marked exact equals the completed job's metered units from an honest node.
//
//   upscale, image-to-text,        exact        input pixels, from the image's header
//   segment-anything-2
//   audio-to-text                  exact        the audio's decoded milliseconds
//   text-to-image                  exact        prompts x num_images_per_prompt x width x height
//                                  (estimate    when width or height is unset: the model's
//                                               default size, 1024x576 unless its options say
//                                               otherwise)
//   image-to-image                 estimate     prompts x num_images_per_prompt x input pixels
//                                               (the output size is the model's)
//   image-to-video                 estimate     256 frames (the orchestrator's default
//                                               max_frames) x width x height (1024x576 default)
//   live-video-to-video            estimate     input frames x input size (the model chooses its
//                                               output size)
//   transcode                      estimate     per rendition: input frames (or the input's
//                                               duration x the rendition's rate) x its size
//   llm                            estimate     max_tokens (256 when unset) + a prompt bound of one
//                                               token per byte of its text, 8 per message and 32
//                                               for the chat template
//   text-to-speech                 unknown      the output's length: not known before it runs
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::metering {

// How a quote's units relate to the completed job's (QuoteResponse.units_basis).
enum class QuoteBasis { kExact, kUpperBound, kEstimate, kUnknown };
// "exact", "upper_bound", "estimate", "unknown".
absl::string_view QuoteBasisName(QuoteBasis basis);

struct QuoteUnits {
  int64_t units = 0;  // 0 for kUnknown
  QuoteBasis basis = QuoteBasis::kUnknown;
  std::string note;  // how they were counted, what was assumed
};

// The most units a quote counts (larger requests are INVALID_ARGUMENT; no orchestrator takes
// them anyway), which keeps every product below from overflowing.
inline constexpr int64_t kMaxQuoteUnits = int64_t{1} << 50;

// The units of a job from its request alone. INVALID_ARGUMENT naming the field when the request
// cannot be measured (no image, an image or audio or segment that does not decode, a field out of
// range, more than kMaxQuoteUnits).
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::UpscaleRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::TextToImageRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::ImageToImageRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::ImageToVideoRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::AudioToTextRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::SegmentAnything2Request& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::LLMRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::ImageToTextRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::TextToSpeechRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::LiveVideoSegmentRequest& request);
absl::StatusOr<QuoteUnits> QuoteUnitsOf(const v1::TranscodeRequest& request);

// Sets `request` (one pipeline's request message) as `quote`'s one request: the oneof field of its
// type. False when no field has that type.
bool SetQuoteRequest(const google::protobuf::Message& request, v1::QuoteRequest* quote);

// The largest price per unit p >= 0 with units x p <= max_total in double arithmetic (so the
// ledger's amount = units x price never exceeds the client's max_total_price, rounding included).
// `max_total` must be finite and > 0, `units` > 0.
double PriceWithinTotal(double max_total, int64_t units);

// The greatest max_total_price accepted (beyond it a cap means nothing and only invites
// overflow).
inline constexpr double kMaxTotalPrice = 1e15;

// Parses an x-max-total-price value: a finite number > 0 and <= kMaxTotalPrice.
// INVALID_ARGUMENT naming `what` (the header) and the value otherwise.
absl::StatusOr<double> ParseMaxTotalPrice(absl::string_view text, absl::string_view what);

}  // namespace switchyard::metering
