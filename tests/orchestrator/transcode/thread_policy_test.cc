// The transcoder's thread policy (src/orchestrator/transcode/thread_policy.h): an idle node gives
// the segment in hand more threads, most to the largest rendition; a busy node gives one each.
#include "orchestrator/transcode/thread_policy.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace switchyard::orchestrator::transcode {
namespace {

// The ladder: 720p, 480p, 360p.
const std::vector<int64_t> kLadder = {1280 * 720, 854 * 480, 640 * 360};

ThreadPlan Plan(int cores, int in_flight, std::vector<int64_t> pixels = kLadder) {
  ThreadPolicyInputs in;
  in.cores = cores;
  in.segments_in_flight = in_flight;
  in.rendition_pixels = std::move(pixels);
  return PlanThreads(in);
}

int Sum(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); }

TEST(ThreadPolicyTest, ABusyNodeGetsOneThreadEach) {
  for (auto [cores, in_flight] : {std::pair{2, 2}, {2, 4}, {4, 4}, {8, 9}, {16, 64}, {1, 1}}) {
    ThreadPlan plan = Plan(cores, in_flight);
    EXPECT_EQ(plan.decoder_threads, 1) << cores << "/" << in_flight;
    EXPECT_EQ(plan.encoder_threads, (std::vector<int>{1, 1, 1})) << cores << "/" << in_flight;
  }
}

TEST(ThreadPolicyTest, AnIdleNodeGivesTheSegmentItsShareLargestRenditionFirst) {
  // 2 cores, one segment: one extra thread, to the 720p rendition.
  ThreadPlan two = Plan(2, 1);
  EXPECT_EQ(two.decoder_threads, 1);
  EXPECT_EQ(two.encoder_threads, (std::vector<int>{2, 1, 1}));
  EXPECT_EQ(two.description, "decoder 1, encoders 2/1/1 (2 cores, 1 segment in flight)");
  // 16 cores: 15 extra threads by pixels (0.59 / 0.26 / 0.15), frame-threaded decoding.
  ThreadPlan sixteen = Plan(16, 1);
  EXPECT_EQ(sixteen.decoder_threads, 4);
  EXPECT_EQ(Sum(sixteen.encoder_threads), 3 + 15);
  EXPECT_GT(sixteen.encoder_threads[0], sixteen.encoder_threads[1]);
  EXPECT_GT(sixteen.encoder_threads[1], sixteen.encoder_threads[2]);
  // Shared fairly as segments arrive: 16 cores and 4 segments is a share of 4 each.
  ThreadPlan four = Plan(16, 4);
  EXPECT_EQ(four.decoder_threads, 1);
  EXPECT_EQ(Sum(four.encoder_threads), 3 + 3);
  EXPECT_EQ(four.description, "decoder 1, encoders 3/2/1 (16 cores, 4 segments in flight)");
  // More segments in flight never means more threads for this one.
  int previous = 1 << 20;
  for (int in_flight = 1; in_flight <= 20; ++in_flight) {
    const ThreadPlan p = Plan(16, in_flight);
    EXPECT_LE(Sum(p.encoder_threads) + p.decoder_threads, previous) << in_flight;
    previous = Sum(p.encoder_threads) + p.decoder_threads;
  }
}

TEST(ThreadPolicyTest, BoundsAndOddInputs) {
  // Every count stays in [1, kMaxThreadsPerCodec], however many cores.
  ThreadPlan huge = Plan(1024, 1, {3840 * 2160});
  EXPECT_EQ(huge.encoder_threads, (std::vector<int>{kMaxThreadsPerCodec}));
  EXPECT_LE(huge.decoder_threads, 4);
  // Nonsense inputs are taken as one core, one segment, and pixel counts of at least 1.
  ThreadPlan nonsense = Plan(0, -3, {0, -5});
  EXPECT_EQ(nonsense.decoder_threads, 1);
  EXPECT_EQ(nonsense.encoder_threads, (std::vector<int>{1, 1}));
  EXPECT_TRUE(Plan(8, 1, {}).encoder_threads.empty());
  // Equal renditions split evenly, ties to the first.
  EXPECT_EQ(Plan(4, 1, {100, 100}).encoder_threads, (std::vector<int>{3, 2}));
  // The same inputs, the same plan.
  EXPECT_EQ(Plan(12, 2).encoder_threads, Plan(12, 2).encoder_threads);
}

}  // namespace
}  // namespace switchyard::orchestrator::transcode
