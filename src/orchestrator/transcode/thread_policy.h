// How many threads one segment's decode and encodes use (issue 24), in one place: a node with
// idle cores gives the segment in hand frame-threaded decoding and more libx264 threads (most to
// the largest rendition, which dominates); a node with as many segments in flight as cores gives
// each one decoder thread and one thread per rendition, sharing the cores fairly. The transcoder
// applies the plan and reports it with the segment (TranscodeResult::thread_plan, logged).
//
// Outputs depend on the thread counts (libx264's frame threads change the bitstream). A plan of one
// libx264 thread per rendition (a busy node's) gives the same bytes on every run; with several,
// libx264's frame-threaded rate control under VBV depends on thread timing, so runs differ in
// bits while the guarantees (IDR first, GOP placement, frame counts, rising DTS) hold: tests pin
// the plan to check both.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::orchestrator::transcode {

struct ThreadPolicyInputs {
  int cores = 1;                          // cores this node gives transcoding
  int segments_in_flight = 1;             // segments transcoding on the node now, this one included
  std::vector<int64_t> rendition_pixels;  // output width x height of each rendition
};

struct ThreadPlan {
  int decoder_threads = 1;           // software decoder threads (frame threading when > 1)
  std::vector<int> encoder_threads;  // libx264 threads per rendition (each >= 1)
  // E.g. "decoder 2, encoders 6/3/2 (8 cores, 1 segment in flight)".
  std::string description;
};

// At most this many threads for one encoder or the decoder (libx264 gains little past it on
// these sizes, and thread start-up is paid per segment).
inline constexpr int kMaxThreadsPerCodec = 16;

// The plan for one segment. Saturated (segments_in_flight >= cores, or one core): one decoder
// thread and one thread per rendition, as the transcoder always did. Otherwise the segment's
// share of the cores, cores / segments_in_flight, is spent as: decoder threads = share / 4
// (1..4), and share - 1 threads on top of one per rendition, split across the renditions in
// proportion to their pixels (largest remainders first, ties to the larger rendition).
ThreadPlan PlanThreads(const ThreadPolicyInputs& inputs);

}  // namespace switchyard::orchestrator::transcode
