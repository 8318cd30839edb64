// Rendition ladders: ParseBitrate, ParseFps, ParseRendition, RenditionBaseName (renditions.cc).
#include <utility>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/cli_commands.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::cli {
namespace {

namespace v1 = switchyard::v1;

TEST(ParseBitrateTest, AcceptsPlainAndSuffixedValues) {
  EXPECT_EQ(*ParseBitrate("800000"), 800000);
  EXPECT_EQ(*ParseBitrate("3000k"), 3000000);
  EXPECT_EQ(*ParseBitrate("3000K"), 3000000);
  EXPECT_EQ(*ParseBitrate("3M"), 3000000);
  EXPECT_EQ(*ParseBitrate("3m"), 3000000);
  EXPECT_EQ(*ParseBitrate("2.5M"), 2500000);
  EXPECT_EQ(*ParseBitrate("1.5k"), 1500);
  EXPECT_EQ(*ParseBitrate(".5M"), 500000);
}

TEST(ParseBitrateTest, RejectsBadValues) {
  for (const char* bad : {"", "k", "M", "0", "0k", "-3M", "3G", "abc", "3 M", "1.5", "3.M", "1e6",
                          "1.0000001M", "99999999999999M"}) {
    EXPECT_FALSE(ParseBitrate(bad).ok()) << bad;
  }
}

TEST(ParseFpsTest, AcceptsIntegersFractionsAndDecimals) {
  EXPECT_EQ(*ParseFps("30"), std::make_pair(30, 1));
  EXPECT_EQ(*ParseFps("30000/1001"), std::make_pair(30000, 1001));
  EXPECT_EQ(*ParseFps("60/2"), std::make_pair(30, 1));
  EXPECT_EQ(*ParseFps("29.97"), std::make_pair(30000, 1001));
  EXPECT_EQ(*ParseFps("12.5"), std::make_pair(25, 2));
}

TEST(ParseFpsTest, RejectsBadValues) {
  for (const char* bad : {"", "0", "-30", "30/0", "/2", "30/", "x", "1.", ".5", "100000", "1/-2"}) {
    EXPECT_FALSE(ParseFps(bad).ok()) << bad;
  }
}

TEST(ParseRenditionTest, ParsesSizeBitrateAndFps) {
  absl::StatusOr<v1::Rendition> r = ParseRendition("1280x720:3000k");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->width(), 1280);
  EXPECT_EQ(r->height(), 720);
  EXPECT_EQ(r->bitrate_bps(), 3000000);
  EXPECT_EQ(r->fps_num(), 0);
  EXPECT_EQ(r->fps_den(), 0);
  EXPECT_EQ(r->name(), "");

  r = ParseRendition("low=0x360:800000@30000/1001");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name(), "low");
  EXPECT_EQ(r->width(), 0);
  EXPECT_EQ(r->height(), 360);
  EXPECT_EQ(r->bitrate_bps(), 800000);
  EXPECT_EQ(r->fps_num(), 30000);
  EXPECT_EQ(r->fps_den(), 1001);

  r = ParseRendition("854X0:1.6M@25");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->width(), 854);
  EXPECT_EQ(r->height(), 0);
  EXPECT_EQ(r->bitrate_bps(), 1600000);
  EXPECT_EQ(r->fps_num(), 25);
  EXPECT_EQ(r->fps_den(), 1);
}

TEST(ParseRenditionTest, RejectsBadSyntax) {
  for (const char* bad :
       {"", "1280x720", "1280x720:", "1280:3000k", "x720:3000k", "1280x:3000k", "0x0:1M",
        "1281x720:1M", "1280x721:1M", "-2x720:1M", "1280x720:3000k@", "1280x720:3000k@0",
        "1280x720:fast", "99999x720:1M", "../x=1280x720:1M", "a b=1280x720:1M", "=1280x720:1M"}) {
    EXPECT_FALSE(ParseRendition(bad).ok()) << bad;
  }
}

TEST(RenditionBaseNameTest, PrefersNameThenHeight) {
  v1::Rendition r;
  r.set_height(720);
  EXPECT_EQ(RenditionBaseName(r, 720, 0), "720p");
  r.set_height(0);
  EXPECT_EQ(RenditionBaseName(r, 480, 0), "480p");
  EXPECT_EQ(RenditionBaseName(r, 0, 2), "rendition3");
  r.set_name("hi");
  EXPECT_EQ(RenditionBaseName(r, 480, 0), "hi");
}

}  // namespace
}  // namespace switchyard::cli
