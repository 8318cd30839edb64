// Which orchestrator keys may register under which node ids (issue 23; docs/security.md, "Node
// identity"). A node that registers with a key proves it holds the key (registry_service.cc);
// this decides whether that key may use that id: the operator's deny and allow lists, and the
// binding of each id to the first key proven for it, so that nobody else can later take the id
// (a gateway refuses the same id with another key unless the operator lists the id under
// `rebind`). The lists are re-read on SIGHUP (Reload); bindings persist in `bindings_file` when
// one is configured, else for the gateway's lifetime.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "gateway/membership/node_identity_config.h"

namespace switchyard::gateway {

class NodeKeys;
using NodeKeysPtr = std::unique_ptr<NodeKeys>;

class NodeKeys {
 public:
  // Reads the policy and bindings files (a missing bindings file is an empty one). Errors name
  // the file and the entry.
  static absl::StatusOr<NodeKeysPtr> Create(NodeIdentityConfig config);

  NodeIdentityConfig::Mode mode() const { return config_.mode; }

  // May `node_id` register with `public_key` (32 raw bytes; empty: the node sent none)?
  // UNAUTHENTICATED when a key is required and none was sent; PERMISSION_DENIED when the key or
  // the id is denied, not allowed, or the id is bound to another key (the message says how the
  // operator allows the change). Keys are not proven here: the registry checks the proof.
  absl::Status Check(const std::string& node_id, const std::string& public_key) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // After a proven registration: binds `node_id` to `public_key` (kept, or replacing the old key
  // when the id is listed under rebind), persisted when a bindings file is configured.
  // PERMISSION_DENIED when Check would now refuse (another registration bound the id first);
  // UNAVAILABLE when the bindings file cannot be written (the binding is then not made).
  absl::Status Bind(const std::string& node_id, const std::string& public_key)
      ABSL_LOCKS_EXCLUDED(mu_);

  // SIGHUP: re-reads the policy file. On error the old lists stay and the error is returned.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(mu_);

  // The key bound to `node_id` (raw), or "" when none.
  std::string BoundKey(const std::string& node_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // Most entries a policy or bindings file may hold, and its largest size.
  static constexpr size_t kMaxEntries = 100000;
  static constexpr size_t kMaxFileBytes = 16 << 20;

 private:
  struct Policy {
    // key -> the node id it is pinned to ("" = any id); empty map: no allowlist.
    std::map<std::string, std::string> allow;
    std::set<std::string> deny_keys;
    std::set<std::string> deny_ids;
    std::set<std::string> rebind;
  };
  explicit NodeKeys(NodeIdentityConfig config) : config_(std::move(config)) {}
  absl::Status CheckLocked(const std::string& node_id, const std::string& public_key) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteBindings(const std::map<std::string, std::string>& bindings) const;

  const NodeIdentityConfig config_;
  mutable Mutex mu_;
  Policy policy_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> bindings_ ABSL_GUARDED_BY(mu_);  // node id -> raw key
};

}  // namespace switchyard::gateway
