// The gateway's status page on a local cluster: /status.json's content after real jobs, and the
// page as an operator's browser renders it (Debian's headless Chromium runs its script).
//
// SWITCHYARD_STATUS_SCREENSHOT=PATH also saves a 1280x800 screenshot of the page there (that is
// how docs/status-page.png is made).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kChromium[] = "/usr/bin/chromium";
constexpr char kBadRequestId[] = "status-page-test-bad-image";

grpc::Status Upscale(LocalCluster& cluster, const std::string& model, const std::string& image,
                     const std::string& request_id = "") {
  v1::UpscaleRequest req;
  req.set_model_id(model);
  req.set_image(image);
  v1::ImageResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!request_id.empty()) ctx.AddMetadata("x-request-id", request_id);
  return cluster.GatewayStub()->Upscale(&ctx, req, &resp);
}

// Runs headless Chromium on `url` with its own profile and HOME under `dir` (it writes both, and
// a test must not touch the user's). `mode` is "--dump-dom" or "--screenshot=PATH". Returns the
// exit code; stdout goes to `out`, the rest to `log`.
int RunChromium(const TempDir& dir, const std::string& url, const std::string& mode,
                const fs::path& out, std::string* log) {
  const fs::path home = dir.path() / "chromium-home";
  fs::create_directories(home);
  const fs::path err = dir.path() / "chromium.log";
  // `timeout` bounds a hung browser; the virtual time budget lets the page's fetch and render
  // finish before the DOM is dumped, without waiting in real time.
  const std::string command =
      absl::StrCat("cd ", dir.path().string(), " && HOME=", home.string(), " timeout 90 ",
                   kChromium, " --headless --no-sandbox --disable-gpu --no-first-run",
                   " --user-data-dir=", (dir.path() / "chromium-profile").string(),
                   " --window-size=1280,800 --virtual-time-budget=3000 ", mode, " '", url, "' > ",
                   out.string(), " 2> ", err.string());
  const int rc = RunCommand(command, log);
  if (fs::exists(err)) *log += ReadFile(err);
  return rc;
}

bool Contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

class StatusPageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(ModelDir() / "esrgan-slim-x4.pt"))
        << "models are not prepared; run scripts/prepare-models";
    ClusterOptions options;
    options.orchestrators = 2;
    options.models = {"esrgan-slim-x4", "esrgan-slim-x2"};  // the first warm, the second cold
    options.extra_models.push_back({{"id", "broken"},
                                    {"pipeline", "upscale"},
                                    {"path", "/nonexistent/broken.pt"},
                                    {"warm", true}});
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    port_ = cluster_.gateway().admin_port();  // the operators' port
    ASSERT_GT(port_, 0);

    // One job that succeeds, one that an orchestrator rejects (not an image) and one that no
    // orchestrator can take (its model failed to load everywhere).
    const std::string png = MakeTestImage(tmp_, 16, 16, "png");
    auto ok = Upscale(cluster_, "esrgan-slim-x4", png);
    ASSERT_TRUE(ok.ok()) << ok.error_message();
    auto bad = Upscale(cluster_, "esrgan-slim-x4", "this is not an image", kBadRequestId);
    ASSERT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.error_message();
    bad_message_ = bad.error_message();
    auto broken = Upscale(cluster_, "broken", png);
    ASSERT_EQ(broken.error_code(), grpc::StatusCode::UNAVAILABLE) << broken.error_message();
  }

  // The status document, once both orchestrators advertise the failed model (its load fails at
  // start, so it is normally there by the time the cluster is up; bounded wait regardless).
  nlohmann::json Status() {
    nlohmann::json doc;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (int i = 0; i < 100 && std::chrono::steady_clock::now() < until; ++i) {
      HttpResult r = HttpRequest(port_, "GET", "/status.json");
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) return doc;
      doc = nlohmann::json::parse(r.body);
      int failed = 0;
      for (const auto& o : doc["orchestrators"]) {
        for (const auto& m : o["models"]) failed += m["state"] == "failed" ? 1 : 0;
      }
      if (failed == 2) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return doc;
  }

  LocalCluster cluster_;
  TempDir tmp_;
  int port_ = 0;
  std::string bad_message_;
};

TEST_F(StatusPageTest, JsonFeedHasOrchestratorsModelsLoadAndRecentErrors) {
  nlohmann::json doc = Status();
  ASSERT_EQ(doc["orchestrators"].size(), 2u) << doc.dump(2);
  EXPECT_EQ(doc["jobs_total"], 3) << doc.dump(2);
  EXPECT_EQ(doc["failures_total"], 2);
  EXPECT_GT(doc["jobs_per_second"].get<double>(), 0);
  EXPECT_GT(doc["failures_per_second"].get<double>(), 0);
  EXPECT_GT(doc["uptime_seconds"].get<double>(), 0);

  for (size_t i = 0; i < 2; ++i) {
    const auto& o = doc["orchestrators"][i];
    EXPECT_TRUE(o["id"] == "orch-1" || o["id"] == "orch-2") << o.dump(2);
    EXPECT_EQ(o["state"], "ready");
    EXPECT_EQ(o["in_flight"], 0);
    std::map<std::string, nlohmann::json> models;
    for (const auto& m : o["models"]) models[m["model_id"]] = m;
    ASSERT_TRUE(models.count("esrgan-slim-x4") && models.count("esrgan-slim-x2") &&
                models.count("broken") && models.count("libx264"))
        << o.dump(2);
    EXPECT_EQ(models["esrgan-slim-x4"]["state"], "warm");
    EXPECT_EQ(models["esrgan-slim-x4"]["pipeline"], "upscale");
    EXPECT_GT(models["esrgan-slim-x4"]["capacity"].get<int>(), 0);
    // in_use is the node's own report (sent on change, so it may lag a job by a heartbeat).
    EXPECT_TRUE(models["esrgan-slim-x4"]["in_use"].is_number_integer());
    EXPECT_EQ(models["esrgan-slim-x2"]["state"], "cold");
    EXPECT_EQ(models["broken"]["state"], "failed");
    EXPECT_TRUE(Contains(models["broken"]["error"].get<std::string>(), "broken.pt"))
        << models["broken"].dump();
    EXPECT_EQ(models["libx264"]["pipeline"], "transcode");
    EXPECT_EQ(models["libx264"]["capacity"], 2);
  }
  EXPECT_NE(doc["orchestrators"][0]["id"], doc["orchestrators"][1]["id"]);

  // Newest first: the job no orchestrator could take, then the one a node rejected.
  const auto& errors = doc["recent_errors"];
  ASSERT_EQ(errors.size(), 2u) << doc.dump(2);
  EXPECT_EQ(errors[0]["model_id"], "broken");
  EXPECT_EQ(errors[0]["code"], "UNAVAILABLE");
  EXPECT_EQ(errors[0]["attempts"], 0);
  EXPECT_EQ(errors[0]["orchestrator"], "");
  EXPECT_EQ(errors[1]["request_id"], kBadRequestId);
  EXPECT_EQ(errors[1]["pipeline"], "upscale");
  EXPECT_EQ(errors[1]["model_id"], "esrgan-slim-x4");
  EXPECT_TRUE(errors[1]["orchestrator"] == "orch-1" || errors[1]["orchestrator"] == "orch-2")
      << errors[1].dump();
  EXPECT_EQ(errors[1]["code"], "INVALID_ARGUMENT");
  EXPECT_EQ(errors[1]["message"], bad_message_);
  EXPECT_EQ(errors[1]["attempts"], 1);

  // The page itself, the redirect to it, and method checks.
  HttpResult page = HttpRequest(port_, "GET", "/status");
  EXPECT_EQ(page.status, 200);
  EXPECT_TRUE(Contains(page.body, "status.json")) << page.body.substr(0, 200);
  EXPECT_EQ(HttpRequest(port_, "GET", "/").status, 302);
  EXPECT_EQ(HttpRequest(port_, "POST", "/status.json", "text/plain", "x").status, 405);
  EXPECT_EQ(HttpRequest(port_, "DELETE", "/status").status, 405);
}

TEST_F(StatusPageTest, ChromiumRendersOrchestratorsModelStatesAndErrors) {
  ASSERT_TRUE(fs::exists(kChromium))
      << "chromium missing: scripts/install-deps installs Debian's chromium";
  nlohmann::json doc = Status();  // waits until both nodes advertise the failed model
  ASSERT_EQ(doc["orchestrators"].size(), 2u);
  const std::string url = absl::StrCat("http://127.0.0.1:", port_, "/status");

  std::string log;
  const fs::path dom_file = tmp_.path() / "dom.html";
  const int rc = RunChromium(tmp_, url, "--dump-dom", dom_file, &log);
  ASSERT_EQ(rc, 0) << log;
  const std::string dom = ReadFile(dom_file);
  ASSERT_FALSE(dom.empty()) << log;

  // The script ran and rendered the feed: values only /status.json has are in the DOM.
  EXPECT_TRUE(Contains(
      dom, absl::StrCat("<span id=\"gateway-id\">", doc["gateway_id"].get<std::string>(), "<")))
      << dom;
  EXPECT_FALSE(Contains(dom, "loading...")) << dom;
  for (const char* id : {"orch-1", "orch-2"}) {
    EXPECT_TRUE(Contains(
        dom, absl::StrCat("class=\"node\" data-orchestrator=\"", id, "\" data-state=\"ready\"")))
        << id << "\n"
        << dom;
    for (const auto& [model, state] :
         {std::pair<std::string, std::string>{"esrgan-slim-x4", "warm"},
          {"esrgan-slim-x2", "cold"},
          {"broken", "failed"}}) {
      EXPECT_TRUE(Contains(dom, absl::StrCat("data-orchestrator=\"", id, "\" data-model=\"", model,
                                             "\" data-state=\"", state, "\"")))
          << id << " " << model << " " << state << "\n"
          << dom;
    }
  }
  EXPECT_TRUE(Contains(dom, "/nonexistent/broken.pt")) << dom;  // the failed model's error
  // The recent errors table: the rejected job's request id, code and model.
  EXPECT_TRUE(Contains(dom, kBadRequestId)) << dom;
  EXPECT_TRUE(Contains(dom, "<td class=\"err\">INVALID_ARGUMENT</td>")) << dom;
  EXPECT_TRUE(Contains(dom, "<td class=\"err\">UNAVAILABLE</td>")) << dom;
  // The error banner is hidden and empty (its text is in the script, so look at the element).
  EXPECT_TRUE(Contains(dom, "<div id=\"banner\" style=\"display: none;\"></div>")) << dom;

  if (const char* shot = std::getenv("SWITCHYARD_STATUS_SCREENSHOT"); shot && *shot) {
    const fs::path png = fs::absolute(shot);
    EXPECT_EQ(RunChromium(tmp_, url, "--hide-scrollbars --screenshot=" + png.string(),
                          tmp_.path() / "screenshot.out", &log),
              0)
        << log;
    EXPECT_TRUE(fs::exists(png)) << log;
  }
}

}  // namespace
}  // namespace switchyard::testing
