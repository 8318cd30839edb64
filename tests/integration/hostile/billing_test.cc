// Hostile orchestrators against billing (issue 18, "Prices"): a node that reports another price
// in its responses than it advertised when it was picked, and nodes that advertise NaN, infinite
// or negative prices. A fake orchestrator in this process (a real gRPC server) registers with a
// real gateway over the Registry stream, as an orchestrator daemon does; a real orchestrator
// beside it serves the honest client whose jobs must keep succeeding. Loopback only, every wait
// bounded.
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/metering.h"
#include "support/cluster.h"
#include "support/fake_orchestrator.h"
#include "support/media_fixtures.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr double kHonestPrice = 0.000001;  // the cluster's upscale price (support/cluster.cc)
constexpr double kAdvertised = 0.001;      // what the liar advertises...
constexpr double kReported = 0.01;         // ...and what it reports in every response

// A fake orchestrator (support/fake_orchestrator.h) that serves Upscale for whatever model it
// is asked, returning the request's image, with the right units and `reported_price` in its
// JobInfo.
class PriceReportingOrchestrator final : public FakeOrchestrator {
 public:
  PriceReportingOrchestrator(std::string node_id, double reported_price)
      : FakeOrchestrator(std::move(node_id)), reported_price_(reported_price) {}
  ~PriceReportingOrchestrator() override { Stop(); }

  grpc::Status Upscale(grpc::ServerContext*, const v1::UpscaleRequest* request,
                       v1::ImageResponse* response) override {
    calls_.fetch_add(1);
    response->add_images()->set_data(request->image());
    auto units = metering::Units(*request, *response);
    auto* job = response->mutable_job();
    job->set_model_id(request->model_id());
    job->set_units(units.ok() ? *units : 0);  // honest units: only the price is a lie
    job->set_price_per_unit(reported_price_);
    return grpc::Status::OK;
  }

  int calls() const { return calls_.load(); }

 private:
  const double reported_price_;
  std::atomic<int> calls_{0};
};

node::v1::NodeCapability Cap(const std::string& model, double price) {
  return FakeCapability("upscale", model, price, "pixel");
}

// One ledger row as stored on disk.
struct LedgerRow {
  std::string orchestrator, status, dispute;
  double price = -1, reported_price = -1, amount = -1;
  int64_t units = -1;
};

std::vector<LedgerRow> ReadLedger(const fs::path& path, const std::string& model) {
  std::vector<LedgerRow> rows;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << "cannot open the ledger " << path << ": " << sqlite3_errmsg(db);
    sqlite3_close(db);
    return rows;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* st = nullptr;
  const char* sql =
      "SELECT orchestrator, status, dispute, price_per_unit, reported_price_per_unit, amount, "
      "units FROM usage WHERE model_id = ? ORDER BY completed_unix_ms";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << "cannot read the ledger: " << sqlite3_errmsg(db);
  } else {
    sqlite3_bind_text(st, 1, model.c_str(), -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto text = [&](int i) {
        const auto* p = sqlite3_column_text(st, i);
        return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p));
      };
      LedgerRow r;
      r.orchestrator = text(0);
      r.status = text(1);
      r.dispute = text(2);
      r.price = sqlite3_column_double(st, 3);
      r.reported_price = sqlite3_column_type(st, 4) == SQLITE_NULL
                             ? std::numeric_limits<double>::quiet_NaN()
                             : sqlite3_column_double(st, 4);
      r.amount = sqlite3_column_double(st, 5);
      r.units = sqlite3_column_int64(st, 6);
      rows.push_back(r);
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

class BillingHostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(ModelDir() / "esrgan-slim-x2.pt"))
        << "models are not prepared in " << ModelDir() << "; run scripts/prepare-models";
    ledger_ = tmp_.path() / "usage.db";
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {"esrgan-slim-x2"};
    options.gateway_config = {{"usage_ledger", ledger_.string()}};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    stub_ = cluster_.GatewayStub();
    png_ = MakeTestImage(tmp_, 24, 16, "png");
  }

  grpc::Status Upscale(const std::string& model, v1::ImageResponse* out,
                       const std::string& max_price = "") {
    v1::UpscaleRequest req;
    req.set_model_id(model);
    req.set_image(png_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(30)));
    if (!max_price.empty()) ctx.AddMetadata("x-max-price-per-unit", max_price);
    return stub_->Upscale(&ctx, req, out);
  }

  // Waits (bounded) until the gateway lists `id` among its orchestrators.
  bool WaitListed(const std::string& id) {
    return WaitUntilListed(*stub_, id, Scaled(std::chrono::seconds(10)));
  }

  // The honest client's job still succeeds on the real orchestrator, and is paid its price.
  void ExpectHonestJobSucceeds() {
    v1::ImageResponse resp;
    grpc::Status st = Upscale("esrgan-slim-x2", &resp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
    EXPECT_EQ(resp.job().orchestrator(), "orch-1");
    auto rows = ReadLedger(ledger_, "esrgan-slim-x2");
    ASSERT_FALSE(rows.empty());
    EXPECT_EQ(rows.back().status, "paid");
    EXPECT_DOUBLE_EQ(rows.back().price, kHonestPrice);
  }

  TempDir tmp_;
  fs::path ledger_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  std::string png_;
};

// Issue 18: the ledger paid whatever price the orchestrator reported in its response. A node that
// advertises 0.001 and reports 0.01 is billed 0.001, and the job is a visible dispute (ledger
// status and reason, GetUsage's disputed_jobs, the gateway's log), while the client still gets
// its result and other clients are unaffected.
TEST_F(BillingHostileTest, ANodeReportingAnotherPriceIsBilledTheAdvertisedOneAndDisputed) {
  PriceReportingOrchestrator liar("fake-liar", kReported);
  ASSERT_TRUE(liar.Serve().ok());
  auto registered = liar.Register(cluster_.gateway_address(), {Cap("liar", kAdvertised)});
  ASSERT_TRUE(registered.ok()) << registered << "\n" << cluster_.Logs();
  ASSERT_TRUE(WaitListed("fake-liar")) << cluster_.Logs();

  v1::ImageResponse resp;
  grpc::Status st = Upscale("liar", &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(resp.job().orchestrator(), "fake-liar");
  EXPECT_EQ(liar.calls(), 1);

  auto rows = ReadLedger(ledger_, "liar");
  ASSERT_EQ(rows.size(), 1u) << cluster_.Logs();
  const LedgerRow& row = rows[0];
  EXPECT_EQ(row.orchestrator, "fake-liar");
  EXPECT_DOUBLE_EQ(row.price, kAdvertised) << "billed the reported price";
  EXPECT_DOUBLE_EQ(row.reported_price, kReported);
  EXPECT_EQ(row.status, "disputed");
  EXPECT_EQ(row.dispute, "price");
  EXPECT_EQ(row.units, 24 * 16);
  EXPECT_EQ(row.amount, 0.0);

  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(10)));
    v1::GetUsageRequest req;
    v1::GetUsageResponse usage;
    ASSERT_TRUE(stub_->GetUsage(&ctx, req, &usage).ok());
    int64_t disputed = 0;
    for (const auto& t : usage.totals()) {
      if (t.model_id() == "liar") disputed += t.disputed_jobs();
    }
    EXPECT_EQ(disputed, 1) << usage.DebugString();
  }
  EXPECT_THAT(cluster_.gateway().Log(), HasSubstr("billing price dispute"));
  EXPECT_TRUE(cluster_.gateway().Alive());
  ExpectHonestJobSucceeds();
}

// Issue 18: a capability advertising NaN passed every price cap (NaN > cap is false), and a
// negative price looked cheapest. Such capabilities are never routed to (or their registration
// is refused): the client gets an error naming the price, the node gets no job, and the gateway
// and other clients carry on.
TEST_F(BillingHostileTest, NanInfiniteAndNegativeAdvertisedPricesAreNotRouted) {
  PriceReportingOrchestrator bad("fake-bad-price", 0);
  ASSERT_TRUE(bad.Serve().ok());
  auto registered = bad.Register(
      cluster_.gateway_address(),
      {Cap("nan-model", std::numeric_limits<double>::quiet_NaN()),
       Cap("inf-model", std::numeric_limits<double>::infinity()), Cap("neg-model", -1)});
  if (registered.ok()) {
    ASSERT_TRUE(WaitListed("fake-bad-price")) << cluster_.Logs();
  } else {
    // Refusing the registration outright is the other documented defence.
    EXPECT_THAT(std::string(registered.message()), HasSubstr("price")) << registered;
  }
  for (const char* model : {"nan-model", "inf-model", "neg-model"}) {
    for (const char* cap : {"", "1"}) {  // with and without a client price cap
      v1::ImageResponse resp;
      grpc::Status st = Upscale(model, &resp, cap);
      EXPECT_FALSE(st.ok()) << model << " was routed";
      if (registered.ok()) {
        EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << model;
        EXPECT_THAT(st.error_message(), HasSubstr("price per unit")) << model;
      }
    }
  }
  EXPECT_EQ(bad.calls(), 0);
  EXPECT_TRUE(ReadLedger(ledger_, "nan-model").empty());
  EXPECT_TRUE(cluster_.gateway().Alive());
  ExpectHonestJobSucceeds();
}

}  // namespace
}  // namespace switchyard::testing
