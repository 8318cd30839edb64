// Fault injection under a steady mixed load (issue 7): a local cluster of one gateway and two
// orchestrators serves upscale (ESRGAN-slim x4), LLM streams and transcode segments from three
// client threads (support/load_generator.h) while one fault is injected mid-run:
//   kill -9 an orchestrator; stall one with SIGSTOP; restart the gateway; restart an orchestrator;
//   fill an orchestrator's queue; cut a client off mid-stream.
// For each, every job sent has exactly one final outcome: OK with a valid result, or a clear
// non-OK status from the fault's allowed set, within its deadline (never a hang, never UNKNOWN
// without a message). No job is billed twice: the gateway logs "done" exactly once for each job
// that succeeded and never for one that failed. The cluster returns to full capacity on its own
// (every orchestrator listed ready with every model ready) and a final burst of jobs all succeed,
// spread over every orchestrator. Each test prints one table row (grep FAULT-ROW): fault, jobs
// sent, completed, failed by status, retried, time to detect, time to recover.
//
// "Not double-billed" is checked twice: on the gateway's log (one "done" line per success, none
// for a failure, per request id) and on the gateway's usage ledger (GetUsage: as many jobs per
// pipeline as the clients saw complete, none disputed).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/load_generator.h"
#include "support/media_fixtures.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::grpc::StatusCode;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kOrchestrators = 2;
const milliseconds kJobDeadline(10000);
// What a client may wait beyond its deadline for the status to arrive (a loaded 2-core machine).
const milliseconds kDeadlineSlack(1500);

double Ms(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::duration<double, std::milli>>(d).count();
}

std::optional<v1::ListCapabilitiesResponse> Caps(v1::Gateway::Stub& stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::ListCapabilitiesResponse resp;
  if (!stub.ListCapabilities(&ctx, v1::ListCapabilitiesRequest(), &resp).ok()) return std::nullopt;
  return resp;
}

std::set<std::string> Listed(v1::Gateway::Stub& stub) {
  std::set<std::string> ids;
  if (auto caps = Caps(stub)) {
    for (const auto& o : caps->orchestrators()) ids.insert(o.id());
  }
  return ids;
}

// Every orchestrator listed and ready, and every model of each (and its transcoder) ready.
bool FullCapacity(v1::Gateway::Stub& stub) {
  auto caps = Caps(stub);
  if (!caps || caps->orchestrators_size() != kOrchestrators) return false;
  for (const auto& o : caps->orchestrators()) {
    if (!o.ready()) return false;
    std::set<std::string> ready;
    for (const auto& offer : caps->offers()) {
      if (offer.orchestrator() == o.id() && offer.state() == "ready") {
        ready.insert(offer.model_id());
      }
    }
    for (const char* m : {"esrgan-slim-x4", "load-llm", "slow-llm"}) {
      if (ready.count(m) == 0) return false;
    }
    bool transcoder = false;
    for (const auto& offer : caps->offers()) {
      transcoder =
          transcoder || (offer.orchestrator() == o.id() && offer.pipeline() == "transcode");
    }
    if (!transcoder) return false;
  }
  return true;
}

// Polls (bounded) until `pred` holds; returns how long it took, or nullopt on timeout.
template <typename Pred>
std::optional<Clock::duration> WaitFor(Pred pred, milliseconds timeout,
                                       milliseconds every = milliseconds(20)) {
  const auto start = Clock::now();
  while (Clock::now() - start < timeout) {
    if (pred()) return Clock::now() - start;
    std::this_thread::sleep_for(every);
  }
  return std::nullopt;
}

// The value of one sample line of a Prometheus text page (-1 when absent).
double Sample(const std::string& page, const std::string& series) {
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) {
      double v = -1;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
    }
  }
  return -1;
}

// How many times the gateway's log says each request id was done (one "done on" line per success).
std::map<std::string, int> DoneCounts(const std::string& log, const std::set<std::string>& ids) {
  std::map<std::string, int> counts;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" done on ") == std::string::npos) continue;
    for (size_t open = line.find('['); open != std::string::npos; open = line.find('[', open + 1)) {
      const size_t close = line.find(']', open);
      if (close == std::string::npos) break;
      const std::string token = line.substr(open + 1, close - open - 1);
      if (ids.count(token) != 0) ++counts[token];
    }
  }
  return counts;
}

struct Row {
  std::string fault;
  LoadSummary summary;
  double detect_ms = -1;
  double recover_ms = -1;
  std::string note;
};

void PrintRow(const Row& r) {
  const LoadSummary& s = r.summary;
  std::cout << absl::StrFormat(
                   "FAULT-ROW | %-26s | sent %4d | accepted %4d | completed %4d | failed %-36s | "
                   "retried %3d | detect %7.0f ms | recover %7.0f ms | p50 %5d ms | p99 %5d ms |%s",
                   r.fault, s.sent, s.accepted, s.completed, s.FailedByStatus(), s.retried,
                   r.detect_ms, r.recover_ms, static_cast<int>(s.p50.count()),
                   static_cast<int>(s.p99.count()), r.note.empty() ? "" : " " + r.note)
            << std::endl;
}

class FaultInjectionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    models_ = new std::vector<nlohmann::json>(SaveLoadModels(dir_->path()));
    inputs_ = new LoadInputs(MakeLoadInputs(*dir_));
  }
  static void TearDownTestSuite() {
    delete inputs_;
    delete models_;
    delete dir_;
    inputs_ = nullptr;
    models_ = nullptr;
    dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(fs::exists(ModelDir() / "esrgan-slim-x4.pt"))
        << "models are not prepared in " << ModelDir() << "; run scripts/prepare-models";
    ASSERT_FALSE(inputs_->png.empty());
    ASSERT_FALSE(inputs_->segment.empty());
  }

  ClusterOptions Options() const {
    ClusterOptions o;
    o.orchestrators = kOrchestrators;
    o.models = {"esrgan-slim-x4"};
    o.extra_models = *models_;
    o.model_queue_size = 8;
    o.transcode_capacity = 2;
    // A stalled node holds an attempt until this timeout, then the job moves on.
    o.gateway_config = {{"attempt_timeout_ms", {{"upscale", 3000}, {"transcode", 4000}}},
                        {"usage_ledger", (ledger_dir_.path() / "usage.db").string()}};
    return o;
  }

  void StartCluster(const ClusterOptions& options) {
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st;
    stub_ = FastReconnectGatewayStub(cluster_.gateway_address());
  }

  LoadOptions Load(const std::string& prefix) const {
    LoadOptions o;
    o.clients = 3;
    o.deadline = kJobDeadline;
    o.pause = milliseconds(20);
    o.request_id_prefix = prefix;
    return o;
  }

  // Every job has exactly one outcome: OK with a valid result, or a clear status from `allowed`,
  // within its deadline; the gateway logged each success once and no failure as done.
  void CheckOutcomes(const std::vector<JobOutcome>& outcomes, int sent,
                     const std::set<StatusCode>& allowed) {
    EXPECT_EQ(static_cast<int>(outcomes.size()), sent) << "a job has no outcome";
    std::set<std::string> ids;
    for (const auto& o : outcomes) {
      EXPECT_TRUE(ids.insert(o.request_id).second) << "two outcomes for " << o.request_id;
      EXPECT_LT(o.latency, o.deadline + kDeadlineSlack)
          << o.request_id << " (" << JobKindName(o.kind) << ") answered after its deadline";
      if (o.code == StatusCode::OK) {
        EXPECT_TRUE(o.valid) << o.request_id << " (" << JobKindName(o.kind)
                             << "): " << o.invalid_why;
        continue;
      }
      EXPECT_TRUE(allowed.count(o.code) != 0)
          << o.request_id << " (" << JobKindName(o.kind) << ") failed with " << GrpcCodeName(o.code)
          << ": " << o.message;
      EXPECT_FALSE(o.message.empty())
          << o.request_id << " failed with " << GrpcCodeName(o.code) << " and no message";
      EXPECT_NE(o.code, StatusCode::UNKNOWN) << o.request_id << ": " << o.message;
    }
    const std::map<std::string, int> done = DoneCounts(cluster_.gateway().Log(), ids);
    for (const auto& o : outcomes) {
      auto it = done.find(o.request_id);
      const int n = it == done.end() ? 0 : it->second;
      if (o.code == StatusCode::OK) {
        EXPECT_EQ(n, 1) << o.request_id << " succeeded but the gateway recorded it " << n
                        << " times";
      } else {
        EXPECT_EQ(n, 0) << o.request_id << " failed (" << GrpcCodeName(o.code) << ": " << o.message
                        << ") but the gateway recorded it as done";
      }
    }
  }

  // Waits (bounded) for full capacity; returns how long it took (-1 on timeout, a failure).
  double WaitFullCapacity(milliseconds timeout = milliseconds(30000)) {
    auto took = WaitFor([&] { return FullCapacity(*stub_); }, timeout, milliseconds(25));
    EXPECT_TRUE(took.has_value()) << "the cluster did not return to full capacity\n"
                                  << cluster_.Logs();
    return took ? Ms(*took) : -1;
  }

  // A burst of jobs of every kind at once, all of which succeed; repeated (bounded) until every
  // orchestrator has served one.
  std::vector<JobOutcome> FinalBurst(const std::string& prefix) {
    LoadGenerator gen(cluster_.gateway_address(), *inputs_, Load(prefix));
    std::vector<JobOutcome> all;
    std::set<std::string> served_by;
    for (int round = 0; round < 4 && served_by.size() < kOrchestrators; ++round) {
      std::vector<JobOutcome> burst(9);
      std::vector<std::thread> threads;
      for (size_t i = 0; i < burst.size(); ++i) {
        threads.emplace_back([&, i] {
          burst[i] =
              gen.RunJob(static_cast<JobKind>(i % 3), absl::StrCat(prefix, "-", round, "-", i));
        });
      }
      for (auto& t : threads) t.join();
      for (const auto& o : burst) {
        EXPECT_EQ(o.code, StatusCode::OK) << o.request_id << " (" << JobKindName(o.kind)
                                          << "): " << GrpcCodeName(o.code) << ": " << o.message;
        EXPECT_TRUE(o.code != StatusCode::OK || o.valid) << o.request_id << ": " << o.invalid_why;
        if (o.code == StatusCode::OK) served_by.insert(o.orchestrator);
        all.push_back(o);
      }
    }
    EXPECT_EQ(served_by.size(), static_cast<size_t>(kOrchestrators))
        << "after the fault the jobs do not reach every orchestrator";
    return all;
  }

  // Not double-billed: the gateway's usage ledger (durable, written before a job's response is
  // sent) holds exactly one job per job the clients saw complete, per pipeline, and none of them
  // disputed. `extra_transcode` allows for transcode segments of a stream the test cut off: up
  // to that many may have completed without the client reading them.
  void CheckLedger(const std::vector<std::vector<JobOutcome>>& runs, int extra_transcode = 0) {
    std::map<std::string, int64_t> want;
    for (const auto& run : runs) {
      for (const auto& o : run) {
        if (o.code == StatusCode::OK) ++want[JobKindName(o.kind)];
      }
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::GetUsageResponse usage;
    grpc::Status st = stub_->GetUsage(&ctx, v1::GetUsageRequest(), &usage);
    ASSERT_TRUE(st.ok()) << GrpcCodeName(st.error_code()) << ": " << st.error_message();
    std::map<std::string, int64_t> got;
    for (const auto& t : usage.totals()) {
      got[t.pipeline()] += t.jobs();
      EXPECT_EQ(t.disputed_jobs(), 0) << t.pipeline() << " '" << t.model_id() << "'";
    }
    for (const char* kind : {"upscale", "llm", "transcode"}) {
      if (std::string(kind) == "transcode" && extra_transcode > 0) {
        EXPECT_GE(got[kind], want[kind]) << "ledger jobs of " << kind;
        EXPECT_LE(got[kind], want[kind] + extra_transcode) << "ledger jobs of " << kind;
      } else {
        EXPECT_EQ(got[kind], want[kind])
            << "ledger jobs of " << kind << " (completed: " << want[kind] << ")";
      }
    }
    std::cout << "ledger: " << usage.jobs() << " jobs (upscale " << got["upscale"] << ", llm "
              << got["llm"] << ", transcode " << got["transcode"] << ")" << std::endl;
  }

  // Lets the load run (bounded) until `n` jobs have been sent, so the fault hits a running load.
  static void WarmUp(const LoadGenerator& gen, int n) {
    WaitFor([&] { return gen.sent() >= n; }, milliseconds(10000), milliseconds(10));
  }

  static TempDir* dir_;
  static std::vector<nlohmann::json>* models_;
  static LoadInputs* inputs_;
  TempDir ledger_dir_;  // declared before the cluster: it outlives the gateway
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

TempDir* FaultInjectionTest::dir_ = nullptr;
std::vector<nlohmann::json>* FaultInjectionTest::models_ = nullptr;
LoadInputs* FaultInjectionTest::inputs_ = nullptr;

TEST_F(FaultInjectionTest, KillNineAnOrchestrator) {
  StartCluster(Options());
  if (HasFatalFailure()) return;
  LoadGenerator gen(cluster_.gateway_address(), *inputs_, Load("kill9"));
  gen.Start(milliseconds(30000));
  WarmUp(gen, 12);

  cluster_.orchestrator(0).Kill();
  const auto killed_at = Clock::now();
  auto dropped = WaitFor([&] { return Listed(*stub_).count("orch-1") == 0; }, milliseconds(10000));
  ASSERT_TRUE(dropped.has_value()) << "the killed node is still listed\n" << cluster_.Logs();
  const double detect_ms = Ms(Clock::now() - killed_at);
  // The load goes on with one node for a moment, then the node's supervisor restarts it.
  std::this_thread::sleep_for(milliseconds(1000));
  const auto restart_at = Clock::now();
  auto st = cluster_.RestartOrchestrator(0);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_GE(WaitFullCapacity(), 0);
  const double recover_ms = Ms(Clock::now() - restart_at);
  std::this_thread::sleep_for(milliseconds(1000));
  gen.Stop();

  auto outcomes = gen.outcomes();
  // A stream cut after its first tokens cannot move elsewhere: UNAVAILABLE, said so.
  CheckOutcomes(outcomes, gen.sent(), {StatusCode::UNAVAILABLE});
  LoadSummary s = Summarize(outcomes);
  EXPECT_GT(s.completed, 0);
  EXPECT_LT(detect_ms, Scaled(milliseconds(3000)).count());  // node_timeout_ms is scaled too
  auto burst = FinalBurst("kill9-after");
  CheckLedger({outcomes, burst});
  PrintRow({"kill -9 orchestrator", s, detect_ms, recover_ms, ""});
}

TEST_F(FaultInjectionTest, StallAnOrchestratorWithSigstop) {
  StartCluster(Options());
  if (HasFatalFailure()) return;
  LoadGenerator gen(cluster_.gateway_address(), *inputs_, Load("stall"));
  gen.Start(milliseconds(30000));
  WarmUp(gen, 12);

  // Stalled: its TCP connections stay open, it answers nothing and stops heartbeating.
  cluster_.orchestrator(0).Signal(SIGSTOP);
  const auto stopped_at = Clock::now();
  auto dropped = WaitFor([&] { return Listed(*stub_).count("orch-1") == 0; }, milliseconds(10000));
  const double detect_ms = Ms(Clock::now() - stopped_at);
  if (!dropped) cluster_.orchestrator(0).Signal(SIGCONT);
  ASSERT_TRUE(dropped.has_value()) << "the stalled node is still listed\n" << cluster_.Logs();
  // Stalled for a while (attempts there time out and move on), then it resumes by itself.
  std::this_thread::sleep_for(milliseconds(3000));
  const auto resumed_at = Clock::now();
  cluster_.orchestrator(0).Signal(SIGCONT);
  EXPECT_GE(WaitFullCapacity(), 0);
  const double recover_ms = Ms(Clock::now() - resumed_at);
  std::this_thread::sleep_for(milliseconds(1000));
  gen.Stop();

  auto outcomes = gen.outcomes();
  // Attempts on the stalled node time out and are retried; a stream that had sent tokens before
  // the stall waits for the node (it resumes within the job's deadline) or fails with a clear
  // status.
  CheckOutcomes(outcomes, gen.sent(), {StatusCode::UNAVAILABLE, StatusCode::DEADLINE_EXCEEDED});
  LoadSummary s = Summarize(outcomes);
  EXPECT_GT(s.completed, 0);
  EXPECT_LT(detect_ms, Scaled(milliseconds(3000)).count());  // node_timeout_ms is scaled too
  auto burst = FinalBurst("stall-after");
  CheckLedger({outcomes, burst});
  PrintRow({"SIGSTOP orchestrator (3 s)", s, detect_ms, recover_ms, ""});
}

TEST_F(FaultInjectionTest, RestartTheGateway) {
  StartCluster(Options());
  if (HasFatalFailure()) return;
  LoadGenerator gen(cluster_.gateway_address(), *inputs_, Load("gwrestart"));
  gen.Start(milliseconds(30000));
  WarmUp(gen, 12);

  // SIGTERM (the gateway drains its in-flight jobs), then a new gateway on the same port.
  const auto restart_at = Clock::now();
  auto st = cluster_.RestartGateway();
  ASSERT_TRUE(st.ok()) << st;
  const auto started_at = Clock::now();
  // The orchestrators re-register by themselves.
  EXPECT_GE(WaitFullCapacity(), 0);
  const double recover_ms = Ms(Clock::now() - started_at);
  std::this_thread::sleep_for(milliseconds(1500));
  gen.Stop();

  auto outcomes = gen.outcomes();
  // A call that reaches the old gateway in the instant its gRPC server starts shutting down,
  // before any handler took it, is failed by gRPC core itself with CANCELLED "CANCELLED"
  // (grpc/grpc#41785, open upstream; gRPC 1.51 here). Such a job was never accepted: the gateway
  // neither ran, logged nor billed it, which is checked here. The gateway's own CANCELLED (only
  // when the client cancelled, which this load never does) says so in its message.
  const std::string gateway_log = cluster_.gateway().Log();
  int refused_by_grpc = 0;
  for (auto& o : outcomes) {
    if (o.code != StatusCode::CANCELLED) continue;
    EXPECT_EQ(o.message, "CANCELLED") << o.request_id << ": the gateway cancelled it";
    EXPECT_FALSE(absl::StrContains(gateway_log, absl::StrCat("[", o.request_id, "]")))
        << o.request_id << " got CANCELLED from gRPC's shutdown, but the gateway had taken it\n"
        << gateway_log;
    o.accepted = false;
    ++refused_by_grpc;
  }
  // While no gateway listens, calls are refused: UNAVAILABLE, and the job was never accepted.
  // A job the new gateway accepts before the orchestrators re-registered finds no node for it:
  // UNAVAILABLE or NOT_FOUND, saying which pipeline and model.
  CheckOutcomes(outcomes, gen.sent(),
                {StatusCode::UNAVAILABLE, StatusCode::NOT_FOUND, StatusCode::CANCELLED});
  LoadSummary s = Summarize(outcomes);
  // Time to detect: from the SIGTERM to the first job a client saw fail.
  double detect_ms = -1;
  int not_accepted = 0;
  for (const auto& o : outcomes) {
    if (o.code == StatusCode::OK) continue;
    if (!o.accepted) ++not_accepted;
    const double at = Ms(o.started + o.latency - restart_at);
    if (at >= 0 && (detect_ms < 0 || at < detect_ms)) detect_ms = at;
  }
  // Jobs after the restart succeed again.
  int ok_after = 0;
  for (const auto& o :
       gen.outcomes_since(started_at + milliseconds(static_cast<int>(recover_ms)))) {
    if (o.code == StatusCode::OK) ++ok_after;
  }
  EXPECT_GT(ok_after, 0) << "no job succeeded after the gateway came back";
  EXPECT_GT(s.completed, 0);
  auto burst = FinalBurst("gwrestart-after");
  CheckLedger({outcomes, burst});
  PrintRow({"restart gateway", s, detect_ms, recover_ms,
            absl::StrCat(not_accepted, " not accepted (", refused_by_grpc,
                         " of them CANCELLED by gRPC at the old gateway's shutdown)")});
}

TEST_F(FaultInjectionTest, RestartAnOrchestrator) {
  StartCluster(Options());
  if (HasFatalFailure()) return;
  LoadGenerator gen(cluster_.gateway_address(), *inputs_, Load("orchrestart"));
  gen.Start(milliseconds(30000));
  WarmUp(gen, 12);

  // SIGTERM: the node says it is draining, finishes its jobs and leaves; then it starts again.
  const auto stop_at = Clock::now();
  std::thread stopper([&] { cluster_.orchestrator(0).Stop(); });
  auto left = WaitFor([&] { return Listed(*stub_).count("orch-1") == 0; }, milliseconds(15000));
  const double detect_ms = Ms(Clock::now() - stop_at);
  stopper.join();
  EXPECT_TRUE(left.has_value()) << "the stopped node is still listed\n" << cluster_.Logs();
  const auto restart_at = Clock::now();
  auto st = cluster_.RestartOrchestrator(0);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_GE(WaitFullCapacity(), 0);
  const double recover_ms = Ms(Clock::now() - restart_at);
  std::this_thread::sleep_for(milliseconds(1000));
  gen.Stop();

  auto outcomes = gen.outcomes();
  // A graceful restart loses nothing: every job completes.
  CheckOutcomes(outcomes, gen.sent(), {});
  LoadSummary s = Summarize(outcomes);
  EXPECT_GT(s.completed, 0);
  auto burst = FinalBurst("orchrestart-after");
  CheckLedger({outcomes, burst});
  PrintRow({"restart orchestrator", s, detect_ms, recover_ms, ""});
}

// In use and capacity of esrgan-slim-x4 on `node`, as the gateway sees them ({-1, -1}: absent).
std::pair<int, int> UpscaleLoad(v1::Gateway::Stub& stub, const std::string& node) {
  if (auto caps = Caps(stub)) {
    for (const auto& o : caps->offers()) {
      if (o.orchestrator() == node && o.model_id() == "esrgan-slim-x4") {
        return {o.in_use(), o.capacity()};
      }
    }
  }
  return {-1, -1};
}

TEST_F(FaultInjectionTest, FillAnOrchestratorsQueue) {
  ClusterOptions options = Options();
  options.model_queue_size = 4;
  StartCluster(options);
  if (HasFatalFailure()) return;
  LoadGenerator gen(cluster_.gateway_address(), *inputs_, Load("fullq"));
  gen.Start(milliseconds(30000));
  WarmUp(gen, 12);

  // Someone else (another gateway) fills orch-1's upscale queue with big jobs, straight to the
  // node: it runs some, queues up to its queue size and refuses the rest.
  TempDir tmp;
  const std::string big = MakeTestImage(tmp, 96, 96, "png");
  auto node = node::v1::Orchestrator::NewStub(
      grpc::CreateChannel(cluster_.orchestrator_address(0), grpc::InsecureChannelCredentials()));
  constexpr int kFlood = 12;
  std::vector<grpc::Status> flood(kFlood);
  std::vector<std::thread> threads;
  const auto flood_at = Clock::now();
  for (int i = 0; i < kFlood; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      ctx.AddMetadata("x-request-id", absl::StrCat("flood-", i));
      v1::UpscaleRequest req;
      req.set_model_id("esrgan-slim-x4");
      req.set_image(big);
      v1::ImageResponse resp;
      flood[i] = node->Upscale(&ctx, req, &resp);
    });
  }
  // The gateway learns the node is full from its updates.
  auto full = WaitFor(
      [&] {
        auto [in_use, capacity] = UpscaleLoad(*stub_, "orch-1");
        return capacity > 0 && in_use >= capacity;
      },
      milliseconds(10000), milliseconds(10));
  const double detect_ms = Ms(Clock::now() - flood_at);
  for (auto& t : threads) t.join();
  const auto drained_at = Clock::now();
  EXPECT_TRUE(full.has_value()) << "the gateway never saw orch-1 full";
  int refused = 0;
  for (const auto& st : flood) {
    if (st.ok()) continue;
    EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_NE(st.error_message().find("queue"), std::string::npos) << st.error_message();
    ++refused;
  }
  EXPECT_GE(refused, 1) << "the flood did not fill the node's queue";
  auto idle =
      WaitFor([&] { return UpscaleLoad(*stub_, "orch-1").first == 0; }, milliseconds(10000));
  EXPECT_TRUE(idle.has_value());
  EXPECT_GE(WaitFullCapacity(), 0);
  const double recover_ms = Ms(Clock::now() - drained_at);
  std::this_thread::sleep_for(milliseconds(500));
  gen.Stop();

  auto outcomes = gen.outcomes();
  // The gateway's jobs go to the other node, or wait for room: all complete.
  CheckOutcomes(outcomes, gen.sent(), {});
  LoadSummary s = Summarize(outcomes);
  EXPECT_GT(s.completed, 0);
  auto burst = FinalBurst("fullq-after");
  CheckLedger({outcomes, burst});
  PrintRow({"fill orchestrator queue", s, detect_ms, recover_ms,
            absl::StrCat(refused, "/", kFlood, " flood jobs refused by the node")});
}

// Jobs in use for `model` on an orchestrator, from its /metrics (-1 if not there).
double InUse(Daemon& orchestrator, const std::string& pipeline, const std::string& model) {
  HttpResult m = HttpRequest(orchestrator.http_port(), "GET", "/metrics");
  if (m.status != 200) return -1;
  return Sample(m.body, absl::StrCat("switchyard_orchestrator_jobs_in_use{model=\"", model,
                                     "\",pipeline=\"", pipeline, "\"}"));
}

double InUseEverywhere(LocalCluster& cluster, const std::string& pipeline,
                       const std::string& model) {
  double sum = 0;
  for (size_t i = 0; i < cluster.orchestrator_count(); ++i) {
    const double v = InUse(cluster.orchestrator(i), pipeline, model);
    if (v < 0) return -1;
    sum += v;
  }
  return sum;
}

TEST_F(FaultInjectionTest, CutAClientOffMidStream) {
  StartCluster(Options());
  if (HasFatalFailure()) return;
  LoadGenerator gen(cluster_.gateway_address(), *inputs_, Load("cut"));
  gen.Start(milliseconds(30000));
  WarmUp(gen, 12);

  // An LLM stream that would run for many seconds: cut after 3 tokens.
  grpc::ClientContext llm_ctx;
  llm_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::LLMRequest req;
  req.set_model("slow-llm");
  req.set_max_tokens(400);
  auto* msg = req.add_messages();
  msg->set_role("user");
  msg->set_content("go");
  auto reader = stub_->LLM(&llm_ctx, req);
  v1::LLMResponse r;
  int got = 0;
  while (got < 3 && reader->Read(&r)) ++got;
  ASSERT_EQ(got, 3) << cluster_.Logs();
  // It is running on an orchestrator now (so the checks below can fail). A TorchScript LLM's
  // stream is in use only while one of its tokens' forward passes is queued or running, not
  // between two of them: look until a sample lands on one.
  auto running = WaitFor([&] { return InUseEverywhere(cluster_, "llm", "slow-llm") == 1; },
                         milliseconds(3000), milliseconds(1));
  ASSERT_TRUE(running.has_value()) << "slow-llm is not generating: it should still be\n"
                                   << cluster_.Logs();
  const auto cut_at = Clock::now();
  llm_ctx.TryCancel();
  for (int i = 0; i < 1000 && reader->Read(&r); ++i) {
  }
  grpc::Status llm_status = reader->Finish();
  EXPECT_EQ(llm_status.error_code(), StatusCode::CANCELLED) << llm_status.error_message();
  // The orchestrator stops generating for it: it says so, long before the 400 tokens asked for,
  // and the model goes idle and stays so (a sample of 0 alone could fall between two tokens).
  const std::string stop_line = "llm slow-llm stopped after ";
  int generated = -1;
  auto stopped = WaitFor(
      [&] {
        for (size_t i = 0; i < cluster_.orchestrator_count(); ++i) {
          const std::string log = cluster_.orchestrator(i).Log();
          const size_t at = log.find(stop_line);
          if (at == std::string::npos) continue;
          const size_t from = at + stop_line.size();
          return absl::SimpleAtoi(log.substr(from, log.find(' ', from) - from), &generated);
        }
        return false;
      },
      milliseconds(5000), milliseconds(5));
  const double llm_stop_ms = Ms(Clock::now() - cut_at);
  ASSERT_TRUE(stopped.has_value()) << "the orchestrator kept generating for a cut-off client\n"
                                   << cluster_.Logs();
  EXPECT_GE(generated, 3);
  EXPECT_LT(generated, 400) << "slow-llm ran to the end: the stream was not cut mid-way";
  // A forward pass already running when the cut came finishes (its result is dropped).
  EXPECT_TRUE(WaitFor([&] { return InUseEverywhere(cluster_, "llm", "slow-llm") == 0; },
                      milliseconds(2000), milliseconds(5)));
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(InUseEverywhere(cluster_, "llm", "slow-llm"), 0) << "sample " << i;
    std::this_thread::sleep_for(milliseconds(10));
  }

  // A transcoding stream: one segment done, two more sent, then the client is gone.
  const std::string stream_id = "cut-stream-1";
  grpc::ClientContext ts_ctx;
  ts_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub_->TranscodeStream(&ts_ctx);
  v1::TranscodeRequest seg;
  seg.set_segment(inputs_->segment);
  seg.set_stream_id(stream_id);
  auto* rendition = seg.add_renditions();
  rendition->set_width(128);
  rendition->set_height(96);
  rendition->set_bitrate_bps(200000);
  rendition->set_preset("ultrafast");
  ASSERT_TRUE(stream->Write(seg));
  v1::TranscodeStreamResponse first;
  ASSERT_TRUE(stream->Read(&first)) << cluster_.Logs();
  EXPECT_EQ(first.code(), 0) << first.error();
  seg.clear_renditions();
  ASSERT_TRUE(stream->Write(seg));
  ASSERT_TRUE(stream->Write(seg));
  const auto ts_cut_at = Clock::now();
  ts_ctx.TryCancel();
  grpc::Status ts_status = stream->Finish();
  EXPECT_EQ(ts_status.error_code(), StatusCode::CANCELLED) << ts_status.error_message();
  // The orchestrator closes the stream's session at once, not after its idle timeout.
  const std::string closed = absl::StrCat("transcode session for stream '", stream_id, "' closed");
  auto session_closed = WaitFor(
      [&] {
        for (size_t i = 0; i < cluster_.orchestrator_count(); ++i) {
          const std::string log = cluster_.orchestrator(i).Log();
          const size_t at = log.find(closed);
          if (at != std::string::npos && log.compare(at + closed.size(), 6, " after") != 0) {
            return true;
          }
        }
        return false;
      },
      milliseconds(5000), milliseconds(50));
  EXPECT_TRUE(session_closed.has_value()) << "the orchestrator kept the cut-off stream's session\n"
                                          << cluster_.Logs();
  const double ts_close_ms = Ms(Clock::now() - ts_cut_at);
  std::this_thread::sleep_for(milliseconds(1000));
  gen.Stop();

  // Nothing is left running: every orchestrator's in-use count returns to 0.
  auto idle = WaitFor(
      [&] {
        for (const char* m : {"esrgan-slim-x4", "load-llm", "slow-llm"}) {
          const char* pipeline = std::string(m) == "esrgan-slim-x4" ? "upscale" : "llm";
          if (InUseEverywhere(cluster_, pipeline, m) != 0) return false;
        }
        return true;
      },
      milliseconds(5000), milliseconds(50));
  EXPECT_TRUE(idle.has_value());

  // The other clients' jobs were not affected.
  auto outcomes = gen.outcomes();
  CheckOutcomes(outcomes, gen.sent(), {});
  LoadSummary s = Summarize(outcomes);
  EXPECT_GT(s.completed, 0);
  EXPECT_GE(WaitFullCapacity(), 0);
  auto burst = FinalBurst("cut-after");
  CheckLedger({outcomes, burst}, 3);
  PrintRow({"cut client mid-stream", s, llm_stop_ms, ts_close_ms,
            "(detect: LLM work stopped; recover: transcode session closed)"});
}

// Regression (found by scripts/soak): the gateway crashed ("pure virtual method called", or
// SIGSEGV in libgrpc) within seconds of a steady stream of short LLM calls: when an attempt
// finished, the relay called Finish outside its lock and the server side's OnDone, on another
// thread, deleted the relay while that call was still in it.
TEST_F(FaultInjectionTest, ManyShortLlmStreamsLeaveTheGatewayRunning) {
  StartCluster(Options());
  if (HasFatalFailure()) return;
  LoadOptions load = Load("llmstorm");
  load.clients = 6;
  load.mix = {JobKind::kLlm};
  load.pause = milliseconds(0);
  load.max_jobs_per_client = 400;
  LoadGenerator gen(cluster_.gateway_address(), *inputs_, load);
  gen.Start(milliseconds(15000));
  gen.Join();
  ASSERT_TRUE(cluster_.gateway().Alive()) << "the gateway died\n" << cluster_.Logs();
  auto outcomes = gen.outcomes();
  CheckOutcomes(outcomes, gen.sent(), {});
  LoadSummary s = Summarize(outcomes);
  EXPECT_EQ(s.completed, s.sent);
  PrintRow({"(no fault) 6 LLM clients", s, -1, -1, ""});
}

// Clients that hang up in the middle of their LLM streams: the gateway used to finish such a call
// while its orchestrator call (a child of it) was still being cancelled, and gRPC freed the
// client's call under the child ('pure virtual method called' in grpc_call_unref, found by the
// soak). Each stream here is cut after its first message, while tokens are still coming.
TEST_F(FaultInjectionTest, LlmClientsHangingUpMidStreamLeaveTheGatewayRunning) {
  StartCluster(Options());
  if (HasFatalFailure()) return;
  constexpr int kClients = 4;
  constexpr int kStreamsPerClient = 150;
  const auto until = std::chrono::steady_clock::now() + Scaled(milliseconds(15000));
  std::atomic<int> cut{0}, other{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      auto stub = cluster_.GatewayStub();
      for (int i = 0; i < kStreamsPerClient && std::chrono::steady_clock::now() < until; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + Scaled(milliseconds(10000)));
        v1::LLMRequest req;
        req.set_model("load-llm");
        auto* m = req.add_messages();
        m->set_role("user");
        m->set_content("go");
        auto reader = stub->LLM(&ctx, req);
        v1::LLMResponse r;
        const bool got_one = reader->Read(&r);
        ctx.TryCancel();  // hang up while the orchestrator is still generating
        for (int k = 0; k < 1000 && reader->Read(&r); ++k) {
        }
        const grpc::Status st = reader->Finish();
        if (got_one && (st.error_code() == grpc::StatusCode::CANCELLED || st.ok())) {
          ++cut;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  ASSERT_TRUE(cluster_.gateway().Alive()) << "the gateway died\n" << cluster_.Logs();
  EXPECT_GT(cut.load(), 0);
  EXPECT_EQ(other.load(), 0) << cluster_.Logs();
  // And it still serves whole streams.
  LoadOptions load = Load("after-hangups");
  load.clients = 1;
  load.mix = {JobKind::kLlm};
  load.max_jobs_per_client = 5;
  LoadGenerator gen(cluster_.gateway_address(), *inputs_, load);
  gen.Start(Scaled(milliseconds(10000)));
  gen.Join();
  LoadSummary s = Summarize(gen.outcomes());
  EXPECT_EQ(s.completed, s.sent);
  EXPECT_GT(s.sent, 0);
  std::printf(
      "FAULT-ROW (no fault) %d LLM streams cut by their clients mid-stream; gateway alive\n",
      cut.load());
}

}  // namespace
}  // namespace switchyard::testing
