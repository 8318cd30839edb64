// A PostgreSQL server of a test's own (Debian's postgresql-15): `initdb` into a folder of a temp
// dir, then `postgres` on 127.0.0.1 at a free port, its socket in that folder. PostgreSQL refuses
// to run as root, so a test running as root runs initdb and postgres as `nobody` (setpriv) and
// hands it the folder. Stopped by the destructor; Stop and Restart mid-test keep the data. Every
// wait is bounded.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "support/cluster.h"

namespace switchyard::testing {

struct PostgresServerOptions {
  // Non-empty: the superuser `postgres` has this password and every connection needs it
  // (scram-sha-256). Empty: trust on loopback.
  std::string password;
  // Off for tests (faster, nothing survives a power cut there); on for benchmarks.
  bool fsync = false;
};

class PostgresServer {
 public:
  // FAILED_PRECONDITION naming scripts/install-deps when PostgreSQL's binaries are not installed:
  // tests that need it fail rather than skip (CI installs postgresql-15).
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start(const std::filesystem::path& dir,
                                                               PostgresServerOptions options = {});
  ~PostgresServer() { Stop(); }

  // Fast shutdown (SIGINT: clients disconnected, then a checkpoint), or with `immediate` SIGQUIT
  // (no checkpoint, like a crash: the next start recovers from the WAL). Bounded, then SIGKILL.
  void Stop(bool immediate = false);
  // Again on the same port with the same data (bounded wait until it accepts connections).
  absl::Status Restart();
  bool running() const { return daemon_ != nullptr; }

  int port() const { return port_; }
  // postgresql://postgres@127.0.0.1:PORT/postgres
  std::string dsn() const;
  // Runs `sql` as the superuser; the first column of the first row ("" when none).
  absl::StatusOr<std::string> Query(const std::string& sql) const;
  std::string Log() const;

 private:
  PostgresServer(std::filesystem::path dir, std::string bin_dir, PostgresServerOptions options)
      : dir_(std::move(dir)), bin_dir_(std::move(bin_dir)), options_(std::move(options)) {}
  absl::Status InitDb();
  absl::Status StartOn(int port);
  // The command's argv prefix that runs it as the unprivileged user when we are root.
  std::vector<std::string> AsUser(const std::string& program) const;

  std::filesystem::path dir_;
  std::string bin_dir_;
  PostgresServerOptions options_;
  int port_ = 0;
  int starts_ = 0;
  std::unique_ptr<Daemon> daemon_;
};

}  // namespace switchyard::testing
