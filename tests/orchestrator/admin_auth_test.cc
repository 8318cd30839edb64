// Unit tests for AdminAuth (orchestrator/serving/admin_auth.h): who may call LoadModel, UnloadModel and
// CloseTranscodeSession. Issue 18, "Orchestrator admin calls": before, anyone could.
#include "orchestrator/serving/admin_auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "orchestrator/orchestrator_config.h"

namespace switchyard::orchestrator {
namespace {

using ::testing::HasSubstr;

TEST(AdminAuthTest, OpenWithoutCredentials) {
  AdminAuth open({}, "");
  EXPECT_TRUE(open.open());
  EXPECT_TRUE(open.Check("LoadModel", std::nullopt, std::nullopt).ok());
  EXPECT_TRUE(AdminAuth({"", ""}, "").open());  // empty strings are not credentials
  EXPECT_TRUE(AdminAuth::FromConfig(OrchestratorConfig()).open());
}

TEST(AdminAuthTest, RegistrationSecretsAndAdminTokenAdmit) {
  AdminAuth auth({"gw-secret", "other-gw-secret"}, "op-token");
  EXPECT_FALSE(auth.open());
  EXPECT_TRUE(auth.Check("LoadModel", "gw-secret", std::nullopt).ok());
  EXPECT_TRUE(auth.Check("LoadModel", "other-gw-secret", std::nullopt).ok());
  EXPECT_TRUE(auth.Check("UnloadModel", std::nullopt, "Bearer op-token").ok());
  EXPECT_TRUE(auth.Check("UnloadModel", std::nullopt, "bearer op-token").ok());
  // A wrong secret next to a right token (or the reverse) still gets in: either credential does.
  EXPECT_TRUE(auth.Check("UnloadModel", "nope", "Bearer op-token").ok());
  EXPECT_TRUE(auth.Check("UnloadModel", "gw-secret", "Bearer nope").ok());
}

TEST(AdminAuthTest, MissingOrWrongCredentialsAreRefusedWithTheReason) {
  AdminAuth auth({"gw-secret"}, "op-token");
  struct Case {
    std::optional<absl::string_view> secret, authorization;
    const char* why;
  };
  const Case cases[] = {
      {std::nullopt, std::nullopt, "no credential"},
      {"gw-secre", std::nullopt, "wrong registration secret"},
      {"gw-secret ", std::nullopt, "wrong registration secret"},
      {"", std::nullopt, "wrong registration secret"},
      {std::nullopt, "Bearer op-toke", "wrong admin token"},
      {std::nullopt, "Bearer gw-secret", "wrong admin token"},  // kinds do not mix
      {std::nullopt, "op-token", "not 'Bearer TOKEN'"},
      {std::nullopt, "Bearer ", "not 'Bearer TOKEN'"},
  };
  for (const Case& c : cases) {
    absl::Status st = auth.Check("CloseTranscodeSession", c.secret, c.authorization);
    EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated) << c.why;
    EXPECT_THAT(st.message(), HasSubstr("CloseTranscodeSession is an admin call")) << c.why;
    EXPECT_THAT(st.message(), HasSubstr(c.why)) << st.message();
    EXPECT_THAT(st.message(), HasSubstr("x-switchyard-registration-secret")) << c.why;
  }
  // The registration secret is not an admin token, nor the token a registration secret.
  EXPECT_FALSE(auth.Check("LoadModel", "op-token", std::nullopt).ok());
  AdminAuth secrets_only({"gw-secret"}, "");
  EXPECT_THAT(secrets_only.Check("LoadModel", std::nullopt, "Bearer x").message(),
              HasSubstr("no admin_token configured"));
}

TEST(AdminAuthTest, FromConfigTakesEverySecretAndTheToken) {
  OrchestratorConfig c;
  c.registration_secret = "default-secret";
  c.registration_secrets = {{"10.0.0.1:50051", "gw1"}, {"10.0.0.2:50051", "gw2"}};
  AdminAuth auth = AdminAuth::FromConfig(c);
  for (const char* s : {"default-secret", "gw1", "gw2"}) {
    EXPECT_TRUE(auth.Check("LoadModel", s, std::nullopt).ok()) << s;
  }
  EXPECT_FALSE(auth.Check("LoadModel", std::nullopt, "Bearer t").ok());
  OrchestratorConfig with_token;
  with_token.admin_token = std::string("operator-token");
  AdminAuth token_auth = AdminAuth::FromConfig(with_token);
  EXPECT_TRUE(token_auth.Check("LoadModel", std::nullopt, "Bearer operator-token").ok());
  EXPECT_FALSE(token_auth.Check("LoadModel", "operator-token", std::nullopt).ok());
}

}  // namespace
}  // namespace switchyard::orchestrator
