#include "orchestrator/transcode/timestamps.h"

#include <algorithm>

extern "C" {
#include <libavutil/mathematics.h>
}

namespace switchyard::orchestrator::transcode {

InputTimeline::Timed InputTimeline::Next(const AVFrame* frame) {
  int64_t duration = frame->pkt_duration;
  if (duration <= 0) duration = av_rescale_q(1, av_inv_q(frame_rate_), time_base_);
  if (duration <= 0) duration = 1;
  int64_t ts = frame->best_effort_timestamp;
  if (ts == AV_NOPTS_VALUE) {
    ts = last_ts_ == AV_NOPTS_VALUE ? 0 : last_ts_ + last_duration_;
  } else {
    ts += ts_offset_;
    if (last_ts_ != AV_NOPTS_VALUE && ts <= last_ts_) {
      const int64_t next = last_ts_ + last_duration_;
      ts_offset_ += next - ts;
      ts = next;
    }
  }
  last_ts_ = ts;
  last_duration_ = duration;
  const bool first = first_ts_ == AV_NOPTS_VALUE;
  if (first_ts_ == AV_NOPTS_VALUE || ts < first_ts_) first_ts_ = ts;
  if (end_ts_ == AV_NOPTS_VALUE || ts + duration > end_ts_) end_ts_ = ts + duration;
  return Timed{ts, first};
}

double InputTimeline::seconds() const {
  return std::max<int64_t>(0, end_ts_ - first_ts_) * av_q2d(time_base_);
}

}  // namespace switchyard::orchestrator::transcode
