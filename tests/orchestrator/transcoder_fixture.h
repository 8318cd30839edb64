// The fixture and output checks shared by the transcoder's tests (transcoder_test.cc: outputs,
// timing and hardware; transcoder_input_test.cc: bad, cut and odd inputs and the limits).
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "orchestrator/transcode/transcoder.h"
#include "support/media_fixtures.h"

namespace switchyard::orchestrator::transcoder_test {

using ::switchyard::testing::Demuxed;
using ::switchyard::testing::MakeTestSegment;
using ::switchyard::testing::MakeTestSegmentWithArgs;
using ::switchyard::testing::ProbeVideo;
using ::switchyard::testing::SegmentSpec;
using ::switchyard::testing::TempDir;

// A ladder entry at 300 kbit/s, ultrafast.
RenditionSpec Spec(int width, int height, int fps_num = 0, int fps_den = 0);

// The file extension of `container`'s outputs.
std::string Ext(const std::string& container);

// Every output must pass this: it demuxes, DTS increases in every stream, the video packet count
// is the reported frame count, and the first video packet is a keyframe.
Demuxed CheckOutput(const RenditionOutput& out, const std::string& what);

// Output timestamps are evenly spaced at `rate` frames per second.
void ExpectEvenlySpaced(const Demuxed& d, double rate, const std::string& what);

class TranscoderTest : public ::testing::Test {
 protected:
  // The 2 s, 30 fps, 320x240 MPEG-TS segment most tests use.
  const std::string& Segment() {
    if (segment_.empty()) segment_ = MakeTestSegment(dir_, SegmentSpec{});
    return segment_;
  }

  // An MPEG-TS segment with only an AAC track (a sine) of `seconds`, and no video; empty (with a
  // test failure) if ffmpeg fails.
  std::string AudioOnlySegment(int seconds) {
    const auto path = dir_.path() / absl::StrCat("audio-only-", seconds, "s.ts");
    std::string log;
    const int rc = switchyard::testing::RunCommand(
        absl::StrCat("ffmpeg -nostdin -loglevel error -y -f lavfi -i sine=duration=", seconds,
                     " -c:a aac -f mpegts ", path.string()),
        &log);
    EXPECT_EQ(rc, 0) << log;
    return rc == 0 ? switchyard::testing::ReadFile(path) : std::string();
  }

  // Transcoding must succeed; checks each output with ffprobe against the reported facts.
  TranscodeResult TranscodeOk(const std::string& input, const std::vector<RenditionSpec>& ladder,
                              const TranscodeOptions& options = {}) {
    auto result = TranscodeSegment(input, ladder, options);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return {};
    EXPECT_EQ(result->renditions.size(), ladder.size());
    for (const RenditionOutput& out : result->renditions) {
      auto probe = ProbeVideo(dir_, out.data, Ext(options.container));
      EXPECT_TRUE(probe.ok) << out.spec.name << ": " << probe.error;
      EXPECT_EQ(probe.codec, "h264") << out.spec.name;
      EXPECT_EQ(probe.width, out.width) << out.spec.name;
      EXPECT_EQ(probe.height, out.height) << out.spec.name;
      EXPECT_EQ(probe.frames, out.frames) << out.spec.name;
      CheckOutput(out, options.container);
    }
    return *std::move(result);
  }

  // Transcoding must succeed; every output is checked in-process (CheckOutput).
  TranscodeResult Checked(const std::string& input, const std::vector<RenditionSpec>& ladder,
                          const TranscodeOptions& options = {}, const std::string& what = "") {
    auto result = TranscodeSegment(input, ladder, options);
    EXPECT_TRUE(result.ok()) << what << ": " << result.status();
    if (!result.ok()) return {};
    EXPECT_EQ(result->renditions.size(), ladder.size()) << what;
    for (const RenditionOutput& out : result->renditions) {
      CheckOutput(out, what + " -> " + options.container);
    }
    return *std::move(result);
  }

  // An H.264 segment of `frames` frames at `fps`, 160x90, in `container` ("mpegts" or "mp4").
  std::string Frames(int frames, const std::string& fps, const std::string& container = "mpegts",
                     const std::string& extra = "-preset ultrafast") {
    return MakeTestSegmentWithArgs(dir_, 160, 90, fps, 30.0,
                                   "-frames:v " + std::to_string(frames) + " -c:v libx264 " +
                                       extra + " -pix_fmt yuv420p -f " + container,
                                   Ext(container));
  }

  TempDir dir_;
  std::string segment_;
};

}  // namespace switchyard::orchestrator::transcoder_test
