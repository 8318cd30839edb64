// Timestamp repair of the decoded video: missing times filled in from the frame rate, times that
// go backwards shifted to continue, and the span the frames cover.
#pragma once

#include <cstdint>

extern "C" {
#include <libavutil/avutil.h>
#include <libavutil/frame.h>
#include <libavutil/rational.h>
}

namespace switchyard::orchestrator::transcode {

class InputTimeline {
 public:
  // `time_base`: the video stream's; `frame_rate`: its (guessed) rate, for frames without a
  // duration.
  InputTimeline(AVRational time_base, AVRational frame_rate)
      : time_base_(time_base), frame_rate_(frame_rate) {}

  struct Timed {
    int64_t ts = 0;      // in the video time base
    bool first = false;  // the segment's first decoded frame
  };
  // The timestamp of the next decoded frame (in decode output order). Where the input's
  // presentation time goes backwards (a splice, a broken muxer) it continues from the previous
  // frame and what follows is shifted by the same amount, so no frame is lost and the times keep
  // increasing; a frame without one follows the previous frame.
  Timed Next(const AVFrame* frame);

  // The end of the latest frame (its time plus its duration).
  int64_t end_of_last() const { return last_ts_ + last_duration_; }
  // From the earliest frame's time to the latest end, in seconds.
  double seconds() const;

 private:
  AVRational time_base_;
  AVRational frame_rate_;
  int64_t first_ts_ = AV_NOPTS_VALUE;
  int64_t end_ts_ = AV_NOPTS_VALUE;   // max of ts + duration
  int64_t last_ts_ = AV_NOPTS_VALUE;  // ts of the latest decoded frame
  int64_t last_duration_ = 0;
  int64_t ts_offset_ = 0;  // added to decoded timestamps after they went backwards
};

}  // namespace switchyard::orchestrator::transcode
