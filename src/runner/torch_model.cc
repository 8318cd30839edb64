#include "runner/torch_model.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchyard::runner {
namespace {

std::string ShortWhat(const c10::Error& e) { return e.what_without_backtrace(); }

absl::Status TorchErrorToStatus(const std::string& what, const std::string& context) {
  if (absl::StrContains(what, "out of memory") || absl::StrContains(what, "CUDA out of memory") ||
      absl::StrContains(what, "DefaultCPUAllocator: can't allocate memory")) {
    return absl::ResourceExhaustedError(absl::StrCat(context, ": out of memory: ", what));
  }
  return absl::InternalError(absl::StrCat(context, ": ", what));
}

}  // namespace

absl::Status ConfigureTorchThreads(int intra_op_threads, int inter_op_threads) {
  static std::mutex mu;
  static bool configured = false;
  static int intra = 0, inter = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (configured) {
    if (intra == intra_op_threads && inter == inter_op_threads) return absl::OkStatus();
    return absl::FailedPreconditionError(
        "libtorch thread pools are already configured; they can be set once per process");
  }
  try {
    if (inter_op_threads > 0) at::set_num_interop_threads(inter_op_threads);
    if (intra_op_threads > 0) at::set_num_threads(intra_op_threads);
  } catch (const c10::Error& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot set libtorch thread pools: ", ShortWhat(e)));
  }
  configured = true;
  intra = intra_op_threads;
  inter = inter_op_threads;
  return absl::OkStatus();
}

absl::StatusOr<c10::Device> ResolveDevice(const std::string& spec) {
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "auto") {
    if (torch::cuda::is_available()) return c10::Device(c10::kCUDA, 0);
    return c10::Device(c10::kCPU);
  }
  int index = 0;
  if (spec == "cuda") {
    index = 0;
  } else if (absl::StartsWith(spec, "cuda:")) {
    if (!absl::SimpleAtoi(spec.substr(5), &index) || index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("device '", spec, "': bad CUDA index"));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", spec, "' is not one of auto, cpu, cuda, cuda:N"));
  }
  if (!torch::cuda::is_available()) {
    return absl::UnavailableError(absl::StrCat(
        "device '", spec, "': this libtorch build has no CUDA or no CUDA device is present"));
  }
  if (index >= static_cast<int>(torch::cuda::device_count())) {
    return absl::UnavailableError(
        absl::StrCat("device '", spec, "': only ", torch::cuda::device_count(), " CUDA device(s)"));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

absl::StatusOr<TorchModelPtr> TorchModel::Load(const std::filesystem::path& path,
                                               const std::string& device_spec) {
  auto device = ResolveDevice(device_spec);
  if (!device.ok()) return device.status();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": model file not found"));
  }
  try {
    torch::jit::Module module = torch::jit::load(path.string(), *device);
    module.eval();
    if (!module.find_method("forward")) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": TorchScript module has no forward method"));
    }
    return TorchModelPtr(new TorchModel(std::move(module), *device, path));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a loadable TorchScript archive: ", ShortWhat(e)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a loadable TorchScript archive: ", e.what()));
  }
}

absl::StatusOr<at::Tensor> TorchModel::Forward(const at::Tensor& input) {
  try {
    c10::InferenceMode guard;
    std::vector<torch::jit::IValue> args{input.to(device_)};
    torch::jit::IValue out = module_.forward(args);
    if (!out.isTensor()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_.string(), ": forward returned ", out.tagKind(), ", not a tensor"));
    }
    return out.toTensor().to(c10::kCPU);
  } catch (const c10::Error& e) {
    return TorchErrorToStatus(ShortWhat(e), absl::StrCat(path_.filename().string(), " forward"));
  } catch (const std::exception& e) {
    return TorchErrorToStatus(e.what(), absl::StrCat(path_.filename().string(), " forward"));
  }
}

std::optional<int64_t> TorchModel::IntAttribute(const std::string& name) const {
  try {
    if (!module_.hasattr(name)) return std::nullopt;
    auto value = module_.attr(name);
    if (!value.isInt()) return std::nullopt;
    return value.toInt();
  } catch (const c10::Error&) {
    return std::nullopt;
  }
}

ModelExecutor::ModelExecutor(TorchModelPtr model, Options options)
    : model_(std::move(model)), options_(options) {}

absl::StatusOr<std::unique_ptr<ModelExecutor>> ModelExecutor::Create(TorchModelPtr model,
                                                                     Options options) {
  if (model == nullptr) return absl::InvalidArgumentError("executor needs a model");
  if (options.instances < 1) return absl::InvalidArgumentError("instances must be >= 1");
  if (options.queue_size < 0) return absl::InvalidArgumentError("queue_size must be >= 0");
  std::unique_ptr<ModelExecutor> executor(new ModelExecutor(std::move(model), options));
  for (int i = 0; i < options.instances; ++i) {
    executor->threads_.emplace_back([raw = executor.get()] { raw->Loop(); });
  }
  return executor;
}

ModelExecutor::~ModelExecutor() {
  std::deque<Job> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  for (auto& job : dropped) {
    job.promise.set_value(absl::UnavailableError("model is being unloaded"));
  }
  for (auto& t : threads_) t.join();
}

absl::StatusOr<std::future<ModelExecutor::Result>> ModelExecutor::Submit(
    at::Tensor input, absl::Time deadline, std::shared_ptr<std::atomic<bool>> cancelled) {
  std::future<Result> future;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("model is being unloaded");
    // Capacity: `instances` running plus `queue_size` waiting.
    if (in_use_.load() >= options_.instances + options_.queue_size) {
      return absl::ResourceExhaustedError(absl::StrCat("model queue is full (", options_.instances,
                                                       " running, ", options_.queue_size,
                                                       " queued)"));
    }
    Job job{std::move(input), deadline, std::move(cancelled), {}};
    future = job.promise.get_future();
    queue_.push_back(std::move(job));
    in_use_.fetch_add(1);
  }
  cv_.notify_one();
  return future;
}

void ModelExecutor::Loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    Result result = absl::UnknownError("unset");
    if (job.cancelled && job.cancelled->load()) {
      result = absl::CancelledError("job was cancelled while queued");
    } else if (absl::Now() > job.deadline) {
      result = absl::DeadlineExceededError("deadline passed while the job was queued");
    } else {
      result = model_->Forward(job.input);
    }
    // Free the slot before delivering, so a caller holding its result never finds it taken.
    in_use_.fetch_sub(1);
    job.promise.set_value(std::move(result));
  }
}

}  // namespace switchyard::runner
