// Config and API key files nested past the JSON depth limit (issue 18): a file nested ~100k
// levels deep parsed, and then the field readers' error message (a dump() of the value)
// overflowed the stack. Now the parse refuses it, naming the limit.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "common/config.h"
#include "gateway/billing/api_keys.h"
#include "gateway/gateway_config.h"
#include "support/media_fixtures.h"

namespace switchyard::gateway {
namespace {

std::string Deep(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

TEST(DeepJsonFilesTest, GatewayConfigPastTheLimitIsRefusedNamingIt) {
  auto c = ParseGatewayConfig(R"({"gateway_id": )" + Deep(1000000) + "}", "gw.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("gw.json: invalid JSON: JSON nested deeper than 64 levels"),
            std::string::npos)
      << c.status();
}

TEST(DeepJsonFilesTest, ApiKeysPastTheLimitAreRefusedNamingIt) {
  auto k =
      ParseApiKeys(R"({"keys": [{"id": )" + Deep(1000000) + R"(, "sha256": "x"}]})", "keys.json");
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.status().message().find("keys.json: invalid JSON: JSON nested deeper than 64"),
            std::string::npos)
      << k.status();
}

TEST(DeepJsonFilesTest, LoadJsonFilePastTheLimitIsRefusedNamingIt) {
  testing::TempDir tmp;
  const auto file = tmp.path() / "deep.json";
  std::ofstream(file) << R"({"a": )" << Deep(1000000) << "}";
  auto j = LoadJsonFile(file);
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("invalid JSON: JSON nested deeper than 64 levels"),
            std::string::npos)
      << j.status();
  // At the limit: an ordinary document.
  std::ofstream(file) << Deep(64);
  EXPECT_TRUE(LoadJsonFile(file).ok());
}

}  // namespace
}  // namespace switchyard::gateway
