// Three real gateways share one usage ledger in a real PostgreSQL (config usage_ledger
// {"backend": "postgres"}; docs/operations.md "Several gateways"): one row per completed job,
// whichever gateway ran it; GetUsage, /usage and `switchyard usage` on any gateway answer for
// all of them; PostgreSQL stopped mid-load and restarted loses no job and counts none twice (each
// gateway's journal is replayed); a gateway killed with kill -9 mid-load counts no job twice. The
// orchestrator is a fake in this process (a real gRPC server registered with every gateway)
// serving Upscale at once, so the load is the gateways' and the ledger's. Loopback only, every
// wait bounded.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/metering.h"
#include "common/status.h"
#include "gateway/billing/api_keys.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/postgres_server.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kKey[] = "sy_shared_ledger_test_key";
constexpr char kModel[] = "fake-x2";
constexpr double kPrice = 0.5;  // advertised and reported: every job is paid, amounts exact

// Serves Upscale (the request's image back, honest units and price) and registers with each
// gateway it is given, with a heartbeat every 100 ms until destroyed.
class FakeOrchestrator final : public node::v1::Orchestrator::Service {
 public:
  ~FakeOrchestrator() override { Stop(); }

  grpc::Status Upscale(grpc::ServerContext*, const v1::UpscaleRequest* request,
                       v1::ImageResponse* response) override {
    response->add_images()->set_data(request->image());
    auto units = metering::Units(*request, *response);
    auto* job = response->mutable_job();
    job->set_model_id(request->model_id());
    job->set_units(units.ok() ? *units : 0);
    job->set_price_per_unit(kPrice);
    return grpc::Status::OK;
  }

  absl::Status Serve() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port_ == 0) return absl::InternalError("fake server did not start");
    return absl::OkStatus();
  }

  // Registers with `gateway` and waits (bounded) for its ack.
  absl::Status Register(const std::string& gateway, const std::string& node_id) {
    auto reg = std::make_unique<Registration>();
    reg->status.set_node_id(node_id);
    reg->status.set_address(absl::StrCat("127.0.0.1:", port_));
    node::v1::NodeCapability* c = reg->status.add_capabilities();
    c->set_pipeline("upscale");
    c->set_model_id(kModel);
    c->set_state(node::v1::MODEL_STATE_READY);
    c->set_capacity(64);
    c->set_price_per_unit(kPrice);
    c->set_unit("pixel");
    c->set_free_memory_mb(-1);
    reg->stub = node::v1::Registry::NewStub(
        grpc::CreateChannel(gateway, grpc::InsecureChannelCredentials()));
    reg->context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    reg->stream = reg->stub->Register(&reg->context);
    node::v1::NodeMessage hello;
    *hello.mutable_hello() = reg->status;
    if (!reg->stream->Write(hello)) return absl::UnavailableError("cannot send the hello");
    std::atomic<bool> answered{false};
    Registration* r = reg.get();
    std::thread watchdog([&] {
      const auto end = Clock::now() + Scaled(std::chrono::seconds(10));
      while (!answered.load() && Clock::now() < end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (!answered.load()) r->context.TryCancel();
    });
    node::v1::GatewayMessage ack;
    const bool ok = reg->stream->Read(&ack);
    answered.store(true);
    watchdog.join();
    if (!ok || !ack.has_ack()) return absl::UnavailableError("no ack from " + gateway);
    r->heartbeat = std::thread([this, r] {
      node::v1::NodeMessage update;
      *update.mutable_update() = r->status;
      while (!stop_.load()) {
        if (!r->stream->Write(update)) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
    registrations_.push_back(std::move(reg));
    return absl::OkStatus();
  }

  void Stop() {
    stop_.store(true);
    for (auto& r : registrations_) {
      r->context.TryCancel();
      if (r->heartbeat.joinable()) r->heartbeat.join();
      r->stream->Finish();
    }
    registrations_.clear();
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
      server_.reset();
    }
  }

 private:
  struct Registration {
    node::v1::NodeStatus status;
    std::unique_ptr<node::v1::Registry::Stub> stub;
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<node::v1::NodeMessage, node::v1::GatewayMessage>>
        stream;
    std::thread heartbeat;
  };
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<Registration>> registrations_;
  std::atomic<bool> stop_{false};
};

// A counter's value in a Prometheus text exposition (0 when absent).
double MetricValue(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, series) && absl::ConsumePrefix(&line, " ")) {
      return std::stod(std::string(line));
    }
  }
  return 0;
}

class SharedLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = PostgresServer::Start(dir_.path());
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    const auto keys_file = dir_.path() / "keys.json";
    WriteFile(
        keys_file,
        nlohmann::json(
            {{"keys",
              {{{"id", "app"}, {"sha256", gateway::Sha256Hex(kKey)}, {"rate_per_second", 0}}}}})
            .dump());
    ClusterOptions options;
    options.orchestrators = 0;
    options.extra_gateways = 2;
    options.api_key = kKey;
    // Each gateway's journal defaults to usage-journal-<gateway_id>.db beside its config.
    options.gateway_config = {{"api_keys_file", keys_file.string()},
                              {"usage_admin_key_ids", {"app"}},
                              {"usage_ledger",
                               {{"backend", "postgres"},
                                {"dsn", pg_->dsn()},
                                {"connect_timeout_ms", 300},
                                {"statement_timeout_ms", 2000},
                                {"retry_interval_ms", 200}}}};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << cluster_.Logs();
    stubs_.push_back(cluster_.GatewayStub());
    stubs_.push_back(cluster_.ExtraGatewayStub(0));
    stubs_.push_back(cluster_.ExtraGatewayStub(1));
    addresses_ = {cluster_.gateway_address(), ExtraAddress(0), ExtraAddress(1)};
    ASSERT_TRUE(fake_.Serve().ok());
    for (size_t g = 0; g < addresses_.size(); ++g) {
      auto reg = fake_.Register(addresses_[g], "fake-orch");
      ASSERT_TRUE(reg.ok()) << reg << cluster_.Logs();
    }
    image_ = MakeTestImage(dir_, 8, 6, "png");
    // Each gateway routes to the fake (bounded wait for the registration to take).
    for (size_t g = 0; g < stubs_.size(); ++g) {
      grpc::Status st;
      for (int i = 0; i < 100; ++i) {
        std::string id;
        st = Upscale(g, &id);
        if (st.ok()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      ASSERT_TRUE(st.ok()) << "gateway " << g << ": " << st.error_message() << cluster_.Logs();
    }
    warmup_jobs_ = 3;
  }

  std::string ExtraAddress(size_t i) {
    // The extra gateways' ports, from their port files (support/cluster.cc names them).
    const std::string port =
        ReadFile(cluster_.dir().path() / absl::StrCat("gateway-", i + 2, ".port"));
    return absl::StrCat("127.0.0.1:", std::string(absl::StripAsciiWhitespace(port)));
  }

  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", kKey));
    return ctx;
  }

  grpc::Status Upscale(size_t gateway, std::string* job_id) {
    v1::UpscaleRequest req;
    req.set_model_id(kModel);
    req.set_image(image_);
    v1::ImageResponse resp;
    auto ctx = Ctx();
    grpc::Status st = stubs_.at(gateway)->Upscale(ctx.get(), req, &resp);
    if (st.ok()) *job_id = resp.job().request_id();
    return st;
  }

  grpc::Status Usage(size_t gateway, v1::GetUsageResponse* out) {
    v1::GetUsageRequest req;
    req.set_api_key_id("*");
    auto ctx = Ctx();
    return stubs_.at(gateway)->GetUsage(ctx.get(), req, out);
  }

  // Jobs on the gateways in `gateways`, round robin from 6 threads, until `stop` or 2000 each.
  struct Load {
    std::mutex mu;
    std::vector<std::string> completed;  // job ids the clients got back
    std::map<size_t, int> failed;        // by gateway
    std::map<size_t, std::string> last_error;
    int Failed(size_t g) const {
      auto it = failed.find(g);
      return it == failed.end() ? 0 : it->second;
    }
  };
  void RunLoad(Load* load, const std::atomic<bool>& stop, std::vector<size_t> gateways) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 2000 && !stop.load(); ++i) {
          const size_t g = gateways[(t + i) % gateways.size()];
          std::string id;
          grpc::Status st = Upscale(g, &id);
          std::lock_guard<std::mutex> lock(load->mu);
          if (st.ok()) {
            load->completed.push_back(id);
          } else {
            load->failed[g]++;
            load->last_error[g] = st.error_message();
          }
        }
      });
    }
    for (auto& th : threads) th.join();
  }

  int64_t RowsInPostgres(const std::string& where = "TRUE") {
    auto n = pg_->Query(absl::StrCat("SELECT COUNT(*) FROM switchyard_usage WHERE ", where));
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? std::stoll(*n) : -1;
  }

  // Each id of `ids` has exactly one row.
  void ExpectOneRowEach(const std::vector<std::string>& ids) {
    std::set<std::string> unique(ids.begin(), ids.end());
    EXPECT_EQ(unique.size(), ids.size()) << "a job id came back twice";
    std::vector<std::string> quoted;
    for (const auto& id : unique) quoted.push_back(absl::StrCat("'", id, "'"));
    auto n = pg_->Query(absl::StrCat("SELECT COUNT(*) FROM switchyard_usage WHERE job_id IN (",
                                     absl::StrJoin(quoted, ","), ")"));
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(std::stoll(*n), static_cast<int64_t>(unique.size()));
  }

  int64_t JournalRowsOnDisk() {
    int64_t total = 0;
    for (const char* name : {"gateway", "gateway-2", "gateway-3"}) {
      const auto path = cluster_.dir().path() / absl::StrCat("usage-journal-", name, ".db");
      std::string out;
      if (RunCommand(absl::StrCat("sqlite3 ", path.string(), " 'SELECT COUNT(*) FROM usage'"),
                     &out) == 0) {
        total += std::stoll(std::string(absl::StripAsciiWhitespace(out)));
      }
    }
    return total;
  }

  TempDir dir_;
  std::unique_ptr<PostgresServer> pg_;
  LocalCluster cluster_;
  FakeOrchestrator fake_;
  std::vector<std::unique_ptr<v1::Gateway::Stub>> stubs_;
  std::vector<std::string> addresses_;
  std::string image_;
  int warmup_jobs_ = 0;
};

TEST_F(SharedLedgerTest, OneRowPerJobAndEveryGatewayAnswersForAll) {
  Load load;
  std::atomic<bool> stop{false};
  std::thread timer([&] {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    stop.store(true);
  });
  RunLoad(&load, stop, {0, 1, 2});
  timer.join();
  const int64_t jobs = static_cast<int64_t>(load.completed.size()) + warmup_jobs_;
  std::printf("SHARED-LEDGER: %zu jobs over 3 gateways, %d failed\n", load.completed.size(),
              load.Failed(0) + load.Failed(1) + load.Failed(2));
  EXPECT_TRUE(load.failed.empty())
      << load.last_error[0] << load.last_error[1] << load.last_error[2];
  EXPECT_EQ(RowsInPostgres(), jobs);
  ExpectOneRowEach(load.completed);
  // Every gateway wrote some.
  const int64_t units = 8 * 6;
  for (size_t g = 0; g < stubs_.size(); ++g) {
    v1::GetUsageResponse usage;
    grpc::Status st = Usage(g, &usage);
    ASSERT_TRUE(st.ok()) << "gateway " << g << ": " << st.error_message();
    EXPECT_EQ(usage.jobs(), jobs) << "gateway " << g;
    EXPECT_EQ(usage.amount(), static_cast<double>(jobs * units) * kPrice) << "gateway " << g;
    ASSERT_EQ(usage.totals_size(), 1);
    EXPECT_EQ(usage.totals(0).units(), jobs * units);
  }
  // /usage on the public HTTP port of another gateway: the same all-gateway totals.
  HttpCall call;
  call.path = "/usage?api_key_id=*";
  call.headers["Authorization"] = absl::StrCat("Bearer ", kKey);
  auto r = HttpRequest(cluster_.gateway().http_port(), call);
  ASSERT_EQ(r.status, 200) << r.body;
  auto json = nlohmann::json::parse(r.body);
  EXPECT_EQ(json["jobs"].get<std::string>(), absl::StrCat(jobs)) << r.body;
  // `switchyard usage` (the CLI) against each gateway: the same all-gateway totals.
  for (const std::string& address : addresses_) {
    std::string out;
    const int rc =
        RunCommand(absl::StrCat(BinaryPath("switchyard").string(), " --gateway ", address,
                                " --api-key ", kKey, " --json usage --key '*' 2>&1"),
                   &out);
    ASSERT_EQ(rc, 0) << out;
    auto json = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(json.is_discarded()) << out;
    EXPECT_EQ(json["jobs"].get<std::string>(), absl::StrCat(jobs)) << address << ": " << out;
  }
  EXPECT_EQ(JournalRowsOnDisk(), 0);
}

TEST_F(SharedLedgerTest, PostgresStoppedMidLoadLosesNothingAndCountsNothingTwice) {
  Load load;
  std::atomic<bool> stop{false};
  grpc::Status during;
  std::thread chaos([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    pg_->Stop(/*immediate=*/true);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    v1::GetUsageResponse usage;
    during = Usage(1, &usage);
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    auto st = pg_->Restart();
    EXPECT_TRUE(st.ok()) << st;
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    stop.store(true);
  });
  RunLoad(&load, stop, {0, 1, 2});
  chaos.join();
  const int64_t jobs = static_cast<int64_t>(load.completed.size()) + warmup_jobs_;
  // Jobs completed while PostgreSQL was down: every one was answered (Record never failed).
  EXPECT_TRUE(load.failed.empty())
      << load.last_error[0] << load.last_error[1] << load.last_error[2];
  // While it was down, the totals could not answer for all gateways: UNAVAILABLE, saying why.
  EXPECT_EQ(during.error_code(), grpc::StatusCode::UNAVAILABLE) << during.error_message();
  EXPECT_TRUE(absl::StrContains(during.error_message(), "journal")) << during.error_message();
  // The journals drain into PostgreSQL (bounded).
  int64_t rows = 0;
  for (int i = 0; i < 200; ++i) {
    rows = RowsInPostgres();
    if (rows >= jobs && JournalRowsOnDisk() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  double journaled = 0, fallbacks = 0, replayed = 0;
  {
    // The first gateway's counters (the cluster shows its admin port only).
    const std::string m = HttpRequest(cluster_.gateway().admin_port(), "GET", "/metrics").body;
    journaled = MetricValue(m, "switchyard_gateway_usage_ledger_journaled_total");
    fallbacks = MetricValue(m, "switchyard_gateway_usage_ledger_fallbacks_total");
    replayed = MetricValue(m, "switchyard_gateway_usage_ledger_replayed_total");
  }
  std::printf(
      "SHARED-LEDGER: PostgreSQL down ~1.5 s mid-load: %lld jobs completed, %lld rows in "
      "PostgreSQL, gateway 1 journaled %.0f and replayed %.0f (%.0f switch(es) to its journal)\n",
      static_cast<long long>(jobs), static_cast<long long>(rows), journaled, replayed, fallbacks);
  EXPECT_EQ(rows, jobs) << cluster_.Logs();
  ExpectOneRowEach(load.completed);
  EXPECT_EQ(JournalRowsOnDisk(), 0);
  EXPECT_GE(fallbacks, 1);
  EXPECT_GT(journaled, 0);
  EXPECT_EQ(replayed, journaled);
  v1::GetUsageResponse usage;
  grpc::Status st = Usage(2, &usage);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(usage.jobs(), jobs);
}

TEST_F(SharedLedgerTest, GatewayKilledMidLoadCountsNoJobTwice) {
  Load load;
  std::atomic<bool> stop{false};
  std::thread chaos([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    cluster_.gateway().Kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    stop.store(true);
  });
  RunLoad(&load, stop, {0, 1, 2});
  chaos.join();
  const int64_t completed = static_cast<int64_t>(load.completed.size()) + warmup_jobs_;
  // A row whose PostgreSQL write timed out under the load went to its gateway's journal (durable
  // before the client got the answer): the live gateways replay theirs within moments, the killed
  // one when it starts again, which is what an operator's restart does. The journals are read
  // first: a row the replay moves meanwhile is then counted twice, never missed.
  const int64_t journaled_at_kill = JournalRowsOnDisk();
  const int64_t rows_at_kill = RowsInPostgres();
  ASSERT_TRUE(cluster_.RestartGateway().ok());
  int64_t rows = 0;
  for (int i = 0; i < 200; ++i) {
    rows = RowsInPostgres();
    if (rows >= completed && JournalRowsOnDisk() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf(
      "SHARED-LEDGER: gateway 1 killed mid-load: %lld jobs completed, %d calls failed on it, "
      "%lld rows (%lld more in journals) at the kill, %lld rows after its restart\n",
      static_cast<long long>(completed), load.Failed(0), static_cast<long long>(rows_at_kill),
      static_cast<long long>(journaled_at_kill), static_cast<long long>(rows));
  EXPECT_GT(load.Failed(0), 0);  // it was killed under load
  EXPECT_EQ(load.Failed(1) + load.Failed(2), 0) << load.last_error[1] << load.last_error[2];
  // Nothing a client got back was lost by the kill: each was in PostgreSQL or a journal then
  // (exactly once each is checked below, after the restart).
  EXPECT_GE(rows_at_kill + journaled_at_kill, completed);
  // Every job a client got back is there once; a job cut by the kill is there at most once (its
  // result may have been recorded before the client lost it).
  ExpectOneRowEach(load.completed);
  EXPECT_EQ(JournalRowsOnDisk(), 0);
  EXPECT_GE(rows, completed);
  EXPECT_LE(rows, completed + load.Failed(0));
  v1::GetUsageResponse usage;
  grpc::Status st = Usage(1, &usage);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(usage.jobs(), rows);
}

}  // namespace
}  // namespace switchyard::testing
