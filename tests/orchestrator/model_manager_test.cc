// Unit tests for ModelManager (orchestrator/models/model_manager.h) and StatusBoard, with tiny
// TorchScript models built here and saved into a temporary directory.
#include "orchestrator/models/model_manager.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include "orchestrator/models/status_board.h"
#include "support/media_fixtures.h"
#include "support/tiny_torch_models.h"

namespace switchyard::orchestrator {
namespace {

namespace fs = std::filesystem;
using node::v1::MODEL_STATE_COLD;
using node::v1::MODEL_STATE_FAILED;
using node::v1::MODEL_STATE_LOADING;
using node::v1::MODEL_STATE_READY;
using ::switchyard::testing::Far;
using ::switchyard::testing::Gate;
using ::switchyard::testing::SaveTestModule;
using ::switchyard::testing::SubmitForFuture;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;
using ::testing::HasSubstr;

constexpr auto kWait = ::switchyard::testing::kTorchTestWait;
constexpr const char* kDouble = ::switchyard::testing::kDoubleSource;  // doubles any tensor
constexpr const char* kGated = ::switchyard::testing::kGatedSource;

// Forwards of the "gated" model pass through the test gate (support/tiny_torch_models.h): each
// call is counted, then blocks (bounded) until the test opens the gate. Warm-up is a forward, so
// this counts loads and can hold a load in the LOADING state. Modules here have scale 2 and no
// parameters.
void SaveModule(const fs::path& path, const std::string& source) {
  SaveTestModule(path, source, {.scale = 2, .ratio_and_weight = false});
}

// Fails on the 4-D warm-up input.
constexpr const char* kNeeds2D = R"(
def forward(self, x):
    return torch.mm(x, x)
)";

// Raises errors like those libtorch raises, on negative input: a CUDA fault (which may poison
// the device, so the model must be reloaded) for x < -1, an ordinary error for -1 <= x < 0.
constexpr const char* kFaulty = R"PY(
def forward(self, x):
    if bool(torch.lt(torch.min(x), -1.0)):
        raise Exception("CUDA error: an illegal memory access was encountered (simulated)")
    if bool(torch.lt(torch.min(x), 0.0)):
        raise Exception("negative input")
    return x * 2.0
)PY";

class ModelManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Gate::Get().Reset(/*open=*/true);
    SaveModule(dir_.path() / "double.pt", kDouble);
    SaveModule(dir_.path() / "gated.pt", kGated);
    SaveModule(dir_.path() / "needs2d.pt", kNeeds2D);
    WriteFile(dir_.path() / "corrupt.pt", "PK\x03\x04 definitely not a TorchScript archive");
  }
  void TearDown() override { Gate::Get().Open(); }

  ModelConfig Model(const std::string& id, const std::string& file, bool warm) {
    ModelConfig m;
    m.id = id;
    m.pipeline = "upscale";
    m.path = dir_.path() / file;
    m.warm = warm;
    m.device = "cpu";
    m.instances = 2;
    m.queue_size = 3;
    m.price_per_unit = 0.25;
    m.unit = "pixel";
    m.warmup_size = 8;
    return m;
  }

  static node::v1::ModelState StateOf(const ModelManager& mm, const std::string& id) {
    for (const auto& c : mm.Capabilities()) {
      if (c.model_id() == id) return c.state();
    }
    ADD_FAILURE() << "no capability for " << id;
    return node::v1::MODEL_STATE_UNSPECIFIED;
  }
  static node::v1::NodeCapability CapOf(const ModelManager& mm, const std::string& id) {
    for (const auto& c : mm.Capabilities()) {
      if (c.model_id() == id) return c;
    }
    ADD_FAILURE() << "no capability for " << id;
    return {};
  }

  // Runs one job on the executor and checks it doubles the input.
  static void ExpectDoubles(runner::ModelExecutor& executor) {
    auto future = SubmitForFuture(executor, at::full({1, 3, 4, 4}, 1.5f), Far());
    ASSERT_TRUE(future.ok()) << future.status();
    ASSERT_EQ(future->wait_for(kWait), std::future_status::ready);
    auto out = future->get();
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(at::equal(*out, at::full({1, 3, 4, 4}, 3.0f)));
  }

  TempDir dir_;
};

TEST_F(ModelManagerTest, WarmModelIsReadyAfterLoadWarmModels) {
  ModelManager mm({Model("warm", "double.pt", true)}, nullptr);
  EXPECT_EQ(StateOf(mm, "warm"), MODEL_STATE_COLD);
  mm.LoadWarmModels();
  EXPECT_EQ(StateOf(mm, "warm"), MODEL_STATE_READY);
  auto executor = mm.Acquire("warm", Far());
  ASSERT_TRUE(executor.ok()) << executor.status();
  ASSERT_NE(*executor, nullptr);
  ExpectDoubles(**executor);
  // Acquire of a READY model returns the same executor every time.
  auto again = mm.Acquire("warm", Far());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), executor->get());
}

TEST_F(ModelManagerTest, ColdModelLoadsOnFirstAcquire) {
  ModelManager mm({Model("warm", "double.pt", true), Model("cold", "double.pt", false)}, nullptr);
  mm.LoadWarmModels();
  EXPECT_EQ(StateOf(mm, "warm"), MODEL_STATE_READY);
  EXPECT_EQ(StateOf(mm, "cold"), MODEL_STATE_COLD);  // LoadWarmModels leaves it alone
  auto executor = mm.Acquire("cold", Far());
  ASSERT_TRUE(executor.ok()) << executor.status();
  EXPECT_EQ(StateOf(mm, "cold"), MODEL_STATE_READY);
  ExpectDoubles(**executor);
}

TEST_F(ModelManagerTest, WarmUpRunsOnceWithTheConfiguredSize) {
  ModelManager mm({Model("gated", "gated.pt", true)}, nullptr);
  mm.LoadWarmModels();
  EXPECT_EQ(StateOf(mm, "gated"), MODEL_STATE_READY);
  EXPECT_EQ(Gate::Get().entered(), 1);  // one warm-up forward
}

TEST_F(ModelManagerTest, WarmupSizeZeroSkipsWarmUp) {
  ModelConfig m = Model("gated", "gated.pt", true);
  m.warmup_size = 0;
  ModelManager mm({m}, nullptr);
  mm.LoadWarmModels();
  EXPECT_EQ(StateOf(mm, "gated"), MODEL_STATE_READY);
  EXPECT_EQ(Gate::Get().entered(), 0);
}

TEST_F(ModelManagerTest, MissingModelFailsOthersStillWork) {
  ModelManager mm({Model("missing", "missing.pt", true), Model("good", "double.pt", true)},
                  nullptr);
  mm.LoadWarmModels();
  EXPECT_EQ(StateOf(mm, "missing"), MODEL_STATE_FAILED);
  EXPECT_EQ(StateOf(mm, "good"), MODEL_STATE_READY);
  const auto cap = CapOf(mm, "missing");
  EXPECT_THAT(cap.error(), HasSubstr("missing.pt"));
  EXPECT_EQ(CapOf(mm, "good").error(), "");

  auto failed = mm.Acquire("missing", Far());
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_THAT(failed.status().message(), HasSubstr("missing"));
  EXPECT_THAT(failed.status().message(), HasSubstr("failed to load"));

  auto good = mm.Acquire("good", Far());
  ASSERT_TRUE(good.ok()) << good.status();
  ExpectDoubles(**good);
}

TEST_F(ModelManagerTest, CorruptModelFails) {
  ModelManager mm({Model("corrupt", "corrupt.pt", true), Model("good", "double.pt", false)},
                  nullptr);
  mm.LoadWarmModels();
  EXPECT_EQ(StateOf(mm, "corrupt"), MODEL_STATE_FAILED);
  EXPECT_FALSE(CapOf(mm, "corrupt").error().empty());
  EXPECT_EQ(mm.Acquire("corrupt", Far()).status().code(), absl::StatusCode::kUnavailable);
  auto good = mm.Acquire("good", Far());
  ASSERT_TRUE(good.ok()) << good.status();
  ExpectDoubles(**good);
}

TEST_F(ModelManagerTest, ColdModelThatFailsToLoadIsUnavailable) {
  ModelManager mm({Model("cold-missing", "missing.pt", false)}, nullptr);
  auto first = mm.Acquire("cold-missing", Far());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable) << first.status();
  EXPECT_EQ(StateOf(mm, "cold-missing"), MODEL_STATE_FAILED);
  // A failed model stays failed: no second load attempt.
  EXPECT_EQ(mm.Acquire("cold-missing", Far()).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ModelManagerTest, FailedWarmUpFailsTheModel) {
  ModelManager mm({Model("needs2d", "needs2d.pt", true)}, nullptr);
  mm.LoadWarmModels();
  EXPECT_EQ(StateOf(mm, "needs2d"), MODEL_STATE_FAILED);
  EXPECT_THAT(CapOf(mm, "needs2d").error(), HasSubstr("warm-up"));
  EXPECT_EQ(mm.Acquire("needs2d", Far()).status().code(), absl::StatusCode::kUnavailable);

  // Without warm-up the same model loads.
  ModelConfig no_warmup = Model("needs2d", "needs2d.pt", true);
  no_warmup.warmup_size = 0;
  ModelManager mm2({no_warmup}, nullptr);
  mm2.LoadWarmModels();
  EXPECT_EQ(StateOf(mm2, "needs2d"), MODEL_STATE_READY);
}

TEST_F(ModelManagerTest, UnknownIdIsNotFound) {
  ModelManager mm({Model("good", "double.pt", false)}, nullptr);
  auto r = mm.Acquire("nope", Far());
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("nope"));
  EXPECT_EQ(mm.Find("nope"), nullptr);
  const ModelConfig* found = mm.Find("good");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->id, "good");
  EXPECT_EQ(found->path, dir_.path() / "double.pt");
}

TEST_F(ModelManagerTest, ConcurrentAcquireOfColdModelLoadsOnce) {
  Gate::Get().Reset(/*open=*/false);  // hold the warm-up (the load) until every caller waits
  ModelManager mm({Model("gated", "gated.pt", false)}, nullptr);
  constexpr int kThreads = 6;
  std::vector<std::shared_ptr<runner::ModelExecutor>> got(kThreads);
  std::vector<absl::Status> status(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto r = mm.Acquire("gated", Far());
      status[i] = r.status();
      if (r.ok()) got[i] = *r;
    });
  }
  ASSERT_TRUE(Gate::Get().WaitEntered(1));  // one caller is warming the model up
  EXPECT_EQ(StateOf(mm, "gated"), MODEL_STATE_LOADING);
  // Give the other callers time to reach the wait (the assertions below hold either way).
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(StateOf(mm, "gated"), MODEL_STATE_LOADING);
  Gate::Get().Open();
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_TRUE(status[i].ok()) << i << ": " << status[i];
    ASSERT_NE(got[i], nullptr);
    EXPECT_EQ(got[i].get(), got[0].get()) << i;
  }
  EXPECT_EQ(Gate::Get().entered(), 1);  // a single load (one warm-up forward)
  EXPECT_EQ(StateOf(mm, "gated"), MODEL_STATE_READY);
}

TEST_F(ModelManagerTest, WaitingForALoadRespectsTheDeadline) {
  Gate::Get().Reset(/*open=*/false);
  ModelManager mm({Model("gated", "gated.pt", false)}, nullptr);
  absl::Status loader_status;
  std::thread loader([&] { loader_status = mm.Acquire("gated", Far()).status(); });
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  auto late = mm.Acquire("gated", absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  auto past = mm.Acquire("gated", absl::Now() - absl::Seconds(1));
  EXPECT_EQ(past.status().code(), absl::StatusCode::kDeadlineExceeded) << past.status();
  Gate::Get().Open();
  loader.join();
  EXPECT_TRUE(loader_status.ok()) << loader_status;
  EXPECT_TRUE(mm.Acquire("gated", Far()).ok());
}

TEST_F(ModelManagerTest, StatusBoardVersionIncreasesOnStateChanges) {
  StatusBoard board;
  ModelManager mm({Model("warm", "double.pt", true), Model("cold", "double.pt", false),
                   Model("bad", "missing.pt", false)},
                  &board);
  const uint64_t v0 = board.version();
  mm.LoadWarmModels();  // warm: COLD -> LOADING -> READY
  const uint64_t v1 = board.version();
  EXPECT_GE(v1, v0 + 2);
  ASSERT_TRUE(mm.Acquire("cold", Far()).ok());  // COLD -> LOADING -> READY
  const uint64_t v2 = board.version();
  EXPECT_GE(v2, v1 + 2);
  ASSERT_TRUE(mm.Acquire("cold", Far()).ok());  // already READY: no change
  EXPECT_EQ(board.version(), v2);
  EXPECT_FALSE(mm.Acquire("bad", Far()).ok());  // COLD -> LOADING -> FAILED
  EXPECT_GE(board.version(), v2 + 2);
}

TEST_F(ModelManagerTest, StatusBoardWaitForChangeWakesOnChange) {
  StatusBoard board;
  const uint64_t seen = board.version();
  std::thread changer([&] { board.Changed(); });
  const uint64_t now =
      board.WaitForChange(seen, std::chrono::milliseconds(20000), [] { return false; });
  changer.join();
  EXPECT_NE(now, seen);
  // No change: returns the same version after the (short) timeout.
  EXPECT_EQ(board.WaitForChange(now, std::chrono::milliseconds(10), [] { return false; }), now);
  // A stop predicate that is already true returns at once.
  EXPECT_EQ(board.WaitForChange(now, std::chrono::milliseconds(20000), [] { return true; }), now);
}

TEST_F(ModelManagerTest, CapabilitiesReportStateCapacityPriceAndLoad) {
  Gate::Get().Reset(/*open=*/true);
  ModelConfig a = Model("a", "gated.pt", true);
  a.instances = 3;
  a.price_per_unit = 0.125;
  a.unit = "megapixel";
  ModelConfig b = Model("b", "double.pt", false);
  ModelConfig c = Model("c", "missing.pt", true);
  ModelManager mm({a, b, c}, nullptr);
  mm.LoadWarmModels();

  auto caps = mm.Capabilities();
  ASSERT_EQ(caps.size(), 3u);
  // Config order.
  EXPECT_EQ(caps[0].model_id(), "a");
  EXPECT_EQ(caps[1].model_id(), "b");
  EXPECT_EQ(caps[2].model_id(), "c");
  for (const auto& cap : caps) EXPECT_EQ(cap.pipeline(), "upscale");
  EXPECT_EQ(caps[0].state(), MODEL_STATE_READY);
  EXPECT_EQ(caps[0].capacity(), 3);
  EXPECT_EQ(caps[0].in_use(), 0);
  EXPECT_DOUBLE_EQ(caps[0].price_per_unit(), 0.125);
  EXPECT_EQ(caps[0].unit(), "megapixel");
  EXPECT_EQ(caps[1].state(), MODEL_STATE_COLD);
  EXPECT_EQ(caps[1].capacity(), 2);
  EXPECT_DOUBLE_EQ(caps[1].price_per_unit(), 0.25);
  EXPECT_EQ(caps[1].unit(), "pixel");
  EXPECT_EQ(caps[2].state(), MODEL_STATE_FAILED);
  EXPECT_FALSE(caps[2].error().empty());

  // A job held in the gate shows up as in_use.
  auto executor = mm.Acquire("a", Far());
  ASSERT_TRUE(executor.ok());
  Gate::Get().Reset(/*open=*/false);
  auto job = SubmitForFuture(**executor, at::ones({1, 3, 2, 2}), Far());
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  EXPECT_EQ(CapOf(mm, "a").in_use(), 1);
  Gate::Get().Open();
  ASSERT_EQ(job->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(job->get().ok());
  // The slot is free by the time the result is delivered.
  EXPECT_EQ(CapOf(mm, "a").in_use(), 0);
}

TEST_F(ModelManagerTest, ExecutorUsesConfiguredInstancesAndQueue) {
  ModelConfig m = Model("gated", "gated.pt", true);
  m.instances = 1;
  m.queue_size = 0;
  ModelManager mm({m}, nullptr);
  mm.LoadWarmModels();
  auto executor = mm.Acquire("gated", Far());
  ASSERT_TRUE(executor.ok());
  EXPECT_EQ((*executor)->capacity(), 1);
  Gate::Get().Reset(/*open=*/false);
  auto job = SubmitForFuture(**executor, at::ones({1, 3, 2, 2}), Far());
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  EXPECT_EQ(SubmitForFuture(**executor, at::ones({1, 3, 2, 2}), Far()).status().code(),
            absl::StatusCode::kResourceExhausted);
  Gate::Get().Open();
  ASSERT_EQ(job->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(job->get().ok());
}

// Memory budget: models declare 40 MiB each (memory_mb) on a 100 MiB CPU budget, so two fit.
class ModelBudgetTest : public ModelManagerTest {
 protected:
  ModelConfig Sized(const std::string& id, bool warm) {
    ModelConfig m = Model(id, "double.pt", warm);
    m.memory_mb = 40;
    return m;
  }
  std::map<std::string, int64_t> Budget() { return {{"cpu", 100}}; }
};

TEST_F(ModelBudgetTest, LoadingBeyondTheBudgetEvictsTheLeastRecentlyUsedIdleColdModel) {
  StatusBoard board;
  ModelManager mm({Sized("a", false), Sized("b", false), Sized("c", false)}, &board, Budget());
  ASSERT_TRUE(mm.Acquire("a", Far()).ok());
  ASSERT_TRUE(mm.Acquire("b", Far()).ok());
  ASSERT_TRUE(mm.Acquire("a", Far()).ok());  // a is now more recently used than b
  EXPECT_EQ(mm.MemoryInUse("cpu"), 80LL << 20);
  ASSERT_TRUE(mm.Acquire("c", Far()).ok());  // needs room: b goes
  EXPECT_EQ(StateOf(mm, "a"), MODEL_STATE_READY);
  EXPECT_EQ(StateOf(mm, "b"), node::v1::MODEL_STATE_UNLOADED);
  EXPECT_EQ(StateOf(mm, "c"), MODEL_STATE_READY);
  EXPECT_EQ(mm.MemoryInUse("cpu"), 80LL << 20);
  EXPECT_EQ(CapOf(mm, "c").memory_mb(), 40);
  // Advertised so gateways can send cold models where there is memory: 100 - 80 MiB.
  EXPECT_EQ(CapOf(mm, "b").free_memory_mb(), 20);
}

TEST_F(ModelBudgetTest, WarmModelsAreNeverEvictedAndAFullDeviceRefusesWithResourceExhausted) {
  StatusBoard board;
  ModelManager mm({Sized("w1", true), Sized("w2", true), Sized("cold", false)}, &board, Budget());
  mm.LoadWarmModels();
  ASSERT_EQ(StateOf(mm, "w1"), MODEL_STATE_READY);
  ASSERT_EQ(StateOf(mm, "w2"), MODEL_STATE_READY);
  // The cold model cannot fit: it is advertised as having no room, and a job for it is refused.
  EXPECT_TRUE(CapOf(mm, "cold").no_room());
  auto r = mm.Acquire("cold", Far());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("cold"));
  EXPECT_EQ(StateOf(mm, "w1"), MODEL_STATE_READY);
  EXPECT_EQ(StateOf(mm, "w2"), MODEL_STATE_READY);
  EXPECT_EQ(StateOf(mm, "cold"), MODEL_STATE_COLD);
  // Once an operator unloads a warm model, the cold one fits again.
  ASSERT_TRUE(mm.Unload("w2").ok());
  EXPECT_EQ(StateOf(mm, "w2"), node::v1::MODEL_STATE_UNLOADED);
  EXPECT_FALSE(CapOf(mm, "cold").no_room());
  EXPECT_TRUE(mm.Acquire("cold", Far()).ok());
}

TEST_F(ModelBudgetTest, AWarmModelThatDoesNotFitFailsAndTheOthersServe) {
  StatusBoard board;
  ModelConfig big = Sized("big", true);
  big.memory_mb = 500;
  ModelManager mm({Sized("small", true), big}, &board, Budget());
  mm.LoadWarmModels();
  EXPECT_EQ(StateOf(mm, "small"), MODEL_STATE_READY);
  EXPECT_EQ(StateOf(mm, "big"), MODEL_STATE_FAILED);
  EXPECT_THAT(CapOf(mm, "big").error(), HasSubstr("budget"));
}

TEST_F(ModelBudgetTest, BusyModelsAreNotEvicted) {
  StatusBoard board;
  ModelConfig gated = Model("gated", "gated.pt", false);
  gated.memory_mb = 70;  // 70 + 40 > 100: loading "other" needs "gated" gone
  gated.warmup_size = 0;
  ModelManager mm({gated, Sized("other", false)}, &board, Budget());
  auto executor = mm.Acquire("gated", Far());
  ASSERT_TRUE(executor.ok()) << executor.status();
  Gate::Get().Reset(/*open=*/false);
  auto job = SubmitForFuture(**executor, at::ones({1, 3, 2, 2}), Far());
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  executor->reset();
  // A job runs on "gated": it must not be evicted, so "other" cannot load now.
  EXPECT_EQ(mm.Acquire("other", Far()).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(StateOf(mm, "gated"), MODEL_STATE_READY);
  Gate::Get().Open();
  ASSERT_EQ(job->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(job->get().ok());
  // Idle now: it can make room.
  EXPECT_TRUE(mm.Acquire("other", Far()).ok());
  EXPECT_EQ(StateOf(mm, "gated"), node::v1::MODEL_STATE_UNLOADED);
}

TEST_F(ModelBudgetTest, UnlistedDevicesAreUnbounded) {
  StatusBoard board;
  ModelConfig huge = Sized("huge", false);
  huge.memory_mb = 1 << 20;
  ModelManager mm({huge}, &board, {{"cuda:0", 10}});
  EXPECT_EQ(CapOf(mm, "huge").free_memory_mb(), -1);
  EXPECT_TRUE(mm.Acquire("huge", Far()).ok());
}

TEST_F(ModelManagerTest, UnloadMakesAReadyModelUnloadedAndLoadBringsItBack) {
  StatusBoard board;
  ModelManager mm({Model("a", "double.pt", true)}, &board);
  mm.LoadWarmModels();
  ASSERT_EQ(StateOf(mm, "a"), MODEL_STATE_READY);
  ASSERT_TRUE(mm.Unload("a").ok());
  EXPECT_EQ(StateOf(mm, "a"), node::v1::MODEL_STATE_UNLOADED);
  EXPECT_TRUE(mm.Unload("a").ok());  // unloading an unloaded model is a no-op
  ASSERT_TRUE(mm.Load("a", Far()).ok());
  EXPECT_EQ(StateOf(mm, "a"), MODEL_STATE_READY);
  EXPECT_EQ(mm.Unload("nope").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(mm.Load("nope", Far()).code(), absl::StatusCode::kNotFound);
}

TEST_F(ModelManagerTest, UnloadRefusesWhileJobsAreQueuedOrRunning) {
  StatusBoard board;
  ModelConfig g = Model("g", "gated.pt", false);
  g.warmup_size = 0;
  ModelManager mm({g}, &board);
  auto executor = mm.Acquire("g", Far());
  ASSERT_TRUE(executor.ok());
  Gate::Get().Reset(/*open=*/false);
  auto job = SubmitForFuture(**executor, at::ones({1, 3, 2, 2}), Far());
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(Gate::Get().WaitEntered(1));
  EXPECT_EQ(mm.Unload("g").code(), absl::StatusCode::kFailedPrecondition);
  Gate::Get().Open();
  ASSERT_EQ(job->wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(mm.Unload("g").ok());
}

TEST_F(ModelManagerTest, LoadRetriesAFailedModelOnceItsFileIsFixed) {
  StatusBoard board;
  ModelConfig m = Model("m", "later.pt", true);
  ModelManager mm({m}, &board);
  mm.LoadWarmModels();
  ASSERT_EQ(StateOf(mm, "m"), MODEL_STATE_FAILED);
  SaveModule(dir_.path() / "later.pt", kDouble);
  ASSERT_TRUE(mm.Load("m", Far()).ok());
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);
}

TEST_F(ModelManagerTest, AnErrorThatMayBreakTheModelReloadsItAndOtherErrorsDoNot) {
  SaveModule(dir_.path() / "faulty.pt", kFaulty);
  StatusBoard board;
  ModelManager mm({Model("m", "faulty.pt", true)}, &board);
  mm.LoadWarmModels();
  ASSERT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);
  auto run = [&](float value) -> absl::Status {
    auto executor = mm.Acquire("m", Far());
    if (!executor.ok()) return executor.status();
    auto future = SubmitForFuture(**executor, at::full({1, 3, 4, 4}, value), Far());
    if (!future.ok()) return future.status();
    if (future->wait_for(kWait) != std::future_status::ready) {
      return absl::DeadlineExceededError("no result");
    }
    return future->get().status();
  };
  auto first = mm.Acquire("m", Far());
  ASSERT_TRUE(first.ok());

  // An ordinary error fails the job and leaves the model as it is.
  absl::Status plain = run(-0.5f);
  EXPECT_EQ(plain.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(plain.message()), HasSubstr("negative input"));
  EXPECT_THAT(std::string(plain.message()), ::testing::Not(HasSubstr("reloaded")));
  auto same = mm.Acquire("m", Far());
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->get(), first->get());
  EXPECT_EQ(mm.ReloadsOf("m"), 0);

  // A device fault fails that job, says the model will be reloaded, and the next job gets a
  // fresh load that works.
  absl::Status fault = run(-2.0f);
  EXPECT_EQ(fault.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(fault.message()), HasSubstr("illegal memory access"));
  EXPECT_THAT(std::string(fault.message()), HasSubstr("will be reloaded"));
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);  // reload happens on the next Acquire
  const uint64_t version = board.version();
  auto fresh = mm.Acquire("m", Far());
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_NE(fresh->get(), first->get());
  EXPECT_EQ(mm.ReloadsOf("m"), 1);
  EXPECT_GT(board.version(), version);  // the reload was advertised (UNLOADED, LOADING, READY)
  EXPECT_EQ(StateOf(mm, "m"), MODEL_STATE_READY);
  ExpectDoubles(**fresh);
  EXPECT_TRUE(run(1.0f).ok());
  EXPECT_EQ(mm.ReloadsOf("m"), 1);
}

}  // namespace
}  // namespace switchyard::orchestrator
