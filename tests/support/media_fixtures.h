// Test media made on the spot with the ffmpeg CLI (never downloaded), plus small file helpers.
#pragma once

#include <filesystem>
#include <string>

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

struct SegmentSpec {
  int width = 320;
  int height = 240;
  std::string fps = "30";     // any ffmpeg rate, e.g. "30000/1001"
  double seconds = 2.0;
  double gop_seconds = 2.0;   // keyframe interval of the source
  bool audio = false;         // add a sine AAC track
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
  int frames = 0;        // counted by decoding (-count_frames)
  std::string codec;
  std::string error;
};
ProbeResult ProbeVideo(const TempDir& dir, const std::string& data, const std::string& ext);

}  // namespace switchyard::testing
