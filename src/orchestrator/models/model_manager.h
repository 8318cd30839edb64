// Owns the configured models: loads warm ones at start, cold ones on first use (one load per
// model however many jobs ask at once), keeps each device within its memory budget by evicting
// idle cold models least recently used first (warm models are never evicted), and reports each
// model's state and load. The model list can be replaced while serving (Reconcile, on SIGHUP).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/models/status_board.h"
#include "runner/model_executor.h"
#include "switchyard/node/v1/node.pb.h"

namespace switchyard::orchestrator {

class ModelManager {
 public:
  // `board` (may be null) is told about every state change. `memory_budget_mb` maps a device
  // ("cpu", "cuda:0") to the memory its loaded models may use; a device not listed is unbounded.
  ModelManager(std::vector<ModelConfig> models, StatusBoard* board,
               std::map<std::string, int64_t> memory_budget_mb = {});
  ~ModelManager() = default;

  // Loads every model marked warm, in order, blocking. A model that fails to load (or does not
  // fit its device's budget) is put in FAILED with its error; the others still load.
  void LoadWarmModels() ABSL_LOCKS_EXCLUDED(mu_);

  // The config of a model, or null when the id is unknown. The pointee stays valid for the
  // manager's lifetime even when a reload replaces or removes the model, so a job that looked it
  // up keeps a consistent config to the end.
  const ModelConfig* Find(const std::string& model_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // What Reconcile did, by model id.
  struct ReloadSummary {
    std::vector<std::string> added;
    std::vector<std::string> removed;   // gone for new jobs; unloaded once their jobs finish
    std::vector<std::string> reloaded;  // the executor changes (file, device, threads, ...)
    std::vector<std::string> updated;   // only per-job fields changed (price, options, ...)
    int unchanged = 0;
  };
  // Replaces the model list (a config reload) without dropping work: added models become
  // available (COLD; call LoadWarmModels to load the warm ones), removed ones are refused to new
  // jobs (NOT_FOUND) and unloaded once the jobs holding them finish, and changed ones reload
  // (jobs already running finish on the previous executor). A model whose file changed on disk
  // (modification time) counts as changed. Waits for loads in progress to finish first.
  ReloadSummary Reconcile(std::vector<ModelConfig> models) ABSL_LOCKS_EXCLUDED(mu_);

  // Returns the executor of a READY model, loading it first if it is cold. Concurrent callers
  // for a model that is loading wait for that one load. NOT_FOUND for an unknown id, UNAVAILABLE
  // for a model that failed to load, RESOURCE_EXHAUSTED when a cold model does not fit its
  // device's budget even after evicting idle cold models, DEADLINE_EXCEEDED if the deadline
  // passes while waiting.
  absl::StatusOr<std::shared_ptr<runner::ModelExecutor>> Acquire(const std::string& model_id,
                                                                 absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Admin: loads a model now (also retries a FAILED one). Errors as Acquire.
  absl::Status Load(const std::string& model_id, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  // Demand-driven warm-up (orchestrator/prewarmer.h): loads a COLD or UNLOADED model, blocking,
  // only if it fits its device's budget without evicting anything. True when it loaded; false
  // when there was nothing to do (already READY or LOADING, or FAILED: an operator's LoadModel
  // retries those). RESOURCE_EXHAUSTED when it would not fit without evicting, NOT_FOUND for a
  // model not served here, the load's error otherwise (the model is then FAILED, as after a
  // failed on-demand load).
  absl::StatusOr<bool> Prewarm(const std::string& model_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Admin: unloads a READY model (warm ones too); it becomes UNLOADED and loads again on demand.
  // FAILED_PRECONDITION while it is loading or has jobs queued or running.
  absl::Status Unload(const std::string& model_id) ABSL_LOCKS_EXCLUDED(mu_);

  // One capability per model, with state, load and memory, for the node protocol.
  std::vector<node::v1::NodeCapability> Capabilities() const ABSL_LOCKS_EXCLUDED(mu_);
  node::v1::NodeCapability CapabilityOf(const std::string& model_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // How many times the model was reloaded because an error may have broken it.
  int ReloadsOf(const std::string& model_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // Bytes the loaded models use on `device` (by their estimates or measurements).
  int64_t MemoryInUse(const std::string& device) const ABSL_LOCKS_EXCLUDED(mu_);

  // Told, for every job a model's executor runs, its queue wait and compute time (for metrics).
  // Set before LoadWarmModels; applies to executors created after.
  using JobObserver = std::function<void(const std::string& pipeline, const std::string& model_id,
                                         absl::Duration queued, absl::Duration compute)>;
  void SetJobObserver(JobObserver observer) { job_observer_ = std::move(observer); }

 private:
  JobObserver job_observer_;
  struct Entry {
    ModelConfig config;
    // An immutable copy of `config` that Find hands out; replaced (and the old one retired, not
    // freed) when a reload changes the model.
    std::shared_ptr<const ModelConfig> published;
    bool removed = false;  // dropped by a reload; kept so references into it stay valid
    std::filesystem::file_time_type file_time;  // of config.path when configured
    node::v1::ModelState state = node::v1::MODEL_STATE_COLD;
    std::string error;
    std::shared_ptr<runner::ModelExecutor> executor;
    std::string device;        // resolved device ("cpu", "cuda:0"); "" if it cannot resolve
    int64_t memory_bytes = 0;  // estimate before load, estimate or measurement after
    absl::Time last_used = absl::InfinitePast();
    int reloads = 0;  // fresh loads after an error that may have broken the model
  };

  // Loads and warms up one model; runs without the lock held. Sets `*measured_bytes`.
  absl::StatusOr<std::shared_ptr<runner::ModelExecutor>> LoadModel(const ModelConfig& config,
                                                                   int64_t* measured_bytes);
  // Brings a COLD entry to READY (or FAILED); called with the lock held, drops it while loading.
  absl::Status LoadLocked(Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes room for `e` on its device by evicting idle cold models, least recently used first.
  absl::Status ReserveLocked(Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `e` could be loaded now, counting memory that eviction could free.
  bool FitsLocked(const Entry& e) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t UsedLocked(const std::string& device) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static bool Evictable(const Entry& e);
  node::v1::NodeCapability CapabilityLocked(const Entry& e) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetState(Entry& entry, node::v1::ModelState state, std::string error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Sets up `e` for `config` (COLD, device resolved, memory estimated).
  static void Configure(Entry& e, ModelConfig config);
  // Moves a loaded executor out of `e` into retired_ (unloaded when its last job finishes).
  void RetireExecutorLocked(Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees retired executors no job holds any more.
  void PruneRetiredLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  StatusBoard* board_;
  std::map<std::string, int64_t> budget_bytes_;
  mutable Mutex mu_;
  CondVar loaded_cv_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);  // config order, for stable reporting
  // Executors of removed or changed models that jobs still hold; counted in their device's memory
  // until freed. Mutable: pruning happens on the (const) status path, which runs often.
  struct Retired {
    std::string id;
    std::string device;
    int64_t memory_bytes = 0;
    std::shared_ptr<runner::ModelExecutor> executor;
  };
  mutable std::vector<Retired> retired_ ABSL_GUARDED_BY(mu_);
  // Configs replaced by reloads: Find's pointers into them must stay valid (a few hundred bytes
  // per changed model per reload).
  std::vector<std::shared_ptr<const ModelConfig>> retired_configs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::orchestrator
