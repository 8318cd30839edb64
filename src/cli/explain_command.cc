// `switchyard explain`: how the gateway's router judges every node for a pipeline and model
// (Gateway.ExplainRoute), docs/operations.md, "Why does my node get no work?".
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_support.h"
#include "cli/command.h"

namespace switchyard::cli::internal {
namespace {

namespace v1 = switchyard::v1;

// One row per node: eligible ones (the router's favourite marked *), then filtered ones with
// why, then a summary line.
std::string FormatExplanation(const v1::ExplainRouteRequest& request,
                              const v1::ExplainRouteResponse& response) {
  std::vector<std::vector<std::string>> rows = {
      {"", "NODE", "ADDRESS", "TIER", "PRICE", "LOAD", "LATENCY_MS", "SCORE", "WHY NOT"}};
  for (const auto& c : response.candidates()) {
    const bool filtered = c.tier() == "filtered";
    const bool offered = c.filter() != "not_offered";
    rows.push_back({c.best() ? "*" : "", c.node_id(), c.address(), filtered ? "-" : c.tier(),
                    offered ? FormatPrice(c.price_per_unit()) : "-",
                    filtered ? "-" : absl::StrFormat("%.2f", c.load()),
                    filtered ? "-"
                             : absl::StrCat(absl::StrFormat("%.1f", c.latency_ms()),
                                            c.measured() ? "" : " (unmeasured)"),
                    filtered ? "-" : absl::StrFormat("%.2f", c.score()),
                    filtered ? c.reason() : ""});
  }
  std::string out = FormatTable(rows);
  absl::StrAppend(&out, response.offering(), " of ", response.candidates_size(), " node(s) offer ",
                  request.pipeline(), " '", request.model_id(), "'",
                  request.max_price_per_unit() > 0
                      ? absl::StrCat(" (price cap ", FormatPrice(request.max_price_per_unit()), ")")
                      : "",
                  "; ", response.eligible(), " can take a job now");
  if (response.eligible() > 0) {
    absl::StrAppend(&out,
                    ". * is the router's favourite; jobs go to the better of two sampled warm "
                    "nodes, so others get some");
  }
  absl::StrAppend(&out, "\n");
  return out;
}

class ExplainCommand final : public Command {
 public:
  ExplainCommand()
      : Command("explain",
                "Every node the gateway knows, judged for a pipeline and model: tier, price, "
                "load, latency and score, or why it is filtered (operators' API keys)") {}

  std::string footer() const override {
    return "Global options (--gateway, --api-key, --json, --timeout, ...) go before or after the "
           "command; see switchyard --help.";
  }

  void AddOptions(CLI::App& c) override {
    c.add_option("--pipeline", pipeline_, "Pipeline, e.g. upscale")->required();
    c.add_option("--model", model_, "Model id")->required();
    c.add_option("--max-price", max_price_,
                 "Judge against this price cap per unit, as x-max-price-per-unit would (0: none)");
  }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override {
    if (!std::isfinite(max_price_) || max_price_ < 0) {
      return ReportUsageError(absl::InvalidArgumentError("--max-price must be a number >= 0"), err);
    }
    v1::ExplainRouteRequest request;
    request.set_pipeline(pipeline_);
    request.set_model_id(model_);
    request.set_max_price_per_unit(max_price_);
    v1::ExplainRouteResponse response;
    double elapsed_ms = 0;
    if (auto rc = CallUnary(global, &v1::Gateway::Stub::ExplainRoute, request, &response,
                            &elapsed_ms, err)) {
      return *rc;
    }
    if (global.json) return PrintProtoJson(response, out, err);
    out << FormatExplanation(request, response);
    return kExitOk;
  }

 private:
  std::string pipeline_, model_;
  double max_price_ = 0;
};

}  // namespace

CommandPtr NewExplainCommand() { return std::make_unique<ExplainCommand>(); }

}  // namespace switchyard::cli::internal
