#include "common/json_limits.h"

#include <gtest/gtest.h>

#include <string>

namespace switchyard {
namespace {

std::string Nested(int levels, const std::string& open, const std::string& close) {
  std::string s;
  for (int i = 0; i < levels; ++i) s += open;
  for (int i = 0; i < levels; ++i) s += close;
  return s;
}

TEST(JsonLimitsTest, AcceptsDocumentsAtTheLimit) {
  EXPECT_TRUE(CheckJsonDepth(Nested(kMaxJsonDepth, "[", "]")).ok());
  auto v = ParseJson(R"({"a": {"b": [1, 2, {"c": "]]]]"}]}})");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)["a"]["b"][2]["c"], "]]]]");
}

TEST(JsonLimitsTest, RefusesNestingPastTheLimitNamingIt) {
  auto st = CheckJsonDepth(Nested(kMaxJsonDepth + 1, "{\"a\":", "}"));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("deeper than 64 levels"), std::string::npos) << st;
}

TEST(JsonLimitsTest, AMillionLevelsIsRefusedWithoutRecursing) {
  // The body that crashed the gateway: ~2 MB of '['. Parsing it into a value and dumping it
  // overflows the stack; the check refuses it first.
  const std::string deep = "{\"params\":" + Nested(1'000'000, "[", "]") + "}";
  auto v = ParseJson(deep);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(JsonLimitsTest, BracketsInStringsAndEscapesDoNotCount) {
  std::string s = "[\"";
  for (int i = 0; i < 1000; ++i) s += "[{\\\"";
  s += "\"]";
  EXPECT_TRUE(CheckJsonDepth(s).ok());
  auto v = ParseJson(s);
  ASSERT_TRUE(v.ok()) << v.status();
}

TEST(JsonLimitsTest, UnbalancedClosersDoNotBuyDepth) {
  const std::string s = std::string(100, ']') + Nested(kMaxJsonDepth + 1, "[", "]");
  EXPECT_FALSE(CheckJsonDepth(s).ok());
}

TEST(JsonLimitsTest, MalformedJsonIsAnInvalidArgument) {
  auto v = ParseJson("{\"a\": ");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(v.status().message().find("malformed JSON"), std::string::npos);
}

}  // namespace
}  // namespace switchyard
