#include "common/logging.h"

#include <gtest/gtest.h>

#include <string>

namespace switchyard {
namespace {

TEST(LogSafeTest, KeepsPrintableAsciiAsIs) {
  EXPECT_EQ(LogSafe("esrgan-slim-x4 (v2) [ok] 'q' {}"), "esrgan-slim-x4 (v2) [ok] 'q' {}");
  EXPECT_EQ(LogSafe(""), "");
}

TEST(LogSafeTest, EscapesWhatCouldForgeOrRewriteALine) {
  EXPECT_EQ(LogSafe("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(LogSafe("\x1b[2J"), "\\u001b[2J");
  EXPECT_EQ(LogSafe(std::string("nul\0x", 5)), "nul\\u0000x");
  EXPECT_EQ(LogSafe("\x7f"), "\\u007f");
  // Quotes and backslashes: a JSON log line (log.format json) stays one string.
  EXPECT_EQ(LogSafe(R"(a"b\c)"), R"(a\"b\\c)");
  // Bytes >= 0x80 (UTF-8 or not) by value.
  EXPECT_EQ(LogSafe("caf\xc3\xa9"), "caf\\u00c3\\u00a9");
}

TEST(LogSafeTest, CutsLongStringsNamingTheirSize) {
  EXPECT_EQ(LogSafe(std::string(128, 'x')), std::string(128, 'x'));
  EXPECT_EQ(LogSafe(std::string(129, 'x')), std::string(128, 'x') + "...(129 bytes)");
  EXPECT_EQ(LogSafe("abcdef", 3), "abc...(6 bytes)");
  // Bounded whatever the input: a megabyte of control bytes.
  const std::string flood(1 << 20, '\x01');
  const std::string out = LogSafe(flood);
  EXPECT_EQ(out.size(), 128u * 6 + std::string("...(1048576 bytes)").size());
  for (char c : out) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << static_cast<int>(c);
}

}  // namespace
}  // namespace switchyard
