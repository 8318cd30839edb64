// `switchyard quote <pipeline> ...`: prices a job before it runs (Gateway.Quote; docs/metering.md,
// "Quotes"). Each pipeline's flags are its job command's (job_command.h), so the quote prices the
// request `switchyard <pipeline>` would send with the same flags; outputs are not needed.
#include <chrono>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/cli_support.h"
#include "cli/command.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::cli::internal {
namespace {

namespace v1 = switchyard::v1;

// The quotable jobs, in `switchyard --help` order. Not (yet) live-video-to-video, whose command
// runs many segments: quote its segments through the gRPC API.
constexpr QuotePartPtr (*kParts[])() = {
    NewQuotePart<v1::UpscaleRequest>,      NewQuotePart<v1::TextToImageRequest>,
    NewQuotePart<v1::ImageToImageRequest>, NewQuotePart<v1::ImageToVideoRequest>,
    NewQuotePart<v1::AudioToTextRequest>,  NewQuotePart<v1::SegmentAnything2Request>,
    NewQuotePart<v1::LLMRequest>,          NewQuotePart<v1::ImageToTextRequest>,
    NewQuotePart<v1::TextToSpeechRequest>, NewTranscodeQuotePart,
};

std::string FormatQuote(const v1::QuoteResponse& q) {
  std::string out = absl::StrCat(q.pipeline(), " '", q.model_id(), "': ", q.units(), " ", q.unit(),
                                 q.unit() == "ms" ? "" : "s", " (", q.units_basis(), ")");
  if (q.has_total()) {
    absl::StrAppend(&out, " x ", FormatPrice(q.price_per_unit()), " per ", q.unit(), " on ",
                    q.orchestrator(), " = ", FormatPrice(q.total()), "\n");
  } else {
    absl::StrAppend(&out, "; ", FormatPrice(q.price_per_unit()), " per ", q.unit(), " on ",
                    q.orchestrator(), "; no total\n");
  }
  absl::StrAppend(&out, "  ", q.units_note(), "\n");
  absl::StrAppend(&out, "  ", q.eligible(), " node(s) can take it now, at ",
                  FormatPrice(q.min_price_per_unit()), " to ", FormatPrice(q.max_price_per_unit()),
                  " per ", q.unit());
  if (q.price_cap_per_unit() > 0) {
    absl::StrAppend(&out, "; price cap ", FormatPrice(q.price_cap_per_unit()), " per ", q.unit());
  }
  absl::StrAppend(&out, "\n");
  if (q.has_total()) {
    absl::StrAppend(&out, "  to pay no more, run it with x-max-total-price ",
                    FormatPrice(q.total()), "\n");
  }
  return out;
}

class QuoteCommand final : public Command {
 public:
  QuoteCommand()
      : Command("quote",
                "Price a job before it runs: `switchyard quote <pipeline>` with the pipeline's own "
                "flags (outputs not needed)") {
    for (auto make : kParts) parts_.push_back(make());
  }

  void AddOptions(CLI::App& c) override {
    c.require_subcommand(1);
    c.add_option("--max-price", max_price_,
                 "Quote under this price cap per unit, as x-max-price-per-unit (0: none)");
    c.add_option("--max-total-price", max_total_,
                 "Quote under this total, as x-max-total-price (0: none)");
    for (const QuotePartPtr& part : parts_) {
      CLI::App* sub = c.add_subcommand(part->name(), absl::StrCat("Quote: ", part->description()));
      part->AddOptions(*sub);
      sub->fallthrough();
      subs_.push_back(sub);
    }
  }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override {
    if (!std::isfinite(max_price_) || max_price_ < 0 || !std::isfinite(max_total_) ||
        max_total_ < 0) {
      return ReportUsageError(
          absl::InvalidArgumentError("--max-price and --max-total-price must be numbers >= 0"),
          err);
    }
    for (size_t i = 0; i < parts_.size(); ++i) {
      if (!*subs_[i]) continue;
      absl::StatusOr<v1::QuoteRequest> request = parts_[i]->BuildQuote();
      if (!request.ok()) return ReportUsageError(request.status(), err);
      grpc::ClientContext context;
      PrepareContext(global, context);
      if (max_price_ > 0)
        context.AddMetadata("x-max-price-per-unit", FormatDouble(max_price_, "%.17g"));
      if (max_total_ > 0) {
        context.AddMetadata("x-max-total-price", FormatDouble(max_total_, "%.17g"));
      }
      v1::QuoteResponse response;
      const grpc::Status status = MakeStub(global)->Quote(&context, *request, &response);
      if (!status.ok()) return ReportRpcError(global, status, err);
      if (global.json) return PrintProtoJson(response, out, err);
      out << FormatQuote(response);
      return kExitOk;
    }
    return ReportUsageError(absl::InvalidArgumentError("name a pipeline to quote"), err);
  }

 private:
  std::vector<QuotePartPtr> parts_;
  std::vector<CLI::App*> subs_;
  double max_price_ = 0;
  double max_total_ = 0;
};

}  // namespace

CommandPtr NewQuoteCommand() { return std::make_unique<QuoteCommand>(); }

}  // namespace switchyard::cli::internal
