// Small pieces both daemons' mains share: signals, port files, and the systemd service protocol
// (sd_notify readiness, reload and stop notifications, the watchdog).
#pragma once

#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "common/mutex.h"

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
  void Run() ABSL_LOCKS_EXCLUDED(mu_);

  const std::chrono::microseconds interval_;  // systemd's timeout; we ping at half of it
  HealthCheck healthy_;
  Mutex mu_;
  CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace switchyard
