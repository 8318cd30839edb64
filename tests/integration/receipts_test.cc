// Signed receipts on a local cluster (docs/security.md, "Receipts"): an honest node's receipts
// are verified by the gateway, kept in its ledger, exported by `switchyard usage --receipts` and
// verified offline by `switchyard verify-receipts` (a tampered line fails it); a node that forges
// or omits its receipts is counted and flagged, and not paid, while its clients get their
// results.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/node_identity.h"
#include "common/receipt.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return ctx;
}

class ReceiptsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(ModelDir() / "esrgan-slim-x2.pt"))
        << "models are not prepared in " << ModelDir() << "; run scripts/prepare-models";
    options_.orchestrators = 1;
    options_.models = {"esrgan-slim-x2"};
    options_.gateway_config = {{"usage_ledger", (tmp_.path() / "usage.db").string()}};
  }

  void StartCluster() {
    auto st = cluster_.Start(options_);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    stub_ = cluster_.GatewayStub();
  }

  v1::ImageResponse Upscale() {
    v1::UpscaleRequest req;
    req.set_model_id("esrgan-slim-x2");
    req.set_image(MakeTestImage(tmp_, 24, 16, "png"));
    v1::ImageResponse resp;
    auto ctx = Ctx();
    grpc::Status st = stub_->Upscale(ctx.get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
    return resp;
  }

  std::vector<v1::UsageRow> Rows() {
    v1::ListUsageRowsRequest req;
    v1::ListUsageRowsResponse resp;
    auto ctx = Ctx();
    grpc::Status st = stub_->ListUsageRows(ctx.get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return {resp.rows().begin(), resp.rows().end()};
  }

  std::string Cli() const {
    return absl::StrCat(BinaryPath("switchyard").string(), " --gateway ",
                        cluster_.gateway_address());
  }

  std::string Metrics() {
    return HttpRequest(cluster_.gateway().admin_port(), "GET", "/metrics").body;
  }

  TempDir tmp_;
  ClusterOptions options_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

TEST_F(ReceiptsTest, HonestReceiptsAreStoredExportedAndVerifiedOffline) {
  StartCluster();
  if (HasFatalFailure()) return;
  std::string node_key;
  for (int i = 0; i < 2; ++i) {
    v1::ImageResponse resp = Upscale();
    ASSERT_TRUE(resp.job().has_receipt()) << resp.job().DebugString();
    const v1::JobReceipt& r = resp.job().receipt();
    EXPECT_TRUE(VerifyReceiptSignature(r).ok());
    EXPECT_EQ(r.pipeline(), "upscale");
    EXPECT_EQ(r.units(), resp.job().units());
    EXPECT_EQ(r.node_id(), resp.job().orchestrator());
    EXPECT_LE(r.start_unix_ms(), r.end_unix_ms());
    node_key = r.node_public_key();
  }
  // A transcode segment: another response type, no model.
  SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.seconds = 1.0;
  spec.fps = "10";
  v1::TranscodeRequest treq;
  treq.set_segment(MakeTestSegment(tmp_, spec));
  auto* rendition = treq.add_renditions();
  rendition->set_width(32);
  rendition->set_height(24);
  rendition->set_bitrate_bps(100000);
  rendition->set_preset("ultrafast");
  v1::TranscodeResponse tresp;
  {
    auto ctx = Ctx();
    auto st = stub_->Transcode(ctx.get(), treq, &tresp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  }
  ASSERT_TRUE(tresp.job().has_receipt());

  std::vector<v1::UsageRow> rows = Rows();
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& row : rows) {
    EXPECT_EQ(row.receipt_status(), "verified") << row.DebugString() << cluster_.Logs();
    EXPECT_FALSE(row.disputed()) << row.DebugString();
    EXPECT_TRUE(row.has_receipt());
    EXPECT_EQ(row.receipt().job_id(), row.job_id());
    EXPECT_EQ(row.receipt().gateway_id(), "gateway");
  }
  EXPECT_EQ(PrometheusValue(Metrics(), absl::StrCat("switchyard_gateway_receipts_total{orchestrator=\"",
                                                rows[0].orchestrator(), "\",status=\"verified\"}")),
            3);

  // Export, verify offline (with and without the trusted key), then tamper with a line.
  const std::string file = (tmp_.path() / "receipts.jsonl").string();
  std::string out;
  ASSERT_EQ(RunCommand(Cli() + " usage --receipts " + file, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "3 rows written")) << out;
  const std::string verify = BinaryPath("switchyard").string() + " verify-receipts ";
  ASSERT_EQ(RunCommand(verify + file, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "3 verified")) << out;
  const std::string keys = (tmp_.path() / "keys").string();
  WriteFile(keys, NodeKeyHex(node_key) + "\n");
  EXPECT_EQ(RunCommand(verify + file + " --keys " + keys, &out), 0) << out;

  std::string text = ReadFile(file);
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  auto row = nlohmann::json::parse(lines[1]);
  row["receipt"]["units"] = row["receipt"]["units"].get<int64_t>() + 1;
  row["reported_units"] = row["receipt"]["units"];
  lines[1] = row.dump();
  const std::string tampered = (tmp_.path() / "tampered.jsonl").string();
  WriteFile(tampered, absl::StrJoin(lines, "\n") + "\n");
  EXPECT_NE(RunCommand(verify + tampered, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "line 2")) << out;

  // The export to stdout is the same rows.
  ASSERT_EQ(RunCommand(Cli() + " usage --receipts -", &out), 0) << out;
  EXPECT_EQ(out, text);
}

TEST_F(ReceiptsTest, ForgedReceiptsAreFlaggedAndNotPaid) {
  options_.orchestrator_config = {{"test_receipt_fault", "forge"}};
  StartCluster();
  if (HasFatalFailure()) return;
  v1::ImageResponse resp = Upscale();
  ASSERT_EQ(resp.images_size(), 1);  // the client still gets its result
  std::vector<v1::UsageRow> rows = Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].receipt_status(), "bad_signature");
  EXPECT_TRUE(rows[0].disputed());
  EXPECT_EQ(rows[0].dispute(), "receipt");
  EXPECT_EQ(rows[0].amount(), 0);
  EXPECT_EQ(
      PrometheusValue(Metrics(), absl::StrCat("switchyard_gateway_receipts_total{orchestrator=\"",
                                          rows[0].orchestrator(), "\",status=\"bad_signature\"}")),
      1);
  // Its export does not verify.
  const std::string file = (tmp_.path() / "receipts.jsonl").string();
  std::string out;
  ASSERT_EQ(RunCommand(Cli() + " usage --receipts " + file, &out), 0) << out;
  EXPECT_NE(RunCommand(BinaryPath("switchyard").string() + " verify-receipts " + file, &out), 0)
      << out;
}

TEST_F(ReceiptsTest, MissingReceiptsFromAKeyedNodeAreFlaggedAndNotPaid) {
  options_.orchestrator_config = {{"test_receipt_fault", "omit"}};
  StartCluster();
  if (HasFatalFailure()) return;
  v1::ImageResponse resp = Upscale();
  ASSERT_EQ(resp.images_size(), 1);
  EXPECT_FALSE(resp.job().has_receipt());
  std::vector<v1::UsageRow> rows = Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].receipt_status(), "missing");  // the node registered with a key
  EXPECT_TRUE(rows[0].disputed());
  EXPECT_EQ(PrometheusValue(Metrics(), absl::StrCat("switchyard_gateway_receipts_total{orchestrator=\"",
                                                rows[0].orchestrator(), "\",status=\"missing\"}")),
            1);
}

TEST_F(ReceiptsTest, ListUsageRowsRefusesHostileRequests) {
  StartCluster();
  if (HasFatalFailure()) return;
  Upscale();
  auto call = [this](const v1::ListUsageRowsRequest& req) {
    v1::ListUsageRowsResponse resp;
    auto ctx = Ctx();
    return stub_->ListUsageRows(ctx.get(), req, &resp).error_code();
  };
  v1::ListUsageRowsRequest req;
  req.set_page_size(-1);
  EXPECT_EQ(call(req), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_page_size(1001);
  EXPECT_EQ(call(req), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_page_size(1);
  for (const std::string& token : {std::string("nocolon"), std::string("x:job"), std::string("5:"),
                                   std::string(2000, '1') + ":a"}) {
    req.set_page_token(token);
    EXPECT_EQ(call(req), grpc::StatusCode::INVALID_ARGUMENT) << token.substr(0, 20);
  }
  req.set_page_token("");
  req.set_since_unix(200);
  req.set_until_unix(100);
  EXPECT_EQ(call(req), grpc::StatusCode::INVALID_ARGUMENT);
  // Another key's rows are for operators only (this gateway has no keys: nobody is one).
  v1::ListUsageRowsRequest other;
  other.set_api_key_id("*");
  EXPECT_EQ(call(other), grpc::StatusCode::PERMISSION_DENIED);
  // One row a page: the token moves on, then ends.
  Upscale();
  v1::ListUsageRowsRequest page;
  page.set_page_size(1);
  v1::ListUsageRowsResponse resp;
  {
    auto ctx = Ctx();
    ASSERT_TRUE(stub_->ListUsageRows(ctx.get(), page, &resp).ok());
  }
  ASSERT_EQ(resp.rows_size(), 1);
  ASSERT_FALSE(resp.next_page_token().empty());
  const std::string first = resp.rows(0).job_id();
  page.set_page_token(resp.next_page_token());
  {
    auto ctx = Ctx();
    ASSERT_TRUE(stub_->ListUsageRows(ctx.get(), page, &resp).ok());
  }
  ASSERT_EQ(resp.rows_size(), 1);
  EXPECT_NE(resp.rows(0).job_id(), first);
}

}  // namespace
}  // namespace switchyard::testing
