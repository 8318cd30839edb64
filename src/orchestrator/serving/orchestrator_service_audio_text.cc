// Audio and text pipelines of the orchestrator service: audio-to-text, text-to-speech, llm.
// Contracts: docs/pipelines-audio-text.md.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/pipelines.h"
#include "common/status.h"
#include "orchestrator/pipelines/audio_text_pipelines.h"
#include "orchestrator/pipelines/hf_llm.h"
#include "orchestrator/pipelines/hf_whisper.h"
#include "orchestrator/pipelines/llm_pipeline.h"
#include "orchestrator/pipelines/stop_strings.h"
#include "orchestrator/serving/orchestrator_service.h"
#include "orchestrator/serving/request_context.h"
#include "orchestrator/serving/unary_pipeline.h"

namespace switchyard::orchestrator {
namespace {

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// The config of `model_id` when it is a `pipeline` model here (nullptr otherwise; AcquireModel
// then answers with the right error).
const ModelConfig* Lookup(ModelManager* models, const std::string& pipeline,
                          const std::string& model_id) {
  const ModelConfig* config = models->Find(model_id);
  return config != nullptr && config->pipeline == pipeline ? config : nullptr;
}

// The options of a model, read by `parse` from its config (FAILED_PRECONDITION naming the model
// when they are bad); the defaults when `config` is null (the model is not served here, and its
// error comes after the request's own checks).
template <typename Options>
absl::StatusOr<Options> OptionsOf(const ModelConfig* config,
                                  absl::StatusOr<Options> (*parse)(const nlohmann::json&)) {
  if (config == nullptr) return Options{};
  auto parsed = parse(config->options);
  if (!parsed.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", config->id, "' is misconfigured: ", std::string(parsed.status().message())));
  }
  return parsed;
}

// The audio-to-text pipeline's descriptor (unary_pipeline.h). Without a model here the request is
// still checked, against the default options, before the model's error.
struct AudioToTextPipeline : UnaryDescriptor<v1::AudioToTextRequest, false> {
  struct Params {
    std::string mode;
    DecodedAudio audio;
  };
  static absl::StatusOr<Params> Validate(const Request& request, const ModelConfig* config) {
    if (request.audio().empty()) return absl::InvalidArgumentError("audio is required");
    auto mode = TimestampMode(request.return_timestamps());
    if (!mode.ok()) return mode.status();
    if (request.model_id().empty()) return absl::InvalidArgumentError("model_id is required");
    if (config != nullptr && config->format == "hf" && *mode == "word") {
      return absl::InvalidArgumentError(
          "return_timestamps 'word' is not supported by Hugging Face Whisper models (use 'true' "
          "or 'false')");
    }
    auto options = OptionsOf(config, &ParseAudioToTextOptions);
    if (!options.ok()) return options.status();
    // Decoding first: bad audio never makes a cold model load.
    auto audio = DecodeAudio(request.audio(), options->sample_rate, options->channels,
                             options->max_audio_seconds);
    if (!audio.ok()) return audio.status();
    return Params{*std::move(mode), *std::move(audio)};
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    const DecodedAudio& audio = params.audio;
    if (ctx.model != nullptr && ctx.model->format == "hf") {
      // A Whisper checkpoint (hf_whisper.h) on a payload executor: counted in in_use while it
      // runs, as a queued job would be.
      auto whisper = std::static_pointer_cast<HfWhisper>(ctx.executor->payload());
      if (whisper == nullptr) return absl::InternalError("hf model without its Whisper payload");
      runner::ModelExecutor::Use use(ctx.executor);
      if (absl::Status st = whisper->Transcribe(ctx, params.audio, params.mode, response);
          !st.ok()) {
        return st;
      }
    } else if (absl::Status st = RunAudioToText(ctx, params.audio, params.mode, response);
               !st.ok()) {
      return st;
    }
    return absl::StrCat(audio.source_sample_rate, " Hz x", audio.source_channels, " -> ",
                        audio.samples, " samples, ", response->text().size(), " chars");
  }
};

// The text-to-speech pipeline's descriptor (unary_pipeline.h).
struct TextToSpeechPipeline : UnaryDescriptor<v1::TextToSpeechRequest, false> {
  struct Params {
    TextToSpeechOptions options;
    std::string description;
  };
  static absl::StatusOr<Params> Validate(const Request& request, const ModelConfig* config) {
    if (request.model_id().empty()) return absl::InvalidArgumentError("model_id is required");
    auto options = OptionsOf(config, &ParseTextToSpeechOptions);
    if (!options.ok()) return options.status();
    if (absl::Status st = ValidateTextToSpeech(request, *options); !st.ok()) return st;
    return Params{*options, request.description().empty() ? kDefaultSpeakerDescription
                                                          : request.description()};
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    auto speech = RunTextToSpeech(ctx, request.text(), params.description, params.options);
    if (!speech.ok()) return speech.status();
    auto* media = response->mutable_audio();
    media->set_data(std::move(speech->wav));
    media->set_content_type("audio/wav");
    return absl::StrCat(request.text().size(), " chars -> ", speech->frames, " samples at ",
                        speech->sample_rate, " Hz");
  }
};

}  // namespace

SWITCHYARD_SERVE_UNARY(AudioToText, AudioToTextPipeline)
SWITCHYARD_SERVE_UNARY(TextToSpeech, TextToSpeechPipeline)

grpc::Status OrchestratorService::LLM(grpc::ServerContext* context, const v1::LLMRequest* request,
                                      grpc::ServerWriter<v1::LLMResponse>* writer) {
  const std::string rid = RequestIdOf(context);
  absl::Time start = absl::Now();
  if (request->model().empty()) return Invalid("model is required");
  const ModelConfig* config = Lookup(models_, pipelines::kLlm, request->model());
  auto options = OptionsOf(config, &ParseLlmOptions);
  if (!options.ok()) return ToGrpcStatus(options.status());
  if (config != nullptr && config->format == "hf" && config->hf.max_new_tokens > 0) {
    options->max_tokens_limit =
        static_cast<int>(std::min<int64_t>(options->max_tokens_limit, config->hf.max_new_tokens));
  }
  auto params = ValidateLlmRequest(*request, *options);
  if (!params.ok()) return ToGrpcStatus(params.status());

  auto model = AcquireModel(context, pipelines::kLlm, request->model());
  if (!model.ok()) return ToGrpcStatus(model.status());
  const std::string completion_id = absl::StrCat("chatcmpl-", rid);
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  auto message = [&](const std::string& delta, const std::string& finish_reason, int prompt_tokens,
                     int completion_tokens) {
    v1::LLMResponse r;
    r.set_id(completion_id);
    r.set_model(request->model());
    r.set_created(created);
    auto* usage = r.mutable_usage();
    usage->set_prompt_tokens(prompt_tokens);
    usage->set_completion_tokens(completion_tokens);
    usage->set_total_tokens(prompt_tokens + completion_tokens);
    auto* choice = r.add_choices();
    choice->set_index(0);
    choice->set_finish_reason(finish_reason);
    choice->mutable_delta()->set_role("assistant");
    choice->mutable_delta()->set_content(delta);
    return r;
  };
  RunContext ctx{model->executor.get(), model->config, DeadlineOf(context),
                 [context] { return context->IsCancelled(); }};
  // Stop strings: text that may start one is held back; at one, generation is stopped (emit
  // returns false, which the generators take as the client going away) and answered as "stop".
  StopStringFilter stops(params->stop);
  // Every message sent, in order, for the receipt's result digest (common/receipt.h).
  ResultDigest result_digest;
  auto emit = [&](const std::string& delta, int prompt, int completion) {
    const std::string text = stops.Push(delta);
    if (!text.empty()) {
      v1::LLMResponse m = message(text, "", prompt, completion);
      result_digest.Add(m);
      if (!writer->Write(m)) return false;
    }
    return !stops.stopped();
  };
  absl::StatusOr<ChatOutcome> outcome;
  if (auto hf = std::static_pointer_cast<HfLlm>(model->executor->payload());
      model->config->format == "hf" && hf != nullptr) {
    // Counted in the executor's in_use while it runs, as a queued job would be.
    runner::ModelExecutor::Use use(model->executor.get());
    board_->Changed();
    outcome = hf->Generate(ctx, *request, *options, *params, emit);
  } else {
    board_->Changed();
    outcome = GenerateChat(ctx, *request, *options, *params, emit);
  }
  board_->Changed();
  if (!outcome.ok()) return ToGrpcStatus(outcome.status());
  if (stops.stopped() && outcome->stopped.code() == absl::StatusCode::kCancelled &&
      !context->IsCancelled()) {
    outcome->stopped = absl::OkStatus();
    outcome->finish_reason = "stop";
    outcome->rest.clear();  // what came after the stop string
  } else if (outcome->stopped.ok()) {
    // The generation's held-back tail (an incomplete character) may complete a stop string too.
    std::string rest = stops.Push(outcome->rest);
    if (stops.stopped()) {
      outcome->finish_reason = "stop";
    } else {
      rest += stops.Flush();
    }
    outcome->rest = std::move(rest);
  }
  if (!outcome->stopped.ok()) {
    spdlog::warn("[{}] llm {} stopped after {} tokens: {}", rid, LogSafe(request->model()),
                 outcome->completion_tokens,
                 LogSafe(std::string(outcome->stopped.message()), kLogSafeMaxErrorBytes));
    return ToGrpcStatus(outcome->stopped);
  }
  v1::LLMResponse last = message(outcome->rest, outcome->finish_reason, outcome->prompt_tokens,
                                 outcome->completion_tokens);
  result_digest.Add(last);  // before its JobInfo
  FillJobInfo(context, *model->config, ReportedUnits(metering::LlmUnits(last.usage(), 0, 0), rid),
              start, last.mutable_job());
  SignReceipt(context, pipelines::kLlm, RequestDigest(*request), result_digest.Finish(), start,
              last.mutable_job());
  if (!writer->Write(last)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  spdlog::info("[{}] llm {} {} prompt + {} completion tokens ({}) in {:.0f} ms", rid,
               LogSafe(request->model()), outcome->prompt_tokens, outcome->completion_tokens,
               outcome->finish_reason, last.job().compute_ms());
  return grpc::Status::OK;
}

}  // namespace switchyard::orchestrator
