// A usage ledger that stalls (its SQLite file locked by another process, a slow disk, a
// PostgreSQL round trip) must hold up only the jobs being recorded, never the gateway's gRPC
// callback threads: every call of the process runs on those (two on a two-core host), so a job
// settled there would stall unrelated calls. A real gateway with a SQLite ledger and a fake LLM
// orchestrator in this process (a real gRPC server registered over the Registry stream): the test
// holds the ledger's write lock while 16 LLM streams end, checks that the gateway still answers
// other calls at once, then lets go and checks every stream ends with its row. Loopback only,
// every wait bounded.
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "support/cluster.h"
#include "support/fake_orchestrator.h"
#include "support/media_fixtures.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
constexpr char kModel[] = "fake-llm";
constexpr int kStreams = 16;

// Streams two text messages and a last one with the usage and the job's units.
class FakeLlmNode final : public FakeOrchestrator {
 public:
  FakeLlmNode() : FakeOrchestrator("fake-llm-node") {}
  ~FakeLlmNode() override { Stop(); }

  grpc::Status LLM(grpc::ServerContext*, const v1::LLMRequest* request,
                   grpc::ServerWriter<v1::LLMResponse>* writer) override {
    v1::LLMResponse message;
    message.set_model(request->model());
    message.add_choices()->mutable_delta()->set_content("Hel");
    writer->Write(message);
    message.mutable_choices(0)->mutable_delta()->set_content("lo");
    writer->Write(message);
    message.mutable_choices(0)->mutable_delta()->set_content("");
    message.mutable_choices(0)->set_finish_reason("stop");
    message.mutable_usage()->set_prompt_tokens(7);
    message.mutable_usage()->set_completion_tokens(2);
    message.mutable_usage()->set_total_tokens(9);
    auto* job = message.mutable_job();
    job->set_model_id(request->model());
    job->set_units(9);
    job->set_price_per_unit(0.001);
    writer->Write(message);
    served_.fetch_add(1);
    return grpc::Status::OK;
  }

  int served() const { return served_.load(); }

 private:
  std::atomic<int> served_{0};
};

// Holds SQLite's write lock on `path` (BEGIN EXCLUSIVE) until Release or destruction.
class LedgerLock {
 public:
  explicit LedgerLock(const fs::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      error_ = std::string("cannot open the ledger: ") + sqlite3_errmsg(db_);
      return;
    }
    sqlite3_busy_timeout(db_, 5000);
    char* err = nullptr;
    if (sqlite3_exec(db_, "BEGIN EXCLUSIVE", nullptr, nullptr, &err) != SQLITE_OK) {
      error_ = std::string("cannot lock the ledger: ") + (err != nullptr ? err : "?");
      sqlite3_free(err);
      return;
    }
    held_ = true;
  }
  ~LedgerLock() {
    Release();
    sqlite3_close(db_);
  }
  void Release() {
    if (!held_) return;
    sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    held_ = false;
  }
  bool held() const { return held_; }
  const std::string& error() const { return error_; }

 private:
  sqlite3* db_ = nullptr;
  bool held_ = false;
  std::string error_;
};

int64_t LedgerRows(const fs::path& path) {
  sqlite3* db = nullptr;
  int64_t rows = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM usage WHERE model_id = ?", -1, &st, nullptr) ==
        SQLITE_OK) {
      sqlite3_bind_text(st, 1, kModel, -1, SQLITE_STATIC);
      if (sqlite3_step(st) == SQLITE_ROW) rows = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return rows;
}

TEST(LedgerStallTest, LlmStreamsSettlingOnAStalledLedgerHoldNoGrpcThread) {
  TempDir tmp;
  const fs::path ledger = tmp.path() / "usage.db";
  ClusterOptions options;
  options.orchestrators = 0;
  options.gateway_config = {{"usage_ledger", ledger.string()}};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st << "\n" << cluster.Logs();
  auto stub = cluster.GatewayStub();

  FakeLlmNode node;
  ASSERT_TRUE(node.Serve().ok());
  ASSERT_TRUE(
      node.Register(cluster.gateway_address(), {FakeCapability("llm", kModel, 0.001, "token")})
          .ok());
  ASSERT_TRUE(WaitUntilListed(*stub, node.id(), Scaled(std::chrono::seconds(10))));

  LedgerLock lock(ledger);
  ASSERT_TRUE(lock.held()) << lock.error();

  // The streams, each read to its end on its own thread.
  std::mutex mu;
  std::vector<grpc::Status> statuses;
  std::vector<bool> last_had_job;
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&] {
      v1::LLMRequest req;
      req.set_model(kModel);
      auto* m = req.add_messages();
      m->set_role("user");
      m->set_content("Hi");
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(30)));
      auto reader = stub->LLM(&ctx, req);
      v1::LLMResponse msg;
      bool job = false;
      for (int n = 0; n < 100 && reader->Read(&msg); ++n) job = msg.has_job();
      grpc::Status status = reader->Finish();
      std::lock_guard<std::mutex> guard(mu);
      statuses.push_back(status);
      last_had_job.push_back(job);
    });
  }
  // Every stream's last message has reached the gateway (the node wrote it and returned).
  const auto end = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(20));
  while (node.served() < kStreams && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(node.served(), kStreams);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  // The streams wait for their rows; the gateway answers other calls meanwhile, well before the
  // ledger's 5 s busy timeout would free a thread stuck on it.
  {
    v1::ListCapabilitiesRequest req;
    v1::ListCapabilitiesResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1500));
    const auto start = std::chrono::steady_clock::now();
    grpc::Status caps = stub->ListCapabilities(&ctx, req, &resp);
    EXPECT_TRUE(caps.ok()) << "ListCapabilities while the ledger is locked: "
                           << caps.error_message() << " after "
                           << std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - start)
                                  .count()
                           << " ms";
  }
  {
    // The last messages are held back until their rows are committed.
    std::lock_guard<std::mutex> guard(mu);
    EXPECT_TRUE(statuses.empty()) << statuses.size() << " streams ended with the ledger locked";
  }

  lock.Release();
  for (auto& t : clients) t.join();
  ASSERT_EQ(statuses.size(), static_cast<size_t>(kStreams));
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_TRUE(last_had_job[i]) << "stream " << i << " ended without its job message";
  }
  EXPECT_EQ(LedgerRows(ledger), kStreams) << cluster.Logs();
}

}  // namespace
}  // namespace switchyard::testing
