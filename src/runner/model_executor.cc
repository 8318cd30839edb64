#include "runner/model_executor.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace switchyard::runner {

absl::StatusOr<std::optional<c10::Stream>> ExecutorStream(c10::Device device) {
  if (!device.is_cuda()) return std::optional<c10::Stream>();
  try {
    // Through the device-generic interface so that a CPU-only libtorch still builds this; the
    // CUDA implementation registers itself when libtorch has CUDA.
    const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device.type());
    return std::optional<c10::Stream>(impl->getStreamFromGlobalPool(device));
  } catch (const c10::Error& e) {
    return absl::UnavailableError(
        absl::StrCat("no CUDA stream for ", device.str(), ": ", e.what_without_backtrace()));
  }
}

ModelExecutor::ModelExecutor(TorchModelPtr model, Options options, JobRunObserver on_job_run)
    : model_(std::move(model)),
      options_(options),
      batcher_(options.max_batch_size, options.max_queue_delay),
      on_job_run_(std::move(on_job_run)) {}

absl::StatusOr<ModelExecutorPtr> ModelExecutor::Create(TorchModelPtr model, Options options,
                                                       JobRunObserver on_job_run) {
  if (model == nullptr) return absl::InvalidArgumentError("executor needs a model");
  if (options.instances < 1) return absl::InvalidArgumentError("instances must be >= 1");
  if (options.queue_size < 0) return absl::InvalidArgumentError("queue_size must be >= 0");
  if (options.max_batch_size < 1) return absl::InvalidArgumentError("max_batch_size must be >= 1");
  if (options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_queue_delay must be >= 0");
  }
  ModelExecutorPtr executor(new ModelExecutor(std::move(model), options, std::move(on_job_run)));
  for (int i = 0; i < options.instances; ++i) {
    executor->threads_.emplace_back([raw = executor.get()] { raw->Loop(); });
  }
  return executor;
}

absl::StatusOr<ModelExecutorPtr> ModelExecutor::CreateForPayload(std::shared_ptr<void> payload,
                                                                 Options options) {
  if (payload == nullptr) return absl::InvalidArgumentError("executor needs a payload");
  if (options.instances < 1) return absl::InvalidArgumentError("instances must be >= 1");
  ModelExecutorPtr executor(new ModelExecutor(nullptr, options, {}));
  executor->payload_ = std::move(payload);
  return executor;
}

ModelExecutor::Use::Use(ModelExecutor* executor) : executor_(executor) {
  absl::MutexLock lock(&executor_->mu_);
  ++executor_->in_use_;
}

ModelExecutor::Use::~Use() {
  absl::MutexLock lock(&executor_->mu_);
  --executor_->in_use_;
}

ModelExecutor::~ModelExecutor() {
  std::deque<Job> dropped;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  for (auto& job : dropped) Complete(job, absl::UnavailableError("model is being unloaded"));
  for (auto& t : threads_) t.join();
}

int ModelExecutor::in_use() const {
  absl::MutexLock lock(&mu_);
  return in_use_;
}

absl::Status ModelExecutor::Enqueue(Job job, const CancelToken* wait_for) {
  // A payload executor has no threads: a job queued there would never run.
  if (model_ == nullptr) {
    return absl::FailedPreconditionError("this model runs on its own engine, not the executor");
  }
  absl::MutexLock lock(&mu_);
  // Capacity: `instances` running plus `queue_size` waiting.
  const int capacity = options_.instances + options_.queue_size;
  if (wait_for != nullptr) {
    // Complete frees slots under this lock and a cancellation locks it (Await), so the condition
    // is looked at again exactly when either may have changed it.
    auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || in_use_ < capacity || wait_for->cancelled();
    };
    mu_.AwaitWithDeadline(absl::Condition(&room), job.deadline);
  }
  if (stopping_) return absl::UnavailableError("model is being unloaded");
  if (in_use_ >= capacity) {
    if (wait_for != nullptr) {
      if (wait_for->cancelled()) return absl::CancelledError("the job was cancelled");
      return absl::DeadlineExceededError("deadline passed waiting for the model");
    }
    return absl::ResourceExhaustedError(absl::StrCat("model queue is full (", options_.instances,
                                                     " running, ", options_.queue_size,
                                                     " queued)"));
  }
  queue_.push_back(std::move(job));
  ++in_use_;
  ++enqueued_;
  return absl::OkStatus();
}

absl::Status ModelExecutor::Submit(Inputs inputs, absl::Time deadline,
                                   std::function<void(ValueResult)> done) {
  Job job;
  job.inputs = std::move(inputs);
  job.deadline = deadline;
  job.done = std::move(done);
  return Enqueue(std::move(job), nullptr);
}

namespace {

// A tensor-returning job's result.
ModelExecutor::Result ToTensor(ModelExecutor::ValueResult r, const TorchModel& model) {
  if (!r.ok()) return r.status();
  if (!r->isTensor()) {
    return absl::InvalidArgumentError(absl::StrCat(
        model.path().filename().string(), ": forward returned ", r->tagKind(), ", not a tensor"));
  }
  return r->toTensor();
}

}  // namespace

absl::Status ModelExecutor::SubmitBatchable(at::Tensor input, absl::Time deadline,
                                            std::function<void(Result)> done) {
  Job job;
  job.batchable = batcher_.Batchable(input);
  job.inputs.emplace_back(std::move(input));
  job.deadline = deadline;
  job.done = [done = std::move(done), model = model_](ValueResult r) {
    done(ToTensor(std::move(r), *model));
  };
  return Enqueue(std::move(job), nullptr);
}

ModelExecutor::ValueResult ModelExecutor::Run(Inputs inputs, absl::Time deadline,
                                              const CancelToken& cancel,
                                              const RunOptions& options) {
  Job job;
  job.inputs = std::move(inputs);
  job.method = options.method;
  job.deadline = deadline;
  return Await(std::move(job), cancel, options);
}

ModelExecutor::Result ModelExecutor::RunBatchable(at::Tensor input, absl::Time deadline,
                                                  const CancelToken& cancel) {
  if (model_ == nullptr) {
    return absl::FailedPreconditionError("this model runs on its own engine, not the executor");
  }
  Job job;
  job.batchable = batcher_.Batchable(input);
  job.inputs.emplace_back(std::move(input));
  job.deadline = deadline;
  return ToTensor(Await(std::move(job), cancel, RunOptions{}), *model_);
}

ModelExecutor::ValueResult ModelExecutor::Await(Job job, const CancelToken& cancel,
                                                const RunOptions& options) {
  if (cancel.cancelled()) return absl::CancelledError("the job was cancelled");
  // Shared with the job's completion, which may come after this caller gave up and returned.
  struct Waiter {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    bool cancelled ABSL_GUARDED_BY(mu) = false;
    ValueResult result ABSL_GUARDED_BY(mu) = absl::UnknownError("no result");
  };
  auto waiter = std::make_shared<Waiter>();
  const absl::Time deadline = job.deadline;
  job.given_up = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<std::atomic<bool>> given_up = job.given_up;
  job.done = [waiter](ValueResult r) {
    absl::MutexLock lock(&waiter->mu);
    waiter->result = std::move(r);
    waiter->done = true;
  };
  // A cancellation wakes this caller wherever it waits: for a queue slot (under mu_) or for the
  // result (under waiter->mu). Destroying `wake` waits for a wake-up in progress.
  CancelToken::Registration wake = cancel.OnCancel([this, waiter] {
    { absl::MutexLock lock(&mu_); }
    absl::MutexLock lock(&waiter->mu);
    waiter->cancelled = true;
  });
  SY_RETURN_IF_ERROR(
      Enqueue(std::move(job), options.when_full == WhenFull::kWait ? &cancel : nullptr));
  if (options.on_queued) options.on_queued();
  {
    absl::MutexLock lock(&waiter->mu);
    auto woken = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(waiter->mu) {
      return waiter->done || waiter->cancelled;
    };
    waiter->mu.AwaitWithDeadline(absl::Condition(&woken), deadline);
    if (waiter->done) return std::move(waiter->result);
  }
  absl::Status why = cancel.cancelled()
                         ? absl::CancelledError("the job was cancelled")
                         : absl::DeadlineExceededError("deadline passed before the model finished");
  Withdraw(given_up, why);
  return why;
}

void ModelExecutor::Withdraw(const std::shared_ptr<std::atomic<bool>>& given_up, absl::Status why) {
  given_up->store(true);
  std::optional<Job> withdrawn;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->given_up == given_up) {
        withdrawn.emplace(std::move(*it));
        queue_.erase(it);
        break;
      }
    }
  }
  if (withdrawn) Complete(*withdrawn, std::move(why));
}

void ModelExecutor::Complete(Job& job, ValueResult result) {
  // Free the slot before delivering, so a caller holding its result never finds it taken. The
  // unlock also wakes callers waiting for a slot.
  {
    absl::MutexLock lock(&mu_);
    --in_use_;
  }
  job.done(std::move(result));
}

void ModelExecutor::Loop() {
  // One CUDA stream per executor thread: instances of a model (and different models) then
  // overlap on the GPU instead of serialising on the default stream. Results are copied to the CPU
  // with a blocking copy on this stream, so they are complete when a job is answered.
  std::optional<c10::StreamGuard> stream_guard;
  if (auto stream = ExecutorStream(model_->device()); stream.ok() && stream->has_value()) {
    stream_guard.emplace(**stream);
  }
  auto stopping_or_queued = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !queue_.empty();
  };
  for (;;) {
    std::vector<Job> batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&stopping_or_queued));
      if (stopping_ && queue_.empty()) return;
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
      if (batch.front().batchable) {
        batcher_.Gather(queue_, batch);
        // Wait a little for companions; never past the first job's own deadline.
        const absl::Time until = batcher_.FillUntil(absl::Now(), batch.front().deadline);
        while (!batcher_.Full(batch.size()) && !stopping_ && absl::Now() < until) {
          // Wakes when another job is queued (it may join) or the executor stops.
          const uint64_t seen = enqueued_;
          auto stopping_or_new = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stopping_ || enqueued_ != seen;
          };
          if (!mu_.AwaitWithDeadline(absl::Condition(&stopping_or_new), until)) break;
          batcher_.Gather(queue_, batch);
        }
      }
    }
    RunBatch(batch);
  }
}

void ModelExecutor::RunBatch(std::vector<Job>& batch) {
  // Jobs that expired or whose caller gave up while queued never run.
  std::vector<Job> live;
  const absl::Time now = absl::Now();
  for (auto& job : batch) {
    if (job.given_up && job.given_up->load()) {
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
    ValueResult result = live[0].method.empty()
                             ? model_->Run(std::move(live[0].inputs))
                             : model_->RunMethod(live[0].method, std::move(live[0].inputs));
    report();
    Complete(live[0], std::move(result));
    return;
  }
  std::vector<at::Tensor> parts;
  for (auto& job : live) parts.push_back(job.inputs[0].toTensor());
  absl::StatusOr<at::Tensor> out = model_->Forward(Batcher::Stack(parts));
  report();
  std::vector<Result> results =
      Batcher::Split(out, live.size(), model_->path().filename().string());
  for (size_t i = 0; i < live.size(); ++i) {
    if (results[i].ok()) {
      Complete(live[i], std::move(*results[i]));
    } else {
      Complete(live[i], results[i].status());
    }
  }
}

}  // namespace switchyard::runner
