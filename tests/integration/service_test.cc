// Running as a systemd service: the units in configs/systemd pass `systemd-analyze verify` (and
// its offline security review), the real daemons speak the sd_notify protocol (READY=1 only once
// their ports are bound, WATCHDOG=1 at half of WATCHDOG_USEC, RELOADING=1/READY=1 around SIGHUP,
// STOPPING=1 on SIGTERM) to a notify socket this test owns, and SIGHUP reloads the orchestrator's
// models and the gateway's static orchestrator list with a job in flight, keeping the old config
// when the new file is bad.
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
#include "orchestrator/models/model_manager.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr auto kStartTimeout = std::chrono::seconds(30);
constexpr auto kStepTimeout = std::chrono::seconds(15);

// --- the units -------------------------------------------------------------------------------

// The unit with ExecStart pointing at the built binary (verify checks that it exists), written to
// `dir`.
fs::path UnitForBuild(const std::string& name, const TempDir& dir) {
  std::string unit = ReadFile(fs::path(SWITCHYARD_SOURCE_DIR) / "configs/systemd" / name);
  const std::string installed = "/usr/local/bin/";
  size_t replaced = 0;
  for (size_t at = unit.find(installed); at != std::string::npos; at = unit.find(installed, at)) {
    unit.replace(at, installed.size(), std::string(SWITCHYARD_BIN_DIR) + "/");
    ++replaced;
  }
  EXPECT_GT(replaced, 0u) << name << " has no ExecStart under /usr/local/bin";
  fs::path out = dir.path() / name;
  WriteFile(out, unit);
  return out;
}

TEST(SystemdUnits, VerifyPassesWithoutDiagnostics) {
  ASSERT_EQ(RunCommand("command -v systemd-analyze >/dev/null"), 0)
      << "systemd-analyze is missing (Debian package systemd, in scripts/install-deps)";
  TempDir dir;
  for (const std::string name : {"switchyard-gateway.service", "switchyard-orchestrator.service"}) {
    SCOPED_TRACE(name);
    fs::path unit = UnitForBuild(name, dir);
    std::string unit_text = ReadFile(unit);
    EXPECT_THAT(unit_text, HasSubstr("\nType=notify\n"));
    EXPECT_THAT(unit_text, HasSubstr("\nWatchdogSec="));
    EXPECT_THAT(unit_text, HasSubstr("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    std::string log;
    int rc = RunCommand(
        absl::StrCat("cd ", dir.path().string(), " && systemd-analyze verify ", name, " 2>&1"),
        &log);
    EXPECT_EQ(rc, 0) << log;
    // Unknown keys and bad values are only warnings (exit 0): any line naming the unit is one.
    EXPECT_THAT(log, ::testing::Not(HasSubstr(name))) << log;
    // Hardening: systemd's own exposure score (0 safe .. 10 unsafe) stays "OK" (under 3.0).
    rc = RunCommand(
        absl::StrCat("cd ", dir.path().string(),
                     " && systemd-analyze security --offline=yes --threshold=30 ", name, " 2>&1"),
        &log);
    EXPECT_EQ(rc, 0) << log;
  }
}

// A unit that verify would reject is caught: the test above can fail.
TEST(SystemdUnits, VerifyCatchesAMissingBinary) {
  ASSERT_EQ(RunCommand("command -v systemd-analyze >/dev/null"), 0);
  TempDir dir;
  std::string unit =
      ReadFile(fs::path(SWITCHYARD_SOURCE_DIR) / "configs/systemd/switchyard-gateway.service");
  WriteFile(dir.path() / "broken.service", unit);  // ExecStart in /usr/local/bin: not there
  std::string log;
  int rc = RunCommand(
      absl::StrCat("cd ", dir.path().string(), " && systemd-analyze verify broken.service 2>&1"),
      &log);
  if (fs::exists("/usr/local/bin/switchyard-gateway")) GTEST_SKIP() << "installed on this host";
  EXPECT_NE(rc, 0) << log;
}

// The user and directories the units rely on, created in a scratch root as systemd-sysusers and
// systemd-tmpfiles would on the host.
TEST(SystemdUnits, SysusersAndTmpfilesCreateTheUserAndDirectories) {
  TempDir root;
  fs::create_directories(root.path() / "etc");
  const fs::path src = fs::path(SWITCHYARD_SOURCE_DIR) / "configs/systemd";
  std::string log;
  int rc = RunCommand(absl::StrCat("systemd-sysusers --root=", root.path().string(), " ",
                                   (src / "switchyard.sysusers.conf").string(), " 2>&1"),
                      &log);
  ASSERT_EQ(rc, 0) << log;
  const std::string passwd = ReadFile(root.path() / "etc/passwd");
  const std::string group = ReadFile(root.path() / "etc/group");
  EXPECT_THAT(passwd, HasSubstr("switchyard:x:"));
  EXPECT_THAT(passwd, HasSubstr(":/var/lib/switchyard:"));
  EXPECT_THAT(group, HasSubstr("switchyard:x:"));
  // The orchestrator unit's SupplementaryGroups= must exist, or systemd refuses to start it.
  EXPECT_THAT(group, HasSubstr("render:x:"));
  if (::geteuid() != 0) GTEST_SKIP() << "systemd-tmpfiles needs root to chown";
  rc = RunCommand(absl::StrCat("systemd-tmpfiles --create --root=", root.path().string(), " ",
                               (src / "switchyard.tmpfiles.conf").string(), " 2>&1"),
                  &log);
  ASSERT_EQ(rc, 0) << log;
  struct stat models {};
  ASSERT_EQ(::stat((root.path() / "var/lib/switchyard/models").c_str(), &models), 0);
  struct stat etc {};
  ASSERT_EQ(::stat((root.path() / "etc/switchyard").c_str(), &etc), 0);
  // The uid sysusers gave switchyard, from "switchyard:x:UID:GID:".
  const size_t at = passwd.find("switchyard:x:") + std::strlen("switchyard:x:");
  const unsigned uid = static_cast<unsigned>(std::stoul(passwd.substr(at)));
  EXPECT_EQ(models.st_uid, uid);
  EXPECT_EQ(etc.st_uid, 0u);  // configs: root's, readable by the service's group only
  EXPECT_EQ(etc.st_mode & 0777, 0750u);
}

// --- the notify protocol -------------------------------------------------------------------------

// The datagram socket systemd would own: NOTIFY_SOCKET for the daemons started while it lives.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    EXPECT_LT(path.string().size(), sizeof(addr.sun_path));
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
        << std::strerror(errno);
  }
  ~NotifySocket() { ::close(fd_); }

  // Next message, or "" if none arrives within `timeout`.
  std::string Receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return "";
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return "";
    std::string msg(buf, static_cast<size_t>(n));
    received_.push_back(msg);
    return msg;
  }

  // Waits (bounded in time and messages) for a message with the line `line`; returns the whole
  // message, or "" on timeout. Messages before it are kept in received().
  std::string WaitFor(const std::string& line, std::chrono::milliseconds timeout) {
    const auto end = Clock::now() + timeout;
    for (int i = 0; i < 10000 && Clock::now() < end; ++i) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      std::string msg = Receive(std::max(left, std::chrono::milliseconds(1)));
      if (msg.empty()) continue;
      for (absl::string_view l : absl::StrSplit(msg, '\n')) {
        if (l == line) return msg;
      }
    }
    return "";
  }

  std::string History() const {
    std::string all;
    for (const auto& m : received_) absl::StrAppend(&all, "[", m, "]\n");
    return all;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  int fd_ = -1;
  std::vector<std::string> received_;
};

// Sets the systemd service environment for the daemons started in its scope (fork inherits it).
class ServiceEnvironment {
 public:
  ServiceEnvironment(const NotifySocket& socket, int watchdog_usec) {
    ::setenv("NOTIFY_SOCKET", socket.path().c_str(), 1);
    ::setenv("WATCHDOG_USEC", std::to_string(watchdog_usec).c_str(), 1);
    ::unsetenv("WATCHDOG_PID");  // unset: meant for the child that reads it
  }
  ~ServiceEnvironment() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
  }
};

bool TcpConnects(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

int ReadPort(const fs::path& file) {
  std::ifstream in(file);
  int port = 0;
  return in >> port ? port : 0;
}

// Counts WATCHDOG=1 pings within `window`.
int CountWatchdogPings(NotifySocket& socket, std::chrono::milliseconds window) {
  int pings = 0;
  const auto end = Clock::now() + window;
  for (int i = 0; i < 1000 && Clock::now() < end; ++i) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    std::string msg = socket.Receive(std::max(left, std::chrono::milliseconds(1)));
    if (msg == "WATCHDOG=1") ++pings;
  }
  return pings;
}

// Waits until `log_file` contains `text` (bounded); returns the log.
std::string WaitForLog(const Daemon& daemon, const std::string& text,
                       std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  std::string log = daemon.Log();
  while (log.find(text) == std::string::npos && Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    log = daemon.Log();
  }
  return log;
}

TEST(ServiceNotify, GatewayReadyAfterPortsWatchdogReloadAndStopping) {
  TempDir dir;
  NotifySocket notify(dir.path() / "notify.sock");
  const fs::path cfg = dir.path() / "gateway.json";
  WriteFile(cfg, nlohmann::json{{"gateway_id", "gw"},
                                {"listen", "127.0.0.1:0"},
                                {"http_listen", "127.0.0.1:0"},
                                {"admin_listen", ""},
                                {"static_orchestrators", nlohmann::json::array()}}
                     .dump());
  Daemon gw("gateway", dir.path() / "gateway.log");
  {
    // 400 ms (a ping every 200 ms), scaled under sanitizers: the gateway withholds a ping when
    // its own health check does not answer within a quarter of the interval (100 ms here).
    ServiceEnvironment env(notify,
                           static_cast<int>(Scaled(std::chrono::milliseconds(400)).count() * 1000));
    ASSERT_TRUE(gw.Start(BinaryPath("switchyard-gateway").string(),
                         {"--config", cfg.string(), "--port-file", (dir.path() / "port").string(),
                          "--http-port-file", (dir.path() / "http-port").string()})
                    .ok());
  }
  std::string ready = notify.WaitFor("READY=1", kStartTimeout);
  ASSERT_FALSE(ready.empty()) << notify.History() << gw.Log();
  // READY=1 means serving: both ports are bound and take connections at that moment.
  const int port = ReadPort(dir.path() / "port");
  const int http_port = ReadPort(dir.path() / "http-port");
  ASSERT_GT(port, 0);
  ASSERT_GT(http_port, 0);
  EXPECT_TRUE(TcpConnects(port));
  EXPECT_TRUE(TcpConnects(http_port));
  EXPECT_THAT(ready, HasSubstr(absl::StrCat("STATUS=serving on port ", port)));

  // Pings at half of WATCHDOG_USEC: about 7 in 1.5 s; at least 3 even on a loaded machine.
  EXPECT_GE(CountWatchdogPings(notify, Scaled(std::chrono::milliseconds(1500))), 3) << gw.Log();

  gw.Signal(SIGHUP);
  EXPECT_FALSE(notify.WaitFor("RELOADING=1", kStepTimeout).empty()) << notify.History();
  EXPECT_FALSE(notify.WaitFor("READY=1", kStepTimeout).empty()) << notify.History();
  EXPECT_TRUE(gw.Alive());

  EXPECT_EQ(gw.Stop(), 0) << gw.Log();
  EXPECT_FALSE(notify.WaitFor("STOPPING=1", std::chrono::seconds(2)).empty()) << notify.History();
}

TEST(ServiceNotify, NoWatchdogPingsWhenSystemdAsksForNone) {
  TempDir dir;
  NotifySocket notify(dir.path() / "notify.sock");
  const fs::path cfg = dir.path() / "gateway.json";
  WriteFile(cfg, nlohmann::json{{"listen", "127.0.0.1:0"}, {"http_listen", ""}, {"admin_listen", ""}}
                     .dump());
  Daemon gw("gateway", dir.path() / "gateway.log");
  {
    ServiceEnvironment env(notify, 400000);
    ::setenv("WATCHDOG_PID", "1", 1);  // the watchdog is meant for another process
    auto st = gw.Start(BinaryPath("switchyard-gateway").string(), {"--config", cfg.string()});
    ::unsetenv("WATCHDOG_PID");
    ASSERT_TRUE(st.ok());
  }
  ASSERT_FALSE(notify.WaitFor("READY=1", kStartTimeout).empty()) << gw.Log();
  EXPECT_EQ(CountWatchdogPings(notify, std::chrono::milliseconds(600)), 0);
  EXPECT_EQ(gw.Stop(), 0);
}

// In process: the watchdog pings only while its health check passes, and ProbeGrpcServer (the
// daemons' check) follows the server's health status.
TEST(ServiceNotify, WatchdogPingsOnlyWhileHealthy) {
  TempDir dir;
  NotifySocket notify(dir.path() / "notify.sock");
  std::atomic<bool> healthy{true};
  // sd_notify reads NOTIFY_SOCKET at each message: keep it set while the watchdog runs.
  auto env = std::make_unique<ServiceEnvironment>(notify, 200000);  // a ping every 100 ms
  std::unique_ptr<Watchdog> watchdog =
      Watchdog::StartIfEnabled([&](std::chrono::milliseconds budget) {
        EXPECT_EQ(budget, std::chrono::milliseconds(50));
        return healthy ? absl::OkStatus() : absl::UnavailableError("test says no");
      });
  ASSERT_NE(watchdog, nullptr);
  EXPECT_EQ(watchdog->interval(), std::chrono::microseconds(200000));
  EXPECT_GE(CountWatchdogPings(notify, std::chrono::milliseconds(600)), 3);
  healthy = false;
  CountWatchdogPings(notify, std::chrono::milliseconds(300));  // one may have been under way
  EXPECT_EQ(CountWatchdogPings(notify, std::chrono::milliseconds(500)), 0);
  healthy = true;
  EXPECT_GE(CountWatchdogPings(notify, std::chrono::milliseconds(600)), 3);
  watchdog.reset();
  CountWatchdogPings(notify, std::chrono::milliseconds(50));
  EXPECT_EQ(CountWatchdogPings(notify, std::chrono::milliseconds(300)), 0);

  // No WATCHDOG_USEC: no watchdog.
  env.reset();
  EXPECT_EQ(Watchdog::StartIfEnabled(nullptr), nullptr);
}

TEST(ServiceNotify, ProbeGrpcServerFollowsTheHealthStatus) {
  EnableStandardGrpcServices();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(ProbeGrpcServer(server.get(), std::chrono::seconds(5)).ok());
  SetGrpcServing(server.get(), false);
  absl::Status st = ProbeGrpcServer(server.get(), std::chrono::seconds(5));
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(st.message()), HasSubstr("NOT_SERVING"));
  server->Shutdown(std::chrono::system_clock::now());
  EXPECT_FALSE(ProbeGrpcServer(nullptr, std::chrono::milliseconds(500)).ok());
}

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
    return nlohmann::json{
        {"gateway_id", "gw"},      {"listen", "127.0.0.1:0"},         {"http_listen", ""},
        {"admin_listen", ""},      {"poll_interval_ms", 200},         {"static_orchestrators", statics},
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
