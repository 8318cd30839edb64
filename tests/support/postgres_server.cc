#include "support/postgres_server.h"

#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"

namespace switchyard::testing {
namespace fs = std::filesystem;

namespace {

// The folder with initdb and postgres: Debian keeps them in /usr/lib/postgresql/<major>/bin,
// off PATH; the newest major there, else PATH.
std::string FindBinDir() {
  std::vector<fs::path> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const fs::path bin = entry.path() / "bin";
    if (::access((bin / "postgres").c_str(), X_OK) == 0 &&
        ::access((bin / "initdb").c_str(), X_OK) == 0) {
      found.push_back(bin);
    }
  }
  if (!found.empty()) {
    // Numeric order of the major version ("9.6" < "15").
    std::sort(found.begin(), found.end(), [](const fs::path& a, const fs::path& b) {
      return std::atof(a.parent_path().filename().c_str()) <
             std::atof(b.parent_path().filename().c_str());
    });
    return found.back().string();
  }
  const char* path = std::getenv("PATH");
  for (absl::string_view d : absl::StrSplit(path != nullptr ? path : "", ':')) {
    if (d.empty()) continue;
    const fs::path dir{std::string(d)};
    if (::access((dir / "postgres").c_str(), X_OK) == 0 &&
        ::access((dir / "initdb").c_str(), X_OK) == 0) {
      return dir.string();
    }
  }
  return "";
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};

}  // namespace

std::vector<std::string> PostgresServer::AsUser(const std::string& program) const {
  if (::geteuid() != 0) return {program};
  return {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", program};
}

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Start(
    const std::filesystem::path& dir, PostgresServerOptions options) {
  std::string bin_dir = FindBinDir();
  if (bin_dir.empty()) {
    return absl::FailedPreconditionError(
        "PostgreSQL is not installed (no initdb and postgres in /usr/lib/postgresql/*/bin or "
        "PATH; Debian's postgresql-15 package): run scripts/install-deps");
  }
  if (::geteuid() == 0 &&
      (::access("/usr/bin/setpriv", X_OK) != 0 || ::getpwnam("nobody") == nullptr)) {
    return absl::FailedPreconditionError(
        "running as root, PostgreSQL needs an unprivileged user: /usr/bin/setpriv (util-linux) "
        "and the user nobody");
  }
  std::unique_ptr<PostgresServer> server(
      new PostgresServer(dir / "pg", std::move(bin_dir), std::move(options)));
  if (auto st = server->InitDb(); !st.ok()) return st;
  absl::Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const int port = PickFreePort();
    if (port == 0) continue;
    last = server->StartOn(port);
    if (last.ok()) return server;
  }
  return absl::InternalError(absl::StrCat("postgres did not start: ", last.message()));
}

absl::Status PostgresServer::InitDb() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir_.string()));
  if (::geteuid() == 0) {
    const passwd* nobody = ::getpwnam("nobody");
    // The unprivileged user must reach its folder through the temp dirs above it (0700, root's):
    // they get search permission (x) only, nothing listed or read.
    for (fs::path p = dir_.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
      struct stat st {};
      if (::stat(p.c_str(), &st) == 0 && st.st_uid == 0 && (st.st_mode & S_IXOTH) == 0) {
        ::chmod(p.c_str(), (st.st_mode & 07777) | S_IXGRP | S_IXOTH);
      }
    }
    if (::chown(dir_.c_str(), nobody->pw_uid, nobody->pw_gid) != 0) {
      return absl::InternalError(absl::StrCat("cannot chown ", dir_.string(), " to nobody"));
    }
  }
  std::vector<std::string> cmd = AsUser(bin_dir_ + "/initdb");
  const std::string data = (dir_ / "data").string();
  for (const char* arg : {"-D", data.c_str(), "-U", "postgres", "-E", "UTF8", "--locale=C",
                          "--no-sync", "--no-instructions"}) {
    cmd.push_back(arg);
  }
  const fs::path pwfile = dir_ / "pwfile";
  if (!options_.password.empty()) {
    WriteFile(pwfile, options_.password + "\n");
    if (::geteuid() == 0) {
      const passwd* nobody = ::getpwnam("nobody");
      if (::chown(pwfile.c_str(), nobody->pw_uid, nobody->pw_gid) != 0) {
        return absl::InternalError("cannot chown the password file");
      }
    }
    ::chmod(pwfile.c_str(), 0600);
    cmd.push_back("--auth=scram-sha-256");
    cmd.push_back("--pwfile=" + pwfile.string());
  } else {
    cmd.push_back("--auth=trust");
  }
  std::vector<std::string> quoted;
  for (const auto& a : cmd) quoted.push_back(Quote(a));
  std::string log;
  const int rc = RunCommand(absl::StrJoin(quoted, " ") + " 2>&1", &log);
  fs::remove(pwfile, ec);
  if (rc != 0) return absl::InternalError(absl::StrCat("initdb failed (", rc, "): ", log));
  return absl::OkStatus();
}

absl::Status PostgresServer::StartOn(int port) {
  Stop();
  auto daemon = std::make_unique<Daemon>(
      "postgres", dir_.parent_path() / absl::StrCat("postgres-", ++starts_, ".log"));
  std::vector<std::string> argv = AsUser(bin_dir_ + "/postgres");
  const std::string binary = argv.front();
  std::vector<std::string> args(argv.begin() + 1, argv.end());
  for (std::string arg : {std::string("-D"), (dir_ / "data").string(), std::string("-k"),
                          dir_.string(), std::string("-p"), std::to_string(port), std::string("-c"),
                          std::string("listen_addresses=127.0.0.1"), std::string("-c"),
                          std::string(options_.fsync ? "fsync=on" : "fsync=off"), std::string("-c"),
                          std::string("max_connections=100"), std::string("-c"),
                          std::string("shared_buffers=16MB")}) {
    args.push_back(arg);
  }
  if (auto st = daemon->Start(binary, args); !st.ok()) return st;
  const std::string conninfo = absl::StrCat("host=127.0.0.1 port=", port,
                                            " dbname=postgres user=postgres connect_timeout=2");
  const auto deadline = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(20));
  while (std::chrono::steady_clock::now() < deadline) {
    if (!daemon->Alive()) {
      return absl::UnavailableError(
          absl::StrCat("postgres exited on port ", port, " (taken?): ", daemon->Log()));
    }
    if (PQping(conninfo.c_str()) == PQPING_OK) {
      port_ = port;
      daemon_ = std::move(daemon);
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "postgres on port ", port, " did not accept connections in 20 s: ", daemon->Log()));
}

void PostgresServer::Stop(bool immediate) {
  if (daemon_ == nullptr) return;
  daemon_->Signal(immediate ? SIGQUIT : SIGINT);
  const auto deadline = std::chrono::steady_clock::now() + Scaled(std::chrono::seconds(15));
  while (daemon_->Alive() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  daemon_->Kill();  // a no-op once it exited
  daemon_.reset();
}

absl::Status PostgresServer::Restart() {
  // The port was ours a moment ago; a rare clash with another process is reported, not hidden.
  return StartOn(port_);
}

std::string PostgresServer::dsn() const {
  return absl::StrCat("postgresql://postgres@127.0.0.1:", port_, "/postgres");
}

absl::StatusOr<std::string> PostgresServer::Query(const std::string& sql) const {
  const char* keys[] = {"dbname", "password", "connect_timeout", nullptr};
  const std::string d = dsn();
  const char* values[] = {
      d.c_str(), options_.password.empty() ? nullptr : options_.password.c_str(), "5", nullptr};
  std::unique_ptr<PGconn, ConnDeleter> conn(PQconnectdbParams(keys, values, 1));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return absl::UnavailableError(absl::StrCat("cannot connect: ", PQerrorMessage(conn.get())));
  }
  std::unique_ptr<PGresult, ResultDeleter> r(PQexec(conn.get(), sql.c_str()));
  const ExecStatusType st = PQresultStatus(r.get());
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    return absl::InternalError(absl::StrCat(sql, ": ", PQresultErrorMessage(r.get())));
  }
  if (st == PGRES_COMMAND_OK || PQntuples(r.get()) == 0) return std::string();
  return std::string(PQgetvalue(r.get(), 0, 0));
}

std::string PostgresServer::Log() const { return daemon_ != nullptr ? daemon_->Log() : ""; }

}  // namespace switchyard::testing
