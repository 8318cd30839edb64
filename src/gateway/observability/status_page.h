// The gateway's status page for operators, on its HTTP port:
//   GET /status       a plain HTML page (embedded, no build step) whose script polls /status.json
//   GET /status.json  orchestrators (state ready/draining/ejected), their models (warm, cold,
//                     loading, failed + error, unloaded), load vs capacity, price, the gateway's
//                     recent job failures and jobs per second
//   GET /             redirects to /status
// The job counts and recent errors come from every job the gateway dispatches (JobDispatch: the
// unary pipelines, Transcode and TranscodeStream segments, the HTTP API through them, LLM streams
// and KServe ModelInfer calls).
#pragma once

#include <map>
#include <string>

#include "absl/time/time.h"
#include "common/http_server.h"
#include "gateway/membership/hardware_checker.h"
#include "gateway/membership/membership.h"
#include "gateway/observability/recent_errors.h"
#include "gateway/routing/router.h"

namespace switchyard::gateway {

// What the page shows, read at each request. The pointers must outlive the routes.
struct StatusSources {
  std::string gateway_id;
  const Membership* membership = nullptr;
  const Router* router = nullptr;  // for ejections; may be null (nothing shows as ejected)
  const JobLog* jobs = nullptr;    // may be null (no rates, no recent errors)
  absl::Time started;              // when the gateway started (uptime, rates just after start)
  const HardwareChecker* hardware = nullptr;  // may be null (every node "unchecked")
};

// The /status.json document at `now`: gateway_id, time (RFC 3339 UTC), uptime_seconds,
// jobs_per_second and failures_per_second (over rate_window_seconds), jobs_total,
// failures_total; orchestrators[]: id, address, source, state (ready, draining, ejected),
// in_flight (this gateway's jobs on it), consecutive_failures, hardware[], hardware_check
// (HardwareVerdictName) and hardware_check_detail, models[]: pipeline,
// model_id, state (warm, cold, loading, failed, unloaded), error, capacity, in_use,
// price_per_unit, unit, memory_mb, free_memory_mb, no_room; recent_errors[] (newest first):
// time, request_id, pipeline, model_id, orchestrator (empty when none was tried), code
// (gRPC code name), message, attempts.
std::string StatusJson(const StatusSources& sources, absl::Time now);

// The page's HTML, script and style included.
const std::string& StatusPageHtml();

// Adds /status, /status.json and / to `routes`. GET and HEAD only; others answer 405.
void AddStatusRoutes(StatusSources sources, std::map<std::string, http::Handler>* routes);

}  // namespace switchyard::gateway
