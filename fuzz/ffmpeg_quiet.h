// For the media fuzz targets: libav's logging off (fuzz/README.md).
#pragma once

#include "common/media/ffmpeg_util.h"

namespace switchyard::fuzz {

// libav logs every corrupt input at error level, and a fuzzer feeds little else: call once from
// the target (a function-local static) so the logs show findings, not noise.
inline bool QuietFfmpeg() {
  media::InitFfmpeg();
  av_log_set_level(AV_LOG_QUIET);
  return true;
}

}  // namespace switchyard::fuzz
