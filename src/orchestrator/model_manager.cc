#include "orchestrator/model_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "orchestrator/warmup.h"

namespace switchyard::orchestrator {
namespace {

constexpr int64_t kMiB = 1 << 20;

std::string Mb(int64_t bytes) { return absl::StrCat((bytes + kMiB - 1) / kMiB, " MiB"); }

}  // namespace

ModelManager::ModelManager(std::vector<ModelConfig> models, StatusBoard* board,
                           std::map<std::string, int64_t> memory_budget_mb)
    : board_(board) {
  for (const auto& [device, mb] : memory_budget_mb) budget_bytes_[device] = mb * kMiB;
  for (auto& m : models) {
    order_.push_back(m.id);
    Entry e;
    e.config = std::move(m);
    auto device = runner::ResolveDevice(e.config.device);
    e.device = device.ok() ? device->str() : "";
    // Before loading, the operator's estimate or else the file size (weights dominate).
    std::error_code ec;
    auto file_size = std::filesystem::file_size(e.config.path, ec);
    e.memory_bytes = e.config.memory_mb > 0 ? e.config.memory_mb * kMiB
                                            : (ec ? 0 : static_cast<int64_t>(file_size));
    entries_.emplace(e.config.id, std::move(e));
  }
}

const ModelConfig* ModelManager::Find(const std::string& model_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(model_id);
  return it == entries_.end() ? nullptr : &it->second.config;  // configs never change
}

void ModelManager::SetState(Entry& entry, node::v1::ModelState state, std::string error) {
  entry.state = state;
  entry.error = std::move(error);
  if (board_ != nullptr) board_->Changed();
}

absl::StatusOr<std::shared_ptr<runner::ModelExecutor>> ModelManager::LoadModel(
    const ModelConfig& config, int64_t* measured_bytes) {
  absl::Time start = absl::Now();
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
  auto executor = runner::ModelExecutor::Create(
      *model, {.instances = config.instances,
               .queue_size = config.queue_size,
               .max_batch_size = config.max_batch_size,
               .max_queue_delay = absl::Milliseconds(config.max_queue_delay_ms)});
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

absl::Status ModelManager::LoadLocked(Entry& e, std::unique_lock<std::mutex>& lock) {
  if (absl::Status room = ReserveLocked(e); !room.ok()) {
    if (board_ != nullptr) board_->Changed();  // advertise that it cannot be taken now
    return room;
  }
  SetState(e, node::v1::MODEL_STATE_LOADING, "");
  ModelConfig config = e.config;
  lock.unlock();
  int64_t measured = 0;
  auto executor = LoadModel(config, &measured);
  lock.lock();
  if (executor.ok()) {
    e.executor = *executor;
    if (config.memory_mb <= 0) e.memory_bytes = measured;
    e.last_used = absl::Now();
    SetState(e, node::v1::MODEL_STATE_READY, "");
  } else {
    spdlog::error("model {} failed to load: {}", config.id, executor.status().ToString());
    SetState(e, node::v1::MODEL_STATE_FAILED, std::string(executor.status().message()));
  }
  loaded_cv_.notify_all();
  return executor.status();
}

void ModelManager::LoadWarmModels() {
  for (const auto& id : order_) {
    std::unique_lock<std::mutex> lock(mu_);
    Entry& e = entries_.at(id);
    if (!e.config.warm || e.state != node::v1::MODEL_STATE_COLD) continue;
    absl::Status st = LoadLocked(e, lock);
    if (st.code() == absl::StatusCode::kResourceExhausted) {
      spdlog::error("warm model {} does not fit: {}", id, st.ToString());
      SetState(e, node::v1::MODEL_STATE_FAILED, std::string(st.message()));
    }
  }
}

absl::StatusOr<std::shared_ptr<runner::ModelExecutor>> ModelManager::Acquire(
    const std::string& model_id, absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = entries_.find(model_id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", model_id, "' is not served here"));
  }
  Entry& e = it->second;
  for (;;) {
    switch (e.state) {
      case node::v1::MODEL_STATE_READY:
        if (e.executor->model()->broken()) {
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
        if (timeout.count() <= 0 || !loaded_cv_.wait_for(lock, timeout, [&] {
              return e.state != node::v1::MODEL_STATE_LOADING;
            })) {
          return absl::DeadlineExceededError(
              absl::StrCat("deadline passed while model '", model_id, "' was loading"));
        }
        break;
      }
      default: {  // COLD or UNLOADED: this caller loads it; others wait above.
        spdlog::info("cold start of model {}", model_id);
        absl::Status st = LoadLocked(e, lock);
        if (st.code() == absl::StatusCode::kResourceExhausted) return st;
        break;  // READY or FAILED now
      }
    }
  }
}

absl::Status ModelManager::Load(const std::string& model_id, absl::Time deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(model_id);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("model '", model_id, "' is not served here"));
    }
    // An explicit load retries a failed model (its file may have been fixed).
    if (it->second.state == node::v1::MODEL_STATE_FAILED) {
      SetState(it->second, node::v1::MODEL_STATE_COLD, "");
    }
  }
  auto executor = Acquire(model_id, deadline);
  return executor.status();
}

absl::Status ModelManager::Unload(const std::string& model_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(model_id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", model_id, "' is not served here"));
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
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(model_id);
  return it == entries_.end() ? 0 : it->second.reloads;
}

int64_t ModelManager::MemoryInUse(const std::string& device) const {
  std::lock_guard<std::mutex> lock(mu_);
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
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(model_id);
  return it == entries_.end() ? node::v1::NodeCapability() : CapabilityLocked(it->second);
}

std::vector<node::v1::NodeCapability> ModelManager::Capabilities() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<node::v1::NodeCapability> out;
  for (const auto& id : order_) out.push_back(CapabilityLocked(entries_.at(id)));
  return out;
}

}  // namespace switchyard::orchestrator
