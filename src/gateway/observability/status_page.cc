#include "gateway/observability/status_page.h"

#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"

namespace switchyard::gateway {
namespace {

// The page's vocabulary for model states: operators think of READY as "warm".
const char* PageStateName(node::v1::ModelState state) {
  return state == node::v1::MODEL_STATE_READY ? "warm" : ModelStateName(state);
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

// Keeps rates readable (and the JSON small): two decimals are plenty for a human.
double Round2(double v) { return static_cast<double>(static_cast<int64_t>(v * 100 + 0.5)) / 100; }

http::Response MethodNotAllowed() {
  http::Response r;
  r.status = 405;
  r.body = "use GET\n";
  r.headers["Allow"] = "GET";
  return r;
}

// The page. Everything it shows comes from /status.json and is inserted as text (never as HTML),
// so an orchestrator's id or error message cannot inject markup into an operator's browser.
const char kPage[] = R"html(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchyard gateway status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f4f6f9; }
  header { background: #1d2330; color: #fff; padding: 12px 24px; display: flex;
           align-items: baseline; gap: 24px; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  header .stat { font-size: 13px; opacity: .85; }
  header .stat b { font-size: 16px; opacity: 1; }
  main { padding: 16px 24px; }
  h2 { font-size: 15px; margin: 20px 0 8px; }
  .node { background: #fff; border: 1px solid #d8dde6; border-radius: 6px; margin-bottom: 12px; }
  .node-head { padding: 8px 12px; display: flex; gap: 16px; align-items: baseline;
               border-bottom: 1px solid #e6e9ef; flex-wrap: wrap; }
  .node-head .id { font-weight: 600; font-size: 15px; }
  .muted { color: #667085; font-size: 12px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 5px 12px; border-bottom: 1px solid #eef0f4;
           vertical-align: top; }
  th { font-weight: 600; font-size: 12px; color: #667085; }
  .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
           font-weight: 600; }
  .ready, .warm { background: #d9f2e3; color: #146c3b; }
  .cold, .unloaded { background: #e3ebf7; color: #2d4f86; }
  .loading, .draining { background: #fff1c9; color: #7a5a00; }
  .failed, .ejected { background: #fbdcdc; color: #9b1c1c; }
  .bar { display: inline-block; width: 80px; height: 8px; background: #eef0f4;
         border-radius: 4px; vertical-align: middle; margin-right: 6px; overflow: hidden; }
  .bar i { display: block; height: 100%; background: #4b7bd8; }
  .err { color: #9b1c1c; font-size: 12px; }
  .nowrap { white-space: nowrap; }
  #banner { display: none; background: #fbdcdc; color: #9b1c1c; padding: 8px 24px; }
  .empty { color: #667085; padding: 8px 12px; }
</style>
</head>
<body>
<header>
  <h1>Switchyard &middot; <span id="gateway-id"></span></h1>
  <span class="stat">jobs/s <b id="jobs-per-second">-</b></span>
  <span class="stat">failures/s <b id="failures-per-second">-</b></span>
  <span class="stat">orchestrators <b id="orchestrator-count">-</b></span>
  <span class="stat">jobs since start <b id="jobs-total">-</b></span>
  <span class="stat">up <b id="uptime">-</b></span>
  <span class="stat">updated <span id="updated">never</span></span>
</header>
<div id="banner"></div>
<main>
  <h2>Orchestrators</h2>
  <div id="orchestrators"><div class="empty">loading...</div></div>
  <h2>Recent errors</h2>
  <div class="node"><table>
    <thead><tr><th>time (UTC)</th><th>pipeline</th><th>model</th><th>orchestrator</th>
      <th>status</th><th>attempts</th><th>message</th><th>request id</th></tr></thead>
    <tbody id="recent-errors"></tbody>
  </table></div>
</main>
<script>
"use strict";
const POLL_MS = 2000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) {
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function badge(state) { return el("span", {"class": "badge " + state}, state); }

function loadCell(inUse, capacity) {
  const pct = capacity > 0 ? Math.min(100, Math.round(100 * inUse / capacity)) : 0;
  const bar = el("span", {"class": "bar"});
  const fill = el("i");
  fill.style.width = pct + "%";
  bar.append(fill);
  return el("td", {}, bar, inUse + " / " + capacity);
}

function price(m) {
  if (!m.price_per_unit) return "free";
  return m.price_per_unit.toPrecision(3) + " / " + (m.unit || "unit");
}

function uptime(s) {
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function renderNode(o) {
  const head = el("div", {"class": "node-head"},
    el("span", {"class": "id"}, o.id), badge(o.state),
    el("span", {"class": "muted"}, o.address),
    el("span", {"class": "muted"}, "in flight from this gateway: " + o.in_flight),
    el("span", {"class": "muted"}, o.hardware.length ? "hardware: " + o.hardware.join(", ")
                                                     : "software only"),
    el("span", {"class": o.hardware_check === "ok" || o.hardware_check === "unchecked" ? "muted"
                                                                                     : "err",
                "title": o.hardware_check_detail || ""},
       "hardware check: " + (o.hardware_check || "unchecked")));
  if (o.consecutive_failures > 0) {
    head.append(el("span", {"class": "err"}, o.consecutive_failures + " failures in a row"));
  }
  const body = el("tbody");
  for (const m of o.models) {
    const state = el("td", {}, badge(m.state));
    if (m.no_room) state.append(" ", el("span", {"class": "muted"}, "no room to load"));
    if (m.error) state.append(el("div", {"class": "err"}, m.error));
    body.append(el("tr", {"data-orchestrator": o.id, "data-model": m.model_id,
                          "data-state": m.state},
      el("td", {}, m.pipeline), el("td", {}, m.model_id), state,
      loadCell(m.in_use, m.capacity), el("td", {}, price(m)),
      el("td", {}, m.memory_mb > 0 ? m.memory_mb + " MiB" : "-")));
  }
  const table = el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "pipeline"), el("th", {}, "model"),
      el("th", {}, "state"), el("th", {}, "in use / capacity"), el("th", {}, "price"),
      el("th", {}, "memory"))), body);
  if (!o.models.length) table.append(el("caption", {"class": "empty"}, "offers nothing"));
  return el("div", {"class": "node", "data-orchestrator": o.id, "data-state": o.state},
            head, table);
}

function render(s) {
  document.getElementById("gateway-id").textContent = s.gateway_id;
  document.getElementById("jobs-per-second").textContent = s.jobs_per_second.toFixed(2);
  document.getElementById("failures-per-second").textContent =
      s.failures_per_second.toFixed(2);
  document.getElementById("orchestrator-count").textContent = s.orchestrators.length;
  document.getElementById("jobs-total").textContent = s.jobs_total;
  document.getElementById("uptime").textContent = uptime(s.uptime_seconds);
  document.getElementById("updated").textContent = s.time;
  const nodes = document.getElementById("orchestrators");
  nodes.replaceChildren(...s.orchestrators.map(renderNode));
  if (!s.orchestrators.length) {
    nodes.append(el("div", {"class": "empty"}, "no orchestrator has registered"));
  }
  const errors = document.getElementById("recent-errors");
  errors.replaceChildren(...s.recent_errors.map(e => el("tr", {"class": "recent-error"},
    el("td", {"class": "nowrap", "title": e.time}, e.time.replace("T", " ").replace("Z", "")),
    el("td", {}, e.pipeline), el("td", {"class": "nowrap"}, e.model_id),
    el("td", {}, e.orchestrator || "-"), el("td", {"class": "err"}, e.code),
    el("td", {}, e.attempts), el("td", {}, e.message), el("td", {"class": "muted"},
    e.request_id))));
  if (!s.recent_errors.length) {
    errors.append(el("tr", {}, el("td", {"colspan": 8, "class": "empty"}, "none")));
  }
}

async function poll() {
  const banner = document.getElementById("banner");
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    if (!r.ok) throw new Error("status.json answered " + r.status);
    render(await r.json());
    banner.style.display = "none";
  } catch (e) {
    banner.textContent = "cannot reach the gateway: " + e.message + " (retrying)";
    banner.style.display = "block";
  }
  setTimeout(poll, POLL_MS);
}
poll();
</script>
</body>
</html>
)html";

}  // namespace

std::string StatusJson(const StatusSources& sources, absl::Time now) {
  nlohmann::json doc;
  doc["gateway_id"] = sources.gateway_id;
  doc["time"] = Rfc3339(now);
  doc["uptime_seconds"] = Round2(absl::ToDoubleSeconds(now - sources.started));
  if (sources.jobs != nullptr) {
    doc["jobs_per_second"] = Round2(sources.jobs->JobsPerSecond(now, sources.started));
    doc["failures_per_second"] = Round2(sources.jobs->FailuresPerSecond(now, sources.started));
    doc["rate_window_seconds"] = absl::ToDoubleSeconds(sources.jobs->window());
    doc["jobs_total"] = sources.jobs->jobs_total();
    doc["failures_total"] = sources.jobs->failures_total();
  } else {
    doc["jobs_per_second"] = 0;
    doc["failures_per_second"] = 0;
    doc["rate_window_seconds"] = 0;
    doc["jobs_total"] = 0;
    doc["failures_total"] = 0;
  }

  nlohmann::json nodes = nlohmann::json::array();
  auto snapshot = sources.membership->snapshot();
  for (const auto& node : snapshot->nodes) {
    nlohmann::json n;
    n["id"] = node->id;
    n["address"] = node->connection ? node->connection->address() : node->status.address();
    n["source"] = node->source == NodeSource::kStatic ? "static" : "registered";
    // Draining wins over ejected: the node is leaving either way, and that is the operator's
    // (or the node's) decision rather than the router's.
    const char* state = "ready";
    if (node->status.draining()) {
      state = "draining";
    } else if (sources.router != nullptr && sources.router->IsEjected(node->id)) {
      state = "ejected";
    }
    n["state"] = state;
    n["in_flight"] = node->connection ? node->connection->in_flight().load() : 0;
    n["consecutive_failures"] = node->stats ? node->stats->consecutive_failures() : 0;
    n["hardware"] = nlohmann::json::array();
    for (const auto& h : node->status.hardware()) n["hardware"].push_back(h);
    {
      const auto check = sources.hardware != nullptr ? sources.hardware->Lookup(node->id)
                                                     : std::optional<HardwareCheckRecord>();
      n["hardware_check"] =
          HardwareVerdictName(check ? check->verdict : HardwareVerdict::kUnchecked);
      n["hardware_check_detail"] = check ? check->detail : "";
    }
    nlohmann::json models = nlohmann::json::array();
    for (const auto& c : node->status.capabilities()) {
      nlohmann::json m;
      m["pipeline"] = c.pipeline();
      m["model_id"] = c.model_id();
      m["state"] = PageStateName(c.state());
      m["error"] = c.error();
      m["capacity"] = c.capacity();
      m["in_use"] = c.in_use();
      m["price_per_unit"] = c.price_per_unit();
      m["unit"] = c.unit();
      m["memory_mb"] = c.memory_mb();
      m["free_memory_mb"] = c.free_memory_mb();
      m["no_room"] = c.no_room();
      models.push_back(std::move(m));
    }
    n["models"] = std::move(models);
    nodes.push_back(std::move(n));
  }
  doc["orchestrators"] = std::move(nodes);

  nlohmann::json errors = nlohmann::json::array();
  if (sources.jobs != nullptr) {
    for (const auto& f : sources.jobs->errors().Newest()) {
      errors.push_back({{"time", Rfc3339(f.time)},
                        {"request_id", f.request_id},
                        {"pipeline", f.pipeline},
                        {"model_id", f.model_id},
                        {"orchestrator", f.orchestrator},
                        {"code", f.code},
                        {"message", f.message},
                        {"attempts", f.attempts}});
    }
  }
  doc["recent_errors"] = std::move(errors);
  // Replace invalid UTF-8 (an orchestrator's error text is not checked) instead of throwing.
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

const std::string& StatusPageHtml() {
  static const std::string* page = new std::string(kPage);
  return *page;
}

void AddStatusRoutes(StatusSources sources, std::map<std::string, http::Handler>* routes) {
  auto shared = std::make_shared<const StatusSources>(std::move(sources));
  (*routes)["/status"] = [](const http::Request& req, http::Reply reply) {
    if (req.method != "GET") return reply(MethodNotAllowed());
    http::Response r;
    r.content_type = "text/html; charset=utf-8";
    r.headers["Cache-Control"] = "no-store";
    r.body = StatusPageHtml();
    reply(std::move(r));
  };
  (*routes)["/status.json"] = [shared](const http::Request& req, http::Reply reply) {
    if (req.method != "GET") return reply(MethodNotAllowed());
    http::Response r = http::Json(200, StatusJson(*shared, absl::Now()));
    r.headers["Cache-Control"] = "no-store";
    reply(std::move(r));
  };
  (*routes)["/"] = [](const http::Request& req, http::Reply reply) {
    if (req.method != "GET") return reply(MethodNotAllowed());
    http::Response r;
    r.status = 302;
    r.headers["Location"] = "/status";
    r.body = "see /status\n";
    reply(std::move(r));
  };
}

}  // namespace switchyard::gateway
