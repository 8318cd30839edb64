// Cancellation of a blocking model call: a flag that wakes whoever waits on it, and one watcher
// thread that turns a polled "is the call cancelled?" probe (gRPC's sync API) into that flag.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace switchyard::runner {

// A move-only handle on something registered with `Owner` under an id: resetting or destroying it
// calls owner->Release(id), which unregisters it.
template <typename Owner>
class ScopedRegistration {
 public:
  ScopedRegistration() = default;
  ScopedRegistration(Owner* owner, uint64_t id) : owner_(owner), id_(id) {}
  ScopedRegistration(ScopedRegistration&& other) noexcept { *this = std::move(other); }
  ScopedRegistration& operator=(ScopedRegistration&& other) noexcept {
    if (this != &other) {
      Reset();
      owner_ = std::exchange(other.owner_, nullptr);
      id_ = other.id_;
    }
    return *this;
  }
  ~ScopedRegistration() { Reset(); }
  void Reset() {
    if (owner_ != nullptr) std::exchange(owner_, nullptr)->Release(id_);
  }

 private:
  Owner* owner_ = nullptr;
  uint64_t id_ = 0;
};

// Set once, never cleared. Waiters register a wake-up (OnCancel) instead of polling the flag, so
// a cancelled call is noticed the moment Cancel runs.
class CancelToken {
 public:
  CancelToken() = default;
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;

  // Sets the flag and runs every registered wake-up once (on this thread). Later calls do nothing.
  void Cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // Runs `wake` once when the token is cancelled (at once, here, if it already is) as long as the
  // returned registration lives. Destroying the registration waits for a `wake` in progress, so
  // whatever `wake` touches may be destroyed right after it.
  using Registration = ScopedRegistration<const CancelToken>;
  [[nodiscard]] Registration OnCancel(std::function<void()> wake) const;

 private:
  friend Registration;
  void Release(uint64_t id) const;

  std::atomic<bool> cancelled_{false};
  // Wake-ups run under this lock, which is what lets Registration::Reset wait for one in progress.
  mutable absl::Mutex mu_;
  mutable uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  mutable std::map<uint64_t, std::function<void()>> wakes_ ABSL_GUARDED_BY(mu_);
};

// Cancels tokens whose probe says so. gRPC's synchronous server API signals a cancelled call only
// through ServerContext::IsCancelled(), which must be asked. One thread asks for every call in
// flight, every `interval`, so no waiter polls: each blocks on its own result, deadline and token
// and wakes at once when this thread cancels the token. The interval bounds how late a
// cancellation is seen (10 ms, as the per-call polling it replaces); the thread sleeps while no
// call is watched.
class CancelWatcher {
 public:
  // The process's watcher (started on first use, never stopped).
  static CancelWatcher& Default();
  explicit CancelWatcher(absl::Duration interval);
  ~CancelWatcher();
  CancelWatcher(const CancelWatcher&) = delete;
  CancelWatcher& operator=(const CancelWatcher&) = delete;

  // Cancels `token` once `probe` returns true, as long as the returned watch lives. Destroying the
  // watch waits for a probe in progress, so the probe may capture the call's state.
  using Watch = ScopedRegistration<CancelWatcher>;
  // An empty probe watches nothing (the call cannot be cancelled from outside).
  [[nodiscard]] Watch Start(std::function<bool()> probe, CancelToken& token);

 private:
  friend Watch;
  void Release(uint64_t id);

  struct Entry {
    std::function<bool()> probe;
    CancelToken* token;
  };
  void Loop();

  const absl::Duration interval_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<std::thread> thread_;
};

// Cancels `token` when `is_cancelled` (e.g. a gRPC ServerContext's IsCancelled) turns true, on
// the process's watcher, for as long as the result lives.
[[nodiscard]] CancelWatcher::Watch WatchForCancel(std::function<bool()> is_cancelled,
                                                  CancelToken& token);

}  // namespace switchyard::runner
