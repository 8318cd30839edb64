// Test media made on the spot with the ffmpeg CLI (never downloaded), plus small file helpers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "orchestrator/transcode/transcode_types.h"

namespace switchyard::testing {

// A fresh directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs a shell command; returns its exit status (or -1). Output goes to `log` when given.
int RunCommand(const std::string& command, std::string* log = nullptr);

std::string ReadFile(const std::filesystem::path& path);
void WriteFile(const std::filesystem::path& path, const std::string& data);

// Generates a testsrc2 image of the given size with ffmpeg. `format` is "png" or "jpg".
std::string MakeTestImage(const TempDir& dir, int width, int height, const std::string& format);

// The font RenderTextPng draws with (Debian's fonts-dejavu-core, scripts/install-deps).
inline constexpr char kTestFontFile[] = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

// Renders `lines` (UTF-8, one row each) in black DejaVu Sans at `font_size` pixels on a white
// image with ffmpeg's drawtext, as a PNG wide enough for the longest line; returns its bytes.
// Throws std::runtime_error when ffmpeg or the font is missing.
std::string RenderTextPng(const TempDir& dir, const std::vector<std::string>& lines,
                          int font_size = 28);

struct SegmentSpec {
  int width = 320;
  int height = 240;
  std::string fps = "30";  // any ffmpeg rate, e.g. "30000/1001"
  double seconds = 2.0;
  double gop_seconds = 2.0;          // keyframe interval of the source
  bool audio = false;                // add a sine track
  std::string audio_codec = "aac";   // its codec (ffmpeg encoder name), e.g. "mp2"
  int audio_rate = 48000;            // and sample rate
  std::string container = "mpegts";  // "mpegts" or "mp4"
  std::string codec = "libx264";
};

// Generates an H.264 segment with testsrc2; returns its bytes.
std::string MakeTestSegment(const TempDir& dir, const SegmentSpec& spec);

// Runs ffprobe and returns "width height frames" facts about the first video stream of `data`.
struct ProbeResult {
  bool ok = false;
  int width = 0;
  int height = 0;
  int frames = 0;  // counted by decoding (-count_frames)
  std::string codec;
  std::string error;
};
ProbeResult ProbeVideo(const TempDir& dir, const std::string& data, const std::string& ext);

// Like MakeTestImage, with the output pixel format forced (e.g. "gray", "rgba", "rgb48be").
std::string MakeTestImageWithPixFmt(const TempDir& dir, int width, int height,
                                    const std::string& format, const std::string& pix_fmt);

// Generates a segment from the lavfi `source` ("testsrc2", or "testsrc", which keeps odd sizes)
// with full control over the ffmpeg output arguments, e.g. "-c:v libx264 -pix_fmt yuv444p -f
// mpegts" (for sizes yuv420p cannot hold). `ext` names the file.
std::string MakeTestSegmentWithArgs(const TempDir& dir, int width, int height,
                                    const std::string& fps, double seconds,
                                    const std::string& output_args, const std::string& ext,
                                    const std::string& source = "testsrc2");

// Per-frame facts about the first video stream, in presentation order, from ffprobe -show_frames.
struct ProbedFrame {
  bool key_frame = false;
  std::string pict_type;  // "I", "P", "B"
  double pts_time = 0;
};
// Empty on failure (`error` then says why, when given).
std::vector<ProbedFrame> ProbeFrames(const TempDir& dir, const std::string& data,
                                     const std::string& ext, std::string* error = nullptr);

// Per-packet DTS (seconds) of stream `stream_spec` (e.g. "v:0", "a:0"), in file order.
std::vector<double> ProbePacketDts(const TempDir& dir, const std::string& data,
                                   const std::string& ext, const std::string& stream_spec);

// Number of streams of the given type ("video" or "audio"), or -1 when ffprobe fails.
int ProbeStreamCount(const TempDir& dir, const std::string& data, const std::string& ext,
                     const std::string& codec_type);

// A ladder entry for the transcoder tests: `width` x `height` (0 derives one from the input's
// aspect) at `bitrate_bps`, ultrafast, at fps_num/fps_den (0/0 keeps the input rate).
orchestrator::RenditionSpec TestRendition(int width, int height, int64_t bitrate_bps,
                                          int fps_num = 0, int fps_den = 0);

// What a media file holds, read back in-process with libavformat.
struct Demuxed {
  std::string error;  // empty when it demuxed cleanly with strictly increasing DTS in every stream
  int video_streams = 0;
  int audio_streams = 0;
  int width = 0;
  int height = 0;
  std::vector<double> video_dts;  // seconds, file order
  std::vector<double> video_pts;  // seconds, file order
  std::vector<bool> video_key;    // per video packet, file order
  int64_t audio_packets = 0;
  std::vector<double> audio_dts;  // seconds, every audio stream, file order

  int keyframes() const;
  // Display-order positions of the keyframes.
  std::vector<int> keyframe_positions() const;
};
// Demuxes an MPEG-TS or MP4 in memory, checking that every stream's DTS strictly increase.
Demuxed Demux(const std::string& data);

}  // namespace switchyard::testing
