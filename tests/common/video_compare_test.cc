// Comparison of two encoded videos by their decoded frames (common/media/video_compare.h), over
// renditions made by the ffmpeg CLI: the same frames encoded differently agree, other content,
// another frame count or shifted timestamps do not, and what is not a video is refused.
#include "common/media/video_compare.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "support/media_fixtures.h"

namespace switchyard::media {
namespace {

using ::switchyard::testing::ReadFile;
using ::switchyard::testing::RunCommand;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;

class VideoCompareTest : public ::testing::Test {
 protected:
  // One second of `source` (a lavfi graph) at 25 fps, 160x96, H.264 with `args`, in MPEG-TS.
  std::string Encode(const std::string& name, const std::string& args,
                     const std::string& source = "testsrc2=size=160x96:rate=25:duration=1") {
    auto path = dir_.path() / name;
    std::string log;
    EXPECT_EQ(RunCommand(absl::StrCat("ffmpeg -nostdin -loglevel error -y -f lavfi -i ", source,
                                      " -c:v libx264 -pix_fmt yuv420p ", args, " ", path.string()),
                         &log),
              0)
        << log;
    return ReadFile(path);
  }

  TempDir dir_;
  VideoCompareLimits limits_;
};

TEST_F(VideoCompareTest, TheSameVideoIsIdentical) {
  const std::string a = Encode("a.ts", "-crf 18 -f mpegts");
  auto c = CompareVideos(a, a, limits_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->frames_a, 25);
  EXPECT_EQ(c->frames_b, 25);
  EXPECT_TRUE(c->SameShape());
  EXPECT_TRUE(std::isinf(c->psnr_db));
}

TEST_F(VideoCompareTest, AnotherEncodingOfTheSameFramesAgrees) {
  // Other encoder settings (as another node's thread count would give): other bytes, the same
  // frames and timestamps, pixels within a few levels.
  const std::string a = Encode("a.ts", "-crf 18 -preset medium -threads 1 -f mpegts");
  const std::string b = Encode("b.ts", "-crf 18 -preset veryfast -threads 4 -f mpegts");
  ASSERT_NE(a, b);
  auto c = CompareVideos(a, b, limits_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->SameShape()) << c->difference;
  EXPECT_EQ(c->frames_a, 25);
  EXPECT_GT(c->psnr_db, 35);
  EXPECT_FALSE(std::isinf(c->psnr_db));
}

TEST_F(VideoCompareTest, OtherContentScoresLow) {
  const std::string a = Encode("a.ts", "-crf 18 -f mpegts");
  // The same test pattern with its colours inverted on every frame: same shape, wrong pixels.
  const std::string b = Encode("b.ts", "-crf 18 -vf negate -f mpegts");
  auto c = CompareVideos(a, b, limits_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->SameShape()) << c->difference;
  EXPECT_LT(c->psnr_db, 15);
}

TEST_F(VideoCompareTest, FrameCountTimestampsAndSizeDiffer) {
  const std::string a = Encode("a.ts", "-crf 18 -f mpegts");
  auto shorter = CompareVideos(a, Encode("short.ts", "-crf 18 -frames:v 20 -f mpegts"), limits_);
  ASSERT_TRUE(shorter.ok()) << shorter.status();
  EXPECT_EQ(shorter->frames_a, 25);
  EXPECT_EQ(shorter->frames_b, 20);
  EXPECT_FALSE(shorter->SameShape());

  auto shifted =
      CompareVideos(a, Encode("shifted.ts", "-crf 18 -output_ts_offset 0.2 -f mpegts"), limits_);
  ASSERT_TRUE(shifted.ok()) << shifted.status();
  EXPECT_FALSE(shifted->SameShape());
  EXPECT_EQ(shifted->first_different_frame, 0);
  EXPECT_THAT(shifted->difference, HasSubstr("us against"));

  auto smaller = CompareVideos(
      a, Encode("small.ts", "-crf 18 -f mpegts", "testsrc2=size=128x96:rate=25:duration=1"),
      limits_);
  ASSERT_TRUE(smaller.ok()) << smaller.status();
  EXPECT_EQ(smaller->first_different_frame, 0);
  EXPECT_THAT(smaller->difference, HasSubstr("160x96 against 128x96"));
}

TEST_F(VideoCompareTest, Mp4RenditionsCompareToo) {
  const std::string a = Encode("a.mp4", "-crf 18 -movflags +faststart -f mp4");
  const std::string b = Encode("b.mp4", "-crf 18 -preset veryfast -f mp4");
  auto c = CompareVideos(a, b, limits_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->SameShape()) << c->difference;
  EXPECT_GT(c->psnr_db, 35);
}

TEST_F(VideoCompareTest, HostileInputIsRefusedNamingTheVideo) {
  const std::string a = Encode("a.ts", "-crf 18 -f mpegts");
  auto garbage = CompareVideos(a, std::string(4096, 'x'), limits_);
  ASSERT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(garbage.status().message(), HasSubstr("second video"));
  EXPECT_EQ(CompareVideos("", a, limits_).status().code(), absl::StatusCode::kInvalidArgument);
  // Truncated: what decodes is compared, the frame counts differ.
  auto truncated = CompareVideos(a, a.substr(0, a.size() / 2), limits_);
  if (truncated.ok()) {
    EXPECT_LT(truncated->frames_b, truncated->frames_a);
    EXPECT_FALSE(truncated->SameShape());
  } else {
    EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // A WAV is audio in a container the comparison does not open.
  std::string log;
  auto wav = dir_.path() / "a.wav";
  ASSERT_EQ(RunCommand(absl::StrCat("ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                                    "sine=duration=0.2 ",
                                    wav.string()),
                       &log),
            0)
      << log;
  EXPECT_EQ(CompareVideos(a, ReadFile(wav), limits_).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Over the limits: frame size and frame count.
  VideoCompareLimits tight;
  tight.max_frame_pixels = 160 * 96 - 1;
  auto big = CompareVideos(a, a, tight);
  ASSERT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("more than"));
  tight = VideoCompareLimits();
  tight.max_frames = 10;
  auto many = CompareVideos(a, a, tight);
  ASSERT_EQ(many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(many.status().message(), HasSubstr("more than 10 frames"));
}

}  // namespace
}  // namespace switchyard::media
