// Polls a static list of orchestrators (GetStatus) for nodes that do not register themselves.
// A node that answers is routed to; one that stops answering is dropped until it answers again.
#pragma once

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "gateway/membership/membership.h"

namespace switchyard::gateway {

class StaticPoller {
 public:
  // Connections are opened with the membership's security (plaintext or orchestrator_tls).
  StaticPoller(std::vector<std::string> addresses, std::chrono::milliseconds interval,
               Membership* membership, int64_t max_message_bytes);
  ~StaticPoller();  // stops and joins

  void Start();
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Replaces the list (a config reload): nodes no longer listed leave routing (jobs already sent
  // to them finish), new ones are polled at once, those still listed keep their state. Returns
  // once applied, which can take up to one poll (the poll interval) in progress.
  void SetAddresses(const std::vector<std::string>& addresses)
      ABSL_LOCKS_EXCLUDED(targets_mu_, mu_);

 private:
  struct Target {
    NodeConnectionPtr connection;
    std::string node_id;  // as last reported
    uint64_t token = 0;
    std::string last_error;  // of the last failed poll, so a lasting failure is logged once
  };
  void Run() ABSL_LOCKS_EXCLUDED(targets_mu_, mu_);
  void PollOnce(Target& target);

  Mutex targets_mu_;  // held for a whole round of polls
  std::vector<Target> targets_ ABSL_GUARDED_BY(targets_mu_);
  std::chrono::milliseconds interval_;
  Membership* membership_;
  int64_t max_message_bytes_;
  Mutex mu_;
  CondVar cv_;
  bool poll_now_ ABSL_GUARDED_BY(mu_) = false;  // a reload added targets
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace switchyard::gateway
