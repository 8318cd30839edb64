// In-process libtorch runner: a loaded TorchScript module and the executor threads that run it.
// libtorch exceptions never leave this library: they become absl statuses here.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <torch/script.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchyard::runner {

// Sizes libtorch's intra-op and inter-op thread pools once per process (0 keeps libtorch's
// default). libtorch only allows this before the first parallel work, so later calls that ask
// for different sizes fail with FAILED_PRECONDITION.
absl::Status ConfigureTorchThreads(int intra_op_threads, int inter_op_threads);

// Parses "auto" (CUDA device 0 when this libtorch has CUDA and a device is present, else CPU),
// "cpu", "cuda" or "cuda:N". INVALID_ARGUMENT for anything else, UNAVAILABLE for a CUDA device
// this build or machine does not have.
absl::StatusOr<c10::Device> ResolveDevice(const std::string& spec);

// The stream an executor thread on `device` makes current: a fresh one from libtorch's CUDA
// stream pool for a CUDA device, none (the CPU has no streams) otherwise. UNAVAILABLE when this
// libtorch cannot give one.
absl::StatusOr<std::optional<c10::Stream>> ExecutorStream(c10::Device device);

class TorchModel;
using TorchModelPtr = std::shared_ptr<TorchModel>;

// A TorchScript module loaded on one device, in eval mode. Forward is thread-safe.
class TorchModel {
 public:
  // NOT_FOUND if the file is missing; INVALID_ARGUMENT if it is not a loadable TorchScript
  // archive or has no forward method.
  static absl::StatusOr<TorchModelPtr> Load(const std::filesystem::path& path,
                                            const std::string& device);

  // Runs forward(input) under torch::InferenceMode; the input is moved to the model's device and
  // the result returned on the CPU. RESOURCE_EXHAUSTED on out-of-memory, INTERNAL for other
  // libtorch errors, INVALID_ARGUMENT when forward does not return a tensor.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input);
  // Runs forward(*inputs) with any arguments; tensors in the result (also inside tuples, lists
  // and dicts) come back on the CPU. Errors as Forward.
  absl::StatusOr<c10::IValue> Run(std::vector<c10::IValue> inputs);
  // Runs another method of the module (e.g. a tokenizer's "encode"), like Run. NOT_FOUND if the
  // module has no such method.
  absl::StatusOr<c10::IValue> RunMethod(const std::string& method, std::vector<c10::IValue> inputs);
  bool HasMethod(const std::string& method) const;
  // Bytes of the module's parameters and buffers: a lower bound of its memory use.
  int64_t ParameterBytes() const;
  // Set once a call failed in a way that may have left the module or its device unusable (a CUDA
  // fault, a libtorch internal assert). The model manager then replaces the model with a fresh
  // load; the job that hit the error fails with INTERNAL.
  bool broken() const { return broken_.load(); }

  // An int attribute of the module (e.g. "scale"), if it has one.
  std::optional<int64_t> IntAttribute(const std::string& name) const;

  c10::Device device() const { return device_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  TorchModel(torch::jit::Module module, c10::Device device, std::filesystem::path path)
      : module_(std::move(module)), device_(device), path_(std::move(path)) {}

  // Turns a libtorch error into a status, marking the model broken when it may be.
  absl::Status Fail(const std::string& what, const std::string& where);

  torch::jit::Module module_;
  c10::Device device_;
  std::filesystem::path path_;
  std::atomic<bool> broken_{false};
};

// Runs one model's forward passes on `instances` dedicated threads, fed by a bounded queue.
// A job whose deadline passes, or that is cancelled, while queued is dropped without running.
//
// Dynamic batching: jobs submitted with Submit(tensor) whose tensor has batch size 1 are stacked
// along dimension 0 with other queued jobs of the same shape and dtype, up to max_batch_size,
// waiting up to max_queue_delay for companions; the result is split back per job. Jobs submitted
// with SubmitValues (any argument list) always run alone.
class ModelExecutor {
 public:
  struct Options {
    int instances = 1;       // executor threads (jobs or batches that run at once)
    int queue_size = 8;      // jobs that may wait; beyond that Submit answers RESOURCE_EXHAUSTED
    int max_batch_size = 1;  // 1 disables batching
    absl::Duration max_queue_delay = absl::ZeroDuration();  // wait for a batch to fill
  };
  // Told, for every job that ran, how long it waited in the queue and how long its forward pass
  // took (a batch's pass counts for each of its jobs). Called on the executor's threads.
  using JobRunObserver = std::function<void(absl::Duration queued, absl::Duration compute)>;
  using Inputs = std::vector<c10::IValue>;
  using Result = absl::StatusOr<at::Tensor>;
  using ValueResult = absl::StatusOr<c10::IValue>;

  static absl::StatusOr<std::unique_ptr<ModelExecutor>> Create(TorchModelPtr model, Options options,
                                                               JobRunObserver on_job_run = {});
  // Signals the threads, fails every queued job with UNAVAILABLE, and joins.
  ~ModelExecutor();

  ModelExecutor(const ModelExecutor&) = delete;
  ModelExecutor& operator=(const ModelExecutor&) = delete;

  // Queues forward(input) where forward returns a tensor; batchable when input.size(0) == 1.
  // RESOURCE_EXHAUSTED at once when the queue is full.
  absl::StatusOr<std::future<Result>> Submit(at::Tensor input, absl::Time deadline,
                                             std::shared_ptr<std::atomic<bool>> cancelled);
  // Queues forward(*inputs) with any arguments and any result (tensors come back on the CPU).
  absl::StatusOr<std::future<ValueResult>> SubmitValues(
      Inputs inputs, absl::Time deadline, std::shared_ptr<std::atomic<bool>> cancelled);

  // Sets `cancelled` and, if the job it belongs to is still queued, takes it out of the queue now
  // (completing it with `why`), so a caller that gave up frees its slot at once rather than when
  // an instance would have reached the job. A job already running finishes; its result is dropped.
  void Withdraw(const std::shared_ptr<std::atomic<bool>>& cancelled, absl::Status why);

  // Jobs queued plus running.
  int in_use() const { return in_use_.load(); }
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
    absl::Time enqueued = absl::Now();
    absl::Time deadline;
    std::shared_ptr<std::atomic<bool>> cancelled;
    std::function<void(ValueResult)> done;
  };

  ModelExecutor(TorchModelPtr model, Options options, JobRunObserver on_job_run);
  absl::Status Enqueue(Job job);
  void Loop();
  // Moves queued jobs that can share a batch with `batch.front()` into `batch`.
  void GatherLocked(std::vector<Job>& batch);  // with mu_ held
  void RunBatch(std::vector<Job>& batch);
  void Complete(Job& job, ValueResult result);

  TorchModelPtr model_;
  Options options_;
  const JobRunObserver on_job_run_;
  std::mutex mu_;
  std::condition_variable cv_;
  // queue_ and stopping_ are guarded by mu_ (a std::mutex: clang's analysis cannot check
  // annotations on it).
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::atomic<int> in_use_{0};
  std::atomic<int64_t> passes_{0};
  std::atomic<int64_t> jobs_run_{0};
  std::vector<std::thread> threads_;
};

// Waits for an executor result in short slices so that a job whose caller is cancelled, or whose
// deadline passes, gives its queue slot back at once (withdrawn from `executor`'s queue).
template <typename T>
absl::StatusOr<T> AwaitResult(ModelExecutor& executor, std::future<absl::StatusOr<T>>& future,
                              absl::Time deadline, const std::function<bool()>& is_cancelled,
                              const std::shared_ptr<std::atomic<bool>>& cancelled) {
  while (future.wait_for(std::chrono::milliseconds(10)) != std::future_status::ready) {
    if (is_cancelled && is_cancelled()) {
      absl::Status why = absl::CancelledError("the job was cancelled");
      executor.Withdraw(cancelled, why);
      return why;
    }
    if (absl::Now() > deadline) {
      absl::Status why = absl::DeadlineExceededError("deadline passed before the model finished");
      executor.Withdraw(cancelled, why);
      return why;
    }
  }
  return future.get();
}

}  // namespace switchyard::runner
