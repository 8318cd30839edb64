// Unit tests for the orchestrator's demand-driven warm-up (orchestrator/prewarmer.h) and
// ModelManager::Prewarm, with tiny TorchScript models saved into a temporary directory.
#include "orchestrator/prewarmer.h"

#include <map>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/metrics.h"
#include "orchestrator/models/model_manager.h"
#include "orchestrator/models/status_board.h"
#include "support/media_fixtures.h"
#include "support/tiny_torch_models.h"

namespace switchyard::orchestrator {
namespace {

using node::v1::MODEL_STATE_COLD;
using node::v1::MODEL_STATE_READY;
using ::switchyard::testing::Far;
using ::switchyard::testing::SaveTestModule;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;

constexpr absl::Duration kIdle = absl::Seconds(60);

class PrewarmerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SaveTestModule(dir_.path() / "double.pt", ::switchyard::testing::kDoubleSource,
                   {.scale = 2, .ratio_and_weight = false});
  }

  ModelConfig Model(const std::string& id, bool warm = false, int64_t memory_mb = 40) {
    ModelConfig m;
    m.id = id;
    m.pipeline = "upscale";
    m.path = dir_.path() / "double.pt";
    m.warm = warm;
    m.device = "cpu";
    m.unit = "pixel";
    m.warmup_size = 8;
    m.memory_mb = memory_mb;
    return m;
  }

  static node::v1::WarmDemand Demand(const std::string& model, int64_t queued,
                                     const std::string& pipeline = "upscale") {
    node::v1::WarmDemand d;
    d.set_gateway_id("gw-test");
    d.set_window_ms(10000);
    auto* r = d.add_routes();
    r->set_pipeline(pipeline);
    r->set_model_id(model);
    r->set_queued(queued);
    return d;
  }

  static node::v1::ModelState StateOf(const ModelManager& mm, const std::string& id) {
    return mm.CapabilityOf(id).state();
  }

  TempDir dir_;
  StatusBoard board_;
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
};

TEST_F(PrewarmerTest, DemandAboveTheThresholdLoadsAColdModelAndCountsIt) {
  ModelManager mm({Model("m")}, &board_);
  Metrics metrics("orchestrator");
  Prewarmer p(&mm, {.min_jobs = 2}, &metrics, [this] { return now_; });
  // One job is not demand enough (the default threshold is 2).
  ASSERT_TRUE(p.Accept("gw", Demand("m", 1)).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_COLD);
  // Two are: refused, waited and cold starts count as queued ones do.
  node::v1::WarmDemand d = Demand("m", 0);
  d.mutable_routes(0)->set_refused(1);
  d.mutable_routes(0)->set_waited(1);
  ASSERT_TRUE(p.Accept("gw", d).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);
  EXPECT_THAT(metrics.Render(),
              HasSubstr("switchyard_orchestrator_prewarm_total{model=\"m\",result=\"loaded\"} 1"));
  // Already warm: nothing more to do, whatever the demand.
  ASSERT_TRUE(p.Accept("gw", Demand("m", 50)).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);
}

TEST_F(PrewarmerTest, OnlyModelsServedHereUnderThatPipeline) {
  ModelManager mm({Model("m")}, &board_);
  Prewarmer p(&mm, {}, nullptr, [this] { return now_; });
  ASSERT_TRUE(p.Accept("gw", Demand("not-here", 10)).ok());
  ASSERT_TRUE(p.Accept("gw", Demand("m", 10, "image-to-image")).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_COLD);
}

TEST_F(PrewarmerTest, NeverEvictsToWarmAModel) {
  // 40 + 40 > 60: "cold" fits only if "idle" (READY, no jobs: evictable on demand) goes.
  ModelManager mm({Model("idle", /*warm=*/false), Model("cold")}, &board_, {{"cpu", 60}});
  ASSERT_TRUE(mm.Acquire("idle", Far()).ok());
  Metrics metrics("orchestrator");
  Prewarmer p(&mm, {}, &metrics, [this] { return now_; });
  EXPECT_FALSE(mm.CapabilityOf("cold").no_room());  // a job could still load it, by evicting
  ASSERT_TRUE(p.Accept("gw", Demand("cold", 10)).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "cold"), MODEL_STATE_COLD);
  EXPECT_EQ(StateOf(mm, "idle"), MODEL_STATE_READY);
  EXPECT_THAT(metrics.Render(), HasSubstr("model=\"cold\",result=\"no_room\"} 1"));
  // ModelManager::Prewarm says why.
  auto direct = mm.Prewarm("cold");
  EXPECT_EQ(direct.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(direct.status().message()), HasSubstr("without evicting"));
}

TEST_F(PrewarmerTest, AModelIsPrewarmedAtMostOncePerCooldown) {
  ModelManager mm({Model("m")}, &board_);
  Prewarmer p(&mm, {.min_jobs = 1, .cooldown = absl::Seconds(60)}, nullptr,
              [this] { return now_; });
  ASSERT_TRUE(p.Accept("gw", Demand("m", 5)).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  ASSERT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);
  ASSERT_TRUE(mm.Unload("m").ok());
  now_ += absl::Seconds(30);
  ASSERT_TRUE(p.Accept("gw", Demand("m", 5)).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "m"), node::v1::MODEL_STATE_UNLOADED);
  now_ += absl::Seconds(31);
  ASSERT_TRUE(p.Accept("gw", Demand("m", 5)).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);
}

TEST_F(PrewarmerTest, MalformedDemandIsRefusedAndLoadsNothing) {
  ModelManager mm({Model("m")}, &board_);
  Prewarmer p(&mm, {.min_jobs = 1}, nullptr, [this] { return now_; });
  auto refused = [&](node::v1::WarmDemand d, const std::string& why) {
    absl::Status st = p.Accept("gw", d);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << why;
    EXPECT_THAT(std::string(st.message()), HasSubstr(why));
  };
  node::v1::WarmDemand many = Demand("m", 1);
  for (int i = 0; i < Prewarmer::kMaxRoutes; ++i) *many.add_routes() = many.routes(0);
  refused(many, "65 routes; at most 64");
  node::v1::WarmDemand d = Demand("m", -1);
  refused(d, "a negative count");
  d = Demand(std::string(300, 'm'), 1);
  refused(d, "model_id is 300 bytes; at most 256");
  d = Demand("m\n", 1);
  refused(d, "model_id is not printable ASCII");
  d = Demand("m", 1, "");
  refused(d, "pipeline is empty");
  d = Demand("m", 1);
  d.set_window_ms(0);
  refused(d, "window_ms 0 is not in 1..3600000");
  // Counts that would overflow a sum saturate instead.
  d = Demand("m", INT64_MAX);
  d.mutable_routes(0)->set_refused(INT64_MAX);
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_COLD);
  EXPECT_TRUE(p.Accept("gw", d).ok());
  ASSERT_TRUE(p.WaitIdle(kIdle));
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);
}

TEST_F(PrewarmerTest, DestructionDuringALoadWaitsForIt) {
  ModelManager mm({Model("m")}, &board_);
  {
    Prewarmer p(&mm, {.min_jobs = 1}, nullptr, [this] { return now_; });
    ASSERT_TRUE(p.Accept("gw", Demand("m", 3)).ok());
  }  // joined here, whether the load had started or not
  const auto state = StateOf(mm, "m");
  EXPECT_TRUE(state == MODEL_STATE_COLD || state == MODEL_STATE_READY) << state;
}

}  // namespace
}  // namespace switchyard::orchestrator
