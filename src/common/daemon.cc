#include "common/daemon.h"

#include <pthread.h>

#include <fstream>

#include "absl/strings/str_cat.h"

namespace switchyard {

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
    // SIGHUP: config reload is not supported yet; ignore rather than die.
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

}  // namespace switchyard
