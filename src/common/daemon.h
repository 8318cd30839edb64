// What both daemons' mains share: their common flags, the process set-up in the order it needs
// (DaemonProcess), signals, port files, and the systemd service protocol (sd_notify readiness,
// reload and stop notifications, the watchdog).
#pragma once

#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "common/mutex.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace switchyard {

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (call before starting any thread, so
// every thread inherits the mask) and returns the set to wait on.
sigset_t BlockTerminationSignals();

// Waits for SIGINT or SIGTERM; returns the signal number. SIGHUP is ignored.
int WaitForTerminationSignal(const sigset_t& set);

// Waits for SIGINT or SIGTERM, running `reload` on every SIGHUP in between (bracketed by
// RELOADING=1 and READY=1 to systemd, and logged: a failed reload keeps the old config, says why
// and the daemon goes on). Sends STOPPING=1 before returning the terminating signal's number.
int ServeSignals(const sigset_t& set, const std::function<absl::Status()>& reload);

// Tunes glibc malloc for a long-running daemon that allocates and frees large buffers per job:
// freed memory stays in the process for the next job (no trimming until 256 MiB of the heap top
// is free; blocks up to 32 MiB come from the heap rather than fresh mmaps). Returned to the
// kernel, every job would fault the pages in and zero them again; per transcoded segment (new
// encoders, frames) that was about a tenth of its CPU time (docs/performance.md). The cost: RSS
// stays near its high-water mark between jobs, so the number of malloc arenas (each with its own
// high-water mark) is capped at MallocArenaCap(cores) unless MALLOC_ARENA_MAX is set. Call once at
// the start of main, before other threads exist.
void KeepFreedMemoryForReuse();
// Keeps OpenSSL from freeing its state in an atexit handler. A gRPC thread still running while
// exit() runs that handler frees its OpenSSL per-thread state a second time (grpc/grpc#42608):
// one of the two exit-time races behind the double frees ASan reported from daemons as they
// exited (docs/testing.md); GrpcRuntime below closes the other and joins gRPC's threads. The
// process's memory goes back to the kernel at exit anyway. Call first thing in main, before
// anything initializes OpenSSL; false if OpenSSL refused (the daemon runs on, as before).
bool SkipOpenSslCleanupAtExit();

// Holds a reference on the gRPC runtime for as long as it lives: declare one in main before any
// gRPC object and after BlockTerminationSignals (it starts gRPC's threads, which inherit the
// signal mask: a thread that did not block SIGTERM would take it and end the process). Without it
// the runtime's teardown starts when its last user goes away, and that can be on one of gRPC's own
// threads (a channel's or server's completion queue is deleted there once it drains): gRPC then
// tears itself down on a detached thread while exit() runs the process's destructors, and both free
// the same state (a double free that ASan reported from a gRPC thread in a daemon's
// completion-queue unref as it exited; docs/testing.md). The destructor, run after every gRPC
// object is gone, drops the reference and waits, at most `wait`, until the teardown (which joins
// gRPC's threads) has finished, so that none of gRPC's threads runs during exit.
class GrpcRuntime {
 public:
  explicit GrpcRuntime(std::chrono::milliseconds wait = std::chrono::seconds(5));
  ~GrpcRuntime();
  GrpcRuntime(const GrpcRuntime&) = delete;
  GrpcRuntime& operator=(const GrpcRuntime&) = delete;

 private:
  const std::chrono::milliseconds wait_;
};

// Arenas for `cores` hardware threads: one per core, 2 to 8 (glibc's default is 8 per core).
int MallocArenaCap(unsigned cores);

// Writes `port` followed by a newline to `path` atomically (write, then rename), so a test or
// script polling for the file never reads half of it.
absl::Status WritePortFile(const std::filesystem::path& path, int port);

// The systemd notification protocol (sd_notify(3)). Each is a no-op returning OK when the daemon
// is not started by systemd (no NOTIFY_SOCKET), so running by hand or in tests needs nothing.
absl::Status NotifyReady(const std::string& status_line);
absl::Status NotifyReloading();
absl::Status NotifyStopping();

// Checks that `server` answers RPCs: a grpc.health.v1 Check over an in-process channel, within
// `timeout`. OK when it answers SERVING; UNAVAILABLE (with why) when it does not answer, answers
// NOT_SERVING, or fails. Not after `server->Shutdown()`: gRPC 1.51 crashes creating a call on
// the in-process channel of a shut-down server (the daemons stop their watchdog first).
absl::Status ProbeGrpcServer(grpc::Server* server, std::chrono::milliseconds timeout);

// Sends WATCHDOG=1 at half the interval systemd asks for (WatchdogSec=, via WATCHDOG_USEC and
// WATCHDOG_PID) from its own thread, but only while `healthy` returns OK: a daemon that stops
// answering is then killed and restarted by systemd instead of lingering. A failed check is
// logged once per streak. `healthy` is given a time budget (a quarter of the interval) so a hung
// check still leaves room to ping in time once it recovers.
class Watchdog {
 public:
  using HealthCheck = std::function<absl::Status(std::chrono::milliseconds budget)>;

  // Null when systemd asks for no watchdog (or asks it of another process).
  static std::unique_ptr<Watchdog> StartIfEnabled(HealthCheck healthy);
  ~Watchdog();  // stops and joins
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  std::chrono::microseconds interval() const { return interval_; }

 private:
  Watchdog(std::chrono::microseconds interval, HealthCheck healthy);
  void Run();

  const std::chrono::microseconds interval_;  // systemd's timeout; we ping at half of it
  HealthCheck healthy_;
  StopSignal stop_;
  std::thread thread_;
};

// The flags both daemons take: the config file, overrides of the fields their configs share, the
// port files and the drain's grace period.
struct DaemonFlags {
  std::string config_path;
  std::string listen;
  std::string port_file;
  std::string http_listen;
  std::string http_port_file;
  std::string log_level;
  std::string log_format;
  int grace_ms = 10000;

  // Adds the flags to `app`; `http_listen_help` says what the HTTP port serves.
  void AddTo(CLI::App& app, const std::string& http_listen_help, bool config_required);
  // Overrides the config's `listen`, `http_listen` (given empty, it disables the port) and log
  // level and format with the flags given.
  template <typename Config>
  void ApplyTo(Config* config) const {
    if (!listen.empty()) config->listen = listen;
    if (HttpListenGiven()) config->http_listen = http_listen;
    if (!log_level.empty()) config->log_level = log_level;
    if (!log_format.empty()) config->log_format = log_format;
  }
  bool HttpListenGiven() const;
  std::chrono::milliseconds grace() const { return std::chrono::milliseconds(grace_ms); }

 private:
  CLI::Option* http_listen_option_ = nullptr;
};

// Writes each (path, port) port file whose path is not empty, in order; stops at the first failure.
absl::Status WritePortFiles(const std::vector<std::pair<std::string, int>>& files);

// A daemon's process-wide set-up, made in the order it needs as the first thing in main (after
// the flags): OpenSSL's exit-time cleanup skipped, malloc tuned (optionally), the termination
// signals blocked, and then the gRPC runtime held (GrpcRuntime: its threads inherit the mask).
// Declare it before the config and any gRPC object, so that it is destroyed after the server.
struct DaemonOptions {
  bool keep_freed_memory = false;  // KeepFreedMemoryForReuse
};
class DaemonProcess {
 public:
  // `name` starts the messages written to stderr before logging is set up.
  explicit DaemonProcess(std::string name, DaemonOptions options = {});
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // A start-up failure before logging is set up: "<name>: <message>" on stderr; returns exit code
  // 2 (a bad config or flag).
  int ConfigError(const absl::Status& status) const;
  // Sets up logging (common/logging.h); then warns if OpenSSL refused to skip its cleanup.
  absl::Status InitLogging(const std::string& level, const std::string& format,
                           const std::string& node_id) const;
  // A failure once logging is set up: logged as critical; returns exit code 1.
  int Fatal(const absl::Status& status) const;

  // Serves until SIGINT or SIGTERM: tells systemd it is ready ("serving on port <port>"), pings
  // the watchdog while `server.CheckHealth` passes, runs `reload` on every SIGHUP; then logs
  // "signal <n>: <stopping>", stops the watchdog (systemd stops watching at STOPPING=1; the drain
  // has TimeoutStopSec), drains the server with `grace` and returns exit code 0.
  template <typename Server>
  int Serve(Server& server, const std::function<absl::Status()>& reload, std::string_view stopping,
            std::chrono::milliseconds grace) const {
    return ServeUntilSignal(
        server.port(),
        [&server](std::chrono::milliseconds budget) { return server.CheckHealth(budget); }, reload,
        stopping, [&server, grace] { server.Shutdown(grace); });
  }

 private:
  static sigset_t SetUpSignals(const DaemonOptions& options);
  int ServeUntilSignal(int port, Watchdog::HealthCheck healthy,
                       const std::function<absl::Status()>& reload, std::string_view stopping,
                       const std::function<void()>& shutdown) const;

  const std::string name_;
  const bool openssl_at_exit_skipped_;
  const sigset_t signals_;
  GrpcRuntime grpc_runtime_;  // after the signals: its threads inherit their mask
};

}  // namespace switchyard
