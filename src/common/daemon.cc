#include "common/daemon.h"

#include <malloc.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include <grpc/grpc.h>
#include <grpcpp/generic/generic_stub.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/logging.h"
#include "common/status.h"

namespace switchyard {
namespace {

// sd_notify returns > 0 when sent, 0 when there is no NOTIFY_SOCKET, < 0 (-errno) on failure.
absl::Status Notify(const std::string& state) {
  int r = sd_notify(0, state.c_str());
  if (r < 0) {
    return absl::UnavailableError(absl::StrCat("sd_notify(", state, ") failed: errno ", -r));
  }
  return absl::OkStatus();
}

void LogIfFailed(const absl::Status& st) {
  if (!st.ok()) spdlog::warn("{}", std::string(st.message()));
}

}  // namespace

sigset_t BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int WaitForTerminationSignal(const sigset_t& set) {
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGINT || sig == SIGTERM) return sig;
  }
}

int ServeSignals(const sigset_t& set, const std::function<absl::Status()>& reload) {
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGINT || sig == SIGTERM) {
      // Tell systemd first: the drain that follows can take the whole grace period.
      LogIfFailed(NotifyStopping());
      return sig;
    }
    if (sig != SIGHUP) continue;
    spdlog::info("SIGHUP: reloading the config");
    LogIfFailed(NotifyReloading());
    absl::Status st = reload ? reload() : absl::UnimplementedError("reload is not supported");
    if (st.ok()) {
      spdlog::info("reload done");
      LogIfFailed(NotifyReady("serving (reloaded)"));
    } else {
      spdlog::error("reload rejected, keeping the previous config: {}", std::string(st.message()));
      // Still READY: the daemon serves on with the old config, which systemd should know.
      LogIfFailed(NotifyReady(absl::StrCat("serving (reload rejected: ", st.message(), ")")));
    }
  }
}

absl::Status WritePortFile(const std::filesystem::path& path, int port) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp);
    out << port << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write port file ", tmp.string()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot write port file ", path.string()));
  return absl::OkStatus();
}

absl::Status NotifyReady(const std::string& status_line) {
  // STATUS= is one line of free text shown by `systemctl status`; keep it to one line.
  return Notify(absl::StrCat("READY=1\nSTATUS=", absl::StrReplaceAll(status_line, {{"\n", " "}})));
}

absl::Status NotifyReloading() {
  // systemd >= 253 wants the reload's start time with RELOADING=1 (Type=notify-reload); older
  // ones ignore it.
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t usec = static_cast<uint64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
  return Notify(absl::StrCat("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=", usec));
}

absl::Status NotifyStopping() { return Notify("STOPPING=1\nSTATUS=draining"); }

absl::Status ProbeGrpcServer(grpc::Server* server, std::chrono::milliseconds timeout) {
  if (server == nullptr) return absl::UnavailableError("no gRPC server");
  grpc::GenericStub stub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::Slice empty("");  // HealthCheckRequest{service: ""}: the whole server
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  Mutex mu;
  CondVar cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   MutexLock lock(&mu);
                   status = std::move(s);
                   done = true;
                   cv.SignalAll();
                 });
  {
    // The call's deadline ends it; the extra second only guards against a callback never coming.
    MutexLock lock(&mu);
    if (!cv.WaitFor(&mu, timeout + std::chrono::seconds(1), [&] { return done; })) {
      ctx.TryCancel();
      cv.Wait(&mu, [&] { return done; });  // the callback references this frame
      return absl::UnavailableError("gRPC health check got no answer");
    }
  }
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("gRPC health check failed: ", status.error_message()));
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::UnavailableError("unreadable health answer");
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse{status: SERVING} is field 1 (varint) = 1.
  if (bytes != std::string("\x08\x01", 2)) {
    return absl::UnavailableError("gRPC health check answers NOT_SERVING");
  }
  return absl::OkStatus();
}

std::unique_ptr<Watchdog> Watchdog::StartIfEnabled(HealthCheck healthy) {
  uint64_t usec = 0;
  // 0 unset (or WATCHDOG_PID names another process), > 0 enabled, < 0 malformed variables.
  int r = sd_watchdog_enabled(0, &usec);
  if (r < 0) spdlog::warn("ignoring the systemd watchdog settings: errno {}", -r);
  if (r <= 0 || usec == 0) return nullptr;
  spdlog::info("systemd watchdog: {} ms, pinging every {} ms while healthy", usec / 1000,
               usec / 2000);
  return std::unique_ptr<Watchdog>(
      new Watchdog(std::chrono::microseconds(usec), std::move(healthy)));
}

Watchdog::Watchdog(std::chrono::microseconds interval, HealthCheck healthy)
    : interval_(interval), healthy_(std::move(healthy)) {
  thread_ = std::thread([this] { Run(); });
}

Watchdog::~Watchdog() {
  stop_.Stop();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::Run() {
  const auto period = interval_ / 2;
  const auto budget =
      std::max(std::chrono::milliseconds(1),
               std::chrono::duration_cast<std::chrono::milliseconds>(interval_ / 4));
  bool failing = false;
  for (;;) {
    absl::Status st = healthy_ ? healthy_(budget) : absl::OkStatus();
    if (st.ok()) {
      if (failing) spdlog::info("healthy again; watchdog pings resume");
      failing = false;
      LogIfFailed(Notify("WATCHDOG=1"));
    } else if (!failing) {
      // No ping: if this lasts WatchdogSec, systemd kills the daemon and restarts it.
      spdlog::error("unhealthy, withholding the watchdog ping: {}", std::string(st.message()));
      failing = true;
    }
    if (stop_.WaitFor(period)) return;
  }
}

bool SkipOpenSslCleanupAtExit() {
  return OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr) == 1;
}

GrpcRuntime::GrpcRuntime(std::chrono::milliseconds wait) : wait_(wait) { grpc_init(); }

GrpcRuntime::~GrpcRuntime() {
  // The last reference runs the teardown here, on this thread; if a gRPC thread still holds one
  // (a completion queue being deleted), the teardown runs on gRPC's own thread once that is
  // done, and grpc_is_initialized() answers true until it has finished.
  grpc_shutdown();
  const auto deadline = std::chrono::steady_clock::now() + wait_;
  while (grpc_is_initialized() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (grpc_is_initialized()) {
    spdlog::warn("gRPC had not finished shutting down {} ms after the daemon stopped; exiting",
                 wait_.count());
  }
}

int MallocArenaCap(unsigned cores) { return static_cast<int>(std::clamp(cores, 2u, 8u)); }

void KeepFreedMemoryForReuse() {
  // Setting either also turns off glibc's dynamic thresholds, which would otherwise trim at twice
  // the largest block freed so far (a few MB) and hand the encoders' memory back every segment.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  // Each arena keeps its own freed memory, so with glibc's default of 8 arenas per core every
  // arena slowly reaches its own high-water mark as per-job threads land on it: a soak's
  // orchestrators grew 7-10% over 10 minutes and were still growing; capped, they settle within
  // the warm-up, ~60 MiB smaller (docs/performance.md). An operator's MALLOC_ARENA_MAX wins.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) {
    mallopt(M_ARENA_MAX, MallocArenaCap(std::thread::hardware_concurrency()));
  }
}

void DaemonFlags::AddTo(CLI::App& app, const std::string& http_listen_help, bool config_required) {
  auto* config =
      app.add_option("-c,--config", config_path, "JSON config file (see docs/configuration.md)");
  if (config_required) config->required();
  app.add_option("--listen", listen, "Override `listen` (HOST:PORT; port 0 picks a free one)");
  app.add_option("--port-file", port_file, "Write the bound port to this file once serving");
  http_listen_option_ = app.add_option("--http-listen", http_listen, http_listen_help);
  app.add_option("--http-port-file", http_port_file,
                 "Write the bound HTTP port to this file once serving");
  app.add_option("--log-level", log_level, "Override `log.level` (trace..error)");
  app.add_option("--log-format", log_format, "Override `log.format` (text or json)");
  app.add_option("--shutdown-grace-ms", grace_ms, "Time in-flight jobs get to finish on SIGTERM")
      ->check(CLI::NonNegativeNumber);
}

bool DaemonFlags::HttpListenGiven() const {
  return http_listen_option_ != nullptr && http_listen_option_->count() > 0;
}

absl::Status WritePortFiles(const std::vector<std::pair<std::string, int>>& files) {
  for (const auto& [path, port] : files) {
    if (path.empty()) continue;
    if (absl::Status st = WritePortFile(path, port); !st.ok()) return st;
  }
  return absl::OkStatus();
}

DaemonProcess::DaemonProcess(std::string name, DaemonOptions options)
    : name_(std::move(name)),
      openssl_at_exit_skipped_(SkipOpenSslCleanupAtExit()),
      signals_(SetUpSignals(options)) {}

sigset_t DaemonProcess::SetUpSignals(const DaemonOptions& options) {
  // Both before any other thread exists: malloc's settings, and the mask every thread inherits.
  if (options.keep_freed_memory) KeepFreedMemoryForReuse();
  return BlockTerminationSignals();
}

int DaemonProcess::ConfigError(const absl::Status& status) const {
  std::cerr << name_ << ": " << status.message() << "\n";
  return 2;
}

absl::Status DaemonProcess::InitLogging(const std::string& level, const std::string& format,
                                        const std::string& node_id) const {
  SY_RETURN_IF_ERROR(switchyard::InitLogging(level, format, node_id));
  if (!openssl_at_exit_skipped_) spdlog::warn("OpenSSL refused OPENSSL_INIT_NO_ATEXIT");
  return absl::OkStatus();
}

int DaemonProcess::Fatal(const absl::Status& status) const {
  spdlog::critical("{}", status.ToString());
  return 1;
}

int DaemonProcess::ServeUntilSignal(int port, Watchdog::HealthCheck healthy,
                                    const std::function<absl::Status()>& reload,
                                    std::string_view stopping,
                                    const std::function<void()>& shutdown) const {
  // Ports bound and port files written: tell systemd (Type=notify) we serve.
  LogIfFailed(NotifyReady(absl::StrCat("serving on port ", port)));
  auto watchdog = Watchdog::StartIfEnabled(std::move(healthy));
  int sig = ServeSignals(signals_, reload);
  spdlog::info("signal {}: {}", sig, stopping);
  watchdog.reset();  // systemd stops watching at STOPPING=1; the drain has TimeoutStopSec
  shutdown();
  spdlog::info("stopped");
  return 0;
}

}  // namespace switchyard
