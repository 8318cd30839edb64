// Owns the configured models: loads warm ones at start, cold ones on first use (one load per
// model however many jobs ask at once), and reports each model's state and load.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/status_board.h"
#include "runner/torch_model.h"
#include "switchyard/node/v1/node.pb.h"

namespace switchyard::orchestrator {

class ModelManager {
 public:
  // `board` (may be null) is told about every state change.
  ModelManager(std::vector<ModelConfig> models, StatusBoard* board);
  ~ModelManager() = default;

  // Loads every model marked warm, in order, blocking. A model that fails to load is put in
  // FAILED with its error; the others still load.
  void LoadWarmModels();

  // The config of a model, or null when the id is unknown.
  const ModelConfig* Find(const std::string& model_id) const;

  // Returns the executor of a READY model, loading it first if it is cold. Concurrent callers
  // for a model that is loading wait for that one load. NOT_FOUND for an unknown id, UNAVAILABLE
  // for a model that failed to load, DEADLINE_EXCEEDED if the deadline passes while waiting.
  absl::StatusOr<std::shared_ptr<runner::ModelExecutor>> Acquire(const std::string& model_id,
                                                                 absl::Time deadline);

  // One capability per model, with state and load, for the node protocol.
  std::vector<node::v1::NodeCapability> Capabilities() const;

 private:
  struct Entry {
    ModelConfig config;
    node::v1::ModelState state = node::v1::MODEL_STATE_COLD;
    std::string error;
    std::shared_ptr<runner::ModelExecutor> executor;
  };

  // Loads and warms up one model; runs without the lock held.
  absl::StatusOr<std::shared_ptr<runner::ModelExecutor>> LoadModel(const ModelConfig& config);
  void SetState(Entry& entry, node::v1::ModelState state, std::string error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  StatusBoard* board_;
  mutable std::mutex mu_;
  std::condition_variable loaded_cv_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> order_;  // config order, for stable reporting
};

}  // namespace switchyard::orchestrator
