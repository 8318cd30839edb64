#include "orchestrator/models/model_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/pipelines.h"
#include "orchestrator/pipelines/hf_llm.h"
#include "orchestrator/pipelines/hf_whisper.h"
#include "orchestrator/pipelines/warmup.h"

namespace switchyard::orchestrator {
namespace {

constexpr int64_t kMiB = 1 << 20;

std::string Mb(int64_t bytes) { return absl::StrCat((bytes + kMiB - 1) / kMiB, " MiB"); }

// Whether a change from `a` to `b` needs a fresh executor (a reload) rather than just the new
// config for the next jobs. Every ModelConfig field must be in exactly one of these two lists.
bool NeedsReload(const ModelConfig& a, const ModelConfig& b) {
  return a.pipeline != b.pipeline || a.path != b.path || a.device != b.device ||
         a.instances != b.instances || a.queue_size != b.queue_size ||
         a.warmup_size != b.warmup_size || a.max_batch_size != b.max_batch_size ||
         a.max_queue_delay_ms != b.max_queue_delay_ms || a.memory_mb != b.memory_mb ||
         a.format != b.format ||
         // An hf model's engine (KV budget, batch limits, dtype) is built from its options.
         (a.format == "hf" && a.options != b.options);
}

// Fields each job reads from the config (and `warm`, read at the next LoadWarmModels).
bool SameJobFields(const ModelConfig& a, const ModelConfig& b) {
  return a.id == b.id && a.warm == b.warm && a.price_per_unit == b.price_per_unit &&
         a.unit == b.unit && a.max_input_pixels == b.max_input_pixels && a.options == b.options &&
         a.max_input_elements == b.max_input_elements;
}

std::filesystem::file_time_type FileTime(const std::filesystem::path& path) {
  std::error_code ec;
  auto t = std::filesystem::last_write_time(path, ec);
  return ec ? std::filesystem::file_time_type::min() : t;
}

}  // namespace

void ModelManager::Configure(Entry& e, ModelConfig config) {
  e.config = std::move(config);
  e.published = std::make_shared<const ModelConfig>(e.config);
  e.removed = false;
  e.state = node::v1::MODEL_STATE_COLD;
  e.error.clear();
  auto device = runner::ResolveDevice(e.config.device);
  e.device = device.ok() ? device->str() : "";
  // Before loading, the operator's estimate or else the file size (weights dominate).
  std::error_code ec;
  auto file_size = std::filesystem::file_size(e.config.path, ec);
  e.memory_bytes = e.config.memory_mb > 0 ? e.config.memory_mb * kMiB
                                          : (ec ? 0 : static_cast<int64_t>(file_size));
  if (e.config.format == "hf" && e.config.memory_mb <= 0) {
    // A checkpoint folder: its weight files plus the whole KV budget the engine may fill (an
    // audio-to-text Whisper model has no engine, only per-request caches).
    e.memory_bytes =
        SafetensorsBytes(e.config.path) +
        (e.config.pipeline == pipelines::kAudioToText ? 0 : e.config.hf.kv_cache_mb * kMiB);
  }
  e.file_time = FileTime(e.config.path);
}

ModelManager::ModelManager(std::vector<ModelConfig> models, StatusBoard* board,
                           std::map<std::string, int64_t> memory_budget_mb)
    : board_(board) {
  for (const auto& [device, mb] : memory_budget_mb) budget_bytes_[device] = mb * kMiB;
  for (auto& m : models) {
    order_.push_back(m.id);
    Entry e;
    Configure(e, std::move(m));
    entries_.emplace(e.config.id, std::move(e));
  }
}

const ModelConfig* ModelManager::Find(const std::string& model_id) const {
  MutexLock lock(&mu_);
  auto it = entries_.find(model_id);
  if (it == entries_.end() || it->second.removed) return nullptr;
  return it->second.published.get();  // immutable; retired copies are kept alive
}

void ModelManager::RetireExecutorLocked(Entry& e) {
  if (e.executor == nullptr) return;
  retired_.push_back(Retired{e.config.id, e.device, e.memory_bytes, std::move(e.executor)});
  e.executor = nullptr;
  PruneRetiredLocked();  // an idle one goes at once
}

void ModelManager::PruneRetiredLocked() const {
  for (auto it = retired_.begin(); it != retired_.end();) {
    if (it->executor.use_count() == 1) {  // no job holds it: this frees the model
      spdlog::info("previous executor of model {} unloaded (its last job finished)", it->id);
      it = retired_.erase(it);
    } else {
      ++it;
    }
  }
}

ModelManager::ReloadSummary ModelManager::Reconcile(std::vector<ModelConfig> models) {
  MutexLock lock(&mu_);
  // A load in progress writes its entry when done; let it finish before the entry changes.
  loaded_cv_.Wait(&mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& [id, e] : entries_) {
      if (e.state == node::v1::MODEL_STATE_LOADING) return false;
    }
    return true;
  });
  ReloadSummary summary;
  std::map<std::string, const ModelConfig*> wanted;
  for (const auto& m : models) wanted[m.id] = &m;
  for (auto& [id, e] : entries_) {
    if (e.removed || wanted.count(id) > 0) continue;
    RetireExecutorLocked(e);
    retired_configs_.push_back(std::move(e.published));
    e.removed = true;
    SetState(e, node::v1::MODEL_STATE_UNLOADED, "");
    summary.removed.push_back(id);
  }
  std::vector<std::string> order;
  for (auto& m : models) {
    order.push_back(m.id);
    auto it = entries_.find(m.id);
    if (it == entries_.end()) {
      Entry e;
      Configure(e, std::move(m));
      summary.added.push_back(e.config.id);
      entries_.emplace(e.config.id, std::move(e));
      continue;
    }
    Entry& e = it->second;
    const bool file_changed = FileTime(m.path) != e.file_time;
    if (!e.removed && !file_changed && !NeedsReload(e.config, m) && SameJobFields(e.config, m)) {
      ++summary.unchanged;
      continue;
    }
    if (e.published) retired_configs_.push_back(std::move(e.published));
    if (!e.removed && !file_changed && !NeedsReload(e.config, m)) {
      // The executor stays; the next jobs see the new price, options, ...
      e.config = std::move(m);
      e.published = std::make_shared<const ModelConfig>(e.config);
      summary.updated.push_back(e.config.id);
      continue;
    }
    (e.removed ? summary.added : summary.reloaded).push_back(m.id);
    RetireExecutorLocked(e);  // jobs running on it finish there
    const int reloads = e.reloads;
    Configure(e, std::move(m));
    e.reloads = reloads;
    SetState(e, node::v1::MODEL_STATE_COLD, "");
  }
  // Removed entries stay (after the configured ones) so references into them stay valid.
  for (const auto& id : order_) {
    if (entries_.at(id).removed) order.push_back(id);
  }
  order_ = std::move(order);
  if (board_ != nullptr) board_->Changed();
  return summary;
}

void ModelManager::SetState(Entry& entry, node::v1::ModelState state, std::string error) {
  entry.state = state;
  entry.error = std::move(error);
  if (board_ != nullptr) board_->Changed();
}

absl::StatusOr<std::shared_ptr<runner::ModelExecutor>> ModelManager::LoadModel(
    const ModelConfig& config, int64_t* measured_bytes) {
  absl::Time start = absl::Now();
  if (config.format == "hf" && config.pipeline == pipelines::kAudioToText) {
    auto whisper = HfWhisper::Load(config, config.device);
    if (!whisper.ok()) return whisper.status();
    *measured_bytes = (*whisper)->memory_bytes();
    runner::ModelExecutor::Options options;
    options.instances = config.instances;
    auto executor = runner::ModelExecutor::CreateForPayload(*whisper, options);
    if (!executor.ok()) return executor.status();
    spdlog::info("model {} ready ({}, Hugging Face Whisper checkpoint, {}) in {:.0f} ms", config.id,
                 config.path.string(), Mb(*measured_bytes),
                 absl::ToDoubleMilliseconds(absl::Now() - start));
    return std::shared_ptr<runner::ModelExecutor>(std::move(*executor));
  }
  if (config.format == "hf") {
    // Its own engine (continuous batching over all requests), carried by a payload executor.
    auto hf = HfLlm::Load(config, config.device);
    if (!hf.ok()) return hf.status();
    *measured_bytes = (*hf)->memory_bytes();
    runner::ModelExecutor::Options options;
    options.instances = config.instances;
    auto executor = runner::ModelExecutor::CreateForPayload(*hf, options);
    if (!executor.ok()) return executor.status();
    spdlog::info("model {} ready ({}, Hugging Face checkpoint, {} with the KV budget) in {:.0f} ms",
                 config.id, config.path.string(), Mb(*measured_bytes),
                 absl::ToDoubleMilliseconds(absl::Now() - start));
    return std::shared_ptr<runner::ModelExecutor>(std::move(*executor));
  }
  auto model = runner::TorchModel::Load(config.path, config.device);
  if (!model.ok()) return model.status();
  *measured_bytes = (*model)->ParameterBytes();
  if (WarmupInputs inputs = WarmupInputsFor(config)) {
    auto out = (*model)->Run(std::move(*inputs));
    if (!out.ok()) {
      return absl::Status(out.status().code(),
                          absl::StrCat("warm-up inference failed: ", out.status().message()));
    }
  }
  runner::ModelExecutor::Options options;
  options.instances = config.instances;
  options.queue_size = config.queue_size;
  options.max_batch_size = config.max_batch_size;
  options.max_queue_delay = absl::Milliseconds(config.max_queue_delay_ms);
  runner::ModelExecutor::JobRunObserver on_job_run;
  if (job_observer_) {
    on_job_run = [observer = job_observer_, pipeline = config.pipeline, id = config.id](
                     absl::Duration queued, absl::Duration compute) {
      observer(pipeline, id, queued, compute);
    };
  }
  auto executor = runner::ModelExecutor::Create(*model, options, std::move(on_job_run));
  if (!executor.ok()) return executor.status();
  spdlog::info("model {} ready on {} ({}, {} of weights) in {:.0f} ms", config.id,
               (*model)->device().str(), config.path.string(), Mb(*measured_bytes),
               absl::ToDoubleMilliseconds(absl::Now() - start));
  return std::shared_ptr<runner::ModelExecutor>(std::move(*executor));
}

bool ModelManager::Evictable(const Entry& e) {
  // Only idle cold-configured models that nobody holds: evicting never disturbs a job.
  return !e.config.warm && e.state == node::v1::MODEL_STATE_READY && e.executor != nullptr &&
         e.executor->in_use() == 0 && e.executor.use_count() == 1;
}

int64_t ModelManager::UsedLocked(const std::string& device) const {
  int64_t used = 0;
  for (const auto& r : retired_) {
    if (r.device == device && r.executor.use_count() > 1) used += r.memory_bytes;
  }
  for (const auto& [id, e] : entries_) {
    if (e.device == device &&
        (e.state == node::v1::MODEL_STATE_READY || e.state == node::v1::MODEL_STATE_LOADING)) {
      used += e.memory_bytes;
    }
  }
  return used;
}

bool ModelManager::FitsLocked(const Entry& e) const {
  auto budget = budget_bytes_.find(e.device);
  if (budget == budget_bytes_.end()) return true;
  int64_t pinned = 0;  // memory eviction cannot free
  for (const auto& [id, other] : entries_) {
    if (&other == &e || other.device != e.device) continue;
    if ((other.state == node::v1::MODEL_STATE_READY && !Evictable(other)) ||
        other.state == node::v1::MODEL_STATE_LOADING) {
      pinned += other.memory_bytes;
    }
  }
  return pinned + e.memory_bytes <= budget->second;
}

absl::Status ModelManager::ReserveLocked(Entry& e) {
  PruneRetiredLocked();
  auto budget = budget_bytes_.find(e.device);
  if (budget == budget_bytes_.end()) return absl::OkStatus();
  while (UsedLocked(e.device) + e.memory_bytes > budget->second) {
    Entry* victim = nullptr;
    for (auto& [id, other] : entries_) {
      if (&other == &e || other.device != e.device || !Evictable(other)) continue;
      if (victim == nullptr || other.last_used < victim->last_used) victim = &other;
    }
    if (victim == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "model '", e.config.id, "' needs ", Mb(e.memory_bytes), " on ", e.device, " but only ",
          Mb(budget->second - UsedLocked(e.device)), " of its ", Mb(budget->second),
          " budget is free and no idle cold model can be evicted"));
    }
    spdlog::info("evicting idle model {} from {} to make room for {}", victim->config.id,
                 victim->device, e.config.id);
    victim->executor.reset();
    SetState(*victim, node::v1::MODEL_STATE_UNLOADED, "");
  }
  return absl::OkStatus();
}

absl::Status ModelManager::LoadLocked(Entry& e) {
  if (absl::Status room = ReserveLocked(e); !room.ok()) {
    if (board_ != nullptr) board_->Changed();  // advertise that it cannot be taken now
    return room;
  }
  SetState(e, node::v1::MODEL_STATE_LOADING, "");
  ModelConfig config = e.config;
  mu_.Unlock();
  int64_t measured = 0;
  auto executor = LoadModel(config, &measured);
  mu_.Lock();
  if (executor.ok()) {
    e.executor = *executor;
    if (config.memory_mb <= 0) e.memory_bytes = measured;
    e.last_used = absl::Now();
    SetState(e, node::v1::MODEL_STATE_READY, "");
  } else {
    spdlog::error("model {} failed to load: {}", config.id, executor.status().ToString());
    SetState(e, node::v1::MODEL_STATE_FAILED, std::string(executor.status().message()));
  }
  loaded_cv_.SignalAll();
  return executor.status();
}

void ModelManager::LoadWarmModels() {
  std::vector<std::string> order;
  {
    MutexLock lock(&mu_);
    order = order_;
  }
  for (const auto& id : order) {
    MutexLock lock(&mu_);
    Entry& e = entries_.at(id);
    if (e.removed || !e.config.warm || e.state != node::v1::MODEL_STATE_COLD) continue;
    absl::Status st = LoadLocked(e);
    if (st.code() == absl::StatusCode::kResourceExhausted) {
      spdlog::error("warm model {} does not fit: {}", id, st.ToString());
      SetState(e, node::v1::MODEL_STATE_FAILED, std::string(st.message()));
    }
  }
}

absl::StatusOr<std::shared_ptr<runner::ModelExecutor>> ModelManager::Acquire(
    const std::string& model_id, absl::Time deadline) {
  MutexLock lock(&mu_);
  auto it = entries_.find(model_id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", LogSafe(model_id), "' is not served here"));
  }
  Entry& e = it->second;
  for (;;) {
    // Also after waiting for a load: a reload may have removed the model meanwhile.
    if (e.removed) {
      return absl::NotFoundError(
          absl::StrCat("model '", LogSafe(model_id), "' is not served here"));
    }
    switch (e.state) {
      case node::v1::MODEL_STATE_READY:
        if (e.executor->model() != nullptr && e.executor->model()->broken()) {
          // A job hit an error that may have broken the module or its device: load a fresh
          // copy. Jobs still holding the old executor finish on it or fail; new ones wait here.
          spdlog::warn("model {} may be in a broken state after an error; reloading it", model_id);
          e.executor.reset();
          ++e.reloads;
          SetState(e, node::v1::MODEL_STATE_UNLOADED, "");
          break;  // UNLOADED: loaded below like a cold model
        }
        e.last_used = absl::Now();
        return e.executor;
      case node::v1::MODEL_STATE_FAILED:
        return absl::UnavailableError(
            absl::StrCat("model '", model_id, "' failed to load: ", e.error));
      case node::v1::MODEL_STATE_LOADING: {
        auto timeout = absl::ToChronoNanoseconds(deadline - absl::Now());
        if (timeout.count() <= 0 || !loaded_cv_.WaitFor(&mu_, timeout, [&] {
              return e.state != node::v1::MODEL_STATE_LOADING;
            })) {
          return absl::DeadlineExceededError(
              absl::StrCat("deadline passed while model '", model_id, "' was loading"));
        }
        break;
      }
      default: {  // COLD or UNLOADED: this caller loads it; others wait above.
        spdlog::info("cold start of model {}", model_id);
        absl::Status st = LoadLocked(e);
        if (st.code() == absl::StatusCode::kResourceExhausted) return st;
        break;  // READY or FAILED now
      }
    }
  }
}

absl::Status ModelManager::Load(const std::string& model_id, absl::Time deadline) {
  {
    MutexLock lock(&mu_);
    auto it = entries_.find(model_id);
    if (it == entries_.end() || it->second.removed) {
      return absl::NotFoundError(
          absl::StrCat("model '", LogSafe(model_id), "' is not served here"));
    }
    // An explicit load retries a failed model (its file may have been fixed).
    if (it->second.state == node::v1::MODEL_STATE_FAILED) {
      SetState(it->second, node::v1::MODEL_STATE_COLD, "");
    }
  }
  auto executor = Acquire(model_id, deadline);
  return executor.status();
}

absl::StatusOr<bool> ModelManager::Prewarm(const std::string& model_id) {
  MutexLock lock(&mu_);
  auto it = entries_.find(model_id);
  if (it == entries_.end() || it->second.removed) {
    return absl::NotFoundError(absl::StrCat("model '", LogSafe(model_id), "' is not served here"));
  }
  Entry& e = it->second;
  if (e.state != node::v1::MODEL_STATE_COLD && e.state != node::v1::MODEL_STATE_UNLOADED) {
    return false;
  }
  PruneRetiredLocked();
  auto budget = budget_bytes_.find(e.device);
  if (budget != budget_bytes_.end() && UsedLocked(e.device) + e.memory_bytes > budget->second) {
    // Evicting a model that may have jobs soon to warm one that might: not on a hint.
    return absl::ResourceExhaustedError(absl::StrCat(
        "model '", model_id, "' needs ", (e.memory_bytes + kMiB - 1) / kMiB, " MiB and ",
        e.device, " has ", std::max<int64_t>(0, budget->second - UsedLocked(e.device)) / kMiB,
        " MiB free without evicting a model"));
  }
  // Checked and reserved under the same lock: the load below cannot evict anything.
  if (absl::Status loaded = LoadLocked(e); !loaded.ok()) return loaded;
  return true;
}

absl::Status ModelManager::Unload(const std::string& model_id) {
  MutexLock lock(&mu_);
  auto it = entries_.find(model_id);
  if (it == entries_.end() || it->second.removed) {
    return absl::NotFoundError(absl::StrCat("model '", LogSafe(model_id), "' is not served here"));
  }
  Entry& e = it->second;
  if (e.state == node::v1::MODEL_STATE_LOADING) {
    return absl::FailedPreconditionError(absl::StrCat("model '", model_id, "' is loading"));
  }
  if (e.state != node::v1::MODEL_STATE_READY) return absl::OkStatus();  // nothing loaded
  if (e.executor->in_use() > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", model_id, "' has ", e.executor->in_use(), " job(s) queued or running"));
  }
  e.executor.reset();  // jobs already holding it finish on their copy
  SetState(e, node::v1::MODEL_STATE_UNLOADED, "");
  spdlog::info("model {} unloaded", model_id);
  return absl::OkStatus();
}

int ModelManager::ReloadsOf(const std::string& model_id) const {
  MutexLock lock(&mu_);
  auto it = entries_.find(model_id);
  return it == entries_.end() ? 0 : it->second.reloads;
}

int64_t ModelManager::MemoryInUse(const std::string& device) const {
  MutexLock lock(&mu_);
  return UsedLocked(device);
}

node::v1::NodeCapability ModelManager::CapabilityLocked(const Entry& e) const {
  node::v1::NodeCapability c;
  c.set_pipeline(e.config.pipeline);
  c.set_model_id(e.config.id);
  c.set_state(e.state);
  c.set_capacity(e.config.instances);
  c.set_in_use(e.executor ? e.executor->in_use() : 0);
  c.set_price_per_unit(e.config.price_per_unit);
  c.set_unit(e.config.unit);
  c.set_error(e.error);
  c.set_memory_mb((e.memory_bytes + kMiB - 1) / kMiB);
  c.set_no_room(
      (e.state == node::v1::MODEL_STATE_COLD || e.state == node::v1::MODEL_STATE_UNLOADED) &&
      !FitsLocked(e));
  auto budget = budget_bytes_.find(e.device);
  c.set_free_memory_mb(budget == budget_bytes_.end()
                           ? -1
                           : std::max<int64_t>(0, budget->second - UsedLocked(e.device)) / kMiB);
  return c;
}

node::v1::NodeCapability ModelManager::CapabilityOf(const std::string& model_id) const {
  MutexLock lock(&mu_);
  auto it = entries_.find(model_id);
  return it == entries_.end() || it->second.removed ? node::v1::NodeCapability()
                                                    : CapabilityLocked(it->second);
}

std::vector<node::v1::NodeCapability> ModelManager::Capabilities() const {
  MutexLock lock(&mu_);
  PruneRetiredLocked();  // runs on every status report, so a finished job's model goes soon
  std::vector<node::v1::NodeCapability> out;
  for (const auto& id : order_) {
    const Entry& e = entries_.at(id);
    if (!e.removed) out.push_back(CapabilityLocked(e));
  }
  return out;
}

}  // namespace switchyard::orchestrator
