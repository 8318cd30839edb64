// Receipts of LLM streams on a local cluster with the tiny TorchScript LLM (tests/support/
// tiny_models.h): the node's result digest covers every streamed message, and the gateway,
// hashing the messages it relays, verifies it (docs/security.md, "Receipts").
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "common/receipt.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

TEST(LlmReceiptsTest, StreamReceiptCoversEveryMessageAndIsVerified) {
  TempDir tmp;
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {};
  for (const auto& entry : SaveTinyModels(tmp.path())) {
    if (entry["id"] == "tiny-llm") options.extra_models.push_back(entry);
  }
  ASSERT_EQ(options.extra_models.size(), 1u);
  options.gateway_config = {{"usage_ledger", (tmp.path() / "usage.db").string()}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  auto stub = cluster.GatewayStub();

  v1::LLMRequest req;
  req.set_model("tiny-llm");
  auto* m = req.add_messages();
  m->set_role("user");
  m->set_content("hello");
  req.set_temperature(0);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->LLM(&ctx, req);
  std::vector<v1::LLMResponse> messages;
  v1::LLMResponse r;
  while (reader->Read(&r)) messages.push_back(r);
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << cluster.Logs();
  ASSERT_GT(messages.size(), 2u);  // several streamed messages, then the last with the job
  const v1::LLMResponse& last = messages.back();
  ASSERT_TRUE(last.job().has_receipt()) << last.DebugString();
  const v1::JobReceipt& receipt = last.job().receipt();
  EXPECT_TRUE(VerifyReceiptSignature(receipt).ok());
  EXPECT_EQ(receipt.pipeline(), "llm");
  EXPECT_EQ(receipt.units(), last.job().units());
  // The client can recompute the result digest from what it received.
  ResultDigest digest;
  for (const auto& message : messages) digest.AddWithoutJob(message);
  EXPECT_EQ(digest.Finish(), receipt.result_sha256());

  v1::ListUsageRowsRequest list;
  v1::ListUsageRowsResponse rows;
  grpc::ClientContext list_ctx;
  ASSERT_TRUE(stub->ListUsageRows(&list_ctx, list, &rows).ok());
  ASSERT_EQ(rows.rows_size(), 1);
  EXPECT_EQ(rows.rows(0).receipt_status(), "verified") << rows.rows(0).DebugString();
  EXPECT_FALSE(rows.rows(0).disputed()) << rows.rows(0).DebugString();
}

}  // namespace
}  // namespace switchyard::testing
