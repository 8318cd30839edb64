// SIGHUP reloads as a systemd service does them: the orchestrator's models (ModelManager's
// reconcile in process, then the real daemon with a job in flight) and the gateway's static
// orchestrator list, keeping the old config when the new file is bad; READY=1 only with the warm
// models loaded.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/daemon.h"
#include "common/grpc_services.h"
#include "inference/open_inference_grpc.grpc.pb.h"
#include "integration/service_notify.h"
#include "orchestrator/models/model_manager.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

using namespace service_test;  // NOLINT(build/namespaces): the notify helpers

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr auto kStartTimeout = std::chrono::seconds(30);
constexpr auto kStepTimeout = std::chrono::seconds(15);
// --- reloads -------------------------------------------------------------------------------------

// `loops` chained matmuls of a 128x128 matrix: a job whose length the test chooses.
constexpr char kSlowSource[] = R"(
def forward(self, x, n):
    y = x
    for i in range(int(n.item())):
        y = torch.tanh(torch.mm(y, x))
    return y
)";

constexpr char kTripleSource[] = R"(
def forward(self, x):
    return x * 3
)";

nlohmann::json ModelEntry(const std::string& id, const fs::path& path, bool warm, int instances = 1,
                          double price = 0.001) {
  return {{"id", id},
          {"pipeline", "upscale"},
          {"path", path.string()},
          {"warm", warm},
          {"device", "cpu"},
          {"warmup_size", 0},
          {"instances", instances},
          {"price_per_unit", price}};
}

nlohmann::json OrchestratorJson(const std::string& node_id, nlohmann::json models) {
  return {{"node_id", node_id},
          {"listen", "127.0.0.1:0"},
          {"http_listen", ""},
          {"heartbeat_ms", 200},
          {"torch", {{"intra_op_threads", 1}, {"inter_op_threads", 1}}},
          {"models", std::move(models)},
          {"log", {{"level", "debug"}}}};
}

std::string RawFloats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

inference::ModelInferRequest SlowRequest(int64_t loops) {
  inference::ModelInferRequest req;
  req.set_model_name("slow");
  auto* x = req.add_inputs();
  x->set_name("x");
  x->set_datatype("FP32");
  x->add_shape(128);
  x->add_shape(128);
  auto* n = req.add_inputs();
  n->set_name("n");
  n->set_datatype("INT64");
  n->add_shape(1);
  std::vector<float> data(128 * 128, 1.0f / 128);
  req.add_raw_input_contents(RawFloats(data));
  req.add_raw_input_contents(std::string(reinterpret_cast<const char*>(&loops), sizeof(loops)));
  return req;
}

inference::ModelInferRequest TripleRequest(const std::string& model) {
  inference::ModelInferRequest req;
  req.set_model_name(model);
  auto* x = req.add_inputs();
  x->set_name("x");
  x->set_datatype("FP32");
  x->add_shape(2);
  req.add_raw_input_contents(RawFloats({1.0f, 2.0f}));
  return req;
}

grpc::Status Infer(const std::string& address, const inference::ModelInferRequest& req,
                   inference::ModelInferResponse* resp) {
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return stub->ModelInfer(&ctx, req, resp);
}

absl::StatusOr<node::v1::NodeStatus> GetStatus(const std::string& address) {
  auto stub = node::v1::Orchestrator::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  node::v1::NodeStatus status;
  grpc::Status st = stub->GetStatus(&ctx, node::v1::GetStatusRequest(), &status);
  if (!st.ok()) return absl::UnavailableError(st.error_message());
  return status;
}

const node::v1::NodeCapability* Cap(const node::v1::NodeStatus& s, const std::string& model) {
  for (const auto& c : s.capabilities()) {
    if (c.model_id() == model) return &c;
  }
  return nullptr;
}

// Waits (bounded) until the orchestrator reports a job of `model` queued or running.
bool WaitForJobInFlight(const std::string& address, const std::string& model) {
  const auto end = Clock::now() + kStepTimeout;
  for (int i = 0; i < 2000 && Clock::now() < end; ++i) {
    auto s = GetStatus(address);
    if (s.ok() && Cap(*s, model) != nullptr && Cap(*s, model)->in_use() > 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Loops of the slow model that take about `target` on this machine (measured, bounded).
int64_t CalibrateSlowLoops(const std::string& address, std::chrono::milliseconds target) {
  constexpr int64_t kProbe = 50;
  inference::ModelInferResponse resp;
  // The first calls connect and let TorchScript's profiling executor optimize the loop.
  for (int i = 0; i < 2; ++i) {
    grpc::Status st = Infer(address, SlowRequest(kProbe), &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
  auto start = Clock::now();
  grpc::Status st = Infer(address, SlowRequest(kProbe), &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  const double ms =
      std::max<double>(1, std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  return std::clamp<int64_t>(static_cast<int64_t>(kProbe * target.count() / ms), kProbe, 2000000);
}

// --- ModelManager::Reconcile, in process --------------------------------------------------------

using orchestrator::ModelConfig;
using orchestrator::ModelManager;
constexpr int64_t kMiB = 1 << 20;

ModelConfig TinyModel(const fs::path& path, const std::string& id, int instances = 1,
                      double price = 1) {
  ModelConfig m;
  m.id = id;
  m.pipeline = "upscale";
  m.path = path;
  m.warm = true;
  m.device = "cpu";
  m.instances = instances;
  m.price_per_unit = price;
  m.warmup_size = 0;
  m.memory_mb = 10;  // fixed, so the memory in use is known
  return m;
}

// Runs x * 3 on `executor` (a job on it).
absl::StatusOr<float> RunTriple(runner::ModelExecutor& executor) {
  runner::ModelExecutor::Inputs inputs{c10::IValue(at::ones({1}))};
  runner::CancelToken cancel;
  auto result = executor.Run(std::move(inputs), absl::Now() + absl::Seconds(30), cancel);
  if (!result.ok()) return result.status();
  return result->toTensor().item<float>();
}

TEST(ModelManagerReconcile, AddsRemovesUpdatesAndReloadsWithoutDisturbingHeldExecutors) {
  TempDir dir;
  const fs::path triple = dir.path() / "triple.pt";
  SaveScriptModule(triple, kTripleSource);
  ModelManager mm({TinyModel(triple, "keep"), TinyModel(triple, "gone"),
                   TinyModel(triple, "priced"), TinyModel(triple, "threads")},
                  nullptr);
  mm.LoadWarmModels();
  const ModelConfig* priced_before = mm.Find("priced");
  const ModelConfig* gone_before = mm.Find("gone");
  ASSERT_NE(priced_before, nullptr);
  // Jobs hold the executors of a model that will change and of one that will go.
  auto threads_old = mm.Acquire("threads", absl::InfiniteFuture());
  auto gone_old = mm.Acquire("gone", absl::InfiniteFuture());
  ASSERT_TRUE(threads_old.ok() && gone_old.ok());
  EXPECT_EQ(mm.MemoryInUse("cpu"), 40 * kMiB);

  ModelManager::ReloadSummary r =
      mm.Reconcile({TinyModel(triple, "new"), TinyModel(triple, "keep"),
                    TinyModel(triple, "priced", 1, 2.5), TinyModel(triple, "threads", 2)});
  EXPECT_THAT(r.added, ElementsAre("new"));
  EXPECT_THAT(r.removed, ElementsAre("gone"));
  EXPECT_THAT(r.reloaded, ElementsAre("threads"));
  EXPECT_THAT(r.updated, ElementsAre("priced"));
  EXPECT_EQ(r.unchanged, 1);

  // Gone for new jobs; pointers handed out before stay valid and unchanged.
  EXPECT_EQ(mm.Find("gone"), nullptr);
  EXPECT_EQ(mm.Acquire("gone", absl::InfiniteFuture()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(mm.Unload("gone").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(gone_before->id, "gone");
  EXPECT_EQ(priced_before->price_per_unit, 1);
  ASSERT_NE(mm.Find("priced"), nullptr);
  EXPECT_EQ(mm.Find("priced")->price_per_unit, 2.5);
  // A price change keeps the loaded model; a thread change needs a fresh one.
  EXPECT_EQ(mm.CapabilityOf("priced").state(), node::v1::MODEL_STATE_READY);
  EXPECT_EQ(mm.CapabilityOf("threads").state(), node::v1::MODEL_STATE_COLD);
  EXPECT_EQ(mm.CapabilityOf("new").state(), node::v1::MODEL_STATE_COLD);
  std::vector<std::string> listed;
  for (const auto& c : mm.Capabilities()) listed.push_back(c.model_id());
  EXPECT_THAT(listed, ElementsAre("new", "keep", "priced", "threads"));

  mm.LoadWarmModels();
  EXPECT_EQ(mm.CapabilityOf("threads").state(), node::v1::MODEL_STATE_READY);
  EXPECT_EQ(mm.CapabilityOf("threads").capacity(), 2);
  EXPECT_EQ(mm.CapabilityOf("new").state(), node::v1::MODEL_STATE_READY);
  auto threads_new = mm.Acquire("threads", absl::InfiniteFuture());
  ASSERT_TRUE(threads_new.ok());
  EXPECT_NE(threads_new->get(), threads_old->get());

  // The held executors still run their jobs; their memory counts until they are let go.
  auto out = RunTriple(**threads_old);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, 3);
  out = RunTriple(**gone_old);
  ASSERT_TRUE(out.ok()) << out.status();
  // keep, priced, threads (new), new + the held threads (old) and gone.
  EXPECT_EQ(mm.MemoryInUse("cpu"), 6 * 10 * kMiB);
  threads_old->reset();
  gone_old->reset();
  (void)mm.Capabilities();  // the status path frees executors no job holds
  EXPECT_EQ(mm.MemoryInUse("cpu"), 4 * 10 * kMiB);
}

TEST(ModelManagerReconcile, AReplacedFileReloadsAndARemovedModelCanComeBack) {
  TempDir dir;
  const fs::path triple = dir.path() / "triple.pt";
  SaveScriptModule(triple, kTripleSource);
  ModelManager mm({TinyModel(triple, "m"), TinyModel(triple, "other")}, nullptr);
  mm.LoadWarmModels();
  auto before = mm.Acquire("m", absl::InfiniteFuture());
  ASSERT_TRUE(before.ok());
  before->reset();

  // Same config, new file on disk (later modification time): reloaded.
  fs::last_write_time(triple, fs::last_write_time(triple) + std::chrono::hours(1));
  auto r = mm.Reconcile({TinyModel(triple, "m"), TinyModel(triple, "other")});
  EXPECT_THAT(r.reloaded, ElementsAre("m", "other"));
  r = mm.Reconcile({TinyModel(triple, "m"), TinyModel(triple, "other")});
  EXPECT_EQ(r.unchanged, 2);

  r = mm.Reconcile({TinyModel(triple, "other")});
  EXPECT_THAT(r.removed, ElementsAre("m"));
  EXPECT_EQ(mm.Find("m"), nullptr);
  r = mm.Reconcile({TinyModel(triple, "other"), TinyModel(triple, "m", 1, 7)});
  EXPECT_THAT(r.added, ElementsAre("m"));
  ASSERT_NE(mm.Find("m"), nullptr);
  EXPECT_EQ(mm.Find("m")->price_per_unit, 7);
  auto again = mm.Acquire("m", absl::InfiniteFuture());  // loads it cold
  ASSERT_TRUE(again.ok()) << again.status();
  auto out = RunTriple(**again);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, 3);
}

// An orchestrator with a notify socket, its models in a temp dir.
class ServiceReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SaveScriptModule(dir_.path() / "slow.pt", kSlowSource);
    SaveScriptModule(dir_.path() / "triple.pt", kTripleSource);
  }

  // Starts an orchestrator (no gateways) with `models`, its config in `<node_id>.json`.
  std::unique_ptr<Daemon> StartOrchestrator(const std::string& node_id, nlohmann::json models,
                                            NotifySocket* notify) {
    const fs::path cfg = dir_.path() / (node_id + ".json");
    WriteFile(cfg, OrchestratorJson(node_id, std::move(models)).dump(2));
    auto d = std::make_unique<Daemon>(node_id, dir_.path() / (node_id + ".log"));
    const fs::path port = dir_.path() / (node_id + ".port");
    std::vector<std::string> args{"--config", cfg.string(), "--port-file", port.string(),
                                  "--no-gateways"};
    absl::Status st;
    if (notify != nullptr) {
      ServiceEnvironment env(*notify, 2000000);
      st = d->Start(BinaryPath("switchyard-orchestrator").string(), args);
    } else {
      st = d->Start(BinaryPath("switchyard-orchestrator").string(), args);
    }
    EXPECT_TRUE(st.ok()) << st;
    st = d->WaitForPort(port, kStartTimeout);
    EXPECT_TRUE(st.ok()) << st;
    return d;
  }

  TempDir dir_;
};

TEST_F(ServiceReloadTest, OrchestratorReadyOnlyWithWarmModelsLoaded) {
  NotifySocket notify(dir_.path() / "notify.sock");
  auto orch = StartOrchestrator("o1",
                                {ModelEntry("slow", dir_.path() / "slow.pt", true),
                                 ModelEntry("cold", dir_.path() / "triple.pt", false)},
                                &notify);
  ASSERT_TRUE(orch->Alive());
  ASSERT_FALSE(notify.WaitFor("READY=1", kStartTimeout).empty()) << orch->Log();
  auto status = GetStatus(absl::StrCat("127.0.0.1:", orch->port()));
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_NE(Cap(*status, "slow"), nullptr);
  EXPECT_EQ(Cap(*status, "slow")->state(), node::v1::MODEL_STATE_READY);
  ASSERT_NE(Cap(*status, "cold"), nullptr);
  EXPECT_EQ(Cap(*status, "cold")->state(), node::v1::MODEL_STATE_COLD);
  EXPECT_GE(CountWatchdogPings(notify, std::chrono::milliseconds(1500)), 1) << orch->Log();
  EXPECT_EQ(orch->Stop(), 0);
  EXPECT_FALSE(notify.WaitFor("STOPPING=1", std::chrono::seconds(2)).empty());
}

TEST_F(ServiceReloadTest, OrchestratorSighupReloadsModelsWithAJobInFlight) {
  NotifySocket notify(dir_.path() / "notify.sock");
  const fs::path slow = dir_.path() / "slow.pt", triple = dir_.path() / "triple.pt";
  auto orch = StartOrchestrator("o1",
                                {ModelEntry("slow", slow, true), ModelEntry("keep", triple, true),
                                 ModelEntry("gone", triple, true)},
                                &notify);
  ASSERT_FALSE(notify.WaitFor("READY=1", kStartTimeout).empty()) << orch->Log();
  const std::string addr = absl::StrCat("127.0.0.1:", orch->port());
  const int64_t loops = CalibrateSlowLoops(addr, std::chrono::milliseconds(2500));

  // A job of a model the reload changes (more instances: a fresh executor) is running.
  inference::ModelInferResponse slow_resp;
  auto job = std::async(std::launch::async, [&] {
    grpc::Status st = Infer(addr, SlowRequest(loops), &slow_resp);
    return std::make_pair(st, Clock::now());
  });
  ASSERT_TRUE(WaitForJobInFlight(addr, "slow")) << orch->Log();

  nlohmann::json reloaded =
      OrchestratorJson("o1", {ModelEntry("slow", slow, true, 2, 0.5),
                              ModelEntry("keep", triple, true), ModelEntry("new", triple, true)});
  // A transcode setting is bound into the transcoder at start: the reload says it is not applied.
  reloaded["transcode"]["max_segment_seconds"] = 5;
  WriteFile(dir_.path() / "o1.json", reloaded.dump(2));
  orch->Signal(SIGHUP);
  ASSERT_FALSE(notify.WaitFor("RELOADING=1", kStepTimeout).empty()) << notify.History();
  ASSERT_FALSE(notify.WaitFor("READY=1", kStepTimeout).empty()) << orch->Log();
  const auto reloaded_at = Clock::now();

  auto status = GetStatus(addr);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(Cap(*status, "gone"), nullptr);
  ASSERT_NE(Cap(*status, "new"), nullptr);
  EXPECT_EQ(Cap(*status, "new")->state(), node::v1::MODEL_STATE_READY);
  ASSERT_NE(Cap(*status, "slow"), nullptr);
  EXPECT_EQ(Cap(*status, "slow")->capacity(), 2);
  EXPECT_DOUBLE_EQ(Cap(*status, "slow")->price_per_unit(), 0.5);
  EXPECT_EQ(Cap(*status, "slow")->state(), node::v1::MODEL_STATE_READY);
  ASSERT_NE(Cap(*status, "keep"), nullptr);
  EXPECT_EQ(Cap(*status, "keep")->state(), node::v1::MODEL_STATE_READY);
  EXPECT_THAT(orch->Log(),
              HasSubstr("models added [new], removed [gone], reloaded [slow], updated [], "
                        "1 unchanged"));
  EXPECT_THAT(orch->Log(),
              HasSubstr("reload: changes to transcode take effect at the next restart"));

  // The job in flight finishes, on the executor it started on, after the reload.
  ASSERT_EQ(job.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  auto [job_status, finished_at] = job.get();
  EXPECT_TRUE(job_status.ok()) << job_status.error_message() << orch->Log();
  EXPECT_GT(finished_at, reloaded_at)
      << "the job (" << loops << " loops) ended before the reload: too short to test";
  ASSERT_EQ(slow_resp.outputs_size(), 1);
  EXPECT_THAT(slow_resp.outputs(0).shape(), ::testing::ElementsAre(128, 128));
  // Once idle, the previous executor goes (pruned on the next status report).
  for (int i = 0; i < 50; ++i) {
    if (orch->Log().find("previous executor of model slow unloaded") != std::string::npos) break;
    (void)GetStatus(addr);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_THAT(orch->Log(), HasSubstr("previous executor of model slow unloaded"));

  inference::ModelInferResponse resp;
  grpc::Status st = Infer(addr, TripleRequest("new"), &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  st = Infer(addr, TripleRequest("gone"), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();

  // A bad file is rejected with the reason, and the models stay as they are.
  WriteFile(dir_.path() / "o1.json",
            OrchestratorJson("o1", {ModelEntry("slow", slow, true), nlohmann::json{{"id", "x"}}})
                .dump(2));
  orch->Signal(SIGHUP);
  ASSERT_FALSE(notify.WaitFor("RELOADING=1", kStepTimeout).empty());
  std::string ready = notify.WaitFor("READY=1", kStepTimeout);
  EXPECT_THAT(ready, HasSubstr("reload rejected"));
  std::string log = WaitForLog(*orch, "reload rejected", kStepTimeout);
  EXPECT_THAT(log, HasSubstr("reload rejected, keeping the previous config"));
  EXPECT_THAT(log, HasSubstr("models[1]"));  // names the field at fault
  status = GetStatus(addr);
  ASSERT_TRUE(status.ok());
  EXPECT_NE(Cap(*status, "new"), nullptr);
  EXPECT_NE(Cap(*status, "keep"), nullptr);
  ASSERT_NE(Cap(*status, "slow"), nullptr);
  EXPECT_EQ(Cap(*status, "slow")->capacity(), 2);
  st = Infer(addr, TripleRequest("new"), &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(orch->Stop(), 0) << orch->Log();
}

TEST_F(ServiceReloadTest, GatewaySighupReloadsStaticOrchestratorsWithAJobInFlight) {
  const fs::path slow = dir_.path() / "slow.pt";
  auto a = StartOrchestrator("static-a", {ModelEntry("slow", slow, true)}, nullptr);
  auto b = StartOrchestrator("static-b", {ModelEntry("slow", slow, true)}, nullptr);
  const std::string a_addr = absl::StrCat("127.0.0.1:", a->port());
  const std::string b_addr = absl::StrCat("127.0.0.1:", b->port());

  NotifySocket notify(dir_.path() / "notify.sock");
  const fs::path cfg = dir_.path() / "gateway.json";
  auto gateway_config = [](std::vector<std::string> statics) {
    return nlohmann::json{{"gateway_id", "gw"},         {"listen", "127.0.0.1:0"},
                          {"http_listen", ""},          {"admin_listen", ""},
                          {"poll_interval_ms", 200},    {"static_orchestrators", statics},
                          {"log", {{"level", "debug"}}}}
        .dump(2);
  };
  WriteFile(cfg, gateway_config({a_addr}));
  Daemon gw("gateway", dir_.path() / "gateway.log");
  {
    ServiceEnvironment env(notify, 2000000);
    ASSERT_TRUE(
        gw.Start(BinaryPath("switchyard-gateway").string(),
                 {"--config", cfg.string(), "--port-file", (dir_.path() / "gw.port").string()})
            .ok());
  }
  ASSERT_FALSE(notify.WaitFor("READY=1", kStartTimeout).empty()) << gw.Log();
  ASSERT_TRUE(gw.WaitForPort(dir_.path() / "gw.port", kStartTimeout).ok());
  const std::string gw_addr = absl::StrCat("127.0.0.1:", gw.port());
  auto gw_stub =
      v1::Gateway::NewStub(grpc::CreateChannel(gw_addr, grpc::InsecureChannelCredentials()));
  // The orchestrators the gateway lists, waiting (bounded) for exactly `want`.
  auto wait_for_list = [&](const std::vector<std::string>& want) {
    std::vector<std::string> ids;
    const auto end = Clock::now() + kStepTimeout;
    for (int i = 0; i < 500 && Clock::now() < end; ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      v1::ListCapabilitiesResponse resp;
      ids.clear();
      if (gw_stub->ListCapabilities(&ctx, v1::ListCapabilitiesRequest(), &resp).ok()) {
        for (const auto& o : resp.orchestrators()) ids.push_back(o.id());
        if (ids == want) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return ids;
  };
  ASSERT_THAT(wait_for_list({"static-a"}), ::testing::ElementsAre("static-a")) << gw.Log();

  const int64_t loops = CalibrateSlowLoops(gw_addr, std::chrono::milliseconds(2500));
  inference::ModelInferResponse slow_resp;
  auto job = std::async(std::launch::async, [&] {
    grpc::Status st = Infer(gw_addr, SlowRequest(loops), &slow_resp);
    return std::make_pair(st, Clock::now());
  });
  ASSERT_TRUE(WaitForJobInFlight(a_addr, "slow")) << a->Log();

  // A, which runs the job, leaves the list; B joins.
  WriteFile(cfg, gateway_config({b_addr}));
  gw.Signal(SIGHUP);
  ASSERT_FALSE(notify.WaitFor("RELOADING=1", kStepTimeout).empty()) << notify.History();
  ASSERT_FALSE(notify.WaitFor("READY=1", kStepTimeout).empty()) << gw.Log();
  const auto reloaded_at = Clock::now();
  EXPECT_THAT(wait_for_list({"static-b"}), ::testing::ElementsAre("static-b")) << gw.Log();

  ASSERT_EQ(job.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  auto [job_status, finished_at] = job.get();
  EXPECT_TRUE(job_status.ok()) << job_status.error_message() << gw.Log();
  EXPECT_GT(finished_at, reloaded_at)
      << "the job (" << loops << " loops) ended before the reload: too short to test";

  // A bad file (an address without a port) keeps the list.
  WriteFile(cfg, gateway_config({"no-port-here"}));
  gw.Signal(SIGHUP);
  ASSERT_FALSE(notify.WaitFor("RELOADING=1", kStepTimeout).empty());
  EXPECT_THAT(notify.WaitFor("READY=1", kStepTimeout), HasSubstr("reload rejected"));
  std::string log = WaitForLog(gw, "reload rejected", kStepTimeout);
  EXPECT_THAT(log, HasSubstr("reload rejected, keeping the previous config"));
  EXPECT_THAT(log, HasSubstr("static_orchestrators[0]"));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // a few polls
  EXPECT_THAT(wait_for_list({"static-b"}), ::testing::ElementsAre("static-b")) << gw.Log();
  inference::ModelInferResponse resp;
  grpc::Status st = Infer(gw_addr, SlowRequest(1), &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(gw.Stop(), 0) << gw.Log();
}

}  // namespace
}  // namespace switchyard::testing
