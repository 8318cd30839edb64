// The CLI's files (cli_files.cc): image and WAV probes, safe output names, atomic writes.
#include <optional>
#include <string>
#include <utility>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/cli_commands.h"
#include "cli/cli_files.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

TEST(ProbeImageSizeTest, ReadsPngAndJpegHeaders) {
  EXPECT_EQ(*ProbeImageSize(PngHeader(640, 480)), std::make_pair(640, 480));
  EXPECT_EQ(*ProbeImageSize(JpegHeader(1920, 1080)), std::make_pair(1920, 1080));
}

TEST(ProbeImageSizeTest, RejectsOtherData) {
  EXPECT_FALSE(ProbeImageSize("").ok());
  EXPECT_FALSE(ProbeImageSize("GIF89a....").ok());
  EXPECT_FALSE(ProbeImageSize(PngHeader(640, 480).substr(0, 20)).ok());
  EXPECT_FALSE(ProbeImageSize(JpegHeader(640, 480).substr(0, 24)).ok());
  EXPECT_FALSE(ProbeImageSize(PngHeader(0, 480)).ok());
}

TEST(SafeNameTest, AcceptsFileNamesAndSanitizesOthers) {
  EXPECT_TRUE(internal::IsSafeName("720p_hi-1.ts"));
  EXPECT_FALSE(internal::IsSafeName(""));
  EXPECT_FALSE(internal::IsSafeName(".hidden"));
  EXPECT_FALSE(internal::IsSafeName("../x"));
  EXPECT_FALSE(internal::IsSafeName(std::string(65, 'a')));
  EXPECT_EQ(internal::SanitizeName("a b/c"), "a_b_c");
  EXPECT_EQ(internal::SanitizeName(".x"), "r.x");
  EXPECT_EQ(internal::SanitizeName(""), "r");
}

TEST_F(CliTest, WriteFileAtomicallyReplacesTheFileAndLeavesNoTemporary) {
  WriteAll(Path("out.bin"), "old");
  ASSERT_TRUE(internal::WriteFileAtomically(Path("out.bin"), "new").ok());
  EXPECT_EQ(ReadAll(Path("out.bin")), "new");
  int files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 1);
  EXPECT_FALSE(internal::WriteFileAtomically(Path("missing/out.bin"), "x").ok());
  EXPECT_FALSE(internal::CheckWritableFile(dir_.string()).ok());
  EXPECT_TRUE(internal::CheckWritableFile(Path("new.bin")).ok());
}

}  // namespace
}  // namespace switchyard::cli
