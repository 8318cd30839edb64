#include "orchestrator/transcode/rendition_worker.h"

#include <atomic>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"

namespace switchyard::orchestrator::transcode {
namespace {

RenditionWork Work(int64_t ts) {
  RenditionWork work;
  work.kind = RenditionWork::Kind::kFrame;
  work.ts = ts;
  return work;
}

TEST(RenditionWorker, DoesTheWorkInOrderOnItsThread) {
  std::atomic<bool> failed{false};
  std::vector<int64_t> done;  // only the worker thread writes it until Drain returns
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> other_thread{true};
  {
    RenditionWorker worker(
        [&](RenditionWork& work) {
          if (std::this_thread::get_id() == caller) other_thread = false;
          done.push_back(work.ts);
          return absl::OkStatus();
        },
        &failed);
    for (int64_t i = 0; i < 100; ++i) ASSERT_TRUE(worker.Post(Work(i)));
    EXPECT_TRUE(worker.Drain().ok());
    ASSERT_EQ(done.size(), 100u);
    for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(done[i], i);
  }
  EXPECT_TRUE(other_thread);
  EXPECT_FALSE(failed);
}

TEST(RenditionWorker, KeepsTheFirstErrorAndDropsLaterWork) {
  std::atomic<bool> failed{false};
  std::atomic<int> calls{0};
  RenditionWorker worker(
      [&](RenditionWork& work) {
        ++calls;
        if (work.ts == 3) return absl::InternalError("three");
        if (work.ts > 3) return absl::InternalError("later");
        return absl::OkStatus();
      },
      &failed);
  bool refused = false;
  for (int64_t i = 0; i < 50 && !refused; ++i) refused = !worker.Post(Work(i));
  const absl::Status status = worker.Drain();
  EXPECT_EQ(status.message(), "three");
  EXPECT_TRUE(failed);
  EXPECT_FALSE(worker.Post(Work(100)));
  EXPECT_EQ(calls.load(), 4);  // 0, 1, 2 and 3; nothing after the failure
}

TEST(RenditionWorker, TheDestructorJoinsWithWorkStillQueued) {
  std::atomic<bool> failed{false};
  absl::Mutex mu;
  bool release = false;
  std::atomic<int> calls{0};
  {
    RenditionWorker worker(
        [&](RenditionWork&) {
          absl::MutexLock lock(&mu);
          mu.Await(absl::Condition(&release));
          ++calls;
          return absl::OkStatus();
        },
        &failed);
    for (int64_t i = 0; i < 3; ++i) ASSERT_TRUE(worker.Post(Work(i)));
    absl::MutexLock lock(&mu);
    release = true;
  }
  EXPECT_EQ(calls.load(), 3);  // what was queued is done before the thread ends
}

}  // namespace
}  // namespace switchyard::orchestrator::transcode
