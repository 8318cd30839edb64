// What a TranscodeSession keeps between the segments of one stream (transcoder.h: StreamState).
#pragma once

#include <cstdint>
#include <vector>

#include "orchestrator/transcode/scaler.h"
#include "orchestrator/transcode/transcoder.h"
#include "orchestrator/transcode/video_decoder.h"

namespace switchyard::orchestrator::internal {

struct StreamState {
  transcode::DecoderCache decoder;
  std::vector<transcode::Scaler> scalers;  // per rendition
  transcode::Scaler base_scaler;           // scale_from_larger: to the base rendition's size
  std::vector<int64_t> last_pts;           // per rendition, in last_time_base; or NOPTS
  std::vector<AVRational> last_time_base;
  std::vector<RenditionSpec> resolved;  // the ladder as last resolved from a video segment
  // Per rendition, per audio output stream (in order): the last audio DTS muxed, in seconds.
  std::vector<std::vector<double>> last_audio_seconds;
  StreamStateStats stats;
};

}  // namespace switchyard::orchestrator::internal
