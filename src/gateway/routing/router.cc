#include "gateway/routing/router.h"

#include <algorithm>
#include <limits>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metering.h"

namespace switchyard::gateway {
namespace {

using node::v1::NodeCapability;

// Routes with at most this many candidates are scanned whole (cheap, and exact for small
// clusters); larger ones are sampled.
constexpr size_t kScanUpTo = 16;
// Draws per decision when sampling: two for P2C plus extras to step over ineligible or busy
// candidates. When they find no warm candidate with room, Pick scans the route.
constexpr int kMaxDraws = 16;

enum class Class {
  kWarmRoom,   // READY with a free slot
  kCold,       // COLD, UNLOADED or LOADING: can load it
  kWarmFull,   // READY, every slot busy: the job queues
  kOverPrice,  // above the request's price cap
  kIneligible  // draining, excluded, failed, no room to load, ejected
};

RouterOptions Defaults() { return RouterOptions{}; }

}  // namespace

std::optional<double> AdvertisedPrice(const NodeView& node, std::string_view pipeline,
                                      std::string_view model_id) {
  for (const NodeCapability& cap : node.status.capabilities()) {
    if (cap.model_id() != model_id) continue;
    if (pipeline.empty() ? cap.pipeline() != "transcode" : cap.pipeline() == pipeline) {
      return cap.price_per_unit();
    }
  }
  return std::nullopt;
}

// One candidate as judged for one request.
struct Router::Eval {
  uint32_t node = 0;
  const NodeCapability* cap = nullptr;
  Class klass = Class::kIneligible;
  double load = 0;        // in use / capacity
  double ewma_ms = 0;     // valid when measured
  bool measured = false;  // enough recent latency samples
  bool limited = false;   // unmeasured or on probation: bounded share
  const char* why = "";   // for kIneligible
};

struct Router::Context {
  const RouteRequest& request;
  absl::Time now;
  uint64_t model_key;
};

Router::Router(std::function<uint64_t()> random) : Router(Defaults(), std::move(random)) {}

Router::Router(RouterOptions options, std::function<uint64_t()> random,
               std::function<absl::Time()> now)
    : options_(options),
      random_(std::move(random)),
      now_(std::move(now)),
      health_(HealthOptions{options.eject_after_failures, options.eject_base, options.eject_max,
                            options.max_ejected_fraction},
              now_),
      budget_(RetryBudgetOptions{options.retry_budget_ratio, options.retry_budget_min_per_second,
                                 options.retry_budget_window},
              now_),
      decisions_(options.new_node_window),
      limited_decisions_(options.new_node_window) {}

Router::Eval Router::Evaluate(const Snapshot& snapshot, uint32_t node_pos, uint32_t cap_pos,
                              const Context& ctx) const {
  const NodeView& node = *snapshot.nodes[node_pos];
  const NodeCapability& cap = node.status.capabilities(static_cast<int>(cap_pos));
  Eval e;
  e.node = node_pos;
  e.cap = &cap;
  const RouteRequest& req = ctx.request;
  // Before the cap: NaN compares false with it, and a negative price would always be "cheapest".
  if (!metering::ValidPrice(cap.price_per_unit())) {
    e.why = "advertises a price per unit that is not a finite number >= 0";
    return e;
  }
  if (req.max_price_per_unit > 0 && cap.price_per_unit() > req.max_price_per_unit) {
    e.klass = Class::kOverPrice;
    return e;
  }
  if (node.status.draining()) {
    e.why = "is draining";
  } else if (!req.excluded.empty() && req.excluded.count(node.id) != 0) {
    e.why = "already failed this job";
  } else if (cap.state() == node::v1::MODEL_STATE_FAILED) {
    e.why = "failed to load it";
  } else if (cap.no_room()) {  // cold or unloaded, and no memory to load it now
    e.why = "has no memory to load it now";
  } else if (node.stats != nullptr && node.stats->EjectedAt(ctx.now)) {
    e.why = "is ejected after repeated failures";
  } else {
    const int capacity = std::max(1, cap.capacity());
    // The gateway's own in-flight count is fresher than the node's last report.
    const int in_flight = node.connection ? node.connection->in_flight().load() : 0;
    const int in_use = std::max(cap.in_use(), in_flight);
    e.load = static_cast<double>(in_use) / capacity;
    if (cap.state() == node::v1::MODEL_STATE_READY) {
      e.klass = in_use < capacity ? Class::kWarmRoom : Class::kWarmFull;
    } else {
      e.klass = Class::kCold;
    }
    if (node.stats != nullptr) {
      const NodeStats::Latency lat = node.stats->LatencyOf(ctx.model_key);
      const int64_t age_ns = absl::ToUnixNanos(ctx.now) - lat.last_ns;
      e.measured = lat.samples >= static_cast<uint32_t>(options_.min_latency_samples) &&
                   age_ns <= absl::ToInt64Nanoseconds(options_.latency_stale_after);
      e.ewma_ms = lat.ewma_ms;
      e.limited = !e.measured || node.stats->on_probation();
    }
  }
  return e;
}

// Power of two choices between two warm candidates with room. An unmeasured candidate is given
// its rival's latency (neutral: load decides); if the winner is unmeasured or on probation and
// the rival is not, it wins only while such nodes have had under new_node_share of the recent
// decisions, so new nodes get measured without taking a large share before they are.
const Router::Eval& Router::TwoChoices(const Eval& a, const Eval& b, const Context& ctx) const {
  const double la = a.measured ? a.ewma_ms : (b.measured ? b.ewma_ms : 1.0);
  const double lb = b.measured ? b.ewma_ms : (a.measured ? a.ewma_ms : 1.0);
  const bool b_wins = lb * (1 + b.load) < la * (1 + a.load);
  const Eval& win = b_wins ? b : a;
  const Eval& lose = b_wins ? a : b;
  if (win.limited && !lose.limited) {
    const double limited = static_cast<double>(limited_decisions_.Sum(ctx.now)) + 1;
    const double total = static_cast<double>(decisions_.Sum(ctx.now)) + 1;
    if (limited > options_.new_node_share * total) return lose;
  }
  return win;
}

RouteChoice Router::Decide(const Snapshot& snapshot, const Eval& e, const Context& ctx,
                           bool from_p2c) const {
  decisions_.Add(ctx.now);
  if (from_p2c && e.limited) limited_decisions_.Add(ctx.now);
  return RouteChoice{snapshot.nodes[e.node], e.cap->state() == node::v1::MODEL_STATE_READY};
}

absl::StatusOr<RouteChoice> Router::Pick(const Snapshot& snapshot,
                                         const RouteRequest& request) const {
  const size_t known = snapshot.nodes.size();
  if (known_nodes_.load(std::memory_order_relaxed) != known) {
    known_nodes_.store(known, std::memory_order_relaxed);
  }
  std::shared_ptr<const RouteIndex> built;  // only for hand-built snapshots without an index
  const RouteIndex* index = snapshot.index.get();
  if (index == nullptr) {
    built = BuildRouteIndex(snapshot);
    index = built.get();
  }
  const RouteIndex::Candidates* candidates = index->Find(request.pipeline, request.model_id);
  if (candidates == nullptr || candidates->empty()) {
    return absl::NotFoundError(absl::StrCat("no orchestrator offers model '", request.model_id,
                                            "' for pipeline ", request.pipeline));
  }
  const Context ctx{request, now_(), ModelKey(request.model_id)};
  if (!request.preferred.empty()) {
    for (const RouteCandidate& c : *candidates) {
      if (snapshot.nodes[c.node]->id != request.preferred) continue;
      Eval e = Evaluate(snapshot, c.node, c.cap, ctx);
      if (e.klass == Class::kWarmRoom || e.klass == Class::kWarmFull) {
        return Decide(snapshot, e, ctx, false);
      }
      break;
    }
  }
  const size_t n = candidates->size();
  if (n > kScanUpTo) {
    // Rejection sampling: uniform over the warm candidates with room, in O(1) expected draws
    // while a fair fraction of the route has room.
    Eval found[2];
    int nfound = 0;
    uint32_t drawn[kMaxDraws];
    int ndrawn = 0;
    for (int d = 0; d < kMaxDraws && nfound < 2; ++d) {
      const auto i = static_cast<uint32_t>(random_() % n);
      if (std::find(drawn, drawn + ndrawn, i) != drawn + ndrawn) continue;
      drawn[ndrawn++] = i;
      const RouteCandidate c = (*candidates)[i];
      Eval e = Evaluate(snapshot, c.node, c.cap, ctx);
      if (e.klass == Class::kWarmRoom) found[nfound++] = e;
    }
    if (nfound == 2) return Decide(snapshot, TwoChoices(found[0], found[1], ctx), ctx, true);
    if (nfound == 1) return Decide(snapshot, found[0], ctx, false);
    // Few have room: walk the route from a random point until two with room are found, so the
    // cost is O(1 / fraction with room); only a route with none at all is walked whole.
    return Scan(snapshot, *candidates, ctx, random_() % n, /*stop_at_two=*/true);
  }
  return Scan(snapshot, *candidates, ctx, 0, /*stop_at_two=*/false);
}

namespace {

int64_t FreeMemory(const NodeCapability& cap) {
  return cap.free_memory_mb() < 0 ? std::numeric_limits<int64_t>::max() : cap.free_memory_mb();
}

}  // namespace

bool Router::ColdBetter(const Eval& a, const Eval& b) {
  const int64_t fa = FreeMemory(*a.cap), fb = FreeMemory(*b.cap);
  if (fa != fb) return fa > fb;
  return a.load < b.load;
}

absl::StatusOr<RouteChoice> Router::Scan(const Snapshot& snapshot,
                                         const RouteIndex::Candidates& candidates,
                                         const Context& ctx, size_t offset,
                                         bool stop_at_two) const {
  const RouteRequest& request = ctx.request;
  absl::InlinedVector<Eval, kScanUpTo> room;
  absl::InlinedVector<Eval, kScanUpTo> full;
  Eval best_cold;
  int cold_ties = 0;
  int within_price = 0;
  double cheapest = std::numeric_limits<double>::max();
  std::string why_not;
  const size_t n = candidates.size();
  for (size_t k = 0; k < n && !(stop_at_two && room.size() == 2); ++k) {
    const RouteCandidate& c = candidates[(offset + k) % n];
    Eval e = Evaluate(snapshot, c.node, c.cap, ctx);
    switch (e.klass) {
      case Class::kOverPrice:
        cheapest = std::min(cheapest, e.cap->price_per_unit());
        continue;
      case Class::kIneligible:
        why_not = absl::StrCat(snapshot.nodes[c.node]->id, " ", e.why);
        if (e.cap->state() == node::v1::MODEL_STATE_FAILED && !e.cap->error().empty()) {
          absl::StrAppend(&why_not, ": ", e.cap->error());
        }
        break;
      case Class::kWarmRoom:
        room.push_back(e);
        break;
      case Class::kWarmFull:
        full.push_back(e);
        break;
      case Class::kCold:
        // The most free memory on the model's device first (no budget counts as unbounded),
        // then the lowest load.
        if (cold_ties == 0 || ColdBetter(e, best_cold)) {
          best_cold = e;
          cold_ties = 1;
        } else if (!ColdBetter(best_cold, e)) {
          // Reservoir sampling keeps each tied node equally likely without a second pass.
          ++cold_ties;
          if (random_() % static_cast<uint64_t>(cold_ties) == 0) best_cold = e;
        }
        break;
    }
    ++within_price;
  }
  if (within_price == 0) {
    return absl::NotFoundError(absl::StrFormat(
        "no orchestrator offers model '%s' for pipeline %s at or under the price cap of %g per "
        "unit (cheapest: %g)",
        request.model_id, request.pipeline, request.max_price_per_unit, cheapest));
  }
  if (room.size() >= 2) {
    const uint64_t m = room.size();
    const uint64_t i = random_() % m;
    const uint64_t j = (i + 1 + random_() % (m - 1)) % m;
    return Decide(snapshot, TwoChoices(room[i], room[j], ctx), ctx, true);
  }
  if (room.size() == 1) return Decide(snapshot, room[0], ctx, false);
  if (cold_ties > 0) return Decide(snapshot, best_cold, ctx, false);
  if (!full.empty()) {
    // Unmeasured ones are taken at the mean latency of the measured ones.
    double sum = 0;
    int measured = 0;
    for (const Eval& e : full) {
      if (e.measured) sum += e.ewma_ms, ++measured;
    }
    const double typical = measured > 0 ? sum / measured : 1.0;
    const Eval* best = nullptr;
    double best_score = 0;
    int ties = 0;
    for (const Eval& e : full) {
      const double score = (e.measured ? e.ewma_ms : typical) * (1 + e.load);
      if (best == nullptr || score < best_score) {
        best = &e;
        best_score = score;
        ties = 1;
      } else if (score == best_score && random_() % static_cast<uint64_t>(++ties) == 0) {
        best = &e;
      }
    }
    return Decide(snapshot, *best, ctx, false);
  }
  return absl::UnavailableError(absl::StrCat("no orchestrator can take ", request.pipeline, " '",
                                             request.model_id, "' now (", why_not, ")"));
}

void Router::ReportAttempt(const NodeView& node, const std::string& model_id,
                           AttemptOutcome outcome, absl::Duration latency, bool loaded_model) {
  if (node.stats == nullptr) return;
  switch (outcome) {
    case AttemptOutcome::kSuccess:
      if (!loaded_model) {
        node.stats->RecordLatency(ModelKey(model_id), absl::ToDoubleMilliseconds(latency),
                                  options_.ewma_alpha, now_());
      }
      health_.RecordSuccess(node.id, *node.stats);
      break;
    case AttemptOutcome::kNodeFailure:
      health_.RecordFailure(node.id, node.stats, known_nodes_.load(std::memory_order_relaxed));
      break;
    case AttemptOutcome::kRefused:
    case AttemptOutcome::kClientError:
      break;
  }
}

void Router::RecordJob() { budget_.RecordJob(); }

bool Router::TryRetry() { return budget_.TryRetry(); }

bool Router::IsEjected(const std::string& node_id) const { return health_.IsEjected(node_id); }

}  // namespace switchyard::gateway
