// Hostile clients (issue 18, "Server-side requests"): POST /live-video-to-video with URLs that
// point the gateway at its own loopback, the cloud metadata service, the private network, IPv6
// loopback and a name resolving to loopback, on a gateway with its default config. Each gets 422
// naming the field before anything is connected; the gateway stays up and another client's job
// still runs.
//
// Only loopback is ever connected to by these tests: the loopback targets are listeners that
// count connections, and every non-loopback target goes with a model no orchestrator offers, so
// that a gateway without the check answers 503 before it starts a session (it connects nowhere).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"
#include "support/trickle_server.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using std::chrono::milliseconds;

constexpr const char* kFields[] = {"subscribe_url", "publish_url", "control_url", "events_url"};

// A test address nobody routes to (TEST-NET-1), for the fields not under attack: the policy
// allows it (a public address), and no test connects to it (see above).
constexpr const char* kElsewhere = "http://192.0.2.1:9/x";

class SsrfTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_ = new TempDir();
    const fs::path live = models_->path() / "live-copy.pt";
    SaveScriptModule(live, "def forward(self, frame, params: str):\n    return frame\n");
    const fs::path t2i = models_->path() / "t2i-test.pt";
    SaveScriptModule(t2i, kTinyTextToImageSource);
    ClusterOptions options;  // the gateway's default config: no live_video block
    options.orchestrators = 1;
    options.models = {};
    options.extra_models = {{{"id", "live-copy"},
                             {"pipeline", "live-video-to-video"},
                             {"path", live.string()},
                             {"warm", true},
                             {"device", "cpu"},
                             {"options", {{"max_width", 320}, {"max_height", 240}}}},
                            {{"id", "t2i-test"},
                             {"pipeline", "text-to-image"},
                             {"path", t2i.string()},
                             {"warm", true},
                             {"device", "cpu"},
                             {"warmup_size", 16},
                             {"options",
                              {{"max_width", 256},
                               {"max_height", 256},
                               {"default_width", 64},
                               {"default_height", 32}}}}};
    cluster_ = new LocalCluster();
    status_ = new absl::Status(cluster_->Start(options));
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete status_;
    delete models_;
  }
  void SetUp() override { ASSERT_TRUE(status_->ok()) << *status_ << "\n" << cluster_->Logs(); }

  static HttpResult Post(const Json& body) {
    return HttpRequest(cluster_->gateway().http_port(), "POST", "/live-video-to-video",
                       "application/json", body.dump());
  }

  // The 422 names `field` (["body", field]) with a message containing `text`.
  static bool Names(const HttpResult& r, const std::string& field, const std::string& text) {
    if (r.status != 422) return false;
    Json j = Json::parse(r.body, nullptr, false);
    if (j.is_discarded() || !j["detail"].is_array()) return false;
    for (const auto& d : j["detail"]) {
      if (d["loc"] == Json::array({"body", field}) && d["msg"].is_string() &&
          absl::StrContains(d["msg"].get<std::string>(), text)) {
        return true;
      }
    }
    return false;
  }

  // The gateway is up and another client's job runs.
  void ExpectOthersServed() {
    EXPECT_TRUE(cluster_->gateway().Alive()) << cluster_->Logs();
    HttpResult r = HttpRequest(
        cluster_->gateway().http_port(), "POST", "/text-to-image", "application/json",
        Json{{"model_id", "t2i-test"}, {"prompt", "a"}, {"width", 16}, {"height", 8}}.dump());
    EXPECT_EQ(r.status, 200) << r.body.substr(0, 500);
  }

  static TempDir* models_;
  static LocalCluster* cluster_;
  static absl::Status* status_;
};

TempDir* SsrfTest::models_ = nullptr;
LocalCluster* SsrfTest::cluster_ = nullptr;
absl::Status* SsrfTest::status_ = nullptr;

// Each field at each internal target: 422 naming that field (and only it) and the kind of
// address, and no connection reaches the loopback listeners.
TEST_F(SsrfTest, InternalTargetsAreRefusedInEveryField) {
  auto v4 = ConnectionCounter::Start();
  ASSERT_TRUE(v4.ok()) << v4.status();
  auto v6 = ConnectionCounter::Start(/*ipv6=*/true);  // absent where the host has no ::1
  const int port = (*v4)->port();
  struct Target {
    std::string url;
    std::string kind;
  };
  std::vector<Target> targets = {
      {absl::StrCat("http://127.0.0.1:", port, "/t"), "resolves to a loopback address"},
      {absl::StrCat("http://localhost:", port, "/t"), "localhost resolves to a loopback address"},
      {absl::StrCat("http://127.1:", port, "/t"), "resolves to a loopback address"},
      {absl::StrCat("http://[::ffff:127.0.0.1]:", port, "/t"), "resolves to a loopback address"},
      {"http://169.254.169.254/latest/meta-data", "resolves to a link-local address"},
      {"http://10.0.0.1/t", "resolves to a private address"},
      {"http://0.0.0.0:80/t", "resolves to an unspecified address"},
      {absl::StrCat("http://[::1]:", v6.ok() ? (*v6)->port() : port, "/t"),
       "resolves to a loopback address"},
  };
  for (const auto& target : targets) {
    for (const char* field : kFields) {
      SCOPED_TRACE(absl::StrCat(field, " = ", target.url));
      Json body = {{"model_id", "no-such-live-model"}};
      for (const char* f : kFields) body[f] = f == std::string(field) ? target.url : kElsewhere;
      HttpResult r = Post(body);
      EXPECT_TRUE(Names(r, field, absl::StrCat(field, ": host "))) << r.status << " " << r.body;
      EXPECT_TRUE(Names(r, field, target.kind)) << r.body;
      EXPECT_TRUE(Names(r, field, "which live_video.allowed_hosts does not allow")) << r.body;
      for (const char* other : kFields) {
        if (other != std::string(field)) {
          EXPECT_FALSE(Names(r, other, "")) << other;
        }
      }
    }
  }
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ((*v4)->accepted(), 0);
  if (v6.ok()) {
    EXPECT_EQ((*v6)->accepted(), 0);
  }
  ExpectOthersServed();
}

// With a model that is offered, a gateway without the policy starts the session and connects to
// the listener (the attack as reported: a session pointed at 127.0.0.1). Now: 422, and nothing
// connects, also after the time a session would have taken to start.
TEST_F(SsrfTest, OfferedModelStillConnectsNowhere) {
  auto counter = ConnectionCounter::Start();
  ASSERT_TRUE(counter.ok()) << counter.status();
  const std::string url = absl::StrCat("http://127.0.0.1:", (*counter)->port(), "/c");
  HttpResult r = Post({{"subscribe_url", url},
                       {"publish_url", url},
                       {"control_url", url},
                       {"events_url", url},
                       {"model_id", "live-copy"}});
  EXPECT_EQ(r.status, 422) << r.body;
  for (const char* field : kFields) {
    EXPECT_TRUE(Names(r, field, "resolves to a loopback address")) << field << ": " << r.body;
  }
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_EQ((*counter)->accepted(), 0);
  ExpectOthersServed();
}

}  // namespace
}  // namespace switchyard::testing
