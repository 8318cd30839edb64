// `switchyard usage` (usage_command.cc).
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_commands.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

using ::testing::HasSubstr;

TEST_F(CliTest, UsageTableAndTimeRange) {
  EXPECT_EQ(
      Run({"usage", "--since", "1700000000", "--until", "2026-11-29T12:00:00Z", "--key", "*"}),
      kExitOk)
      << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("KEY    PIPELINE  MODEL     JOBS  UNITS  UNIT   AMOUNT"));
  EXPECT_THAT(out_.str(), HasSubstr("key-1  llm       tiny-llm  3     120    token  0.25"));
  EXPECT_THAT(out_.str(), HasSubstr("total: 3 jobs, amount 0.25\n"));
  const v1::GetUsageRequest request = gateway_.last_usage();
  EXPECT_EQ(request.since_unix(), 1700000000);
  EXPECT_EQ(request.until_unix(), 1795953600);
  EXPECT_EQ(request.api_key_id(), "*");

  EXPECT_EQ(Run({"--json", "usage"}), kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["totals"][0]["model_id"], "tiny-llm");
  EXPECT_EQ(json["jobs"], "3");  // proto JSON writes int64 as a string
}

TEST_F(CliTest, UsageBadTimesExitTwoWithoutCalling) {
  EXPECT_EQ(Run({"usage", "--since", "yesterday"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--since 'yesterday' is neither Unix seconds nor an RFC 3339"));
  EXPECT_EQ(Run({"usage", "--until", "-5"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--until must be >= 0"));
  EXPECT_EQ(gateway_.calls(), 0);
}

}  // namespace
}  // namespace switchyard::cli
