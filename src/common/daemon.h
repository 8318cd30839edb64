// Small pieces both daemons' mains share.
#pragma once

#include <csignal>
#include <filesystem>

#include "absl/status/status.h"

namespace switchyard {

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (call before starting any thread, so
// every thread inherits the mask) and returns the set to wait on.
sigset_t BlockTerminationSignals();

// Waits for SIGINT or SIGTERM; returns the signal number.
int WaitForTerminationSignal(const sigset_t& set);

// Writes `port` followed by a newline to `path` atomically (write, then rename), so a test or
// script polling for the file never reads half of it.
absl::Status WritePortFile(const std::filesystem::path& path, int port);

}  // namespace switchyard
