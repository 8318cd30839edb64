// `capabilities` and `orchestrators` (node_commands.cc).
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_commands.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(FormatCapabilitiesTest, ListsCapabilitiesAndOrchestrators) {
  const std::string text = FormatCapabilities(SampleCapabilities(), /*with_offers=*/false);
  EXPECT_THAT(text, HasSubstr("PIPELINE"));
  EXPECT_THAT(text, HasSubstr("esrgan-slim-x4"));
  EXPECT_THAT(text, HasSubstr("1.5e-06"));
  EXPECT_THAT(text, HasSubstr("pixel"));
  EXPECT_THAT(text, HasSubstr("10.0.0.1:50061"));
  EXPECT_THAT(text, HasSubstr("registered"));
  EXPECT_THAT(text, Not(HasSubstr("STATE")));
  EXPECT_THAT(FormatCapabilities(SampleCapabilities(), true), HasSubstr("STATE"));
  EXPECT_THAT(FormatCapabilities(v1::ListCapabilitiesResponse(), false),
              HasSubstr("no capabilities"));
}

TEST_F(CliTest, CapabilitiesTable) {
  EXPECT_EQ(Run({"capabilities", "--request-id", "req-42"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("esrgan-slim-x4"));
  EXPECT_THAT(out_.str(), HasSubstr("orch-1"));
  EXPECT_EQ(gateway_.last_request_id(), "req-42");
}

TEST_F(CliTest, CapabilitiesJson) {
  EXPECT_EQ(Run({"capabilities", "--json", "--pipeline", "transcode"}), kExitOk) << err_.str();
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["capabilities"][0]["pipeline"], "transcode");
  EXPECT_EQ(json["orchestrators"][0]["id"], "orch-1");
  // A random request id is sent when none is given.
  EXPECT_EQ(gateway_.last_request_id().size(), 32u);
}

TEST_F(CliTest, OrchestratorsGroupsOffersByNode) {
  EXPECT_EQ(Run({"orchestrators", "--offers"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("ORCHESTRATOR"));
  EXPECT_THAT(out_.str(), HasSubstr("10.0.0.1:50061"));
  EXPECT_THAT(out_.str(), HasSubstr("esrgan-slim-x4"));
  EXPECT_EQ(Run({"--json", "orchestrators"}), kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  ASSERT_EQ(json["orchestrators"].size(), 1u);
  EXPECT_EQ(json["orchestrators"][0]["id"], "orch-1");
  EXPECT_EQ(json["orchestrators"][0]["in_flight"], 3);
  ASSERT_EQ(json["orchestrators"][0]["offers"].size(), 1u);
  EXPECT_EQ(json["orchestrators"][0]["offers"][0]["model_id"], "esrgan-slim-x4");
  EXPECT_EQ(json["orchestrators"][0]["offers"][0]["state"], "ready");
}

}  // namespace
}  // namespace switchyard::cli
