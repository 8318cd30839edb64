// Signed job receipts (src/common/receipt.h): the canonical bytes, signing and verifying, the
// digests, and the JSON form.
#include "common/receipt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/node_identity.h"

namespace switchyard {
namespace {

v1::JobReceipt Sample() {
  v1::JobReceipt r;
  r.set_job_id("job-1");
  r.set_gateway_id("gw");
  r.set_node_id("orch-a");
  r.set_pipeline("upscale");
  r.set_model_id("esrgan-slim-x2");
  r.set_units(384);
  r.set_price_per_unit(0.000001);
  r.set_request_sha256(std::string(32, 'q'));
  r.set_result_sha256(std::string(32, 'r'));
  r.set_start_unix_ms(1700000000000);
  r.set_end_unix_ms(1700000000123);
  return r;
}

TEST(ReceiptTest, SignedReceiptVerifies) {
  auto key = NodeKey::Generate();
  ASSERT_TRUE(key.ok());
  v1::JobReceipt r = Sample();
  ASSERT_TRUE(SignReceipt(**key, &r).ok());
  EXPECT_EQ(r.version(), kReceiptVersion);
  EXPECT_EQ(r.node_public_key(), (*key)->public_key());
  EXPECT_EQ(r.signature().size(), kNodeSignatureBytes);
  EXPECT_TRUE(VerifyReceiptSignature(r).ok());
}

TEST(ReceiptTest, EveryTamperedFieldFailsVerification) {
  auto key = NodeKey::Generate();
  ASSERT_TRUE(key.ok());
  v1::JobReceipt signed_receipt = Sample();
  ASSERT_TRUE(SignReceipt(**key, &signed_receipt).ok());
  const std::vector<std::pair<const char*, std::function<void(v1::JobReceipt*)>>> tampers = {
      {"job_id", [](v1::JobReceipt* r) { r->set_job_id("job-2"); }},
      {"gateway_id", [](v1::JobReceipt* r) { r->set_gateway_id("gw2"); }},
      {"node_id", [](v1::JobReceipt* r) { r->set_node_id("orch-b"); }},
      {"pipeline", [](v1::JobReceipt* r) { r->set_pipeline("transcode"); }},
      {"model_id", [](v1::JobReceipt* r) { r->set_model_id("esrgan-slim-x4"); }},
      {"units", [](v1::JobReceipt* r) { r->set_units(385); }},
      {"price", [](v1::JobReceipt* r) { r->set_price_per_unit(0.000002); }},
      {"request", [](v1::JobReceipt* r) { (*r->mutable_request_sha256())[0] ^= 1; }},
      {"result", [](v1::JobReceipt* r) { (*r->mutable_result_sha256())[31] ^= 1; }},
      {"start", [](v1::JobReceipt* r) { r->set_start_unix_ms(r->start_unix_ms() - 1); }},
      {"end", [](v1::JobReceipt* r) { r->set_end_unix_ms(r->end_unix_ms() + 1); }},
      {"signature", [](v1::JobReceipt* r) { (*r->mutable_signature())[5] ^= 1; }},
      {"version", [](v1::JobReceipt* r) { r->set_version(2); }},
      {"short digest", [](v1::JobReceipt* r) { r->set_result_sha256("short"); }},
  };
  for (const auto& [name, tamper] : tampers) {
    v1::JobReceipt r = signed_receipt;
    tamper(&r);
    EXPECT_FALSE(VerifyReceiptSignature(r).ok()) << name;
  }
}

TEST(ReceiptTest, AnotherKeyFailsVerification) {
  auto key = NodeKey::Generate();
  auto other = NodeKey::Generate();
  ASSERT_TRUE(key.ok() && other.ok());
  v1::JobReceipt r = Sample();
  ASSERT_TRUE(SignReceipt(**key, &r).ok());
  r.set_node_public_key((*other)->public_key());  // claims another node's key
  EXPECT_EQ(VerifyReceiptSignature(r).code(), absl::StatusCode::kUnauthenticated);
  r.set_node_public_key("short");
  EXPECT_FALSE(VerifyReceiptSignature(r).ok());
}

TEST(ReceiptTest, FieldBoundariesAreUnambiguous) {
  // Moving bytes between adjacent fields changes the signed bytes (each field has its length).
  v1::JobReceipt a = Sample(), b = Sample();
  a.set_job_id("ab");
  a.set_gateway_id("c");
  b.set_job_id("a");
  b.set_gateway_id("bc");
  EXPECT_NE(ReceiptSigningBytes(a), ReceiptSigningBytes(b));
  EXPECT_EQ(ReceiptSigningBytes(a).rfind("switchyard job receipt v1\n", 0), 0u);
}

TEST(ReceiptTest, JsonRoundTripKeepsTheSignatureValid) {
  auto key = NodeKey::Generate();
  ASSERT_TRUE(key.ok());
  for (double price : {0.000001, 0.0, 1e300, std::numeric_limits<double>::quiet_NaN()}) {
    v1::JobReceipt r = Sample();
    r.set_price_per_unit(price);
    ASSERT_TRUE(SignReceipt(**key, &r).ok());
    const std::string text = ReceiptToJson(r).dump();
    auto back = ReceiptFromJson(nlohmann::json::parse(text));
    ASSERT_TRUE(back.ok()) << back.status() << " " << text;
    EXPECT_TRUE(VerifyReceiptSignature(*back).ok()) << price;
    EXPECT_EQ(back->job_id(), r.job_id());
  }
}

TEST(ReceiptTest, HostileJsonIsRefused) {
  auto key = NodeKey::Generate();
  ASSERT_TRUE(key.ok());
  v1::JobReceipt r = Sample();
  ASSERT_TRUE(SignReceipt(**key, &r).ok());
  const nlohmann::json good = ReceiptToJson(r);
  EXPECT_FALSE(ReceiptFromJson(nlohmann::json::array()).ok());
  for (const char* field : {"version", "job_id", "node_public_key", "units", "price_per_unit",
                            "signature", "start_unix_ms"}) {
    nlohmann::json j = good;
    j.erase(field);
    EXPECT_FALSE(ReceiptFromJson(j).ok()) << field;
    j[field] = nlohmann::json::object();
    EXPECT_FALSE(ReceiptFromJson(j).ok()) << field;
  }
  nlohmann::json j = good;
  j["signature"] = "zz";
  EXPECT_FALSE(ReceiptFromJson(j).ok());
  j["signature"] = std::string(10000, 'a');  // longer than a signature
  EXPECT_FALSE(ReceiptFromJson(j).ok());
  j = good;
  j["version"] = -1;
  EXPECT_FALSE(ReceiptFromJson(j).ok());
}

TEST(ReceiptTest, ResultDigestIgnoresTheJobInfo) {
  v1::ImageResponse response;
  response.add_images()->set_data("png-a");
  ResultDigest node;
  node.Add(response);  // the node hashes before it fills in JobInfo
  const std::string before = node.Finish();
  response.mutable_job()->set_units(7);
  response.mutable_job()->mutable_receipt()->set_job_id("x");
  ResultDigest gateway;
  gateway.AddWithoutJob(response);
  EXPECT_EQ(gateway.Finish(), before);
  EXPECT_EQ(before.size(), kReceiptDigestBytes);
  // Another result, or the same messages split differently, gives another digest.
  response.mutable_images(0)->set_data("png-b");
  gateway.AddWithoutJob(response);
  EXPECT_NE(gateway.Finish(), before);
  v1::LLMResponse a, b;
  a.set_id("x");
  b.set_id("x");
  ResultDigest one, two;
  one.Add(a);
  two.Add(a);
  two.Add(b);
  EXPECT_NE(one.Finish(), two.Finish());
}

TEST(ReceiptTest, RequestDigestIsDeterministic) {
  v1::UpscaleRequest a, b;
  a.set_model_id("m");
  a.set_image("png");
  b.set_image("png");
  b.set_model_id("m");
  EXPECT_EQ(RequestDigest(a), RequestDigest(b));
  b.set_model_id("n");
  EXPECT_NE(RequestDigest(a), RequestDigest(b));
}

}  // namespace
}  // namespace switchyard
