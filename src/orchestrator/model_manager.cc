#include "orchestrator/model_manager.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "orchestrator/warmup.h"

namespace switchyard::orchestrator {

ModelManager::ModelManager(std::vector<ModelConfig> models, StatusBoard* board) : board_(board) {
  for (auto& m : models) {
    order_.push_back(m.id);
    Entry e;
    e.config = std::move(m);
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
    const ModelConfig& config) {
  absl::Time start = absl::Now();
  auto model = runner::TorchModel::Load(config.path, config.device);
  if (!model.ok()) return model.status();
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
  spdlog::info("model {} ready on {} ({}) in {:.0f} ms", config.id, (*model)->device().str(),
               config.path.string(), absl::ToDoubleMilliseconds(absl::Now() - start));
  return std::shared_ptr<runner::ModelExecutor>(std::move(*executor));
}

void ModelManager::LoadWarmModels() {
  for (const auto& id : order_) {
    ModelConfig config;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Entry& e = entries_.at(id);
      if (!e.config.warm || e.state != node::v1::MODEL_STATE_COLD) continue;
      config = e.config;
      SetState(e, node::v1::MODEL_STATE_LOADING, "");
    }
    auto executor = LoadModel(config);
    std::lock_guard<std::mutex> lock(mu_);
    Entry& e = entries_.at(id);
    if (executor.ok()) {
      e.executor = *executor;
      SetState(e, node::v1::MODEL_STATE_READY, "");
    } else {
      spdlog::error("model {} failed to load: {}", id, executor.status().ToString());
      SetState(e, node::v1::MODEL_STATE_FAILED, std::string(executor.status().message()));
    }
    loaded_cv_.notify_all();
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
      default: {  // COLD: this caller loads it; others wait above.
        SetState(e, node::v1::MODEL_STATE_LOADING, "");
        ModelConfig config = e.config;
        lock.unlock();
        spdlog::info("cold start of model {}", model_id);
        auto executor = LoadModel(config);
        lock.lock();
        if (executor.ok()) {
          e.executor = *executor;
          SetState(e, node::v1::MODEL_STATE_READY, "");
        } else {
          spdlog::error("model {} failed to load: {}", model_id, executor.status().ToString());
          SetState(e, node::v1::MODEL_STATE_FAILED, std::string(executor.status().message()));
        }
        loaded_cv_.notify_all();
        break;
      }
    }
  }
}

std::vector<node::v1::NodeCapability> ModelManager::Capabilities() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<node::v1::NodeCapability> out;
  for (const auto& id : order_) {
    const Entry& e = entries_.at(id);
    node::v1::NodeCapability c;
    c.set_pipeline(e.config.pipeline);
    c.set_model_id(e.config.id);
    c.set_state(e.state);
    c.set_capacity(e.config.instances);
    c.set_in_use(e.executor ? e.executor->in_use() : 0);
    c.set_price_per_unit(e.config.price_per_unit);
    c.set_unit(e.config.unit);
    c.set_error(e.error);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace switchyard::orchestrator
