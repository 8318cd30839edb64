// The model executor: a bounded queue in front of dedicated threads that run one model's forward
// passes, and the one blocking call the services use (Run).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <torch/script.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runner/batcher.h"
#include "runner/cancel_token.h"
#include "runner/torch_model.h"

namespace switchyard::runner {

// The stream an executor thread on `device` makes current: a fresh one from libtorch's CUDA
// stream pool for a CUDA device, none (the CPU has no streams) otherwise. UNAVAILABLE when this
// libtorch cannot give one.
absl::StatusOr<std::optional<c10::Stream>> ExecutorStream(c10::Device device);

class ModelExecutor;
using ModelExecutorPtr = std::unique_ptr<ModelExecutor>;

// What a job meets when every instance is busy and the queue is full.
enum class WhenFull {
  kRefuse,  // RESOURCE_EXHAUSTED at once
  kWait,    // wait for a free slot, bounded by the deadline and the cancellation
};

struct RunOptions {
  WhenFull when_full = WhenFull::kRefuse;
  // Called once the job is queued, before it runs (e.g. to publish the executor's new in_use).
  std::function<void()> on_queued;
  // The module's method the job runs (e.g. an OCR bundle's "detect"); "" or "forward": forward.
  // NOT_FOUND when the module has no such method.
  std::string method;
};

// Runs one model's forward passes on `instances` dedicated threads, fed by a bounded queue.
// A job whose deadline passes, or whose caller gave up, while queued is dropped without running.
//
// Dynamic batching (runner/batcher.h): jobs submitted as one tensor of batch size 1 (RunBatchable,
// SubmitBatchable) are stacked along dimension 0 with other queued jobs of the same shape and
// dtype, up to max_batch_size, waiting up to max_queue_delay for companions; the result is split
// back per job. Jobs with any argument list (Run, Submit) always run alone.
class ModelExecutor {
 public:
  struct Options {
    int instances = 1;       // executor threads (jobs or batches that run at once)
    int queue_size = 8;      // jobs that may wait; beyond that a job is refused or waits for room
    int max_batch_size = 1;  // 1 disables batching
    absl::Duration max_queue_delay = absl::ZeroDuration();  // wait for a batch to fill
  };
  // Told, for every job that ran, how long it waited in the queue and how long its forward pass
  // took (a batch's pass counts for each of its jobs). Called on the executor's threads.
  using JobRunObserver = std::function<void(absl::Duration queued, absl::Duration compute)>;
  using Inputs = std::vector<c10::IValue>;
  using Result = absl::StatusOr<at::Tensor>;
  using ValueResult = absl::StatusOr<c10::IValue>;

  static absl::StatusOr<ModelExecutorPtr> Create(TorchModelPtr model, Options options,
                                                 JobRunObserver on_job_run = {});
  // An executor without a TorchScript module or threads that carries `payload`: a model served
  // by its own engine (a Hugging Face checkpoint, orchestrator/pipelines/hf_llm.h), so that the
  // model manager's states, memory accounting, eviction and reloads apply to it unchanged. Its
  // Run and Submit answer FAILED_PRECONDITION; in_use counts the holders of a Use.
  static absl::StatusOr<ModelExecutorPtr> CreateForPayload(std::shared_ptr<void> payload,
                                                           Options options);
  const std::shared_ptr<void>& payload() const { return payload_; }
  // Counts one job in in_use while it lives (for payload executors, whose jobs bypass the queue:
  // eviction, unloading and the reported load then see them).
  class Use {
   public:
    explicit Use(ModelExecutor* executor);
    ~Use();
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

   private:
    ModelExecutor* executor_;
  };
  // Signals the threads, fails every queued job with UNAVAILABLE, and joins.
  ~ModelExecutor();

  ModelExecutor(const ModelExecutor&) = delete;
  ModelExecutor& operator=(const ModelExecutor&) = delete;

  // Runs forward(*inputs) (any arguments, any result; tensors come back on the CPU) and blocks
  // until the result, the deadline or the cancellation of `cancel`, whichever comes first. A
  // caller that gives up (CANCELLED "the job was cancelled", DEADLINE_EXCEEDED) while its job is
  // still queued takes the job out at once, freeing its slot; a job already running finishes and
  // its result is dropped. RESOURCE_EXHAUSTED on a full queue unless options.when_full is kWait.
  ValueResult Run(Inputs inputs, absl::Time deadline, const CancelToken& cancel,
                  const RunOptions& options = {});
  // Run for forward(input) where forward returns a tensor; batchable when input.size(0) == 1.
  Result RunBatchable(at::Tensor input, absl::Time deadline, const CancelToken& cancel);

  // Queue a job without waiting for it: `done` gets its result exactly once, on an executor thread
  // (or in the destructor). For callers that keep many jobs in flight from one thread (tests,
  // benchmarks); the services call Run. RESOURCE_EXHAUSTED at once when the queue is full.
  absl::Status Submit(Inputs inputs, absl::Time deadline, std::function<void(ValueResult)> done);
  absl::Status SubmitBatchable(at::Tensor input, absl::Time deadline,
                               std::function<void(Result)> done);

  // Jobs queued plus running.
  int in_use() const ABSL_LOCKS_EXCLUDED(mu_);
  int capacity() const { return options_.instances; }
  const Options& options() const { return options_; }
  const TorchModelPtr& model() const { return model_; }
  // Forward passes run so far and jobs they carried (batches merge several jobs into one pass).
  int64_t passes() const { return passes_.load(); }
  int64_t jobs_run() const { return jobs_run_.load(); }

 private:
  struct Job {
    Inputs inputs;
    bool batchable = false;
    std::string method;  // "" for forward (RunOptions::method)
    absl::Time enqueued = absl::Now();
    absl::Time deadline;
    // Set by a caller that gave up; identifies the job to take out of the queue.
    std::shared_ptr<std::atomic<bool>> given_up;
    std::function<void(ValueResult)> done;
  };

  ModelExecutor(TorchModelPtr model, Options options, JobRunObserver on_job_run);
  // Queues `job`; with `wait_for` set, waits for a slot until the job's deadline or that token's
  // cancellation instead of answering RESOURCE_EXHAUSTED.
  absl::Status Enqueue(Job job, const CancelToken* wait_for) ABSL_LOCKS_EXCLUDED(mu_);
  // Enqueues `job` and blocks until it is done or the caller gives up (see Run).
  ValueResult Await(Job job, const CancelToken& cancel, const RunOptions& options);
  // Marks the job of `given_up` and, if it is still queued, takes it out and completes it with
  // `why` so its slot is free at once.
  void Withdraw(const std::shared_ptr<std::atomic<bool>>& given_up, absl::Status why)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  void RunBatch(std::vector<Job>& batch) ABSL_LOCKS_EXCLUDED(mu_);
  void Complete(Job& job, ValueResult result) ABSL_LOCKS_EXCLUDED(mu_);

  const TorchModelPtr model_;  // null for a payload executor
  std::shared_ptr<void> payload_;
  const Options options_;
  const Batcher batcher_;
  const JobRunObserver on_job_run_;
  mutable absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;  // jobs ever queued: wakes a batch being filled
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> passes_{0};
  std::atomic<int64_t> jobs_run_{0};
  std::vector<std::thread> threads_;
};

}  // namespace switchyard::runner
