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
  WriteFile(
      cfg,
      nlohmann::json{{"listen", "127.0.0.1:0"}, {"http_listen", ""}, {"admin_listen", ""}}.dump());
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

}  // namespace
}  // namespace switchyard::testing
