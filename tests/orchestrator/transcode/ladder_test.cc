#include "orchestrator/transcode/ladder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace switchyard::orchestrator::transcode {
namespace {

using ::testing::HasSubstr;

RenditionSpec Entry(int width, int height) {
  RenditionSpec spec;
  spec.width = width;
  spec.height = height;
  spec.bitrate_bps = 500'000;
  return spec;
}

TEST(ValidateLadder, FillsInDefaults) {
  RenditionSpec spec = Entry(320, 0);
  spec.preset.clear();
  spec.profile.clear();
  auto ladder = ValidateLadder({spec}, TranscodeOptions{});
  ASSERT_TRUE(ladder.ok()) << ladder.status();
  EXPECT_EQ((*ladder)[0].preset, "veryfast");
  EXPECT_EQ((*ladder)[0].profile, "main");
  EXPECT_EQ((*ladder)[0].gop_seconds, 2);
}

TEST(ValidateLadder, NamesTheFirstBadEntryAndField) {
  RenditionSpec odd = Entry(321, 240);
  auto status = ValidateLadder({Entry(320, 240), odd}, TranscodeOptions{}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("renditions[1].width: must be even"));

  TranscodeOptions mkv;
  mkv.container = "mkv";
  EXPECT_THAT(ValidateLadder({odd}, mkv).status().message(), HasSubstr("container:"));
  EXPECT_THAT(ValidateLadder({}, TranscodeOptions{}).status().message(),
              HasSubstr("the ladder is empty"));
}

TEST(ValidateCodecOptions, RejectsUnknownValuesAndFillsDefaults) {
  TranscodeOptions options;
  options.hw_decode.clear();
  options.audio_codec.clear();
  options.encoder_threads = 99;
  ASSERT_TRUE(ValidateCodecOptions(options).ok());
  EXPECT_EQ(options.hw_decode, "auto");
  EXPECT_EQ(options.audio_codec, "copy");
  EXPECT_EQ(options.encoder_threads, 16);
  options.hw_encode = "quicksync";
  EXPECT_THAT(ValidateCodecOptions(options).message(), HasSubstr("hw_encode:"));
}

TEST(ResolveRenditionSize, KeepsTheAspectWithEvenSizes) {
  TranscodeOptions options;
  RenditionSpec by_height = Entry(0, 360);
  ASSERT_TRUE(ResolveRenditionSize(0, 16.0 / 9, 1080, options, by_height).ok());
  EXPECT_EQ(by_height.width, 640);
  EXPECT_EQ(by_height.name, "360p");
  RenditionSpec by_width = Entry(101 * 2, 0);
  ASSERT_TRUE(ResolveRenditionSize(0, 4.0 / 3, 480, options, by_width).ok());
  EXPECT_EQ(by_width.height % 2, 0);
  RenditionSpec input_size = Entry(0, 0);
  ASSERT_TRUE(ResolveRenditionSize(0, 1, 241, options, input_size).ok());
  EXPECT_EQ(input_size.width, 242);
  EXPECT_EQ(input_size.height, 242);

  options.max_width = 1000;
  RenditionSpec too_wide = Entry(0, 720);
  auto status = ResolveRenditionSize(2, 21.0 / 9, 1080, options, too_wide);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("renditions[2].width: the output would be"));
}

}  // namespace
}  // namespace switchyard::orchestrator::transcode
