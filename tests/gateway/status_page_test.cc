// Unit tests for the status page's data (gateway/observability/recent_errors.h, gateway/observability/status_page.h): the
// bounded ring of recent failures, the jobs-per-second window and the /status.json document built
// from a hand-fed membership and router.
#include "gateway/observability/status_page.h"

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "gateway/observability/recent_errors.h"

namespace switchyard::gateway {
namespace {

JobFailure Failure(absl::Time t, const std::string& request_id) {
  return {t, request_id, "upscale", "esrgan", "node-a", "INVALID_ARGUMENT", "bad image", 1};
}

TEST(RecentErrorsTest, KeepsTheNewestUpToCapacityNewestFirst) {
  RecentErrors errors(3);
  EXPECT_TRUE(errors.Newest().empty());
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  errors.Add(Failure(t0, "r0"));
  errors.Add(Failure(t0 + absl::Seconds(1), "r1"));
  auto two = errors.Newest();
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].request_id, "r1");
  EXPECT_EQ(two[1].request_id, "r0");
  for (int i = 2; i < 8; ++i) errors.Add(Failure(t0 + absl::Seconds(i), absl::StrCat("r", i)));
  auto last = errors.Newest();
  ASSERT_EQ(last.size(), 3u);
  EXPECT_EQ(last[0].request_id, "r7");
  EXPECT_EQ(last[1].request_id, "r6");
  EXPECT_EQ(last[2].request_id, "r5");
}

TEST(JobLogTest, RatesOverTheWindowAndTotals) {
  JobLog log(2, absl::Seconds(10));
  const absl::Time start = absl::FromUnixSeconds(2000);
  const absl::Time now = start + absl::Seconds(60);
  for (int i = 0; i < 15; ++i) log.RecordSuccess(now - absl::Milliseconds(100 * i));
  for (int i = 0; i < 5; ++i) log.RecordFailure(Failure(now - absl::Seconds(1), "f"));
  // 20 jobs, 5 failures within the last 10 s.
  EXPECT_DOUBLE_EQ(log.JobsPerSecond(now, start), 2.0);
  EXPECT_DOUBLE_EQ(log.FailuresPerSecond(now, start), 0.5);
  EXPECT_EQ(log.jobs_total(), 20u);
  EXPECT_EQ(log.failures_total(), 5u);
  EXPECT_EQ(log.errors().Newest().size(), 2u);  // bounded
  // A minute later the window is empty, the totals are not.
  EXPECT_DOUBLE_EQ(log.JobsPerSecond(now + absl::Seconds(60), start), 0.0);
  EXPECT_EQ(log.jobs_total(), 20u);
  // Just after a start the rate is over the uptime, not the whole window.
  JobLog fresh;
  fresh.RecordSuccess(start + absl::Seconds(1));
  fresh.RecordSuccess(start + absl::Seconds(1));
  EXPECT_DOUBLE_EQ(fresh.JobsPerSecond(start + absl::Seconds(2), start), 1.0);
}

TEST(JobLogTest, CutsLongMessages) {
  JobLog log;
  JobFailure f = Failure(absl::Now(), "long");
  f.message = std::string(10000, 'x');
  log.RecordFailure(f);
  auto errors = log.errors().Newest();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_LE(errors[0].message.size(), JobLog::kMaxMessageBytes + 3);
}

node::v1::NodeStatus Node(const std::string& id, bool draining) {
  node::v1::NodeStatus s;
  s.set_node_id(id);
  s.set_address(absl::StrCat("127.0.0.1:", id.size() + 40000));
  s.set_draining(draining);
  s.add_hardware("cuda");
  auto* warm = s.add_capabilities();
  warm->set_pipeline("upscale");
  warm->set_model_id("esrgan-x4");
  warm->set_state(node::v1::MODEL_STATE_READY);
  warm->set_capacity(4);
  warm->set_in_use(3);
  warm->set_price_per_unit(0.5);
  warm->set_unit("pixel");
  warm->set_memory_mb(120);
  auto* failed = s.add_capabilities();
  failed->set_pipeline("upscale");
  failed->set_model_id("broken");
  failed->set_state(node::v1::MODEL_STATE_FAILED);
  failed->set_error("cannot open /models/broken.pt");
  auto* cold = s.add_capabilities();
  cold->set_pipeline("text-to-image");
  cold->set_model_id("sd");
  cold->set_state(node::v1::MODEL_STATE_COLD);
  cold->set_no_room(true);
  auto* loading = s.add_capabilities();
  loading->set_pipeline("upscale");
  loading->set_model_id("esrgan-x2");
  loading->set_state(node::v1::MODEL_STATE_LOADING);
  return s;
}

const nlohmann::json* FindById(const nlohmann::json& list, const std::string& key,
                               const std::string& id) {
  for (const auto& e : list) {
    if (e.at(key) == id) return &e;
  }
  return nullptr;
}

TEST(StatusJsonTest, OrchestratorsModelsErrorsAndRates) {
  Membership membership;
  membership.Register(Node("node-ready", false), NodeSource::kRegistered);
  membership.Register(Node("node-draining", false), NodeSource::kStatic);
  membership.Register(Node("node-ejected", false), NodeSource::kRegistered);
  // Draining is what the node says in a later update.
  membership.Register(Node("node-draining", true), NodeSource::kStatic);
  Router router([] { return uint64_t{42}; });
  // The router learns how many nodes there are (which bounds ejections) from a decision.
  RouteRequest route;
  route.pipeline = "upscale";
  route.model_id = "esrgan-x4";
  ASSERT_TRUE(router.Pick(*membership.snapshot(), route).ok());
  // Three node failures in a row eject a node (RouterOptions::eject_after_failures).
  for (const auto& node : membership.snapshot()->nodes) {
    if (node->id != "node-ejected") continue;
    for (int i = 0; i < router.options().eject_after_failures; ++i) {
      router.ReportAttempt(*node, "esrgan-x4", AttemptOutcome::kNodeFailure, absl::Seconds(1));
    }
  }
  ASSERT_TRUE(router.IsEjected("node-ejected"));

  JobLog jobs;
  const absl::Time started = absl::Now() - absl::Seconds(30);
  const absl::Time now = absl::Now();
  jobs.RecordSuccess(now);
  jobs.RecordFailure({now, "req-1", "upscale", "esrgan-x4", "node-ready", "INVALID_ARGUMENT",
                      "image: not a PNG or JPEG <script>", 1});
  jobs.RecordFailure({now, "req-2", "upscale", "nope", "", "NOT_FOUND", "no orchestrator", 0});

  StatusSources sources{"gw-test", &membership, &router, &jobs, started};
  auto doc = nlohmann::json::parse(StatusJson(sources, now));
  EXPECT_EQ(doc["gateway_id"], "gw-test");
  EXPECT_NEAR(doc["uptime_seconds"].get<double>(), 30, 1);
  EXPECT_EQ(doc["jobs_total"], 3);
  EXPECT_EQ(doc["failures_total"], 2);
  EXPECT_DOUBLE_EQ(doc["jobs_per_second"].get<double>(), 0.3);
  EXPECT_DOUBLE_EQ(doc["failures_per_second"].get<double>(), 0.2);
  EXPECT_EQ(doc["rate_window_seconds"], 10);

  const auto& nodes = doc["orchestrators"];
  ASSERT_EQ(nodes.size(), 3u);
  const auto* ready = FindById(nodes, "id", "node-ready");
  const auto* draining = FindById(nodes, "id", "node-draining");
  const auto* ejected = FindById(nodes, "id", "node-ejected");
  ASSERT_TRUE(ready && draining && ejected) << nodes.dump();
  EXPECT_EQ((*ready)["state"], "ready");
  EXPECT_EQ((*draining)["state"], "draining");
  EXPECT_EQ((*draining)["source"], "static");
  EXPECT_EQ((*ejected)["state"], "ejected");
  EXPECT_EQ((*ejected)["consecutive_failures"], 3);
  EXPECT_EQ((*ready)["address"], "127.0.0.1:40010");
  EXPECT_EQ((*ready)["hardware"], nlohmann::json::array({"cuda"}));
  EXPECT_EQ((*ready)["in_flight"], 0);

  const auto& models = (*ready)["models"];
  ASSERT_EQ(models.size(), 4u);
  const auto* warm = FindById(models, "model_id", "esrgan-x4");
  const auto* failed = FindById(models, "model_id", "broken");
  const auto* cold = FindById(models, "model_id", "sd");
  const auto* loading = FindById(models, "model_id", "esrgan-x2");
  ASSERT_TRUE(warm && failed && cold && loading) << models.dump();
  EXPECT_EQ((*warm)["state"], "warm");
  EXPECT_EQ((*warm)["capacity"], 4);
  EXPECT_EQ((*warm)["in_use"], 3);
  EXPECT_DOUBLE_EQ((*warm)["price_per_unit"].get<double>(), 0.5);
  EXPECT_EQ((*warm)["unit"], "pixel");
  EXPECT_EQ((*warm)["memory_mb"], 120);
  EXPECT_EQ((*failed)["state"], "failed");
  EXPECT_EQ((*failed)["error"], "cannot open /models/broken.pt");
  EXPECT_EQ((*cold)["state"], "cold");
  EXPECT_EQ((*cold)["no_room"], true);
  EXPECT_EQ((*cold)["pipeline"], "text-to-image");
  EXPECT_EQ((*loading)["state"], "loading");

  const auto& errors = doc["recent_errors"];
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0]["request_id"], "req-2");  // newest first
  EXPECT_EQ(errors[0]["orchestrator"], "");
  EXPECT_EQ(errors[0]["code"], "NOT_FOUND");
  EXPECT_EQ(errors[1]["request_id"], "req-1");
  EXPECT_EQ(errors[1]["orchestrator"], "node-ready");
  EXPECT_EQ(errors[1]["model_id"], "esrgan-x4");
  EXPECT_EQ(errors[1]["message"], "image: not a PNG or JPEG <script>");
  EXPECT_EQ(errors[1]["attempts"], 1);
  EXPECT_EQ(errors[1]["time"].get<std::string>().size(), 24u);  // 2026-01-02T03:04:05.678Z
}

TEST(StatusJsonTest, InvalidUtf8InAnErrorIsReplacedNotThrown) {
  Membership membership;
  JobLog jobs;
  jobs.RecordFailure({absl::Now(), "r", "upscale", "m", "n", "INTERNAL", "bad \xff byte", 1});
  StatusSources sources{"gw", &membership, nullptr, &jobs, absl::Now()};
  auto doc = nlohmann::json::parse(StatusJson(sources, absl::Now()));
  EXPECT_TRUE(doc["orchestrators"].empty());
  ASSERT_EQ(doc["recent_errors"].size(), 1u);
  EXPECT_NE(doc["recent_errors"][0]["message"].get<std::string>().find("byte"), std::string::npos);
}

TEST(StatusPageHtmlTest, PagePollsTheJsonFeedAndInsertsTextOnly) {
  const std::string& page = StatusPageHtml();
  EXPECT_NE(page.find("<!DOCTYPE html>"), std::string::npos);
  EXPECT_NE(page.find("fetch(\"status.json\""), std::string::npos);
  // Data goes in as text nodes: no innerHTML anywhere.
  EXPECT_EQ(page.find("innerHTML"), std::string::npos);
}

}  // namespace
}  // namespace switchyard::gateway
