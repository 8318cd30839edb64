#include "orchestrator/serving/transcode_session.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace switchyard::orchestrator {

absl::StatusOr<std::unique_ptr<TranscodeSession>> TranscodeSession::Create(
    std::vector<RenditionSpec> ladder, TranscodeOptions options) {
  if (ladder.empty()) return absl::InvalidArgumentError("renditions: at least one is required");
  if (ladder.size() > static_cast<size_t>(std::max(options.max_renditions, 0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "renditions: ", ladder.size(), " asked for, at most ", options.max_renditions, " allowed"));
  }
  if (options.container != "mpegts" && options.container != "mp4") {
    return absl::InvalidArgumentError(
        absl::StrCat("container: must be \"mpegts\" or \"mp4\"; got \"", options.container, "\""));
  }
  return std::unique_ptr<TranscodeSession>(
      new TranscodeSession(std::move(ladder), std::move(options)));
}

TranscodeSession::TranscodeSession(std::vector<RenditionSpec> ladder, TranscodeOptions options)
    : ladder_(std::move(ladder)),
      options_(std::move(options)),
      state_(internal::NewStreamState()) {}

TranscodeSession::~TranscodeSession() = default;

int64_t TranscodeSession::decoders_opened() const {
  return internal::GetStreamStateStats(*state_).decoders_opened;
}

int64_t TranscodeSession::scalers_created() const {
  return internal::GetStreamStateStats(*state_).scalers_created;
}

absl::StatusOr<TranscodeResult> TranscodeSession::Transcode(int64_t sequence,
                                                            std::string_view segment,
                                                            const std::function<bool()>& cancelled,
                                                            int segments_in_flight) {
  internal::StreamSegment how;
  how.allow_audio_only = seen_video_;
  how.continues_previous = have_last_ && sequence == last_sequence_ + 1;
  TranscodeOptions options = options_;
  options.segments_in_flight = segments_in_flight;
  auto result =
      internal::TranscodeStreamSegment(*state_, segment, ladder_, options, how, cancelled);
  if (!result.ok()) {
    if (!seen_video_ && absl::IsInvalidArgument(result.status()) &&
        result.status().message() == "segment: input has no video stream") {
      return absl::InvalidArgumentError(
          "segment: input has no video stream, and the first segment of a stream must carry "
          "video (the ladder's sizes cannot be known without it)");
    }
    return result;
  }
  ++segments_done_;
  have_last_ = true;
  last_sequence_ = sequence;
  if (result->input_frames > 0) seen_video_ = true;
  return result;
}

}  // namespace switchyard::orchestrator
