#include "support/cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace switchyard::testing {
namespace fs = std::filesystem;

fs::path BinaryPath(const std::string& name) { return fs::path(SWITCHYARD_BIN_DIR) / name; }
fs::path ModelDir() { return fs::path(SWITCHYARD_MODEL_DIR); }

void ExpectNoForgedLogLines(const std::string& log, const std::string& forged_start) {
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.rfind(forged_start, 0), 0u) << "forged line: " << line.substr(0, 200);
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << line.substr(0, 200);
    EXPECT_LT(line.size(), 4096u) << line.substr(0, 200);
  }
}

double TimeScale() {
  static const double scale = [] {
    const char* value = std::getenv("SWITCHYARD_TEST_TIME_SCALE");
    if (value == nullptr || *value == '\0') return 1.0;
    char* end = nullptr;
    const double parsed = std::strtod(value, &end);
    if (end == value || *end != '\0' || !(parsed >= 1.0 && parsed <= 100.0)) {
      std::fprintf(stderr, "SWITCHYARD_TEST_TIME_SCALE='%s': expected a number from 1 to 100\n",
                   value);
      std::abort();
    }
    return parsed;
  }();
  return scale;
}

std::chrono::milliseconds Scaled(std::chrono::milliseconds bound) {
  return std::chrono::milliseconds(static_cast<int64_t>(bound.count() * TimeScale()));
}

namespace {

// Under a sanitizer (scripts/sanitizers/env.sh) every process writes its report to
// LOG_DIR/<kind>.<pid>. A daemon's report then names only a pid; this puts the test that started
// the daemon and the daemon's name into the file name (LOG_DIR/<kind>.<Suite.Test>.<name>.<pid>),
// so a report found at the end of a whole-suite run says where to look. Other variables pass
// unchanged.
std::string WithTestInLogPath(const std::string& entry, const std::string& tag) {
  static constexpr std::string_view kVars[] = {"ASAN_OPTIONS=", "TSAN_OPTIONS=", "UBSAN_OPTIONS="};
  for (std::string_view var : kVars) {
    if (entry.compare(0, var.size(), var) != 0) continue;
    const size_t at = entry.find("log_path=");
    if (at == std::string::npos) return entry;
    const size_t end = std::min(entry.find(':', at), entry.size());
    return absl::StrCat(entry.substr(0, end), ".", tag, entry.substr(end));
  }
  return entry;
}

// "Suite.Test.daemon", with only characters that are safe in a file name.
std::string SanitizerTag(const std::string& daemon) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string tag = test != nullptr
                        ? absl::StrCat(test->test_suite_name(), ".", test->name(), ".", daemon)
                        : daemon;
  for (char& c : tag) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
  }
  return tag.substr(0, 160);
}

}  // namespace

absl::Status Daemon::Start(const std::string& binary, const std::vector<std::string>& args) {
  // The environment is built before fork: the child of a threaded process may only call
  // async-signal-safe functions until exec.
  const std::string tag = SanitizerTag(name_);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.push_back(WithTestInLogPath(*e, tag));
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_storage{binary};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError("cannot open log " + log_.string());
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setpgid(0, 0);
    ::execve(binary.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(fd);
  pid_ = pid;
  return absl::OkStatus();
}

absl::Status Daemon::WaitForPort(const fs::path& port_file, std::chrono::milliseconds timeout) {
  return ReadPortFile(port_file, timeout, &port_);
}

absl::Status Daemon::WaitForHttpPort(const fs::path& port_file, std::chrono::milliseconds timeout) {
  return ReadPortFile(port_file, timeout, &http_port_);
}

absl::Status Daemon::WaitForAdminPort(const fs::path& port_file,
                                      std::chrono::milliseconds timeout) {
  return ReadPortFile(port_file, timeout, &admin_port_);
}

absl::Status Daemon::ReadPortFile(const fs::path& port_file, std::chrono::milliseconds timeout,
                                  int* out) {
  auto end = std::chrono::steady_clock::now() + Scaled(timeout);
  while (std::chrono::steady_clock::now() < end) {
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port && port > 0) {
      *out = port;
      return absl::OkStatus();
    }
    if (!Alive()) return absl::InternalError(absl::StrCat(name_, " exited early:\n", Log()));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(name_, " did not start serving:\n", Log()));
}

bool Daemon::Alive() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void Daemon::Signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

void Daemon::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

int Daemon::Stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGCONT);
  ::kill(pid_, SIGTERM);
  auto end = std::chrono::steady_clock::now() + Scaled(grace);
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Kill();
  return 137;
}

std::string Daemon::Log() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

LocalCluster::LocalCluster() = default;

LocalCluster::~LocalCluster() {
  // Orchestrators first, so the gateway sees them leave cleanly.
  for (auto& o : orchestrators_) o->Stop();
  if (gateway_) gateway_->Stop();
  for (auto& g : extra_gateways_) g->Stop();
}

absl::Status LocalCluster::StartGateway(const std::string& name, std::unique_ptr<Daemon>* out,
                                        const std::string& listen, size_t index) {
  // node_timeout_ms is the default (800 ms) times the test time scale: under a sanitizer the
  // daemons run several times slower, and an orchestrator's heartbeat late by a few hundred ms
  // must not drop it from routing mid-test.
  nlohmann::json gw = {{"gateway_id", name},
                       {"listen", listen},
                       {"http_listen", "127.0.0.1:0"},
                       {"admin_listen", "127.0.0.1:0"},
                       {"max_attempts", options_.max_attempts},
                       {"poll_interval_ms", 200},
                       {"node_timeout_ms", Scaled(std::chrono::milliseconds(800)).count()},
                       {"log", {{"level", "debug"}}},
                       // No spot checks unless a test asks for them: their re-runs would add
                       // jobs on other nodes at random to what tests count.
                       {"verification", {{"sample_rate", 0}}}};
  gw.update(options_.gateway_config);
  if (index < options_.per_gateway_config.size()) gw.update(options_.per_gateway_config[index]);
  const fs::path cfg = dir_.path() / (name + ".json");
  const fs::path port = dir_.path() / (name + ".port");
  WriteFile(cfg, gw.dump(2));
  *out = std::make_unique<Daemon>(name, dir_.path() / (name + ".log"));
  const fs::path http_port = dir_.path() / (name + ".http-port");
  const fs::path admin_port = dir_.path() / (name + ".admin-port");
  // A restart must not read the previous run's ports.
  fs::remove(port);
  fs::remove(http_port);
  fs::remove(admin_port);
  auto st =
      (*out)->Start(BinaryPath("switchyard-gateway").string(),
                    {"--config", cfg.string(), "--port-file", port.string(), "--http-port-file",
                     http_port.string(), "--admin-port-file", admin_port.string()});
  if (!st.ok()) return st;
  // The HTTP port files are written after the gRPC one (public, then admin).
  st = (*out)->WaitForPort(port, std::chrono::seconds(20));
  if (!st.ok()) return st;
  const bool http = gw["http_listen"].is_string() && !gw["http_listen"].get<std::string>().empty();
  const bool admin =
      gw["admin_listen"].is_string() && !gw["admin_listen"].get<std::string>().empty();
  if (http) st = (*out)->WaitForHttpPort(http_port, std::chrono::seconds(10));
  if (st.ok() && admin) st = (*out)->WaitForAdminPort(admin_port, std::chrono::seconds(10));
  return st;
}

absl::Status LocalCluster::Start(const ClusterOptions& options) {
  options_ = options;
  auto st = StartGateway("gateway", &gateway_);
  if (!st.ok()) return st;
  for (int g = 0; g < options.extra_gateways; ++g) {
    extra_gateways_.emplace_back();
    st = StartGateway(absl::StrCat("gateway-", g + 2), &extra_gateways_.back(), "127.0.0.1:0",
                      static_cast<size_t>(g) + 1);
    if (!st.ok()) return st;
  }
  for (int i = 0; i < options.orchestrators; ++i) {
    st = StartOrchestrator(absl::StrCat("orch-", i + 1), true);
    if (!st.ok()) return st;
  }
  return WaitForOrchestrators(options.orchestrators, std::chrono::seconds(30));
}

absl::Status LocalCluster::AddOrchestrator(const std::string& node_id) {
  return StartOrchestrator(node_id, true);
}

absl::Status LocalCluster::AddOrchestrator(const std::string& node_id,
                                           const nlohmann::json& extra_config) {
  return StartOrchestrator(node_id, true, extra_config);
}

absl::Status LocalCluster::RestartGateway() {
  const int port = gateway_->port();
  gateway_->Stop();
  return StartGateway("gateway", &gateway_, absl::StrCat("127.0.0.1:", port));
}

absl::Status LocalCluster::RestartOrchestrator(size_t i) {
  Daemon& old = *orchestrators_.at(i);
  const std::string node_id = old.name();
  old.Stop();
  const size_t before = orchestrators_.size();
  auto st = StartOrchestrator(node_id, true);
  // StartOrchestrator appends the new daemon once forked: move it to slot i.
  if (orchestrators_.size() > before) {
    orchestrators_[i] = std::move(orchestrators_.back());
    orchestrators_.pop_back();
  }
  return st;
}

absl::Status LocalCluster::StartOrchestrator(const std::string& node_id, bool register_with_gateway,
                                             const nlohmann::json& extra_config) {
  nlohmann::json models = nlohmann::json::array();
  for (size_t m = 0; m < options_.models.size(); ++m) {
    const std::string& id = options_.models[m];
    models.push_back({{"id", id},
                      {"pipeline", "upscale"},
                      {"path", (ModelDir() / (id + ".pt")).string()},
                      {"warm", m == 0},
                      {"device", "cpu"},
                      {"queue_size", options_.model_queue_size},
                      {"price_per_unit", 0.000001}});
  }
  for (const auto& extra : options_.extra_models) models.push_back(extra);
  nlohmann::json cfg = {{"node_id", node_id},
                        {"listen", "127.0.0.1:0"},
                        {"http_listen", "127.0.0.1:0"},
                        {"heartbeat_ms", 200},
                        {"torch", {{"intra_op_threads", 1}, {"inter_op_threads", 1}}},
                        {"models", models},
                        {"transcode", {{"capacity", options_.transcode_capacity}}},
                        {"log", {{"level", "debug"}}},
                        // Each node its own identity key, as on separate machines.
                        {"identity_key_file", node_id + ".key"}};
  cfg.update(options_.orchestrator_config);
  cfg.update(extra_config);
  // The models it loads at start, which WaitForOrchestrators waits for.
  std::set<std::string>& warm = warm_models_[node_id];
  warm.clear();
  if (cfg.contains("models") && cfg["models"].is_array()) {
    for (const auto& m : cfg["models"]) {
      if (m.is_object() && m.value("warm", false) && m.contains("id") && m["id"].is_string()) {
        warm.insert(m["id"].get<std::string>());
      }
    }
  }
  fs::path cfg_path = dir_.path() / (node_id + ".json");
  fs::path port_path = dir_.path() / (node_id + ".port");
  WriteFile(cfg_path, cfg.dump(2));
  fs::path http_port_path = dir_.path() / (node_id + ".http-port");
  // A restart must not read the previous run's ports.
  fs::remove(port_path);
  fs::remove(http_port_path);
  std::vector<std::string> args{"--config",         cfg_path.string(),  "--port-file",
                                port_path.string(), "--http-port-file", http_port_path.string()};
  if (register_with_gateway) {
    args.push_back("--gateway");
    args.push_back(gateway_address());
    for (const auto& g : extra_gateways_) {
      args.push_back("--gateway");
      args.push_back(absl::StrCat("127.0.0.1:", g->port()));
    }
  } else {
    args.push_back("--no-gateways");
  }
  auto daemon = std::make_unique<Daemon>(node_id, dir_.path() / (node_id + ".log"));
  auto st = daemon->Start(BinaryPath("switchyard-orchestrator").string(), args);
  if (!st.ok()) return st;
  st = daemon->WaitForPort(port_path, std::chrono::seconds(30));
  if (st.ok()) st = daemon->WaitForHttpPort(http_port_path, std::chrono::seconds(10));
  orchestrators_.push_back(std::move(daemon));
  return st;
}

std::string LocalCluster::orchestrator_address(size_t i) const {
  return absl::StrCat("127.0.0.1:", orchestrators_.at(i)->port());
}

absl::Status LocalCluster::WaitForOrchestrators(int n, std::chrono::milliseconds timeout) {
  auto stub = GatewayStub();
  auto end = std::chrono::steady_clock::now() + Scaled(timeout);
  int seen = -1;
  while (std::chrono::steady_clock::now() < end) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(2)));
    if (!options_.api_key.empty()) {
      ctx.AddMetadata("authorization", absl::StrCat("Bearer ", options_.api_key));
    }
    v1::ListCapabilitiesRequest req;
    v1::ListCapabilitiesResponse resp;
    if (stub->ListCapabilities(&ctx, req, &resp).ok()) {
      seen = resp.orchestrators_size();
      // Also wait for every warm model to be READY, so tests start from a settled cluster. A
      // node registers before it loads its warm models, one after another: those it has not
      // begun yet are still "cold".
      bool loading = false;
      for (const auto& o : resp.offers()) {
        auto warm = warm_models_.find(o.orchestrator());
        loading = loading || o.state() == "loading" ||
                  (o.state() == "cold" && warm != warm_models_.end() &&
                   warm->second.count(o.model_id()) > 0);
      }
      if (seen == n && !loading) return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("gateway lists ", seen, " orchestrators, expected ", n, "\n", Logs()));
}

std::string LocalCluster::gateway_address() const {
  return absl::StrCat("127.0.0.1:", gateway_->port());
}

std::unique_ptr<v1::Gateway::Stub> LocalCluster::GatewayStub() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  return v1::Gateway::NewStub(options_.gateway_security.CreateChannel(gateway_address(), args));
}

std::unique_ptr<v1::Gateway::Stub> LocalCluster::ExtraGatewayStub(size_t i) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  return v1::Gateway::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", extra_gateways_.at(i)->port()),
                                grpc::InsecureChannelCredentials(), args));
}

std::string LocalCluster::Logs() const {
  std::string out;
  if (gateway_) absl::StrAppend(&out, "---- gateway log ----\n", gateway_->Log());
  for (const auto& g : extra_gateways_) {
    absl::StrAppend(&out, "---- ", g->name(), " log ----\n", g->Log());
  }
  for (const auto& o : orchestrators_) {
    absl::StrAppend(&out, "---- ", o->name(), " log ----\n", o->Log());
  }
  return out;
}

nlohmann::json NewApiKeyEntry(const std::string& id, std::string* key) {
  std::string out;
  EXPECT_EQ(
      RunCommand(absl::StrCat(BinaryPath("switchyard-gateway").string(), " --new-api-key ", id),
                 &out),
      0)
      << out;
  nlohmann::json entry = nlohmann::json::object();
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::ConsumePrefix(&line, "key: ")) *key = std::string(line);
    if (absl::ConsumePrefix(&line, "entry: ")) entry = nlohmann::json::parse(line, nullptr, false);
  }
  EXPECT_TRUE(entry.is_object() && !key->empty()) << out;
  return entry;
}

double PrometheusValue(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, series) && absl::ConsumePrefix(&line, " ")) {
      return std::stod(std::string(line));
    }
  }
  return -1;
}

}  // namespace switchyard::testing
