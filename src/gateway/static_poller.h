// Polls a static list of orchestrators (GetStatus) for nodes that do not register themselves.
// A node that answers is routed to; one that stops answering is dropped until it answers again.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gateway/membership.h"

namespace switchyard::gateway {

class StaticPoller {
 public:
  // Connections are opened with the membership's security (plaintext or orchestrator_tls).
  StaticPoller(std::vector<std::string> addresses, std::chrono::milliseconds interval,
               Membership* membership, int64_t max_message_bytes);
  ~StaticPoller();  // stops and joins

  void Start();
  void Stop();

  // Replaces the list (a config reload): nodes no longer listed leave routing (jobs already sent
  // to them finish), new ones are polled at once, those still listed keep their state. Returns
  // once applied, which can take up to one poll (the poll interval) in progress.
  void SetAddresses(const std::vector<std::string>& addresses);

 private:
  struct Target {
    NodeConnectionPtr connection;
    std::string node_id;  // as last reported
    uint64_t token = 0;
    std::string last_error;  // of the last failed poll, so a lasting failure is logged once
  };
  void Run();
  void PollOnce(Target& target);

  std::vector<Target> targets_;  // guarded by targets_mu_, held for a whole round of polls
  std::mutex targets_mu_;
  std::chrono::milliseconds interval_;
  Membership* membership_;
  int64_t max_message_bytes_;
  bool poll_now_ = false;  // guarded by mu_: a reload added targets
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace switchyard::gateway
