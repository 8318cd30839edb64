// The transcoder's public types: a ladder entry, the options of a transcode and its result.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::orchestrator {

// One output rendition. Validated by TranscodeSegment.
struct RenditionSpec {
  std::string name;         // defaults to "<height>p"
  int width = 0;            // even, > 0; or 0 to derive from height keeping the input aspect
  int height = 0;           // even, > 0; or 0 to derive from width keeping the input aspect
  int64_t bitrate_bps = 0;  // > 0
  int fps_num = 0;          // 0/0: keep the input frame rate
  int fps_den = 0;
  double gop_seconds = 0;  // 0: 2 seconds; ignored when intra_only
  // Every output frame an IDR (keyframe interval 1, no B-frames), for editing/scrubbing outputs.
  bool intra_only = false;
  std::string preset = "veryfast";
  std::string profile = "main";  // baseline | main | high
};

struct RenditionOutput {
  RenditionSpec spec;  // with defaults filled in
  std::string data;    // the encoded segment, in the requested container
  int64_t frames = 0;  // video frames encoded
  int width = 0;
  int height = 0;
};

struct TranscodeResult {
  std::vector<RenditionOutput> renditions;  // one per spec, same order
  int64_t input_frames = 0;                 // video frames decoded
  double duration_seconds = 0;              // input video duration
  bool hardware_decoded = false;            // the video was decoded on the GPU
  bool hardware_encoded = false;            // at least one rendition was encoded with NVENC
  // The threads it ran with (thread_policy.h), e.g. "decoder 1, encoders 2/1/1 (2 cores, 1
  // segment in flight)" or "fixed: decoder 1, encoders 1/1/1".
  std::string thread_plan;
  // How the renditions were scaled (TranscodeOptions::scale_from_larger), e.g. "480p, 360p from
  // 720p's scaled frame" or "each from the decoded frame".
  std::string scale_plan;
};

struct TranscodeOptions {
  std::string container = "mpegts";  // "mpegts" or "mp4" (fragmented)
  int max_renditions = 8;
  int max_width = 3840;  // per rendition, and for the input
  int max_height = 3840;
  int64_t max_input_bytes = 64 << 20;  // segment size (config: transcode.max_segment_bytes)
  // Duration of the segment (its video; its audio when it has none), measured by demuxing its
  // packets before anything is decoded (MeasureSegmentSeconds); config:
  // transcode.max_segment_seconds. <= 0: not checked.
  double max_input_seconds = 30;
  int encoder_threads = 1;  // libx264 threads per rendition ("fixed"; 0: libx264 decides)
  int decoder_threads = 1;  // software decoder threads ("fixed"; frame threading when > 1)
  // "fixed": decoder_threads and encoder_threads as set. "auto": thread_policy.h sizes both per
  // segment from `cores` and `segments_in_flight` (the orchestrator's default, config
  // transcode.thread_policy): more threads on an idle node, one per rendition on a busy one.
  std::string thread_policy = "fixed";
  int cores = 0;               // "auto": cores given to transcoding; 0: the machine's
  int segments_in_flight = 1;  // "auto": segments transcoding on the node now, this one included
  // Scale and encode the renditions of a segment on one thread each (fed from the one decode),
  // rather than one after another on the calling thread. Outputs are identical either way.
  bool parallel_renditions = true;
  // Scale each decoded frame once to the largest rendition that keeps every frame (no frame rate
  // conversion) and is no larger than the input, and make the renditions no larger than it in
  // either dimension from that frame instead of from the decoded one: their scaling reads a
  // frame of fewer pixels (1080p -> 720p -> 480p/360p). Off by default: two bicubic passes
  // soften the picture, 0.17-0.3 dB of PSNR at 480p/360p on the benchmark's ladder
  // (docs/performance.md), more than the 0.1 dB the transcoder is held to. GPU-decoded frames
  // are always scaled per rendition.
  bool scale_from_larger = false;
  // "copy": audio packets are copied into every rendition (audio the output container cannot
  // carry is left out). "aac": each audio stream is decoded once and re-encoded to AAC at
  // audio_bitrate_bps (8000..512000), at most stereo, for every rendition.
  std::string audio_codec = "copy";
  // Video decoding: "auto" decodes on the GPU (NVDEC through a CUDA device) when this machine has
  // one and the codec supports it, else in software; "cuda" requires the GPU (FAILED_PRECONDITION
  // without one); "none" always decodes in software. Decoded frames are copied to system memory
  // and scaled there unless gpu_scale.
  std::string hw_decode = "auto";
  // GPU-decoded frames (8-bit 4:2:0, limited range) are scaled on the GPU (libavfilter's
  // scale_cuda) and only the scaled pictures copied to memory for the encoder; false copies every
  // full-size frame to memory and scales it with swscale. Falls back to that by itself when the
  // GPU filter cannot be built.
  bool gpu_scale = true;
  // Video encoding: "auto" encodes with NVENC (h264_nvenc) when this machine's GPU has it (found
  // by opening a session at start, media::ProbeVideoHardware) and falls back to libx264 for a
  // rendition whose NVENC session does not open (consumer GPUs limit concurrent sessions);
  // "nvenc" requires it (FAILED_PRECONDITION without, INTERNAL if a session does not open);
  // "none" always uses libx264. H100/H200 have NVDEC but no NVENC: "auto" gives libx264 there.
  // The x264 preset maps onto NVENC's p1..p7; frames reach NVENC from system memory.
  std::string hw_encode = "auto";
  int64_t audio_bitrate_bps = 128'000;
  // Bounds that keep hostile inputs (huge frame counts, timestamps with gaps that fps conversion
  // would fill with duplicates) from turning into unbounded work: INVALID_ARGUMENT beyond them.
  int64_t max_input_frames = 18000;   // decoded video frames
  int64_t max_output_frames = 36000;  // encoded frames per rendition
};

}  // namespace switchyard::orchestrator
