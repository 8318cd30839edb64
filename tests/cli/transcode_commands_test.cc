// `transcode` (transcode_commands.cc).
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cli/cli_commands.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

using ::testing::HasSubstr;

TEST_F(CliTest, TranscodeWritesOneFilePerRendition) {
  WriteAll(Path("seg.ts"), std::string(188, 'G'));
  EXPECT_EQ(Run({"transcode", "--in", Path("seg.ts"), "--out", Path("out/ladder"), "--rendition",
                 "1280x720:3000k", "--rendition", "0x360:800k@30", "--rendition",
                 "mid=854x480:1.6M", "--fps", "30000/1001", "--preset", "fast", "--gop", "2"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(ReadAll(Path("out/ladder/720p.ts")).size(), 3000u);
  EXPECT_EQ(ReadAll(Path("out/ladder/360p.ts")).size(), 800u);
  EXPECT_EQ(ReadAll(Path("out/ladder/mid.ts")).size(), 1600u);
  EXPECT_THAT(out_.str(), HasSubstr("1280x720"));
  EXPECT_THAT(out_.str(), HasSubstr("30 frames"));
  EXPECT_THAT(out_.str(), HasSubstr("3000 bytes"));
  EXPECT_THAT(out_.str(), HasSubstr("into 3 renditions"));

  const v1::TranscodeRequest request = gateway_.last_transcode();
  ASSERT_EQ(request.renditions_size(), 3);
  EXPECT_EQ(request.container(), "mpegts");
  EXPECT_EQ(request.renditions(0).fps_num(), 30000);  // from --fps
  EXPECT_EQ(request.renditions(0).fps_den(), 1001);
  EXPECT_EQ(request.renditions(1).fps_num(), 30);  // from @30
  EXPECT_EQ(request.renditions(1).fps_den(), 1);
  EXPECT_EQ(request.renditions(2).preset(), "fast");
  EXPECT_EQ(request.renditions(2).gop_seconds(), 2.0);
}

TEST_F(CliTest, TranscodeJsonMp4) {
  WriteAll(Path("seg.mp4"), std::string(100, 'G'));
  EXPECT_EQ(Run({"transcode", "--json", "--in", Path("seg.mp4"), "--out", Path("out"),
                 "--rendition", "640x360:1M", "--container", "mp4"}),
            kExitOk)
      << err_.str();
  const auto json = nlohmann::json::parse(out_.str());
  ASSERT_EQ(json["renditions"].size(), 1u);
  EXPECT_EQ(json["renditions"][0]["path"], Path("out/360p.mp4"));
  EXPECT_EQ(json["renditions"][0]["bytes"], 1000);
  EXPECT_EQ(json["renditions"][0]["frames"], 30);
  EXPECT_EQ(json["job"]["model_id"], "libx264");
  EXPECT_TRUE(fs::exists(Path("out/360p.mp4")));
}

TEST_F(CliTest, TranscodeValidationExitsTwoWithoutCalling) {
  WriteAll(Path("seg.ts"), std::string(188, 'G'));
  EXPECT_EQ(
      Run({"transcode", "--in", Path("seg.ts"), "--out", Path("o"), "--rendition", "1280x720"}),
      kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("invalid rendition"));
  EXPECT_EQ(Run({"transcode", "--in", Path("seg.ts"), "--out", Path("o"), "--rendition",
                 "1280x720:3M", "--rendition", "1280x720:1M"}),
            kExitUsage);
  EXPECT_EQ(Run({"transcode", "--in", Path("missing.ts"), "--out", Path("o"), "--rendition",
                 "1280x720:3M"}),
            kExitUsage);
  WriteAll(Path("file"), "x");
  EXPECT_EQ(Run({"transcode", "--in", Path("seg.ts"), "--out", Path("file"), "--rendition",
                 "1280x720:3M"}),
            kExitUsage);
  std::vector<std::string> nine = {"transcode", "--in", Path("seg.ts"), "--out", Path("o")};
  for (int i = 0; i < 9; ++i) {
    nine.push_back("--rendition");
    nine.push_back(absl::StrCat("r", i, "=640x360:1M"));
  }
  EXPECT_EQ(Run(nine), kExitUsage);
  EXPECT_EQ(gateway_.calls(), 0);
}

}  // namespace
}  // namespace switchyard::cli
