// The encode stage: one rendition's H.264 encoder, NVENC (h264_nvenc) or libx264, set up so that
// every output starts with an IDR frame and keyframes fall exactly every GOP.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/media/ffmpeg_util.h"
#include "orchestrator/transcode/transcode_types.h"

namespace switchyard::orchestrator::transcode {

struct VideoEncoderSettings {
  size_t rendition = 0;  // for messages
  const RenditionSpec* spec = nullptr;
  int width = 0;
  int height = 0;
  AVRational time_base{0, 1};
  AVRational frame_rate{0, 1};
  int threads = 1;             // libx264's; 0: it decides
  bool global_header = false;  // SPS/PPS in the codec parameters (MP4), not in the stream
  const AVCodecParameters* input = nullptr;  // the input video, whose colour description is kept
};

// Opens NVENC or libx264 as `hw_encode` says: "auto" takes NVENC when this machine has it
// (media::ProbeVideoHardware) and falls back to libx264 when its session does not open; "nvenc"
// fails then (INTERNAL); "none" is libx264. `*nvenc` says which opened.
absl::StatusOr<media::AvCodecContextPtr> OpenVideoEncoder(const VideoEncoderSettings& settings,
                                                          const std::string& hw_encode,
                                                          bool* nvenc);

// Sends `frame` to the encoder (null: flush) and hands every packet it gives back to `sink`, which
// takes its data. `packet` is scratch space. INTERNAL when encoding fails.
absl::Status EncodeFrame(AVCodecContext* encoder, const AVFrame* frame, AVPacket* packet,
                         size_t rendition, const std::function<absl::Status(AVPacket*)>& sink);

}  // namespace switchyard::orchestrator::transcode
