#include "common/secure_random.h"

#include <gtest/gtest.h>

#include <set>

namespace switchyard {
namespace {

TEST(SecureRandomTest, HexIdsHaveTheAskedLengthAndDoNotRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = SecureRandomHex();
    ASSERT_EQ(id.size(), 32u);
    ASSERT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
    EXPECT_TRUE(seen.insert(id).second) << "repeated id " << id;
  }
  EXPECT_EQ(SecureRandomHex(4).size(), 8u);
}

TEST(SecureRandomTest, U64ValuesDoNotRepeat) {
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(seen.insert(SecureRandomU64()).second);
}

}  // namespace
}  // namespace switchyard
