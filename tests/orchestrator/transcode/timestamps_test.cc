#include "orchestrator/transcode/timestamps.h"

#include <vector>

#include <gtest/gtest.h>

#include "common/media/ffmpeg_util.h"

namespace switchyard::orchestrator::transcode {
namespace {

// A decoded frame with just the fields InputTimeline reads.
media::AvFramePtr Frame(int64_t best_effort_timestamp, int64_t duration) {
  media::AvFramePtr frame(av_frame_alloc());
  frame->best_effort_timestamp = best_effort_timestamp;
  frame->pkt_duration = duration;
  return frame;
}

std::vector<int64_t> Times(InputTimeline& timeline, const std::vector<int64_t>& in,
                           int64_t duration) {
  std::vector<int64_t> out;
  for (int64_t ts : in) out.push_back(timeline.Next(Frame(ts, duration).get()).ts);
  return out;
}

// 90 kHz, 30 fps: a frame lasts 3000 ticks.
constexpr AVRational kTimeBase{1, 90000};
constexpr AVRational kRate{30, 1};

TEST(InputTimeline, IncreasingTimesPassThroughAndTheSpanIsCounted) {
  InputTimeline timeline(kTimeBase, kRate);
  const InputTimeline::Timed first = timeline.Next(Frame(9000, 3000).get());
  EXPECT_EQ(first.ts, 9000);
  EXPECT_TRUE(first.first);
  EXPECT_FALSE(timeline.Next(Frame(12000, 3000).get()).first);
  EXPECT_EQ(Times(timeline, {15000, 18000}, 3000), (std::vector<int64_t>{15000, 18000}));
  EXPECT_EQ(timeline.end_of_last(), 21000);
  EXPECT_DOUBLE_EQ(timeline.seconds(), 12000 / 90000.0);
}

TEST(InputTimeline, TimesGoingBackwardsAreShiftedToContinue) {
  InputTimeline timeline(kTimeBase, kRate);
  // A splice back to 0 after 6000: continues at 9000 and keeps the shift for what follows.
  EXPECT_EQ(Times(timeline, {3000, 6000, 0, 3000, 6000}, 3000),
            (std::vector<int64_t>{3000, 6000, 9000, 12000, 15000}));
}

TEST(InputTimeline, MissingTimesAndDurationsComeFromTheFrameRate) {
  InputTimeline timeline(kTimeBase, kRate);
  // No timestamp at all: starts at 0; no duration: one frame at 30 fps (3000 ticks).
  EXPECT_EQ(Times(timeline, {AV_NOPTS_VALUE, AV_NOPTS_VALUE, 6000, AV_NOPTS_VALUE}, 0),
            (std::vector<int64_t>{0, 3000, 6000, 9000}));
  EXPECT_EQ(timeline.end_of_last(), 12000);
}

}  // namespace
}  // namespace switchyard::orchestrator::transcode
