// `switchyard explain` (explain_command.cc).
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_commands.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

using ::testing::HasSubstr;

TEST_F(CliTest, ExplainTableMarksTheFavouriteAndSaysWhyNot) {
  EXPECT_EQ(Run({"explain", "--pipeline", "upscale", "--model", "esrgan", "--max-price", "1"}),
            kExitOk)
      << err_.str();
  const std::string out = out_.str();
  EXPECT_THAT(out, HasSubstr("NODE"));
  EXPECT_THAT(out, HasSubstr("WHY NOT"));
  EXPECT_THAT(out, HasSubstr("*  orch-1  10.0.0.1:50052  warm"));
  EXPECT_THAT(out, HasSubstr("0.25"));
  EXPECT_THAT(out, HasSubstr("50.00"));
  EXPECT_THAT(out, HasSubstr("asks more than the price cap (3 > 1 per unit)"));
  EXPECT_THAT(out, HasSubstr("2 of 2 node(s) offer upscale 'esrgan' (price cap 1); 1 can take a "
                             "job now"));
  const v1::ExplainRouteRequest request = gateway_.last_explain();
  EXPECT_EQ(request.pipeline(), "upscale");
  EXPECT_EQ(request.model_id(), "esrgan");
  EXPECT_DOUBLE_EQ(request.max_price_per_unit(), 1);

  EXPECT_EQ(Run({"--json", "explain", "--pipeline", "upscale", "--model", "esrgan"}), kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["candidates"][1]["filter"], "price_over_cap");
  EXPECT_EQ(json["eligible"], 1);
}

TEST_F(CliTest, ExplainFlagsAreCheckedBeforeCalling) {
  EXPECT_EQ(Run({"explain", "--model", "esrgan"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--pipeline"));
  EXPECT_EQ(Run({"explain", "--pipeline", "upscale", "--model", "esrgan", "--max-price", "-1"}),
            kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--max-price must be a number >= 0"));
  EXPECT_EQ(gateway_.calls(), 0);
}

TEST_F(CliTest, ExplainRefusedIsReported) {
  gateway_.set_error(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "operators' keys only"));
  EXPECT_NE(Run({"explain", "--pipeline", "upscale", "--model", "esrgan"}), kExitOk);
  EXPECT_THAT(err_.str(), HasSubstr("operators' keys only"));
}

}  // namespace
}  // namespace switchyard::cli
