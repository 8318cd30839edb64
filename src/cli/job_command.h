// The pipeline job commands, generic over a per-pipeline Job<Request>: the command is named after
// the request's pipeline (common/pipelines.h) and runs the same steps for every pipeline: build
// the request from the flags (inputs read and checked, exit 2 without a call), one call to the
// gateway, then write the outputs and print a short summary or, with --json, one JSON document.
//
// A Job<Request> specialisation (image_jobs.cc, segment_job.cc, audio_text_jobs.cc) holds the
// flags' values and has:
//   static constexpr char kDescription[];            the command's one-line help
//   static constexpr auto kMethod;                   the Gateway::Stub method (unary jobs)
//   void AddOptions(CLI::App& command);
//   absl::StatusOr<Request> BuildRequest();          a non-OK status is a usage error
//   int Report(const GlobalOptions&, const Response&, double elapsed_ms, std::ostream& out,
//              std::ostream& err);                   writes the outputs; the exit code
// A streaming job (llm) has instead
//   int Stream(const GlobalOptions&, const Request&, std::ostream& out, std::ostream& err);
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_files.h"
#include "cli/cli_support.h"
#include "cli/command.h"
#include "common/pipelines.h"
#include "common/quote_units.h"

namespace switchyard::cli::internal {

template <typename Request>
struct Job;

// A flag that sets a proto3 optional field only when given, so that the gateway's default
// applies otherwise.
template <typename T>
struct OptionalFlag {
  T value{};
  CLI::Option* option = nullptr;

  CLI::Option* Add(CLI::App& command, const std::string& name, const std::string& help) {
    option = command.add_option(name, value, help);
    return option;
  }
  bool given() const { return option != nullptr && option->count() > 0; }
};

// The --model and --in flags of the jobs that take an input file.
struct ModelInFlags {
  std::string model;
  std::string in;

  void AddModelIn(CLI::App& command, const std::string& in_help) {
    command.add_option("--model", model, "Model id")->required();
    command.add_option("--in", in, in_help)->required();
  }
  // A request naming the model, with the input image read and checked (its size to `size`).
  template <typename Request>
  absl::StatusOr<Request> RequestWithImage(std::pair<int, int>* size = nullptr) const {
    absl::StatusOr<std::string> image = ReadInputImage(in, size);
    if (!image.ok()) return image.status();
    Request request;
    request.set_model_id(model);
    request.set_image(*std::move(image));
    return request;
  }
};

template <typename Request>
class JobCommand final : public Command {
 public:
  using Response = typename pipelines::PipelineOf<Request>::Response;

  JobCommand() : Command(pipelines::PipelineOf<Request>::kName, Job<Request>::kDescription) {}

  void AddOptions(CLI::App& command) override { job_.AddOptions(command); }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override {
    absl::StatusOr<Request> request = job_.BuildRequest();
    if (!request.ok()) return ReportUsageError(request.status(), err);
    if constexpr (requires { job_.Stream(global, *request, out, err); }) {
      return job_.Stream(global, *request, out, err);
    } else {
      Response response;
      double elapsed_ms = 0;
      if (auto rc =
              CallUnary(global, Job<Request>::kMethod, *request, &response, &elapsed_ms, err)) {
        return *rc;
      }
      return job_.Report(global, response, elapsed_ms, out, err);
    }
  }

 private:
  Job<Request> job_;
};

template <typename Request>
CommandPtr NewJobCommand() {
  return std::make_unique<JobCommand<Request>>();
}

// A pipeline's part of `switchyard quote`: its job's flags and request (command.h).
template <typename Request>
class JobQuotePart final : public QuotePart {
 public:
  const char* name() const override { return pipelines::PipelineOf<Request>::kName; }
  const char* description() const override { return Job<Request>::kDescription; }
  void AddOptions(CLI::App& command) override {
    job_.AddOptions(command);
    // A quote writes nothing: the job's output flag is optional here.
    for (CLI::Option* option : command.get_options()) {
      if (option->get_name() == "--out") option->required(false);
    }
  }
  absl::StatusOr<std::vector<switchyard::v1::QuoteRequest>> BuildQuotes() override {
    absl::StatusOr<Request> request = job_.BuildRequest();
    if (!request.ok()) return request.status();
    std::vector<Request> calls;
    if constexpr (requires(Job<Request> & job) { job.segments; }) {
      // A segmented job (live-video-to-video) makes one call per segment, as Job::Stream does.
      for (size_t i = 0; i < job_.segments.size(); ++i) {
        Request call = *request;
        call.set_segment(std::move(job_.segments[i]));
        call.set_sequence(static_cast<int64_t>(i));
        calls.push_back(std::move(call));
      }
    } else {
      calls.push_back(*std::move(request));
    }
    std::vector<switchyard::v1::QuoteRequest> quotes(calls.size());
    for (size_t i = 0; i < calls.size(); ++i) {
      if (!metering::SetQuoteRequest(calls[i], &quotes[i])) {
        return absl::InvalidArgumentError(absl::StrCat(name(), " cannot be quoted"));
      }
    }
    return quotes;
  }

 private:
  Job<Request> job_;
};

template <typename Request>
QuotePartPtr NewQuotePart() {
  return std::make_unique<JobQuotePart<Request>>();
}

}  // namespace switchyard::cli::internal
