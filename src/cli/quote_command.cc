// `switchyard quote <pipeline> ...`: prices a job before it runs (Gateway.Quote; docs/metering.md,
// "Quotes"). Each pipeline's flags are its job command's (job_command.h), so the quote prices the
// request `switchyard <pipeline>` would send with the same flags; outputs are not needed.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "cli/cli_support.h"
#include "cli/command.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::cli::internal {
namespace {

namespace v1 = switchyard::v1;

// The quotable jobs, in `switchyard --help` order. A live-video-to-video run is one job per
// segment: each is quoted, and the totals added up.
constexpr QuotePartPtr (*kParts[])() = {
    NewQuotePart<v1::UpscaleRequest>,
    NewQuotePart<v1::TextToImageRequest>,
    NewQuotePart<v1::ImageToImageRequest>,
    NewQuotePart<v1::ImageToVideoRequest>,
    NewQuotePart<v1::AudioToTextRequest>,
    NewQuotePart<v1::SegmentAnything2Request>,
    NewQuotePart<v1::LLMRequest>,
    NewQuotePart<v1::ImageToTextRequest>,
    NewQuotePart<v1::TextToSpeechRequest>,
    NewQuotePart<v1::LiveVideoSegmentRequest>,
    NewTranscodeQuotePart,
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

// The quotes of a run's segments (one job each) and their sum. The sum has a total only when every
// segment's quote has one.
int PrintSegmentQuotes(const GlobalOptions& global, const std::vector<v1::QuoteResponse>& quotes,
                       std::ostream& out, std::ostream& err) {
  int64_t units = 0;
  double total = 0;
  bool all_totals = true;
  bool all_exact = true;
  for (const v1::QuoteResponse& q : quotes) {
    units = q.units() > std::numeric_limits<int64_t>::max() - units
                ? std::numeric_limits<int64_t>::max()
                : units + q.units();
    if (q.has_total()) {
      total += q.total();
    } else {
      all_totals = false;
    }
    all_exact = all_exact && q.units_exact();
  }
  if (global.json) {
    Json segments = Json::array();
    for (const v1::QuoteResponse& q : quotes) {
      google::protobuf::util::JsonPrintOptions print;
      print.always_print_primitive_fields = true;
      print.preserve_proto_field_names = true;
      std::string text;
      if (!google::protobuf::util::MessageToJsonString(q, &text, print).ok()) {
        err << "error: cannot encode a quote as JSON\n";
        return kExitRpcError;
      }
      segments.push_back(Json::parse(text));
    }
    Json sum{{"segments", std::move(segments)},
             {"units", std::to_string(units)},
             {"units_exact", all_exact}};
    if (all_totals) sum["total"] = total;
    PrintJson(sum, out);
    return kExitOk;
  }
  for (size_t i = 0; i < quotes.size(); ++i) {
    out << "segment " << i << ": " << FormatQuote(quotes[i]);
  }
  const v1::QuoteResponse& first = quotes.front();
  out << quotes.size() << " segments: " << units << " " << first.unit()
      << (first.unit() == "ms" ? "" : "s") << (all_exact ? "" : " (estimated)");
  if (all_totals) {
    out << " = " << FormatPrice(total) << " in all\n";
  } else {
    out << "; no total (a segment's units are unknown)\n";
  }
  return kExitOk;
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
      absl::StatusOr<std::vector<v1::QuoteRequest>> requests = parts_[i]->BuildQuotes();
      if (!requests.ok()) return ReportUsageError(requests.status(), err);
      if (requests->empty()) {
        return ReportUsageError(absl::InvalidArgumentError("nothing to quote"), err);
      }
      const std::unique_ptr<v1::Gateway::Stub> stub = MakeStub(global);
      std::vector<v1::QuoteResponse> responses(requests->size());
      for (size_t j = 0; j < requests->size(); ++j) {
        grpc::ClientContext context;
        PrepareContext(global, context);
        if (max_price_ > 0) {
          context.AddMetadata("x-max-price-per-unit", FormatDouble(max_price_, "%.17g"));
        }
        // Each segment of a live run is its own job: the total cap holds for each.
        if (max_total_ > 0) {
          context.AddMetadata("x-max-total-price", FormatDouble(max_total_, "%.17g"));
        }
        const grpc::Status status = stub->Quote(&context, (*requests)[j], &responses[j]);
        if (!status.ok()) {
          if (requests->size() > 1) err << "segment " << j << " could not be quoted\n";
          return ReportRpcError(global, status, err);
        }
      }
      if (responses.size() == 1) {
        if (global.json) return PrintProtoJson(responses[0], out, err);
        out << FormatQuote(responses[0]);
        return kExitOk;
      }
      return PrintSegmentQuotes(global, responses, out, err);
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
