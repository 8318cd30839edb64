// `switchyard verify-receipts FILE` (src/cli/receipts_command.cc) on files made here: good
// receipts, tampered ones, rows without one, untrusted keys, and hostile files.
#include <gtest/gtest.h>

#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cli/cli_commands.h"
#include "cli/command.h"
#include "common/node_identity.h"
#include "common/receipt.h"
#include "support/media_fixtures.h"

namespace switchyard::cli {
namespace {

using ::switchyard::testing::ReadFile;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;

// An exported row (docs/metering.md) with a receipt signed by `key`.
nlohmann::json SignedRow(const NodeKey& key, const std::string& job_id, int64_t units,
                         double price) {
  v1::JobReceipt r;
  r.set_job_id(job_id);
  r.set_gateway_id("gw");
  r.set_node_id("orch-a");
  r.set_pipeline("upscale");
  r.set_model_id("m");
  r.set_units(units);
  r.set_price_per_unit(price);
  r.set_request_sha256(std::string(32, 'q'));
  r.set_result_sha256(std::string(32, 'r'));
  r.set_start_unix_ms(1000);
  r.set_end_unix_ms(2000);
  EXPECT_TRUE(SignReceipt(key, &r).ok());
  return {{"job_id", job_id},
          {"api_key_id", ""},
          {"pipeline", "upscale"},
          {"model_id", "m"},
          {"orchestrator", "orch-a"},
          {"unit", "pixel"},
          {"units", units},
          {"reported_units", units},
          {"price_per_unit", price},
          {"reported_price_per_unit", price},
          {"amount", static_cast<double>(units) * price},
          {"disputed", false},
          {"dispute", ""},
          {"completed_unix_ms", 2000},
          {"receipt_status", "verified"},
          {"receipt", ReceiptToJson(r)}};
}

class VerifyReceiptsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto key = NodeKey::Generate();
    ASSERT_TRUE(key.ok());
    key_ = *std::move(key);
  }
  std::string Write(const std::vector<nlohmann::json>& rows) {
    std::string text;
    for (const auto& r : rows) text += r.dump() + "\n";
    const std::string path = (dir_.path() / "receipts.jsonl").string();
    WriteFile(path, text);
    return path;
  }
  int Verify(std::vector<std::string> args) {
    args.insert(args.begin(), "verify-receipts");
    out_.str("");
    err_.str("");
    return RunCli(args, out_, err_);
  }

  TempDir dir_;
  NodeKeyPtr key_;
  std::ostringstream out_, err_;
};

TEST_F(VerifyReceiptsTest, GoodReceiptsPassAndTotalsArePrinted) {
  const std::string path =
      Write({SignedRow(*key_, "j1", 100, 0.5), SignedRow(*key_, "j2", 20, 0.5)});
  EXPECT_EQ(Verify({path}), kExitOk) << err_.str();
  EXPECT_NE(out_.str().find("2 verified"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("orch-a"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("OK"), std::string::npos);
  // JSON summary.
  EXPECT_EQ(Verify({"--json", path}), kExitOk);
  auto j = nlohmann::json::parse(out_.str());
  EXPECT_EQ(j["verified"], 2);
  EXPECT_EQ(j["nodes"]["orch-a"]["units"], 120);
  // Trusted keys: the node's key passes, another one does not.
  const std::string keys = (dir_.path() / "keys").string();
  WriteFile(keys, absl::StrCat("# trusted\norch-a ", NodeKeyHex(key_->public_key()), "\n"));
  EXPECT_EQ(Verify({path, "--keys", keys}), kExitOk) << err_.str();
  auto other = NodeKey::Generate();
  ASSERT_TRUE(other.ok());
  WriteFile(keys, NodeKeyHex((*other)->public_key()) + "\n");
  EXPECT_EQ(Verify({path, "--keys", keys}), kExitRpcError);
  EXPECT_NE(err_.str().find("not trusted"), std::string::npos) << err_.str();
}

TEST_F(VerifyReceiptsTest, AnyTamperedLineFails) {
  const std::vector<std::pair<const char*, std::function<void(nlohmann::json*)>>> tampers = {
      {"receipt units", [](nlohmann::json* r) { (*r)["receipt"]["units"] = 101; }},
      {"receipt job", [](nlohmann::json* r) { (*r)["receipt"]["job_id"] = "j9"; }},
      {"signature",
       [](nlohmann::json* r) {
         std::string s = (*r)["receipt"]["signature"];
         s[0] = s[0] == '0' ? '1' : '0';
         (*r)["receipt"]["signature"] = s;
       }},
      {"row units (claims more than signed)",
       [](nlohmann::json* r) {
         (*r)["units"] = 200;
         (*r)["amount"] = 100.0;
       }},
      {"row amount", [](nlohmann::json* r) { (*r)["amount"] = 51.0; }},
      {"row price above signed", [](nlohmann::json* r) { (*r)["price_per_unit"] = 0.6; }},
      {"row job id", [](nlohmann::json* r) { (*r)["job_id"] = "j9"; }},
      {"row node", [](nlohmann::json* r) { (*r)["orchestrator"] = "orch-b"; }},
      {"receipt not an object", [](nlohmann::json* r) { (*r)["receipt"] = 5; }},
  };
  for (const auto& [name, tamper] : tampers) {
    nlohmann::json bad = SignedRow(*key_, "j1", 100, 0.5);
    tamper(&bad);
    const std::string path = Write({SignedRow(*key_, "j0", 1, 0.5), bad});
    EXPECT_EQ(Verify({path}), kExitRpcError) << name << "\n" << out_.str();
    EXPECT_NE(err_.str().find("line 2"), std::string::npos) << name << ": " << err_.str();
  }
}

TEST_F(VerifyReceiptsTest, RowsWithoutAReceiptFailOnlyWhenStrict) {
  nlohmann::json none = SignedRow(*key_, "j1", 100, 0.5);
  none["receipt"] = nullptr;
  none["receipt_status"] = "unsigned";
  const std::string path = Write({SignedRow(*key_, "j0", 1, 0.5), none});
  EXPECT_EQ(Verify({path}), kExitOk) << err_.str();
  EXPECT_NE(out_.str().find("1 without a receipt"), std::string::npos) << out_.str();
  EXPECT_EQ(Verify({path, "--strict"}), kExitRpcError);
}

TEST_F(VerifyReceiptsTest, HostileFilesAreRefusedNotBuffered) {
  const std::string path = (dir_.path() / "hostile.jsonl").string();
  // A line longer than the limit, malformed JSON, deep nesting, a non-object, binary junk.
  std::string text = std::string(internal::kMaxReceiptLineBytes + 10, 'a') + "\n";
  text += "{not json\n";
  text += std::string(10000, '[') + "\n";
  text += "[1,2,3]\n";
  text += std::string("\x00\xff\xfe\n", 4);
  WriteFile(path, text);
  EXPECT_EQ(Verify({path}), kExitRpcError);
  EXPECT_NE(out_.str().find("5 bad"), std::string::npos) << out_.str() << err_.str();
  // Missing file, bad keys file: usage errors.
  EXPECT_EQ(Verify({(dir_.path() / "missing").string()}), kExitUsage);
  const std::string keys = (dir_.path() / "keys").string();
  WriteFile(keys, "not-a-key\n");
  EXPECT_EQ(Verify({path, "--keys", keys}), kExitUsage);
  WriteFile(keys, "a b c\n");
  EXPECT_EQ(Verify({path, "--keys", keys}), kExitUsage);
  // Many bad lines: only the first ones are listed.
  std::string many;
  for (int i = 0; i < 500; ++i) many += "x\n";
  WriteFile(path, many);
  EXPECT_EQ(Verify({path}), kExitRpcError);
  EXPECT_LT(err_.str().size(), 20000u);
  EXPECT_NE(err_.str().find("not listed"), std::string::npos);
}

}  // namespace
}  // namespace switchyard::cli
