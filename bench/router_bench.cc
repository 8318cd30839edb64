// Gateway router benchmarks (issue 4), each against baselines measured in the same run:
//   1. decision cost: ns per Router::Pick at 10, 1,000 and 10,000 orchestrators (target < 5 us
//      and flat), with the cost of indexing a snapshot at publish time;
//   2. a discrete-event simulation (simulated clock; no threads, sleeps or network) of 1,000
//      orchestrators with mixed speeds, capacities and warm sets under Poisson arrivals at ~70% of
//      warm capacity, one node failing and one slowing down 10x: Router (P2C, ejection, latency
//      EWMA, retry budget) against round robin and uniform random (warm-first, same retries).
//
//   build/bin/router_bench [--seed 1] [--jobs 100000] [--sim-nodes 1000] [--decisions 200000]
//                          [--only cost|sim]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "gateway/membership/membership.h"
#include "gateway/routing/node_health.h"
#include "gateway/routing/route_index.h"
#include "gateway/routing/router.h"

namespace gw = switchyard::gateway;
using switchyard::node::v1::MODEL_STATE_COLD;
using switchyard::node::v1::MODEL_STATE_LOADING;
using switchyard::node::v1::MODEL_STATE_READY;
using Clock = std::chrono::steady_clock;

namespace {

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1)));
  return v[i];
}

// xorshift64*: a cheap random source, so the timing is the router's and not the generator's.
std::function<uint64_t()> FastRandom(uint64_t seed) {
  auto state = std::make_shared<uint64_t>(seed | 1);
  return [state] {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
  };
}

// ---------------------------------------------------------------------------------------------
// 1. Decision cost

// `n` nodes offering 4 models; `full_fraction` of them have every slot busy for m0. No gRPC
// channels: one shared connection stands in for all (its in-flight count stays 0).
gw::Snapshot CostSnapshot(int n, double full_fraction, uint64_t seed,
                          const gw::NodeConnectionPtr& connection) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  gw::Snapshot snap;
  snap.version = 1;
  for (int i = 0; i < n; ++i) {
    auto view = std::make_shared<gw::NodeView>();
    view->id = absl::StrCat("orch-", i);
    view->status.set_node_id(view->id);
    view->connection = connection;
    view->stats = std::make_shared<gw::NodeStats>();
    for (int m = 0; m < 4; ++m) {
      auto* cap = view->status.add_capabilities();
      cap->set_pipeline("upscale");
      cap->set_model_id(absl::StrCat("m", m));
      cap->set_state(m == 0 || u(rng) < 0.3 ? MODEL_STATE_READY : MODEL_STATE_COLD);
      cap->set_capacity(4);
      cap->set_in_use(m == 0 && u(rng) < full_fraction ? 4 : static_cast<int>(rng() % 4));
      cap->set_price_per_unit(1);
    }
    const absl::Time t = absl::Now();
    for (int s = 0; s < 5; ++s) {
      view->stats->RecordLatency(gw::ModelKey("m0"), 50 + static_cast<double>(rng() % 100), 0.3, t);
    }
    snap.nodes.push_back(std::move(view));
  }
  return snap;
}

// The previous router's decision, kept as the baseline: a scan of every node and capability.
bool OldPick(const gw::Snapshot& snapshot, const gw::RouteRequest& request,
             const std::function<uint64_t()>& random) {
  int best_tier = 3;
  double best_load = 1e300;
  int ties = 0;
  const gw::NodeView* choice = nullptr;
  for (const auto& node : snapshot.nodes) {
    for (const auto& cap : node->status.capabilities()) {
      if (cap.pipeline() != request.pipeline || cap.model_id() != request.model_id) continue;
      if (node->status.draining() || request.excluded.count(node->id) != 0 ||
          cap.state() == switchyard::node::v1::MODEL_STATE_FAILED || cap.no_room()) {
        continue;
      }
      const int capacity = std::max(1, cap.capacity());
      const int in_use = std::max(cap.in_use(), node->connection->in_flight().load());
      const bool warm = cap.state() == MODEL_STATE_READY;
      const int tier = warm ? (in_use < capacity ? 0 : 1) : 2;
      const double load = static_cast<double>(in_use) / capacity;
      if (tier < best_tier || (tier == best_tier && load < best_load)) {
        best_tier = tier;
        best_load = load;
        ties = 1;
        choice = node.get();
      } else if (tier == best_tier && load == best_load) {
        ++ties;
        if (random() % static_cast<uint64_t>(ties) == 0) choice = node.get();
      }
    }
  }
  return choice != nullptr;
}

template <typename PickFn>
double NsPerPick(PickFn pick, int decisions) {
  int ok = 0;
  for (int i = 0; i < decisions / 10; ++i) ok += pick() ? 1 : 0;  // warm-up
  const auto t0 = Clock::now();
  for (int i = 0; i < decisions; ++i) ok += pick() ? 1 : 0;
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
  if (ok == 0) std::cerr << "no successful pick\n";
  return ns / decisions;
}

template <typename Fn>
double MicrosPerCall(int reps, Fn fn) {
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) fn();
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / reps;
}

void DecisionCost(int decisions, uint64_t seed) {
  std::cout << "## 1. Decision cost (one thread, Router::Pick on an indexed snapshot)\n\n"
               "Nodes offer 4 models; the request's model is warm everywhere. \"Typical\": a "
               "quarter of the nodes are full for it, so sampling finds two with room at once. "
               "\"Saturated\": 97% are full, so sampling often fails and Pick scans the route "
               "(the rare, O(route) fallback). Old router: the previous full scan of every node "
               "and capability (baseline, typical snapshot). Publish: rebuilding the route index "
               "(a node joined or changed "
               "its models) vs reusing it (heartbeat: loads only), which includes the O(N) "
               "comparison.\n\n"
               "| orchestrators | typical ns/decision | saturated ns/decision | old full scan "
               "ns/decision | index rebuild us | heartbeat publish us |\n"
               "|---|---|---|---|---|---|\n";
  auto connection = std::make_shared<gw::NodeConnection>("127.0.0.1:1", 1 << 20);
  for (int n : {10, 1000, 10000}) {
    gw::Snapshot typical = CostSnapshot(n, 0.25, seed, connection);
    gw::IndexSnapshot(typical, nullptr);
    gw::Snapshot saturated = CostSnapshot(n, 0.97, seed, connection);
    gw::IndexSnapshot(saturated, nullptr);
    gw::Router router(gw::RouterOptions{}, FastRandom(seed));
    auto random = FastRandom(seed + 1);
    const gw::RouteRequest req{"upscale", "m0", {}, 0, ""};
    // Fewer decisions where one costs O(nodes), to keep the run short.
    const int slow_decisions = std::min(decisions, std::max(200, decisions * 10 / n));
    const double t_ns = NsPerPick([&] { return router.Pick(typical, req).ok(); }, decisions);
    const double s_ns = NsPerPick([&] { return router.Pick(saturated, req).ok(); }, slow_decisions);
    const double old_ns = NsPerPick([&] { return OldPick(typical, req, random); }, slow_decisions);
    const int reps = n >= 10000 ? 5 : 50;
    const double rebuild_us = MicrosPerCall(reps, [&] { gw::BuildRouteIndex(typical); });
    const double publish_us = MicrosPerCall(reps, [&] {
      gw::Snapshot next;
      next.nodes = typical.nodes;  // what PublishLocked copies
      gw::IndexSnapshot(next, &typical);
    });
    std::printf("| %d | %.0f | %.0f | %.0f | %.0f | %.0f |\n", n, t_ns, s_ns, old_ns, rebuild_us,
                publish_us);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Simulation

constexpr int kModels = 4;
const double kBaseMs[kModels] = {200, 400, 100, 800};  // service time at speed 1
constexpr double kLoadMs = 5000;                       // cold load
constexpr double kFailFastMs = 5;                      // a dead node's connection refused
constexpr double kRefuseMs = 2;                        // queue full: RESOURCE_EXHAUSTED
constexpr double kHeartbeatMs = 500;
constexpr int kMaxAttempts = 3;
constexpr int kWarmSlots = 2;  // models a node has memory for

enum class Policy { kRouter, kRoundRobin, kRandom };
const char* Name(Policy p) {
  switch (p) {
    case Policy::kRouter:
      return "Router (P2C + ejection + EWMA)";
    case Policy::kRoundRobin:
      return "round robin (warm first)";
    case Policy::kRandom:
      return "uniform random (warm first)";
  }
  return "";
}

struct JobSpec {
  double arrival_ms;
  int model;
  double jitter;  // service time factor, same job same factor under every policy
};

struct Cluster {
  struct NodeSpec {
    double mult;  // service time multiplier (slower > 1)
    int capacity;
    bool warm[kModels];
  };
  std::vector<NodeSpec> nodes;
  std::vector<JobSpec> jobs;
  int failing = 0;
  int slowing = 0;
  double fail_at_ms = 0;
  double slow_at_ms = 0;
  double offered_per_s = 0;
};

Cluster MakeCluster(int n, int jobs, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  Cluster c;
  double rate_per_ms[kModels] = {};
  for (int i = 0; i < n; ++i) {
    Cluster::NodeSpec s{};
    s.mult = std::exp2(u(rng) * 2 - 1);  // 0.5x .. 2x, log-uniform
    s.capacity = 1 << (rng() % 4);       // 1, 2, 4 or 8 slots
    const int first = static_cast<int>(rng() % kModels);
    s.warm[first] = true;
    int warm = 1;
    if (u(rng) < 0.5) {
      s.warm[(first + 1 + rng() % (kModels - 1)) % kModels] = true;
      warm = 2;
    }
    // Capacity shared by its warm models: credit each with an even split of its throughput.
    for (int m = 0; m < kModels; ++m) {
      if (s.warm[m]) rate_per_ms[m] += s.capacity / (kBaseMs[m] * s.mult) / warm;
    }
    c.nodes.push_back(s);
  }
  // 70% of warm capacity, per model.
  double total = 0;
  for (double& r : rate_per_ms) total += (r *= 0.7);
  c.offered_per_s = total * 1000;
  std::exponential_distribution<double> gap(total);
  std::discrete_distribution<int> model(rate_per_ms, rate_per_ms + kModels);
  double t = 0;
  for (int j = 0; j < jobs; ++j) {
    t += gap(rng);
    c.jobs.push_back(JobSpec{t, model(rng), 0.8 + 0.4 * u(rng)});
  }
  // One busy node (warm for the most popular model, several slots) fails a quarter in; another
  // slows down 10x halfway.
  std::vector<int> big;
  for (int i = 0; i < n; ++i) {
    if (c.nodes[static_cast<size_t>(i)].warm[0] && c.nodes[static_cast<size_t>(i)].capacity >= 4) {
      big.push_back(i);
    }
  }
  c.failing = big.empty() ? 0 : big[rng() % big.size()];
  c.slowing = (c.failing + 1) % n;
  for (int tries = 0; tries < 100 && big.size() > 1; ++tries) {
    c.slowing = big[rng() % big.size()];
    if (c.slowing != c.failing) break;
  }
  c.fail_at_ms = t * 0.25;
  c.slow_at_ms = t * 0.5;
  return c;
}

struct Result {
  std::vector<double> latencies_ms;
  int64_t attempts = 0;
  int64_t retries = 0;
  int64_t lost = 0;
  int64_t warm_hits = 0;
  int64_t to_failed_after = 0;
  int64_t slow_jobs_after = 0;
  double slow_fair_after = 0;
  double max_load = 0;   // time-averaged jobs in system / slots, the most loaded node
  double mean_load = 0;  // the same, averaged over nodes
  int64_t slow_attempts_after = 0;
  double wall_s = 0;
};

class Simulation {
 public:
  Simulation(const Cluster& cluster, Policy policy, uint64_t seed)
      : cluster_(cluster),
        policy_(policy),
        rng_(seed * 7919 + static_cast<uint64_t>(policy)),
        router_(
            gw::RouterOptions{}, [this] { return rng_(); },
            [this] { return absl::UnixEpoch() + absl::Milliseconds(now_ms_); }) {}

  Result Run() {
    const auto wall0 = Clock::now();
    const size_t n = cluster_.nodes.size();
    nodes_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      auto& s = nodes_[i];
      s.spec = cluster_.nodes[i];
      for (int m = 0; m < kModels; ++m) s.state[m] = s.spec.warm[m] ? kReady : kCold;
      s.connection = std::make_shared<gw::NodeConnection>(
          absl::StrCat("10.0.", i / 250, ".", i % 250, ":50061"), 1 << 20);
      s.stats = std::make_shared<gw::NodeStats>();
    }
    Publish();
    for (size_t j = 0; j < cluster_.jobs.size(); ++j) {
      Push(cluster_.jobs[j].arrival_ms, kArrival, static_cast<int>(j), 0);
    }
    jobs_.resize(cluster_.jobs.size());
    Push(cluster_.fail_at_ms, kNodeFails, cluster_.failing, 0);
    Push(cluster_.slow_at_ms, kNodeSlows, cluster_.slowing, 0);
    Push(kHeartbeatMs, kHeartbeat, 0, 0);
    const auto total = static_cast<int64_t>(cluster_.jobs.size());
    while (!events_.empty() && static_cast<int64_t>(latencies_.size()) + lost_ < total) {
      Event e = events_.top();
      events_.pop();
      now_ms_ = e.t;
      switch (e.type) {
        case kArrival:
          router_.RecordJob();
          Attempt(e.a);
          break;
        case kDone:
          Done(e.a, e.b);
          break;
        case kAttemptFailed:
          AttemptFailed(e.a, e.b, gw::AttemptOutcome::kNodeFailure);
          break;
        case kRefused:
          AttemptFailed(e.a, e.b, gw::AttemptOutcome::kRefused);
          break;
        case kLoaded:
          Loaded(e.a, e.b);
          break;
        case kHeartbeat:
          Publish();
          Push(now_ms_ + kHeartbeatMs, kHeartbeat, 0, 0);
          break;
        case kNodeFails:
          FailNode(e.a);
          break;
        case kNodeSlows:
          nodes_[static_cast<size_t>(e.a)].spec.mult *= 10;
          slow_since_ = now_ms_;
          break;
      }
    }
    return Summarise(Clock::now() - wall0);
  }

 private:
  enum ModelState { kCold, kLoading, kReady };
  enum EventType {
    kArrival,
    kDone,
    kAttemptFailed,
    kRefused,
    kLoaded,
    kHeartbeat,
    kNodeFails,
    kNodeSlows
  };
  struct Event {
    double t;
    uint64_t seq;
    EventType type;
    int a;
    int b;
    bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  struct Job {
    int attempt = 0;  // current attempt number; events for older attempts are stale
    int node = -1;
    bool warm = false;
    double dispatched_ms = 0;
    bool done = false;
    std::set<std::string> excluded;
  };
  struct Node {
    Cluster::NodeSpec spec;
    ModelState state[kModels];
    bool failed = false;
    int running = 0;
    std::deque<int> queue;              // job ids waiting for a slot (or a load)
    std::unordered_set<int> in_system;  // running or queued
    double occupancy_ms = 0;            // integral of in_system.size() over time
    double last_ms = 0;
    int64_t served_after_slow = 0;
    gw::NodeConnectionPtr connection;
    std::shared_ptr<gw::NodeStats> stats;
  };

  void Push(double t, EventType type, int a, int b) { events_.push(Event{t, seq_++, type, a, b}); }

  // Rebuilds the snapshot as Membership would after heartbeats: the reported in_use is the
  // node's count at this moment; the gateway's in_flight stays exact in between.
  void Publish() {
    auto snap = std::make_shared<gw::Snapshot>();
    snap->version = ++version_;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      const Node& s = nodes_[i];
      auto view = std::make_shared<gw::NodeView>();
      view->id = absl::StrCat("orch-", i);
      view->status.set_node_id(view->id);
      view->connection = s.connection;
      view->stats = s.stats;
      int resident = 0;
      for (int m = 0; m < kModels; ++m) resident += s.state[m] != kCold ? 1 : 0;
      for (int m = 0; m < kModels; ++m) {
        auto* cap = view->status.add_capabilities();
        cap->set_pipeline("upscale");
        cap->set_model_id(absl::StrCat("m", m));
        cap->set_state(s.state[m] == kReady     ? MODEL_STATE_READY
                       : s.state[m] == kLoading ? MODEL_STATE_LOADING
                                                : MODEL_STATE_COLD);
        cap->set_capacity(s.spec.capacity);
        cap->set_in_use(static_cast<int>(s.in_system.size()));
        cap->set_no_room(s.state[m] == kCold && resident >= kWarmSlots);
      }
      snap->nodes.push_back(std::move(view));
    }
    gw::IndexSnapshot(*snap, snapshot_.get());
    snapshot_ = std::move(snap);
  }

  void Track(Node& s) {
    s.occupancy_ms += static_cast<double>(s.in_system.size()) * (now_ms_ - s.last_ms);
    s.last_ms = now_ms_;
  }

  // Round robin / random among eligible candidates, warm (READY) first, as a gateway that knows
  // warm from cold but not load or health would.
  int BaselinePick(const gw::RouteRequest& req) {
    const auto* cands = snapshot_->index->Find(req.pipeline, req.model_id);
    if (cands == nullptr) return -1;
    for (bool want_warm : {true, false}) {
      std::vector<int> ok;
      for (const auto& c : *cands) {
        const auto& view = *snapshot_->nodes[c.node];
        const auto& cap = view.status.capabilities(static_cast<int>(c.cap));
        if (req.excluded.count(view.id) != 0 || cap.no_room()) continue;
        if ((cap.state() == MODEL_STATE_READY) != want_warm) continue;
        ok.push_back(static_cast<int>(c.node));
      }
      if (ok.empty()) continue;
      if (policy_ == Policy::kRandom) return ok[rng_() % ok.size()];
      return ok[(rr_[req.model_id]++) % ok.size()];
    }
    return -1;
  }

  void Attempt(int j) {
    Job& job = jobs_[static_cast<size_t>(j)];
    const JobSpec& spec = cluster_.jobs[static_cast<size_t>(j)];
    gw::RouteRequest req{"upscale", absl::StrCat("m", spec.model), job.excluded, 0, ""};
    int node = -1;
    if (policy_ == Policy::kRouter) {
      auto choice = router_.Pick(*snapshot_, req);
      if (choice.ok()) node = std::stoi(choice->node->id.substr(5));
    } else {
      node = BaselinePick(req);
    }
    if (node < 0) return Lose(j);
    ++attempts_;
    ++job.attempt;
    job.node = node;
    job.dispatched_ms = now_ms_;
    Node& s = nodes_[static_cast<size_t>(node)];
    if (now_ms_ >= cluster_.fail_at_ms && node == cluster_.failing) ++to_failed_after_;
    if (slow_since_ > 0 && node == cluster_.slowing) ++slow_attempts_after_;
    s.connection->in_flight().fetch_add(1);
    if (s.failed) return Push(now_ms_ + kFailFastMs, kAttemptFailed, j, job.attempt);
    const int m = spec.model;
    job.warm = s.state[m] == kReady;
    if (s.running >= s.spec.capacity && static_cast<int>(s.queue.size()) >= 2 * s.spec.capacity) {
      return Push(now_ms_ + kRefuseMs, kRefused, j, job.attempt);
    }
    Track(s);
    s.in_system.insert(j);
    if (s.state[m] == kCold) {
      s.state[m] = kLoading;
      Push(now_ms_ + kLoadMs * s.spec.mult, kLoaded, node, m);
      Publish();  // nodes report a capability change at once
    }
    s.queue.push_back(j);
    StartQueued(node);
  }

  // Starts queued jobs whose model is ready while slots are free (FIFO per node, skipping jobs
  // that wait for a load).
  void StartQueued(int node) {
    Node& s = nodes_[static_cast<size_t>(node)];
    for (auto it = s.queue.begin(); it != s.queue.end() && s.running < s.spec.capacity;) {
      const int j = *it;
      const JobSpec& spec = cluster_.jobs[static_cast<size_t>(j)];
      if (s.state[spec.model] != kReady) {
        ++it;
        continue;
      }
      it = s.queue.erase(it);
      ++s.running;
      const double service = kBaseMs[spec.model] * s.spec.mult * spec.jitter;
      Push(now_ms_ + service, kDone, j, jobs_[static_cast<size_t>(j)].attempt);
    }
  }

  void Loaded(int node, int model) {
    Node& s = nodes_[static_cast<size_t>(node)];
    if (s.failed) return;
    s.state[model] = kReady;
    Publish();
    StartQueued(node);
  }

  // Leaves the node: counts, occupancy, in-flight.
  void Leave(Node& s, int j) {
    Track(s);
    s.in_system.erase(j);
    s.connection->in_flight().fetch_sub(1);
  }

  void Done(int j, int attempt) {
    Job& job = jobs_[static_cast<size_t>(j)];
    if (job.done || job.attempt != attempt) return;  // failed over already
    Node& s = nodes_[static_cast<size_t>(job.node)];
    Leave(s, j);
    --s.running;
    if (slow_since_ > 0 && job.node == cluster_.slowing) ++s.served_after_slow;
    if (slow_since_ > 0) ++served_after_slow_;
    if (policy_ == Policy::kRouter) {
      router_.ReportAttempt(*snapshot_->nodes[static_cast<size_t>(job.node)],
                            absl::StrCat("m", cluster_.jobs[static_cast<size_t>(j)].model),
                            gw::AttemptOutcome::kSuccess,
                            absl::Milliseconds(now_ms_ - job.dispatched_ms), !job.warm);
    }
    job.done = true;
    warm_hits_ += job.warm ? 1 : 0;
    latencies_.push_back(now_ms_ - cluster_.jobs[static_cast<size_t>(j)].arrival_ms);
    StartQueued(job.node);
  }

  void AttemptFailed(int j, int attempt, gw::AttemptOutcome outcome) {
    Job& job = jobs_[static_cast<size_t>(j)];
    if (job.done || job.attempt != attempt) return;
    Node& s = nodes_[static_cast<size_t>(job.node)];
    s.connection->in_flight().fetch_sub(1);
    Retry(j, outcome);
  }

  void Retry(int j, gw::AttemptOutcome outcome) {
    Job& job = jobs_[static_cast<size_t>(j)];
    if (policy_ == Policy::kRouter) {
      router_.ReportAttempt(*snapshot_->nodes[static_cast<size_t>(job.node)],
                            absl::StrCat("m", cluster_.jobs[static_cast<size_t>(j)].model), outcome,
                            absl::Milliseconds(now_ms_ - job.dispatched_ms));
    }
    job.excluded.insert(absl::StrCat("orch-", job.node));
    if (job.attempt >= kMaxAttempts || !router_.TryRetry()) return Lose(j);
    ++retries_;
    Attempt(j);
  }

  void Lose(int j) {
    jobs_[static_cast<size_t>(j)].done = true;
    ++lost_;
  }

  // Everything on the node fails now; it keeps advertising (the worst case: nothing removes it).
  void FailNode(int node) {
    Node& s = nodes_[static_cast<size_t>(node)];
    s.failed = true;
    std::vector<int> victims(s.in_system.begin(), s.in_system.end());
    std::sort(victims.begin(), victims.end());
    s.queue.clear();
    s.running = 0;
    for (int j : victims) {
      Leave(s, j);
      Retry(j, gw::AttemptOutcome::kNodeFailure);
    }
  }

  Result Summarise(Clock::duration wall) {
    Result r;
    for (auto& s : nodes_) Track(s);
    r.latencies_ms = std::move(latencies_);
    r.attempts = attempts_;
    r.retries = retries_;
    r.lost = lost_;
    r.warm_hits = warm_hits_;
    r.to_failed_after = to_failed_after_;
    // Load relative to capacity, time-averaged: max over mean.
    double sum = 0, max = 0;
    for (const auto& s : nodes_) {
      const double load = s.occupancy_ms / (now_ms_ * s.spec.capacity);
      sum += load;
      max = std::max(max, load);
    }
    r.max_load = max;
    r.mean_load = sum / static_cast<double>(nodes_.size());
    // The slow node's jobs after it slowed, against its fair share by capacity x speed.
    const Node& slow = nodes_[static_cast<size_t>(cluster_.slowing)];
    double weight = 0, total_weight = 0;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      const double w = nodes_[i].spec.capacity / nodes_[i].spec.mult;
      total_weight += w;
      if (static_cast<int>(i) == cluster_.slowing) weight = w;
    }
    r.slow_jobs_after = slow.served_after_slow;
    r.slow_attempts_after = slow_attempts_after_;
    r.slow_fair_after = static_cast<double>(served_after_slow_) * weight / total_weight;
    r.wall_s = std::chrono::duration<double>(wall).count();
    return r;
  }

  const Cluster& cluster_;
  const Policy policy_;
  std::mt19937_64 rng_;
  double now_ms_ = 0;
  gw::Router router_;  // the Router policy's, and every policy's retry budget
  std::vector<Node> nodes_;
  std::vector<Job> jobs_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  uint64_t seq_ = 0;
  uint64_t version_ = 0;
  std::shared_ptr<gw::Snapshot> snapshot_;
  std::map<std::string, uint64_t> rr_;
  std::vector<double> latencies_;
  int64_t attempts_ = 0, retries_ = 0, warm_hits_ = 0, to_failed_after_ = 0;
  int64_t lost_ = 0;
  double slow_since_ = 0;
  int64_t served_after_slow_ = 0;
  int64_t slow_attempts_after_ = 0;
};

void Simulate(int n, int jobs, uint64_t seed) {
  Cluster cluster = MakeCluster(n, jobs, seed);
  const double duration_s = cluster.jobs.back().arrival_ms / 1000;
  std::printf(
      "\n## 2. Simulation: %d orchestrators, %d jobs, seed %llu\n\n"
      "Poisson arrivals at %.0f jobs/s (70%% of warm capacity) over %.1f simulated s; speeds "
      "0.5x-2x, 1-8 slots, 1-2 of 4 models warm (memory for 2), cold load 5 s. orch-%d fails at "
      "%.1f s (jobs on it fail; later attempts fail in 5 ms; it stays listed), orch-%d slows 10x "
      "at %.1f s. Every policy retries on failure or refusal (queue > 2x slots) up to 3 attempts "
      "through the same retry budget (20%% + 3/s). Latency is arrival to answer. Load: each "
      "node's time-averaged jobs in system (running + queued) per slot; spread is the most "
      "loaded node's over its fair share, the offered 0.7 per slot (and over the mean across "
      "nodes, which is lower when fast nodes do more of the work).\n\n"
      "| policy | p50 ms | p99 ms | p99.9 ms | warm hits | max load / fair | max load / mean | "
      "attempts on slow node after slowdown (jobs it finished then) | attempts on failed node "
      "after failure | "
      "retries | lost | wall s |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      n, jobs, static_cast<unsigned long long>(seed), cluster.offered_per_s, duration_s,
      cluster.failing, cluster.fail_at_ms / 1000, cluster.slowing, cluster.slow_at_ms / 1000);
  for (Policy p : {Policy::kRouter, Policy::kRoundRobin, Policy::kRandom}) {
    Simulation sim(cluster, p, seed);
    Result r = sim.Run();
    const double served = static_cast<double>(r.latencies_ms.size());
    std::printf(
        "| %s | %.0f | %.0f | %.0f | %.2f%% | %.2f | %.2f | %lld (%lld) | %lld | %lld | %lld | "
        "%.1f |\n",
        Name(p), Percentile(r.latencies_ms, 0.5), Percentile(r.latencies_ms, 0.99),
        Percentile(r.latencies_ms, 0.999),
        served > 0 ? 100.0 * static_cast<double>(r.warm_hits) / served : 0.0, r.max_load / 0.7,
        r.max_load / r.mean_load, static_cast<long long>(r.slow_attempts_after),
        static_cast<long long>(r.slow_jobs_after), static_cast<long long>(r.to_failed_after),
        static_cast<long long>(r.retries), static_cast<long long>(r.lost), r.wall_s);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Switchyard gateway router benchmarks"};
  uint64_t seed = 1;
  int jobs = 100000;
  int sim_nodes = 1000;
  int decisions = 200000;
  std::string only;
  app.add_option("--seed", seed, "Seed for every random choice (the simulation is deterministic)");
  app.add_option("--jobs", jobs, "Jobs in the simulation");
  app.add_option("--sim-nodes", sim_nodes, "Orchestrators in the simulation");
  app.add_option("--decisions", decisions, "Timed decisions per row of the cost table");
  app.add_option("--only", only, "Run one part: cost or sim")
      ->check(CLI::IsMember({"cost", "sim"}));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::err);  // ejections are logged at warn
  if (only.empty() || only == "cost") DecisionCost(decisions, seed);
  if (only.empty() || only == "sim") Simulate(sim_nodes, jobs, seed);
  return 0;
}
