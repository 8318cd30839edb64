// `capabilities` and `orchestrators`: what the gateway routes to, from ListCapabilities.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/cli_support.h"
#include "cli/command.h"

namespace switchyard::cli {

namespace v1 = switchyard::v1;

namespace internal {
namespace {

class CapabilitiesCommand final : public Command {
 public:
  CapabilitiesCommand()
      : Command("capabilities",
                "List the pipelines, models, capacity and prices the cluster offers now") {}

  void AddOptions(CLI::App& c) override {
    c.add_option("--pipeline", pipeline_, "Only this pipeline, e.g. upscale");
    c.add_flag("--offers", offers_, "Also list every orchestrator's offers");
  }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override {
    v1::ListCapabilitiesRequest request;
    request.set_pipeline(pipeline_);
    v1::ListCapabilitiesResponse response;
    double elapsed_ms = 0;
    if (auto rc = CallUnary(global, &v1::Gateway::Stub::ListCapabilities, request, &response,
                            &elapsed_ms, err)) {
      return *rc;
    }
    if (global.json) return PrintProtoJson(response, out, err);
    out << FormatCapabilities(response, offers_);
    return kExitOk;
  }

 private:
  std::string pipeline_;
  bool offers_ = false;
};

// The gateway's public API has no per-orchestrator RPC, and needs none: ListCapabilities returns
// every orchestrator it knows and every offer, which are grouped here.
class OrchestratorsCommand final : public Command {
 public:
  OrchestratorsCommand()
      : Command("orchestrators",
                "List the orchestrators the gateway knows, with their models (from "
                "ListCapabilities)") {}

  void AddOptions(CLI::App& c) override {
    c.add_flag("--offers", offers_, "Also list each orchestrator's models one per line");
  }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override {
    v1::ListCapabilitiesRequest request;
    v1::ListCapabilitiesResponse response;
    double elapsed_ms = 0;
    if (auto rc = CallUnary(global, &v1::Gateway::Stub::ListCapabilities, request, &response,
                            &elapsed_ms, err)) {
      return *rc;
    }
    std::map<std::string, std::vector<const v1::ModelOffer*>> offers;
    for (const v1::ModelOffer& o : response.offers()) offers[o.orchestrator()].push_back(&o);
    if (global.json) {
      PrintJson(ToJson(response, offers), out);
      return kExitOk;
    }
    if (response.orchestrators().empty()) {
      out << "no orchestrators known to the gateway\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"ORCHESTRATOR", "ADDRESS", "SOURCE", "READY", "IN FLIGHT", "MODELS", "WARM", "HARDWARE"}};
    for (const v1::OrchestratorInfo& o : response.orchestrators()) {
      const auto& mine = offers[o.id()];
      const auto warm = std::count_if(mine.begin(), mine.end(),
                                      [](const v1::ModelOffer* m) { return m->warm(); });
      rows.push_back({o.id(), o.address(), o.source().empty() ? "-" : o.source(),
                      o.ready() ? "yes" : "no", absl::StrCat(o.in_flight()),
                      absl::StrCat(mine.size()), absl::StrCat(warm),
                      o.hardware().empty() ? "-" : absl::StrJoin(o.hardware(), ",")});
    }
    out << FormatTable(rows);
    if (offers_) {
      std::vector<std::vector<std::string>> offer_rows = {
          {"ORCHESTRATOR", "PIPELINE", "MODEL", "STATE", "CAPACITY", "IN USE", "PRICE", "UNIT"}};
      for (const v1::OrchestratorInfo& o : response.orchestrators()) {
        for (const v1::ModelOffer* m : offers[o.id()]) {
          offer_rows.push_back({o.id(), m->pipeline(), m->model_id(),
                                m->state().empty() ? (m->warm() ? "ready" : "-") : m->state(),
                                absl::StrCat(m->capacity()), absl::StrCat(m->in_use()),
                                FormatPrice(m->price_per_unit()),
                                m->unit().empty() ? "-" : m->unit()});
        }
      }
      out << "\n" << FormatTable(offer_rows);
    }
    return kExitOk;
  }

 private:
  static Json ToJson(const v1::ListCapabilitiesResponse& response,
                     std::map<std::string, std::vector<const v1::ModelOffer*>>& offers) {
    Json list = Json::array();
    for (const v1::OrchestratorInfo& o : response.orchestrators()) {
      Json models = Json::array();
      for (const v1::ModelOffer* m : offers[o.id()]) {
        models.push_back(Json{{"pipeline", m->pipeline()},
                              {"model_id", m->model_id()},
                              {"state", m->state()},
                              {"warm", m->warm()},
                              {"capacity", m->capacity()},
                              {"in_use", m->in_use()},
                              {"price_per_unit", m->price_per_unit()},
                              {"unit", m->unit()}});
      }
      list.push_back(
          Json{{"id", o.id()},
               {"address", o.address()},
               {"source", o.source()},
               {"ready", o.ready()},
               {"in_flight", o.in_flight()},
               {"hardware", std::vector<std::string>(o.hardware().begin(), o.hardware().end())},
               {"offers", std::move(models)}});
    }
    return Json{{"orchestrators", std::move(list)}};
  }

  bool offers_ = false;
};

}  // namespace

CommandPtr NewCapabilitiesCommand() { return std::make_unique<CapabilitiesCommand>(); }
CommandPtr NewOrchestratorsCommand() { return std::make_unique<OrchestratorsCommand>(); }

}  // namespace internal

using internal::FormatPrice;
using internal::FormatTable;

std::string FormatCapabilities(const v1::ListCapabilitiesResponse& response, bool with_offers) {
  std::string out;
  if (response.capabilities().empty()) {
    out += "no capabilities: no orchestrator offers a model now\n";
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"PIPELINE", "MODEL", "ORCHESTRATORS", "WARM", "CAPACITY", "IN USE", "MIN PRICE", "UNIT"}};
    for (const v1::Capability& c : response.capabilities()) {
      rows.push_back({c.pipeline(), c.model_id(), absl::StrCat(c.orchestrators()),
                      absl::StrCat(c.warm_orchestrators()), absl::StrCat(c.capacity()),
                      absl::StrCat(c.in_use()), FormatPrice(c.min_price_per_unit()),
                      c.unit().empty() ? "-" : c.unit()});
    }
    out += FormatTable(rows);
  }
  if (with_offers && !response.offers().empty()) {
    std::vector<std::vector<std::string>> rows = {{"ORCHESTRATOR", "PIPELINE", "MODEL", "STATE",
                                                   "WARM", "CAPACITY", "IN USE", "PRICE", "UNIT"}};
    for (const v1::ModelOffer& o : response.offers()) {
      rows.push_back({o.orchestrator(), o.pipeline(), o.model_id(),
                      o.state().empty() ? "-" : o.state(), o.warm() ? "yes" : "no",
                      absl::StrCat(o.capacity()), absl::StrCat(o.in_use()),
                      FormatPrice(o.price_per_unit()), o.unit().empty() ? "-" : o.unit()});
    }
    out += "\n";
    out += FormatTable(rows);
  }
  out += "\n";
  if (response.orchestrators().empty()) {
    out += "no orchestrators known to the gateway\n";
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"ORCHESTRATOR", "ADDRESS", "SOURCE", "READY", "IN FLIGHT"}};
    for (const v1::OrchestratorInfo& o : response.orchestrators()) {
      rows.push_back({o.id(), o.address(), o.source().empty() ? "-" : o.source(),
                      o.ready() ? "yes" : "no", absl::StrCat(o.in_flight())});
    }
    out += FormatTable(rows);
  }
  return out;
}

}  // namespace switchyard::cli
