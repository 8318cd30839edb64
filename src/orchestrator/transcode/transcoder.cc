#include "orchestrator/transcode/transcoder.h"

#include "orchestrator/transcode/segment_transcoder.h"
#include "orchestrator/transcode/stream_state.h"

namespace switchyard::orchestrator {

absl::StatusOr<TranscodeResult> TranscodeSegment(std::string_view segment,
                                                 const std::vector<RenditionSpec>& ladder,
                                                 const TranscodeOptions& options,
                                                 const std::function<bool()>& cancelled) {
  transcode::SegmentTranscoder transcoder(segment, ladder, options, cancelled);
  return transcoder.Run();
}

namespace internal {

void StreamStateDeleter::operator()(StreamState* state) const { delete state; }

StreamStatePtr NewStreamState() { return StreamStatePtr(new StreamState()); }

StreamStateStats GetStreamStateStats(const StreamState& state) { return state.stats; }

absl::StatusOr<TranscodeResult> TranscodeStreamSegment(StreamState& state, std::string_view segment,
                                                       const std::vector<RenditionSpec>& ladder,
                                                       const TranscodeOptions& options,
                                                       const StreamSegment& how,
                                                       const std::function<bool()>& cancelled) {
  transcode::SegmentTranscoder transcoder(segment, ladder, options, cancelled, &state, how);
  return transcoder.Run();
}

}  // namespace internal

}  // namespace switchyard::orchestrator
