#include "runner/torch_model.h"

#include <ATen/Parallel.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>

#include <mutex>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace switchyard::runner {
namespace {

std::string ShortWhat(const c10::Error& e) { return e.what_without_backtrace(); }

// Errors after which the module or its device may be left in a bad state: CUDA faults poison the
// context, and a failed internal assert means libtorch itself is inconsistent. Ordinary errors
// (a shape mismatch, an exception the model raises) leave the module as it was.
bool MayBreakState(const std::string& what) {
  // TorchScript errors quote the model's source around the failing line; only the error itself,
  // the first unindented line after the last traceback header, says what happened.
  absl::string_view error = what;
  if (size_t tb = error.rfind("Traceback of TorchScript"); tb != absl::string_view::npos) {
    size_t line = error.find('\n', tb);
    while (line != absl::string_view::npos && line + 1 < error.size() &&
           (error[line + 1] == ' ' || error[line + 1] == '\n')) {
      line = error.find('\n', line + 1);
    }
    error = line == absl::string_view::npos ? absl::string_view() : error.substr(line + 1);
  }
  for (const char* marker :
       {"CUDA error", "CUDA kernel errors", "device-side assert", "illegal memory access",
        "CUBLAS_STATUS", "CUDNN_STATUS", "cuDNN error", "INTERNAL ASSERT FAILED"}) {
    if (absl::StrContains(error, marker)) return true;
  }
  return false;
}

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

absl::Status TorchModel::Fail(const std::string& what, const std::string& where) {
  absl::Status status = TorchErrorToStatus(what, absl::StrCat(path_.filename().string(), where));
  if (MayBreakState(what)) {
    broken_.store(true);
    return absl::Status(status.code(),
                        absl::StrCat(status.message(), " (the model will be reloaded)"));
  }
  return status;
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
    return Fail(ShortWhat(e), " forward");
  } catch (const std::exception& e) {
    return Fail(e.what(), " forward");
  }
}

namespace {

c10::IValue ToCpu(const c10::IValue& v) {
  if (v.isTensor()) return v.toTensor().to(c10::kCPU);
  if (v.isTuple()) {
    std::vector<c10::IValue> items;
    for (const auto& e : v.toTupleRef().elements()) items.push_back(ToCpu(e));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (v.isTensorList()) {
    c10::List<at::Tensor> out;
    for (const at::Tensor& t : v.toTensorList()) out.push_back(t.to(c10::kCPU));
    return out;
  }
  if (v.isGenericDict()) {
    auto dict = v.toGenericDict();
    c10::impl::GenericDict out(dict.keyType(), dict.valueType());
    for (const auto& entry : dict) out.insert(entry.key(), ToCpu(entry.value()));
    return out;
  }
  return v;
}

}  // namespace

absl::StatusOr<c10::IValue> TorchModel::Run(std::vector<c10::IValue> inputs) {
  try {
    c10::InferenceMode guard;
    for (auto& v : inputs) {
      if (v.isTensor()) v = v.toTensor().to(device_);
    }
    return ToCpu(module_.forward(std::move(inputs)));
  } catch (const c10::Error& e) {
    return Fail(ShortWhat(e), " forward");
  } catch (const std::exception& e) {
    return Fail(e.what(), " forward");
  }
}

absl::StatusOr<c10::IValue> TorchModel::RunMethod(const std::string& method,
                                                  std::vector<c10::IValue> inputs) {
  if (method == "forward") return Run(std::move(inputs));
  try {
    auto m = module_.find_method(method);
    if (!m) {
      return absl::NotFoundError(
          absl::StrCat(path_.filename().string(), " has no method '", method, "'"));
    }
    c10::InferenceMode guard;
    for (auto& v : inputs) {
      if (v.isTensor()) v = v.toTensor().to(device_);
    }
    return ToCpu((*m)(std::move(inputs)));
  } catch (const c10::Error& e) {
    return Fail(ShortWhat(e), absl::StrCat(" ", method));
  } catch (const std::exception& e) {
    return Fail(e.what(), absl::StrCat(" ", method));
  }
}

int64_t TorchModel::ParameterBytes() const {
  int64_t bytes = 0;
  for (const auto& p : module_.parameters()) bytes += static_cast<int64_t>(p.nbytes());
  for (const auto& b : module_.buffers()) bytes += static_cast<int64_t>(b.nbytes());
  return bytes;
}

bool TorchModel::HasMethod(const std::string& method) const {
  return module_.find_method(method).has_value();
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

ModelExecutor::ModelExecutor(TorchModelPtr model, Options options, JobRunObserver on_job_run)
    : model_(std::move(model)), options_(options), on_job_run_(std::move(on_job_run)) {}

absl::StatusOr<std::unique_ptr<ModelExecutor>> ModelExecutor::Create(TorchModelPtr model,
                                                                     Options options,
                                                                     JobRunObserver on_job_run) {
  if (model == nullptr) return absl::InvalidArgumentError("executor needs a model");
  if (options.instances < 1) return absl::InvalidArgumentError("instances must be >= 1");
  if (options.queue_size < 0) return absl::InvalidArgumentError("queue_size must be >= 0");
  if (options.max_batch_size < 1) return absl::InvalidArgumentError("max_batch_size must be >= 1");
  if (options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_queue_delay must be >= 0");
  }
  std::unique_ptr<ModelExecutor> executor(
      new ModelExecutor(std::move(model), options, std::move(on_job_run)));
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
  for (auto& job : dropped) Complete(job, absl::UnavailableError("model is being unloaded"));
  for (auto& t : threads_) t.join();
}

absl::Status ModelExecutor::Enqueue(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("model is being unloaded");
    // Capacity: `instances` running plus `queue_size` waiting.
    if (in_use_.load() >= options_.instances + options_.queue_size) {
      return absl::ResourceExhaustedError(absl::StrCat("model queue is full (", options_.instances,
                                                       " running, ", options_.queue_size,
                                                       " queued)"));
    }
    queue_.push_back(std::move(job));
    in_use_.fetch_add(1);
  }
  // Every waiting thread may be gathering a batch that this job could join.
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<std::future<ModelExecutor::Result>> ModelExecutor::Submit(
    at::Tensor input, absl::Time deadline, std::shared_ptr<std::atomic<bool>> cancelled) {
  auto promise = std::make_shared<std::promise<Result>>();
  auto future = promise->get_future();
  Job job;
  job.batchable = options_.max_batch_size > 1 && input.dim() >= 1 && input.size(0) == 1;
  job.inputs.emplace_back(std::move(input));
  job.deadline = deadline;
  job.cancelled = std::move(cancelled);
  job.done = [promise, path = model_->path()](ValueResult r) {
    if (!r.ok()) return promise->set_value(r.status());
    if (!r->isTensor()) {
      return promise->set_value(absl::InvalidArgumentError(absl::StrCat(
          path.filename().string(), ": forward returned ", r->tagKind(), ", not a tensor")));
    }
    promise->set_value(r->toTensor());
  };
  SY_RETURN_IF_ERROR(Enqueue(std::move(job)));
  return future;
}

absl::StatusOr<std::future<ModelExecutor::ValueResult>> ModelExecutor::SubmitValues(
    Inputs inputs, absl::Time deadline, std::shared_ptr<std::atomic<bool>> cancelled) {
  auto promise = std::make_shared<std::promise<ValueResult>>();
  auto future = promise->get_future();
  Job job;
  job.inputs = std::move(inputs);
  job.deadline = deadline;
  job.cancelled = std::move(cancelled);
  job.done = [promise](ValueResult r) { promise->set_value(std::move(r)); };
  SY_RETURN_IF_ERROR(Enqueue(std::move(job)));
  return future;
}

void ModelExecutor::Withdraw(const std::shared_ptr<std::atomic<bool>>& cancelled,
                             absl::Status why) {
  if (cancelled == nullptr) return;
  cancelled->store(true);
  std::optional<Job> withdrawn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->cancelled == cancelled) {
        withdrawn.emplace(std::move(*it));
        queue_.erase(it);
        break;
      }
    }
  }
  if (withdrawn) Complete(*withdrawn, std::move(why));
}

void ModelExecutor::Complete(Job& job, ValueResult result) {
  // Free the slot before delivering, so a caller holding its result never finds it taken.
  in_use_.fetch_sub(1);
  job.done(std::move(result));
}

void ModelExecutor::GatherLocked(std::vector<Job>& batch) {
  const at::Tensor& first = batch.front().inputs[0].toTensor();
  for (auto it = queue_.begin();
       it != queue_.end() && static_cast<int>(batch.size()) < options_.max_batch_size;) {
    if (it->batchable) {
      const at::Tensor& t = it->inputs[0].toTensor();
      if (t.sizes() == first.sizes() && t.scalar_type() == first.scalar_type()) {
        batch.push_back(std::move(*it));
        it = queue_.erase(it);
        continue;
      }
    }
    ++it;
  }
}

absl::StatusOr<std::optional<c10::Stream>> ExecutorStream(c10::Device device) {
  if (!device.is_cuda()) return std::optional<c10::Stream>();
  try {
    // Through the device-generic interface so that a CPU-only libtorch still builds this; the
    // CUDA implementation registers itself when libtorch has CUDA.
    const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device.type());
    return std::optional<c10::Stream>(impl->getStreamFromGlobalPool(device));
  } catch (const c10::Error& e) {
    return absl::UnavailableError(
        absl::StrCat("no CUDA stream for ", device.str(), ": ", ShortWhat(e)));
  }
}

void ModelExecutor::Loop() {
  // One CUDA stream per executor thread: instances of a model (and different models) then
  // overlap on the GPU instead of serialising on the default stream. Results are copied to the CPU
  // with a blocking copy on this stream, so they are complete when a job is answered.
  std::optional<c10::StreamGuard> stream_guard;
  if (auto stream = ExecutorStream(model_->device()); stream.ok() && stream->has_value()) {
    stream_guard.emplace(**stream);
  }
  for (;;) {
    std::vector<Job> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
      if (batch.front().batchable) {
        GatherLocked(batch);
        // Wait a little for companions; never past the first job's own deadline.
        const absl::Time until =
            std::min(absl::Now() + options_.max_queue_delay, batch.front().deadline);
        while (static_cast<int>(batch.size()) < options_.max_batch_size && !stopping_) {
          auto left = absl::ToChronoNanoseconds(until - absl::Now());
          if (left.count() <= 0) break;
          cv_.wait_for(lock, left);
          GatherLocked(batch);
        }
      }
    }
    RunBatch(batch);
  }
}

void ModelExecutor::RunBatch(std::vector<Job>& batch) {
  // Jobs that expired or were cancelled while queued never run.
  std::vector<Job> live;
  const absl::Time now = absl::Now();
  for (auto& job : batch) {
    if (job.cancelled && job.cancelled->load()) {
      Complete(job, absl::CancelledError("job was cancelled while queued"));
    } else if (now > job.deadline) {
      Complete(job, absl::DeadlineExceededError("deadline passed while the job was queued"));
    } else {
      live.push_back(std::move(job));
    }
  }
  if (live.empty()) return;
  passes_.fetch_add(1);
  jobs_run_.fetch_add(static_cast<int64_t>(live.size()));
  const absl::Time started = absl::Now();
  auto report = [&] {
    if (!on_job_run_) return;
    const absl::Duration compute = absl::Now() - started;
    for (const Job& job : live) on_job_run_(started - job.enqueued, compute);
  };
  if (live.size() == 1) {
    ValueResult result = model_->Run(std::move(live[0].inputs));
    report();
    Complete(live[0], std::move(result));
    return;
  }
  std::vector<at::Tensor> parts;
  for (auto& job : live) parts.push_back(job.inputs[0].toTensor());
  absl::StatusOr<at::Tensor> out = model_->Forward(at::cat(parts, 0));
  report();
  if (out.ok() && (out->dim() < 1 || out->size(0) != static_cast<int64_t>(live.size()))) {
    out = absl::InvalidArgumentError(
        absl::StrCat(model_->path().filename().string(), ": batched forward returned ",
                     out->dim() < 1 ? 0 : out->size(0), " results for ", live.size(), " inputs"));
  }
  for (size_t i = 0; i < live.size(); ++i) {
    if (!out.ok()) {
      Complete(live[i], out.status());
    } else {
      Complete(live[i], out->narrow(0, static_cast<int64_t>(i), 1).clone());
    }
  }
}

}  // namespace switchyard::runner
