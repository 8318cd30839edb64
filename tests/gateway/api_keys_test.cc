#include "gateway/billing/api_keys.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/billing/auth_interceptor.h"
#include "gateway/gateway_config.h"
#include "support/media_fixtures.h"

namespace switchyard::gateway {
namespace {

std::string Entry(const std::string& id, const std::string& key, const std::string& extra = "") {
  return absl::StrCat(R"({"id": ")", id, R"(", "sha256": ")", Sha256Hex(key), "\"", extra, "}");
}

std::vector<ApiKeyEntry> Parse(const std::string& keys) {
  auto entries = ParseApiKeys(absl::StrCat(R"({"keys": [)", keys, "]}"), "keys.json");
  EXPECT_TRUE(entries.ok()) << entries.status();
  return entries.ok() ? *entries : std::vector<ApiKeyEntry>{};
}

TEST(ApiKeysTest, Sha256IsTheStandardDigest) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ApiKeysTest, NewKeysAreRandomAndLong) {
  auto a = NewApiKey();
  auto b = NewApiKey();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 3u + 64u);
  EXPECT_TRUE(absl::StartsWith(*a, "sy_"));
  EXPECT_NE(*a, *b);
}

TEST(ApiKeysTest, ParseErrorsNameFileAndField) {
  struct Case {
    std::string json;
    std::string want;
  };
  const std::string hash = Sha256Hex("k");
  const std::vector<Case> cases = {
      {"{nope", "keys.json: invalid JSON"},
      {"{}", "keys.json: keys: is required"},
      {R"({"keys": [], "extra": 1})", "extra"},
      {R"({"keys": [{"sha256": ")" + hash + "\"}]}", "keys.json: keys[0].id: is required"},
      {R"({"keys": [{"id": "a", "sha256": "abc"}]})", "keys[0].sha256: must be 64 hex digits"},
      {R"({"keys": [{"id": "a", "sha256": ")" + hash + R"(", "rate_per_second": -1}]})",
       "keys[0].rate_per_second: must be >= 0"},
      {R"({"keys": [{"id": "a", "sha256": ")" + hash + R"(", "max_concurrent": "2"}]})",
       "keys[0].max_concurrent: has the wrong type"},
      {R"({"keys": [{"id": "a", "sha256": ")" + hash + R"(", "colour": 1}]})", "colour"},
      {absl::StrCat(R"({"keys": [)", Entry("a", "k1"), ",", Entry("a", "k2"), "]}"),
       "keys[1].id: 'a' is repeated"},
      {absl::StrCat(R"({"keys": [)", Entry("a", "k1"), ",", Entry("b", "k1"), "]}"),
       "keys[1].sha256: is repeated"},
  };
  for (const auto& c : cases) {
    auto parsed = ParseApiKeys(c.json, "keys.json");
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), c.want))
        << c.json << " -> " << parsed.status();
  }
}

TEST(ApiKeysTest, UnknownAndMissingKeysAreUnauthenticated) {
  ApiKeyStore store;
  store.Replace(Parse(Entry("app", "secret-key")));
  auto missing = store.Admit("");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "Bearer")) << missing.status();
  auto wrong = store.Admit("secret-kez");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
  auto right = store.Admit("secret-key");
  ASSERT_TRUE(right.ok()) << right.status();
  EXPECT_EQ((*right)->key_id(), "app");
}

TEST(ApiKeysTest, TokenBucketRefillsWithTheClock) {
  absl::Time now = absl::FromUnixSeconds(1000);
  ApiKeyStore store([&now] { return now; });
  store.Replace(Parse(Entry("app", "k", R"(, "rate_per_second": 2, "burst": 3)")));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(store.Admit("k").ok()) << i;  // the burst
  auto over = store.Admit("k");
  ASSERT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(over.status().message(), "rate limit")) << over.status();
  now += absl::Milliseconds(400);  // 0.8 tokens: still none whole
  EXPECT_EQ(store.Admit("k").status().code(), absl::StatusCode::kResourceExhausted);
  now += absl::Milliseconds(100);  // 1 token
  EXPECT_TRUE(store.Admit("k").ok());
  EXPECT_FALSE(store.Admit("k").ok());
  now += absl::Seconds(60);  // refills to the burst, not beyond
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(store.Admit("k").ok()) << i;
  EXPECT_FALSE(store.Admit("k").ok());
}

TEST(ApiKeysTest, ConcurrencySlotsAreReleasedWithTheLease) {
  ApiKeyStore store;
  store.Replace(Parse(Entry("app", "k", R"(, "max_concurrent": 2)")));
  auto a = store.Admit("k");
  auto b = store.Admit("k");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(store.InFlight("app"), 2);
  auto c = store.Admit("k");
  ASSERT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(c.status().message(), "concurrency quota")) << c.status();
  a->reset();
  EXPECT_EQ(store.InFlight("app"), 1);
  EXPECT_TRUE(store.Admit("k").ok());  // admitted, and released again at once
  EXPECT_EQ(store.InFlight("app"), 1);
}

TEST(ApiKeysTest, ReloadKeepsCallsInFlightAndDropsRemovedKeys) {
  ApiKeyStore store;
  store.Replace(Parse(Entry("app", "k", R"(, "max_concurrent": 1)")));
  auto held = store.Admit("k");
  ASSERT_TRUE(held.ok());
  // Same id, new key and a larger quota: the running call still counts.
  store.Replace(Parse(Entry("app", "k2", R"(, "max_concurrent": 2)") + "," + Entry("new", "n")));
  EXPECT_EQ(store.InFlight("app"), 1);
  EXPECT_EQ(store.Admit("k").status().code(), absl::StatusCode::kUnauthenticated);
  auto second = store.Admit("k2");
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(store.Admit("k2").ok());
  EXPECT_TRUE(store.Admit("n").ok());
  // A lease of a key removed by a reload is still released safely.
  store.Replace({});
  EXPECT_EQ(store.size(), 0u);
  held->reset();
  second->reset();
}

TEST(ApiKeysTest, PresentedKeyFromBearerOrXApiKey) {
  using Md = std::multimap<grpc::string_ref, grpc::string_ref>;
  EXPECT_EQ(ApiKeyAuth::PresentedKey(Md{{"authorization", "Bearer abc"}}), "abc");
  EXPECT_EQ(ApiKeyAuth::PresentedKey(Md{{"authorization", "bearer  abc "}}), "abc");
  EXPECT_EQ(ApiKeyAuth::PresentedKey(Md{{"x-api-key", "xyz"}}), "xyz");
  EXPECT_EQ(ApiKeyAuth::PresentedKey(Md{{"authorization", "Basic Zm9v"}}), "");
  EXPECT_EQ(ApiKeyAuth::PresentedKey(Md{}), "");
}

TEST(ApiKeysTest, OnlyClientFacingMethodsAreChecked) {
  EXPECT_TRUE(ApiKeyAuth::Checked("/switchyard.v1.Gateway/Upscale"));
  EXPECT_TRUE(ApiKeyAuth::Checked("/switchyard.v1.Gateway/TranscodeStream"));
  EXPECT_TRUE(ApiKeyAuth::Checked("/inference.GRPCInferenceService/ModelInfer"));
  EXPECT_FALSE(ApiKeyAuth::Checked("/inference.GRPCInferenceService/ServerLive"));
  EXPECT_FALSE(ApiKeyAuth::Checked("/grpc.health.v1.Health/Check"));
  EXPECT_FALSE(ApiKeyAuth::Checked("/switchyard.node.v1.Registry/Register"));
  EXPECT_FALSE(
      ApiKeyAuth::Checked("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
}

TEST(ApiKeysTest, GatewayConfigAuthFields) {
  testing::TempDir dir;
  const auto file = dir.path() / "gateway.json";
  testing::WriteFile(dir.path() / "secret.txt", "from-file\nignored\n");
  auto c = ParseGatewayConfig(
      R"({"api_keys_file": "keys.json", "registration_secret_file": "secret.txt"})", file);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->api_keys_file, dir.path() / "keys.json");  // relative to the config file
  EXPECT_EQ(c->registration_secret, "from-file");
  auto both = ParseGatewayConfig(
      R"({"registration_secret": "x", "registration_secret_file": "secret.txt"})", file);
  EXPECT_TRUE(absl::StrContains(both.status().message(), "registration_secret_file"))
      << both.status();
  auto missing = ParseGatewayConfig(R"({"registration_secret_file": "nope.txt"})", file);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "registration_secret_file: cannot"))
      << missing.status();
  auto empty = ParseGatewayConfig(R"({"api_keys_file": ""})", file);
  EXPECT_TRUE(absl::StrContains(empty.status().message(), "api_keys_file: must not be empty"))
      << empty.status();
  auto off = ParseGatewayConfig("{}", file);
  ASSERT_TRUE(off.ok());
  EXPECT_TRUE(off->api_keys_file.empty());
  EXPECT_TRUE(off->registration_secret.empty());
}

TEST(ApiKeysTest, AuthReloadKeepsOldKeysWhenTheFileIsBad) {
  testing::TempDir dir;
  const auto file = dir.path() / "keys.json";
  testing::WriteFile(file, absl::StrCat(R"({"keys": [)", Entry("a", "ka"), "]}"));
  auto auth = ApiKeyAuth::Create(file);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->store().Admit("ka").ok());
  testing::WriteFile(file, R"({"keys": [{"id": "b"}]})");
  auto bad = (*auth)->Reload();
  EXPECT_TRUE(absl::StrContains(bad.message(), "keys.json: keys[0].sha256: is required")) << bad;
  EXPECT_TRUE((*auth)->store().Admit("ka").ok());  // old keys in force
  testing::WriteFile(file, absl::StrCat(R"({"keys": [)", Entry("b", "kb"), "]}"));
  EXPECT_TRUE((*auth)->Reload().ok());
  EXPECT_TRUE((*auth)->store().Admit("kb").ok());
  EXPECT_FALSE((*auth)->store().Admit("ka").ok());
  EXPECT_FALSE(ApiKeyAuth::Create(dir.path() / "absent.json").ok());
}

}  // namespace
}  // namespace switchyard::gateway
