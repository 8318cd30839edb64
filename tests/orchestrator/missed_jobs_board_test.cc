// MissedJobsBoard (orchestrator/missed_jobs_board.h): a gateway's missed-job reports in /metrics
// and /status, and the bounds that keep a hostile gateway from growing them.
#include "orchestrator/missed_jobs_board.h"

#include <cmath>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/metrics.h"

namespace switchyard::orchestrator {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

node::v1::MissedJobs Report(int64_t price_total, int64_t price_hour) {
  node::v1::MissedJobs m;
  m.set_gateway_id("gw-1");
  auto* r = m.add_routes();
  r->set_pipeline("upscale");
  r->set_model_id("esrgan");
  r->set_won_total(2);
  r->set_won_last_hour(1);
  auto* c = r->add_missed();
  c->set_reason(node::v1::MissedJobs::REASON_PRICE);
  c->set_total(price_total);
  c->set_last_hour(price_hour);
  r->set_median_winning_price(0.5);
  return m;
}

MissedJobsBoard::Routes Offered() { return {{"upscale", "esrgan"}}; }

TEST(MissedJobsBoardTest, ExportsCountersAndDescribesThem) {
  Metrics metrics("orchestrator");
  MissedJobsBoard board(Offered, &metrics);
  ASSERT_TRUE(board.Accept("gw:1", Report(120, 120)).ok());
  std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("switchyard_orchestrator_missed_jobs_total{gateway=\"gw:1\",model="
                              "\"esrgan\",pipeline=\"upscale\",reason=\"price\"} 120"));
  EXPECT_THAT(text, HasSubstr("switchyard_orchestrator_missed_jobs_last_hour{gateway=\"gw:1\","
                              "model=\"esrgan\",pipeline=\"upscale\",reason=\"price\"} 120"));
  EXPECT_THAT(text, HasSubstr("switchyard_orchestrator_median_winning_price{gateway=\"gw:1\","
                              "model=\"esrgan\",pipeline=\"upscale\"} 0.5"));
  EXPECT_THAT(text, HasSubstr("switchyard_orchestrator_won_jobs_total{gateway=\"gw:1\",model="
                              "\"esrgan\",pipeline=\"upscale\"} 2"));
  EXPECT_THAT(board.Describe(),
              HasSubstr("gateway gw:1 (gw-1), upscale 'esrgan': won 1 jobs in the last hour (2 in "
                        "all); lost 120 in the last hour (120 in all) on price; the median "
                        "winning price was 0.5 per unit"));

  // Cumulative reports: the counter advances by the difference; a restarted gateway (smaller
  // counts) adds what it counted since.
  ASSERT_TRUE(board.Accept("gw:1", Report(130, 10)).ok());
  EXPECT_THAT(metrics.Render(), HasSubstr("reason=\"price\"} 130"));
  ASSERT_TRUE(board.Accept("gw:1", Report(5, 5)).ok());
  EXPECT_THAT(metrics.Render(), HasSubstr("reason=\"price\"} 135"));
}

TEST(MissedJobsBoardTest, RoutesThisNodeDoesNotOfferAreDropped) {
  Metrics metrics("orchestrator");
  MissedJobsBoard board(Offered, &metrics);
  node::v1::MissedJobs m = Report(1, 1);
  m.mutable_routes(0)->set_model_id("not-here");
  ASSERT_TRUE(board.Accept("gw:1", m).ok());
  EXPECT_THAT(metrics.Render(), Not(HasSubstr("not-here")));
  EXPECT_THAT(board.Describe(), Not(HasSubstr("not-here")));
}

TEST(MissedJobsBoardTest, HostileReportsAreRefusedWhole) {
  Metrics metrics("orchestrator");
  MissedJobsBoard board(nullptr, &metrics);
  auto refused = [&](const node::v1::MissedJobs& m, const std::string& why) {
    absl::Status st = board.Accept("gw:1", m);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << why;
    EXPECT_THAT(std::string(st.message()), HasSubstr(why));
  };
  node::v1::MissedJobs many;
  for (int i = 0; i <= MissedJobsBoard::kMaxRoutes; ++i) {
    auto* r = many.add_routes();
    r->set_pipeline("upscale");
    r->set_model_id(std::to_string(i));
  }
  refused(many, "65 routes; at most 64");
  node::v1::MissedJobs m = Report(1, 1);
  m.mutable_routes(0)->set_model_id(std::string(10000, 'x'));
  refused(m, "model_id is 10000 bytes");
  m = Report(1, 1);
  m.mutable_routes(0)->set_pipeline("up\nscale");
  refused(m, "pipeline is not printable");
  m = Report(1, 1);
  m.mutable_routes(0)->set_pipeline("");
  refused(m, "pipeline is empty");
  m = Report(-1, 1);
  refused(m, "negative count");
  m = Report(1, 1);
  m.mutable_routes(0)->mutable_missed(0)->set_reason(static_cast<node::v1::MissedJobs::Reason>(99));
  refused(m, "unknown reason 99");
  m = Report(1, 1);
  m.mutable_routes(0)->set_median_winning_price(std::nan(""));
  refused(m, "median_winning_price");
  m = Report(1, 1);
  for (int i = 0; i < MissedJobsBoard::kMaxCountsPerRoute; ++i) {
    *m.mutable_routes(0)->add_missed() = m.routes(0).missed(0);
  }
  refused(m, "counts for one route");
  EXPECT_THAT(metrics.Render(), Not(HasSubstr("missed_jobs_total{")));
  EXPECT_THAT(board.Describe(), HasSubstr("no gateway has reported"));
}

TEST(MissedJobsBoardTest, GatewaysAreBounded) {
  MissedJobsBoard board(nullptr, nullptr);
  for (size_t i = 0; i < MissedJobsBoard::kMaxGateways; ++i) {
    ASSERT_TRUE(board.Accept("gw:" + std::to_string(i), Report(1, 1)).ok());
  }
  EXPECT_EQ(board.Accept("one-more", Report(1, 1)).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(board.Accept("gw:0", Report(2, 2)).ok());  // a known one still reports
}

}  // namespace
}  // namespace switchyard::orchestrator
