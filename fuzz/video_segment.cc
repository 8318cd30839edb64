// Fuzzes the transcoder's segment path (orchestrator::TranscodeSegment): demuxing an in-memory
// MPEG-TS or MP4 segment, probing its streams, decoding its video (in software), scaling and
// encoding one small rendition, with the audio copied. Bounded so that one input cannot run long:
// a 1 MiB input, 64 decoded and 128 encoded frames, 640x640 input, and 3 s of wall time (after
// which the call is cancelled).
#include <chrono>
#include <cstdint>
#include <vector>

#include "fuzz/ffmpeg_quiet.h"
#include "fuzz/fuzz_util.h"
#include "orchestrator/transcode/transcoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = switchyard::fuzz::QuietFfmpeg();
  (void)quiet;
  using switchyard::orchestrator::RenditionSpec;
  using switchyard::orchestrator::TranscodeOptions;
  RenditionSpec low;
  low.name = "low";
  low.width = 0;  // from the input's aspect ratio
  low.height = 64;
  low.bitrate_bps = 100'000;
  low.preset = "ultrafast";
  low.profile = "baseline";
  const std::vector<RenditionSpec> ladder = {low};

  TranscodeOptions options;
  options.container = "mpegts";
  options.max_renditions = 1;
  options.max_width = 640;
  options.max_height = 640;
  options.max_input_bytes = 1 << 20;
  options.encoder_threads = 1;
  options.parallel_renditions = false;
  options.hw_decode = "none";
  options.max_input_frames = 64;
  options.max_output_frames = 128;

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  auto result = switchyard::orchestrator::TranscodeSegment(
      switchyard::fuzz::AsView(data, size), ladder, options,
      [deadline] { return std::chrono::steady_clock::now() > deadline; });
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kCancelled) return 0;  // the time cap
    switchyard::fuzz::CheckInvalidArgument(result.status());
    return 0;
  }
  SWITCHYARD_FUZZ_CHECK(result->renditions.size() == 1, "one rendition asked, another count given");
  SWITCHYARD_FUZZ_CHECK(result->input_frames > 0 && result->input_frames <= options.max_input_frames,
                        "decoded frame count out of bounds");
  const auto& out = result->renditions[0];
  SWITCHYARD_FUZZ_CHECK(out.frames > 0 && out.frames <= options.max_output_frames,
                        "encoded frame count out of bounds");
  SWITCHYARD_FUZZ_CHECK(out.height == 64 && out.width > 0 && out.width % 2 == 0,
                        "rendition size is not 64 high with an even width");
  SWITCHYARD_FUZZ_CHECK(!out.data.empty(), "frames encoded but no output bytes");
  return 0;
}
