#include "orchestrator/transcode_session.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace switchyard::orchestrator {

// NOT FINISHED: each segment is transcoded from scratch with TranscodeSegment; the decoder and
// scalers are not yet kept between segments, and audio-only segments are not yet accepted
// mid-stream.

absl::StatusOr<std::unique_ptr<TranscodeSession>> TranscodeSession::Create(
    std::vector<RenditionSpec> ladder, TranscodeOptions options) {
  if (ladder.empty()) return absl::InvalidArgumentError("renditions: at least one is required");
  if (ladder.size() > static_cast<size_t>(std::max(options.max_renditions, 0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "renditions: ", ladder.size(), " asked for, at most ", options.max_renditions, " allowed"));
  }
  return std::unique_ptr<TranscodeSession>(
      new TranscodeSession(std::move(ladder), std::move(options)));
}

TranscodeSession::TranscodeSession(std::vector<RenditionSpec> ladder, TranscodeOptions options)
    : ladder_(std::move(ladder)), options_(std::move(options)) {}

TranscodeSession::~TranscodeSession() = default;

absl::StatusOr<TranscodeResult> TranscodeSession::Transcode(
    int64_t /*sequence*/, std::string_view segment, const std::function<bool()>& cancelled) {
  auto result = TranscodeSegment(segment, ladder_, options_, cancelled);
  if (result.ok()) {
    ++segments_done_;
    seen_video_ = true;
  }
  return result;
}

}  // namespace switchyard::orchestrator
