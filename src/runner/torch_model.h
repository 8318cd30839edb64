// In-process libtorch runner: a loaded TorchScript module and the executor threads that run it.
// libtorch exceptions never leave this library: they become absl statuses here.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
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

  // An int attribute of the module (e.g. "scale"), if it has one.
  std::optional<int64_t> IntAttribute(const std::string& name) const;

  c10::Device device() const { return device_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  TorchModel(torch::jit::Module module, c10::Device device, std::filesystem::path path)
      : module_(std::move(module)), device_(device), path_(std::move(path)) {}

  torch::jit::Module module_;
  c10::Device device_;
  std::filesystem::path path_;
};

// Runs one model's forward passes on `instances` dedicated threads, fed by a bounded queue.
// A job whose deadline passes, or that is cancelled, while queued is dropped without running.
class ModelExecutor {
 public:
  struct Options {
    int instances = 1;   // executor threads (jobs that run at once)
    int queue_size = 8;  // jobs that may wait; beyond that Submit answers RESOURCE_EXHAUSTED
  };
  using Result = absl::StatusOr<at::Tensor>;

  static absl::StatusOr<std::unique_ptr<ModelExecutor>> Create(TorchModelPtr model,
                                                               Options options);
  // Signals the threads, fails every queued job with UNAVAILABLE, and joins.
  ~ModelExecutor();

  ModelExecutor(const ModelExecutor&) = delete;
  ModelExecutor& operator=(const ModelExecutor&) = delete;

  // Queues one forward pass. RESOURCE_EXHAUSTED at once when the queue is full.
  absl::StatusOr<std::future<Result>> Submit(at::Tensor input, absl::Time deadline,
                                             std::shared_ptr<std::atomic<bool>> cancelled);

  // Jobs queued plus running.
  int in_use() const { return in_use_.load(); }
  int capacity() const { return options_.instances; }
  const TorchModelPtr& model() const { return model_; }

 private:
  struct Job {
    at::Tensor input;
    absl::Time deadline;
    std::shared_ptr<std::atomic<bool>> cancelled;
    std::promise<Result> promise;
  };

  ModelExecutor(TorchModelPtr model, Options options);
  void Loop();

  TorchModelPtr model_;
  Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> in_use_{0};
  std::vector<std::thread> threads_;
};

}  // namespace switchyard::runner
