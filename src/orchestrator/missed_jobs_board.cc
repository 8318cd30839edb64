#include "orchestrator/missed_jobs_board.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace switchyard::orchestrator {
namespace {

bool Printable(const std::string& s) {
  for (unsigned char ch : s) {
    if (ch < 0x20 || ch > 0x7e) return false;
  }
  return true;
}

absl::Status CheckName(const char* what, const std::string& s, bool required) {
  if (required && s.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (s.size() > MissedJobsBoard::kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", s.size(), " bytes; at most ", MissedJobsBoard::kMaxNameBytes));
  }
  if (!Printable(s)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not printable ASCII"));
  }
  return absl::OkStatus();
}

// Adds to `counter` what `now` has over `before`; a smaller `now` is a restarted gateway
// counting from zero again, so all of it is new.
void Advance(prometheus::Counter& counter, int64_t before, int64_t now) {
  const int64_t delta = now >= before ? now - before : now;
  if (delta > 0) counter.Increment(static_cast<double>(delta));
}

}  // namespace

std::string MissedJobsBoard::ReasonName(int reason) {
  switch (reason) {
    case node::v1::MissedJobs::REASON_PRICE:
      return "price";
    case node::v1::MissedJobs::REASON_BUSY:
      return "busy";
    case node::v1::MissedJobs::REASON_COLD:
      return "cold";
    case node::v1::MissedJobs::REASON_EJECTED:
      return "ejected";
    case node::v1::MissedJobs::REASON_DRAINING:
      return "draining";
    case node::v1::MissedJobs::REASON_MODEL_FAILED:
      return "model_failed";
    case node::v1::MissedJobs::REASON_SLOWER:
      return "slower";
    default:
      return "";
  }
}

MissedJobsBoard::MissedJobsBoard(std::function<Routes()> offered, Metrics* metrics)
    : offered_(std::move(offered)) {
  if (metrics == nullptr) return;
  missed_total_ = &metrics->CounterFamily(
      "missed_jobs_total",
      "Jobs a gateway routed to another node although this one offered the model, by gateway, "
      "pipeline, model and reason (price, busy, cold, ejected, draining, model_failed, slower).");
  missed_last_hour_ = &metrics->GaugeFamily(
      "missed_jobs_last_hour", "The same, in the gateway's last hour, as it last reported.");
  won_total_ = &metrics->CounterFamily(
      "won_jobs_total", "Routing decisions this node won, by gateway, pipeline and model.");
  median_price_ = &metrics->GaugeFamily(
      "median_winning_price",
      "Median price per unit of the nodes that won the gateway's decisions on a pipeline and "
      "model in its last hour, weighted by their wins.");
}

absl::Status MissedJobsBoard::Validate(const node::v1::MissedJobs& report) {
  if (report.routes_size() > kMaxRoutes) {
    return absl::InvalidArgumentError(
        absl::StrCat("missed jobs: ", report.routes_size(), " routes; at most ", kMaxRoutes));
  }
  if (absl::Status s = CheckName("gateway_id", report.gateway_id(), false); !s.ok()) return s;
  for (const auto& route : report.routes()) {
    if (absl::Status s = CheckName("pipeline", route.pipeline(), true); !s.ok()) return s;
    if (absl::Status s = CheckName("model_id", route.model_id(), true); !s.ok()) return s;
    if (route.won_total() < 0 || route.won_last_hour() < 0) {
      return absl::InvalidArgumentError("missed jobs: a negative count of won jobs");
    }
    if (route.missed_size() > kMaxCountsPerRoute) {
      return absl::InvalidArgumentError(absl::StrCat("missed jobs: ", route.missed_size(),
                                                     " counts for one route; at most ",
                                                     kMaxCountsPerRoute));
    }
    for (const auto& c : route.missed()) {
      if (ReasonName(c.reason()).empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("missed jobs: unknown reason ", static_cast<int>(c.reason())));
      }
      if (c.total() < 0 || c.last_hour() < 0) {
        return absl::InvalidArgumentError("missed jobs: a negative count");
      }
    }
    if (route.has_median_winning_price() &&
        (!std::isfinite(route.median_winning_price()) || route.median_winning_price() < 0)) {
      return absl::InvalidArgumentError(
          "missed jobs: median_winning_price is not a finite number >= 0");
    }
  }
  return absl::OkStatus();
}

absl::Status MissedJobsBoard::Accept(const std::string& gateway,
                                     const node::v1::MissedJobs& report) {
  if (absl::Status valid = Validate(report); !valid.ok()) {
    spdlog::warn("ignored a missed-jobs report from gateway {}: {}", gateway,
                 std::string(valid.message()));
    return valid;
  }
  Gateway fresh;
  fresh.gateway_id = report.gateway_id();
  fresh.at = absl::Now();
  const Routes offered = offered_ ? offered_() : Routes();
  for (const auto& in : report.routes()) {
    if (offered_ && offered.count({in.pipeline(), in.model_id()}) == 0) continue;  // not ours
    Route& r = fresh.routes[{in.pipeline(), in.model_id()}];
    r.won_total = in.won_total();
    r.won_last_hour = in.won_last_hour();
    for (const auto& c : in.missed()) {
      auto& [total, last_hour] = r.missed[static_cast<int>(c.reason())];
      total = std::max(total, c.total());  // a repeated reason: the larger count
      last_hour = std::max(last_hour, c.last_hour());
    }
    r.has_median = in.has_median_winning_price();
    r.median_winning_price = in.median_winning_price();
  }
  MutexLock lock(&mu_);
  auto it = gateways_.find(gateway);
  if (it == gateways_.end()) {
    if (gateways_.size() >= kMaxGateways) {
      return absl::ResourceExhaustedError(
          absl::StrCat("missed jobs: already ", kMaxGateways, " gateways reported"));
    }
    it = gateways_.emplace(gateway, Gateway{}).first;
  }
  if (missed_total_ != nullptr) {
    for (const auto& [key, r] : fresh.routes) {
      const auto& [pipeline, model] = key;
      const auto old = it->second.routes.find(key);
      const Route* before = old == it->second.routes.end() ? nullptr : &old->second;
      const std::map<std::string, std::string> labels{
          {"gateway", gateway}, {"pipeline", pipeline}, {"model", model}};
      Advance(won_total_->Add(labels), before ? before->won_total : 0, r.won_total);
      for (const auto& [reason, counts] : r.missed) {
        auto with_reason = labels;
        with_reason["reason"] = ReasonName(reason);
        int64_t was = 0;
        if (before != nullptr) {
          if (auto b = before->missed.find(reason); b != before->missed.end()) {
            was = b->second.first;
          }
        }
        Advance(missed_total_->Add(with_reason), was, counts.first);
        missed_last_hour_->Add(with_reason).Set(static_cast<double>(counts.second));
      }
      if (r.has_median) median_price_->Add(labels).Set(r.median_winning_price);
    }
  }
  it->second = std::move(fresh);
  return absl::OkStatus();
}

std::string MissedJobsBoard::Describe() const {
  MutexLock lock(&mu_);
  if (gateways_.empty()) return "missed jobs: no gateway has reported any decision yet\n";
  std::string out;
  for (const auto& [address, g] : gateways_) {
    for (const auto& [key, r] : g.routes) {
      absl::StrAppend(&out, "gateway ", address);
      if (!g.gateway_id.empty()) absl::StrAppend(&out, " (", g.gateway_id, ")");
      absl::StrAppend(&out, ", ", key.first, " '", key.second, "': won ", r.won_last_hour,
                      " jobs in the last hour (", r.won_total, " in all)");
      for (const auto& [reason, counts] : r.missed) {
        absl::StrAppend(&out, "; lost ", counts.second, " in the last hour (", counts.first,
                        " in all) ", reason == node::v1::MissedJobs::REASON_SLOWER ? "as " : "on ",
                        ReasonName(reason));
      }
      if (r.has_median) {
        absl::StrAppend(&out, absl::StrFormat("; the median winning price was %g per unit",
                                              r.median_winning_price));
      }
      absl::StrAppend(&out, "\n");
    }
  }
  return out;
}

}  // namespace switchyard::orchestrator
