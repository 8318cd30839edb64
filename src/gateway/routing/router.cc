#include "gateway/routing/router.h"

#include <algorithm>
#include <limits>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metering.h"
#include "common/status.h"

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

absl::string_view RouteFilterName(RouteFilter filter) {
  switch (filter) {
    case RouteFilter::kNone:
      return "none";
    case RouteFilter::kInvalidPrice:
      return "invalid_price";
    case RouteFilter::kOverPrice:
      return "price_over_cap";
    case RouteFilter::kDraining:
      return "draining";
    case RouteFilter::kExcluded:
      return "already_tried";
    case RouteFilter::kModelFailed:
      return "model_failed";
    case RouteFilter::kNoRoomToLoad:
      return "no_room";
    case RouteFilter::kEjected:
      return "ejected";
    case RouteFilter::kNotOffered:
      return "not_offered";
  }
  return "unknown";
}

absl::string_view RouteFilterText(RouteFilter filter) {
  switch (filter) {
    case RouteFilter::kNone:
      return "";
    case RouteFilter::kInvalidPrice:
      return "advertises a price per unit that is not a finite number >= 0";
    case RouteFilter::kOverPrice:
      return "asks more than the price cap";
    case RouteFilter::kDraining:
      return "is draining";
    case RouteFilter::kExcluded:
      return "already failed this job";
    case RouteFilter::kModelFailed:
      return "failed to load it";
    case RouteFilter::kNoRoomToLoad:
      return "has no memory to load it now";
    case RouteFilter::kEjected:
      return "is ejected after repeated failures";
    case RouteFilter::kNotOffered:
      return "does not offer it";
  }
  return "";
}

absl::string_view RouteTierName(RouteTier tier) {
  switch (tier) {
    case RouteTier::kWarmRoom:
      return "warm";
    case RouteTier::kCold:
      return "cold";
    case RouteTier::kWarmFull:
      return "warm_full";
    case RouteTier::kFiltered:
      return "filtered";
  }
  return "unknown";
}

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
  double load = 0;                          // in use / capacity
  double ewma_ms = 0;                       // valid when measured
  bool measured = false;                    // enough recent latency samples
  bool limited = false;                     // unmeasured or on probation: bounded share
  RouteFilter filter = RouteFilter::kNone;  // for kIneligible and kOverPrice
};

// The candidates one decision judged, for the missed-job counters: a fixed array on Pick's
// stack (no allocation); candidates judged after the first kJudged are not counted.
struct Judged {
  static constexpr int kJudged = 16;
  struct Entry {
    uint32_t node;
    Class klass;
    RouteFilter filter;
  };
  Entry entries[kJudged];
  int n = 0;
};

struct Router::Context {
  const RouteRequest& request;
  absl::Time now;
  uint64_t model_key;
  Judged* judged = nullptr;  // null: count nothing (Explain)
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
    e.filter = RouteFilter::kInvalidPrice;
  } else if (req.max_price_per_unit > 0 && cap.price_per_unit() > req.max_price_per_unit) {
    e.klass = Class::kOverPrice;
    e.filter = RouteFilter::kOverPrice;
  } else if (node.status.draining()) {
    e.filter = RouteFilter::kDraining;
  } else if (!req.excluded.empty() && req.excluded.count(node.id) != 0) {
    e.filter = RouteFilter::kExcluded;
  } else if (cap.state() == node::v1::MODEL_STATE_FAILED) {
    e.filter = RouteFilter::kModelFailed;
  } else if (cap.no_room()) {  // cold or unloaded, and no memory to load it now
    e.filter = RouteFilter::kNoRoomToLoad;
  } else if (node.stats != nullptr && node.stats->EjectedAt(ctx.now)) {
    e.filter = RouteFilter::kEjected;
  } else {
    int capacity = std::max(1, cap.capacity());
    // A node whose hardware claim failed its check is routed as what it performs like.
    if (node.stats != nullptr && node.stats->capacity_cap() > 0) {
      capacity = std::min(capacity, node.stats->capacity_cap());
    }
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
  if (ctx.judged != nullptr && ctx.judged->n < Judged::kJudged) {
    ctx.judged->entries[ctx.judged->n++] = Judged::Entry{node_pos, e.klass, e.filter};
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
  if (ctx.judged != nullptr) CountDecision(snapshot, e, ctx);
  return RouteChoice{snapshot.nodes[e.node], e.cap->state() == node::v1::MODEL_STATE_READY,
                     e.klass == Class::kWarmFull};
}

namespace {

// Why a judged candidate lost to the chosen one; nullopt: not a miss (already tried for the job).
std::optional<MissReason> MissOf(Class klass, RouteFilter filter) {
  switch (klass) {
    case Class::kWarmRoom:
      return MissReason::kSlower;
    case Class::kCold:
      return MissReason::kCold;
    case Class::kWarmFull:
      return MissReason::kBusy;
    case Class::kOverPrice:
      return MissReason::kPrice;
    case Class::kIneligible:
      break;
  }
  switch (filter) {
    case RouteFilter::kInvalidPrice:
    case RouteFilter::kOverPrice:
      return MissReason::kPrice;
    case RouteFilter::kDraining:
      return MissReason::kDraining;
    case RouteFilter::kModelFailed:
      return MissReason::kModelFailed;
    case RouteFilter::kNoRoomToLoad:
      return MissReason::kCold;
    case RouteFilter::kEjected:
      return MissReason::kEjected;
    case RouteFilter::kNone:
    case RouteFilter::kExcluded:
    case RouteFilter::kNotOffered:
      break;
  }
  return std::nullopt;
}

}  // namespace

void Router::CountDecision(const Snapshot& snapshot, const Eval& chosen, const Context& ctx) const {
  const uint64_t route = RouteKey(ctx.request.pipeline, ctx.request.model_id);
  const uint64_t epoch = NodeStats::HourEpoch(ctx.now);
  const NodeView& winner = *snapshot.nodes[chosen.node];
  if (winner.stats != nullptr) winner.stats->CountWin(route, epoch);
  const Judged& judged = *ctx.judged;
  for (int i = 0; i < judged.n; ++i) {
    const Judged::Entry& j = judged.entries[i];
    if (j.node == chosen.node) continue;
    const NodeView& node = *snapshot.nodes[j.node];
    if (node.stats == nullptr) continue;
    if (std::optional<MissReason> why = MissOf(j.klass, j.filter)) {
      node.stats->CountMiss(route, *why, epoch);
    }
  }
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
  Judged judged;
  const Context ctx{request, now_(), ModelKey(request.model_id), &judged};
  if (!request.preferred.empty()) {
    for (const RouteCandidate& c : *candidates) {
      if (snapshot.nodes[c.node]->id != request.preferred) continue;
      Eval e = Evaluate(snapshot, c.node, c.cap, ctx);
      if (e.klass == Class::kWarmRoom || e.klass == Class::kWarmFull) {
        return Decide(snapshot, e, ctx, false);
      }
      break;
    }
    judged.n = 0;  // judged again below
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
    judged.n = 0;  // the walk judges the drawn ones again
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
        why_not = absl::StrCat(snapshot.nodes[c.node]->id, " ", RouteFilterText(e.filter));
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

RouteExplanation Router::Explain(const Snapshot& snapshot, const RouteRequest& request) const {
  RouteExplanation out;
  std::shared_ptr<const RouteIndex> built;
  const RouteIndex* index = snapshot.index.get();
  if (index == nullptr) {
    built = BuildRouteIndex(snapshot);
    index = built.get();
  }
  const RouteIndex::Candidates* candidates = index->Find(request.pipeline, request.model_id);
  const Context ctx{request, now_(), ModelKey(request.model_id), nullptr};
  std::vector<bool> offers(snapshot.nodes.size(), false);
  std::vector<Eval> evals;
  if (candidates != nullptr) {
    for (const RouteCandidate& c : *candidates) {
      offers[c.node] = true;
      evals.push_back(Evaluate(snapshot, c.node, c.cap, ctx));
    }
  }
  // Unmeasured candidates are scored at the mean latency of the measured ones, as Scan does.
  double sum = 0;
  int measured = 0;
  for (const Eval& e : evals) {
    const bool eligible = e.klass != Class::kOverPrice && e.klass != Class::kIneligible;
    if (eligible && e.measured) sum += e.ewma_ms, ++measured;
  }
  const double typical = measured > 0 ? sum / measured : 1.0;
  const Eval* best = nullptr;
  RouteTier best_tier = RouteTier::kFiltered;
  double best_score = 0;
  for (const Eval& e : evals) {
    const NodeView& node = *snapshot.nodes[e.node];
    CandidateExplanation x;
    x.node_id = node.id;
    x.address = node.status.address();
    x.price_per_unit = e.cap->price_per_unit();
    x.model_state = ModelStateName(e.cap->state());
    x.free_memory_mb = e.cap->free_memory_mb() < 0 ? -1 : e.cap->free_memory_mb();
    x.filter = e.filter;
    switch (e.klass) {
      case Class::kWarmRoom:
        x.tier = RouteTier::kWarmRoom;
        break;
      case Class::kCold:
        x.tier = RouteTier::kCold;
        break;
      case Class::kWarmFull:
        x.tier = RouteTier::kWarmFull;
        break;
      case Class::kOverPrice:
      case Class::kIneligible:
        x.tier = RouteTier::kFiltered;
        break;
    }
    if (x.tier == RouteTier::kFiltered) {
      x.reason = std::string(RouteFilterText(e.filter));
      if (e.filter == RouteFilter::kOverPrice) {
        absl::StrAppend(&x.reason, absl::StrFormat(" (%g > %g per unit)", e.cap->price_per_unit(),
                                                   request.max_price_per_unit));
      } else if (e.filter == RouteFilter::kModelFailed && !e.cap->error().empty()) {
        absl::StrAppend(&x.reason, ": ", e.cap->error());
      } else if (e.filter == RouteFilter::kEjected && node.stats != nullptr) {
        x.ejected_until = node.stats->EjectedUntil(ctx.now);
        if (x.ejected_until.has_value()) {
          absl::StrAppend(
              &x.reason, " until ",
              absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", *x.ejected_until, absl::UTCTimeZone()));
        }
      }
    } else {
      ++out.eligible;
      x.load = e.load;
      x.measured = e.measured;
      x.latency_ms = e.measured ? e.ewma_ms : typical;
      x.score = x.latency_ms * (1 + e.load);
      const bool better =
          best == nullptr || x.tier < best_tier ||
          (x.tier == best_tier &&
           (x.tier == RouteTier::kCold ? ColdBetter(e, *best) : x.score < best_score));
      if (better) {
        best = &e;
        best_tier = x.tier;
        best_score = x.score;
      }
    }
    out.candidates.push_back(std::move(x));
  }
  out.offering = static_cast<int>(evals.size());
  for (size_t i = 0; i < evals.size(); ++i) {
    out.candidates[i].best = best == &evals[i];
  }
  // Eligible first, by tier then score; then the filtered ones.
  std::stable_sort(out.candidates.begin(), out.candidates.end(),
                   [](const CandidateExplanation& a, const CandidateExplanation& b) {
                     if (a.tier != b.tier) return a.tier < b.tier;
                     if (a.best != b.best) return a.best;
                     return a.tier != RouteTier::kFiltered && a.score < b.score;
                   });
  for (size_t i = 0; i < snapshot.nodes.size(); ++i) {
    if (offers[i]) continue;
    const NodeView& node = *snapshot.nodes[i];
    CandidateExplanation x;
    x.node_id = node.id;
    x.address = node.status.address();
    x.filter = RouteFilter::kNotOffered;
    x.reason = absl::StrCat(RouteFilterText(RouteFilter::kNotOffered), " (", request.pipeline, " '",
                            request.model_id, "')");
    out.candidates.push_back(std::move(x));
  }
  return out;
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

void Router::Ban(const NodeView& node, absl::Duration duration) {
  if (node.stats == nullptr) return;
  health_.Ban(node.id, node.stats, now_() + duration);
}

}  // namespace switchyard::gateway
