// Receipts at the gateway (docs/security.md, "Receipts"): JobBilling's check of a node's receipt
// against what the gateway saw and the node's key, and the receipt kept with the ledger row in
// SQLite (a version 2 ledger migrated; paging through the rows).
#include <sqlite3.h>

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/node_identity.h"
#include "common/receipt.h"
#include "gateway/billing/usage_ledger.h"
#include "support/media_fixtures.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::TempDir;

// A job as the gateway saw it, with the node's honest receipt for it signed by `key`.
struct SignedJob {
  JobBilling::Job job;
  v1::JobReceipt receipt;
};

SignedJob MakeJob(const NodeKey& key, const std::string& job_id = "job-1") {
  SignedJob s;
  JobBilling::Job& j = s.job;
  j.job_id = job_id;
  j.request_id = job_id;
  j.api_key_id = "alice";
  j.pipeline = "upscale";
  j.model_id = "m";
  j.orchestrator = "orch-a";
  j.reported_units = 100;
  j.reported_price_per_unit = 0.5;
  j.advertised_price_per_unit = 0.5;
  j.counted = 100;
  j.receipts = true;
  j.reported_model_id = "m";
  j.request_sha256 = std::string(32, 'q');
  j.result_sha256 = std::string(32, 'r');
  j.gateway_id = "gw";
  v1::JobReceipt& r = s.receipt;
  r.set_job_id(job_id);
  r.set_gateway_id("gw");
  r.set_node_id("orch-a");
  r.set_pipeline("upscale");
  r.set_model_id("m");
  r.set_units(100);
  r.set_price_per_unit(0.5);
  r.set_request_sha256(j.request_sha256);
  r.set_result_sha256(j.result_sha256);
  r.set_start_unix_ms(1000);
  r.set_end_unix_ms(2000);
  EXPECT_TRUE(SignReceipt(key, &r).ok());
  return s;
}

class ReceiptCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto key = NodeKey::Generate();
    ASSERT_TRUE(key.ok());
    key_ = *std::move(key);
    auto other = NodeKey::Generate();
    ASSERT_TRUE(other.ok());
    other_ = *std::move(other);
    billing_.set_bound_key(
        [this](const std::string& id) { return id == "orch-a" ? bound_ : std::string(); });
  }
  JobBilling::ReceiptCheck Check(SignedJob& s) {
    s.job.receipt = &s.receipt;
    return billing_.CheckReceipt(s.job);
  }

  NodeKeyPtr key_, other_;
  std::string bound_;
  JobBilling billing_{nullptr, nullptr};
};

TEST_F(ReceiptCheckTest, HonestReceiptIsVerifiedAgainstTheBoundKey) {
  bound_ = key_->public_key();
  SignedJob s = MakeJob(*key_);
  auto c = Check(s);
  EXPECT_EQ(c.status, "verified") << c.problem;
  EXPECT_FALSE(c.disputed);
  // No bound key: the one the node's status reports.
  bound_.clear();
  s.job.status_key = key_->public_key();
  EXPECT_EQ(Check(s).status, "verified_unbound");
  s.job.status_key.clear();
  EXPECT_EQ(Check(s).status, "verified_unbound");  // only self-consistent: flagged as such
}

TEST_F(ReceiptCheckTest, ReceiptSignedByAnotherKeyIsABadSignature) {
  bound_ = key_->public_key();
  SignedJob s = MakeJob(*other_);  // valid signature, but not the bound key's
  auto c = Check(s);
  EXPECT_EQ(c.status, "bad_signature");
  EXPECT_TRUE(c.disputed);
  SignedJob forged = MakeJob(*other_);
  forged.receipt.set_node_public_key(key_->public_key());  // claims the node's key
  EXPECT_EQ(Check(forged).status, "bad_signature");
}

TEST_F(ReceiptCheckTest, ReceiptForSomethingElseIsAMismatch) {
  bound_ = key_->public_key();
  const std::vector<std::pair<const char*, std::function<void(JobBilling::Job*)>>> changes = {
      {"job_id", [](JobBilling::Job* j) { j->job_id = "job-2"; }},
      {"gateway_id", [](JobBilling::Job* j) { j->gateway_id = "gw2"; }},
      {"units", [](JobBilling::Job* j) { j->reported_units = 101; }},
      {"price_per_unit", [](JobBilling::Job* j) { j->reported_price_per_unit = 0.6; }},
      {"model_id", [](JobBilling::Job* j) { j->reported_model_id = "m2"; }},
      {"pipeline", [](JobBilling::Job* j) { j->pipeline = "transcode"; }},
      {"request_sha256", [](JobBilling::Job* j) { j->request_sha256[0] ^= 1; }},
      {"result_sha256", [](JobBilling::Job* j) { j->result_sha256[0] ^= 1; }},
  };
  for (const auto& [field, change] : changes) {
    SignedJob s = MakeJob(*key_);
    change(&s.job);
    auto c = Check(s);
    EXPECT_EQ(c.status, "mismatch") << field;
    EXPECT_NE(c.problem.find(field), std::string::npos) << c.problem;
    EXPECT_TRUE(c.disputed);
  }
}

TEST_F(ReceiptCheckTest, MissingReceiptDependsOnWhetherTheNodeHasAKey) {
  SignedJob s = MakeJob(*key_);
  s.job.receipt = nullptr;
  auto c = billing_.CheckReceipt(s.job);
  EXPECT_EQ(c.status, "unsigned");
  EXPECT_FALSE(c.disputed);
  bound_ = key_->public_key();
  c = billing_.CheckReceipt(s.job);
  EXPECT_EQ(c.status, "missing");
  EXPECT_TRUE(c.disputed);
  s.job.receipts = false;  // KServe: none expected
  EXPECT_EQ(billing_.CheckReceipt(s.job).status, "none");
}

TEST_F(ReceiptCheckTest, OversizedReceiptIsNotKept) {
  bound_ = key_->public_key();
  SignedJob s = MakeJob(*key_);
  s.receipt.set_model_id(std::string(kMaxReceiptBytes, 'x'));
  EXPECT_EQ(Check(s).status, "mismatch");
}

TEST(ReceiptLedgerTest, SettleStoresTheReceiptAndDisputesABadOne) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  auto key = NodeKey::Generate();
  ASSERT_TRUE(key.ok());
  JobBilling billing(ledger->get(), nullptr);
  const std::string bound = (*key)->public_key();
  billing.set_bound_key([bound](const std::string&) { return bound; });
  SignedJob good = MakeJob(**key, "good");
  good.job.receipt = &good.receipt;
  EXPECT_TRUE(billing.Settle(good.job));
  SignedJob bad = MakeJob(**key, "bad");
  bad.receipt.set_units(1000);  // signed over other units: the signature no longer verifies
  bad.job.receipt = &bad.receipt;
  EXPECT_FALSE(billing.Settle(bad.job));
  UsageQuery all;
  all.all_keys = true;
  auto rows = (*ledger)->Rows(all);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  for (const UsageRecord& r : *rows) {
    auto json = nlohmann::json::parse(r.receipt, nullptr, false);
    ASSERT_TRUE(json.is_object()) << r.receipt;
    auto receipt = ReceiptFromJson(json);
    ASSERT_TRUE(receipt.ok()) << receipt.status();
    if (r.job_id == "good") {
      EXPECT_EQ(r.receipt_status, "verified");
      EXPECT_FALSE(r.disputed);
      EXPECT_DOUBLE_EQ(r.amount, 50);
      EXPECT_TRUE(VerifyReceiptSignature(*receipt).ok());
    } else {
      EXPECT_EQ(r.receipt_status, "bad_signature");
      EXPECT_TRUE(r.disputed);
      EXPECT_EQ(r.dispute, "receipt");
      EXPECT_EQ(r.amount, 0);
    }
  }
}

TEST(ReceiptLedgerTest, MigratesAVersion2LedgerAndPagesThroughRows) {
  TempDir dir;
  const auto path = dir.path() / "usage.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, R"sql(
      PRAGMA journal_mode=WAL;
      CREATE TABLE usage (job_id TEXT PRIMARY KEY NOT NULL, api_key_id TEXT NOT NULL,
        pipeline TEXT NOT NULL, model_id TEXT NOT NULL, orchestrator TEXT NOT NULL,
        unit TEXT NOT NULL, units INTEGER NOT NULL, reported_units INTEGER NOT NULL,
        price_per_unit REAL NOT NULL, amount REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('paid', 'disputed')),
        completed_unix_ms INTEGER NOT NULL, reported_price_per_unit REAL,
        dispute TEXT NOT NULL DEFAULT '');
      INSERT INTO usage VALUES ('old-1', 'k', 'upscale', 'm', 'o', 'pixel', 10, 10, 0.5, 5,
        'paid', 1700000000000, 0.5, '');
      PRAGMA user_version=2;)sql",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  auto ledger = SqliteUsageLedger::Open(path);
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  for (int i = 0; i < 5; ++i) {
    UsageRecord r;
    r.job_id = absl::StrCat("new-", i);
    r.api_key_id = "k";
    r.pipeline = "upscale";
    r.unit = "pixel";
    r.completed = absl::FromUnixMillis(1700000001000 + (i / 2));  // pairs share a time
    r.receipt = "{}";
    r.receipt_status = "unsigned";
    ASSERT_TRUE((*ledger)->Record(r).ok());
  }
  UsageQuery q;
  q.all_keys = true;
  q.limit = 2;
  std::vector<std::string> seen;
  for (int page = 0; page < 10; ++page) {
    auto rows = (*ledger)->Rows(q);
    ASSERT_TRUE(rows.ok()) << rows.status();
    for (const auto& r : *rows) seen.push_back(r.job_id);
    if (rows->size() < q.limit) break;
    q.after = std::make_pair(absl::ToUnixMillis(rows->back().completed), rows->back().job_id);
  }
  ASSERT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen[0], "old-1");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(seen[i + 1], absl::StrCat("new-", i));
  UsageQuery all;
  all.all_keys = true;
  auto rows = (*ledger)->Rows(all);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ((*rows)[0].receipt_status, "none");  // from before receipts
  EXPECT_EQ((*rows)[0].receipt, "");
  EXPECT_EQ((*rows)[1].receipt_status, "unsigned");
}

TEST(ReceiptLedgerTest, RefusesAnOversizedReceipt) {
  TempDir dir;
  auto ledger = SqliteUsageLedger::Open(dir.path() / "usage.db");
  ASSERT_TRUE(ledger.ok());
  UsageRecord r;
  r.job_id = "big";
  r.receipt = std::string(kMaxReceiptJsonBytes + 1, 'x');
  EXPECT_EQ((*ledger)->Record(r).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::gateway
