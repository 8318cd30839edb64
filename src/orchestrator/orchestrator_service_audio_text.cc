// Audio and text pipelines of the orchestrator service: audio-to-text, text-to-speech, llm.
// Contracts: docs/pipelines-audio-text.md.
#include <spdlog/spdlog.h>

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/pipelines.h"
#include "common/status.h"
#include "orchestrator/audio_text_pipelines.h"
#include "orchestrator/orchestrator_service.h"
#include "orchestrator/request_context.h"
#include "orchestrator/unary_pipeline.h"

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

absl::Status BadOptions(const ModelConfig& config, const absl::Status& status) {
  return absl::FailedPreconditionError(
      absl::StrCat("model '", config.id, "' is misconfigured: ", std::string(status.message())));
}

// Runs forward(*inputs) through the executor and waits for it (cancellation and deadline aware).
absl::StatusOr<c10::IValue> RunForward(runner::ModelExecutor& executor,
                                       runner::ModelExecutor::Inputs inputs, absl::Time deadline,
                                       const std::function<bool()>& is_cancelled,
                                       bool retry_when_full) {
  runner::CancelToken cancel;
  auto watch = runner::WatchForCancel(is_cancelled, cancel);
  runner::RunOptions options;
  // A generation already under way waits for a queue slot rather than failing half-way.
  if (retry_when_full) options.when_full = runner::WhenFull::kWait;
  return executor.Run(std::move(inputs), deadline, cancel, options);
}

absl::StatusOr<std::vector<int64_t>> ToIds(const c10::IValue& value, const char* what) {
  if (!value.isList()) {
    return absl::InternalError(absl::StrCat("the model's ", what, " did not return List[int]"));
  }
  std::vector<int64_t> ids;
  for (const auto& v : value.toListRef()) {
    if (!v.isInt()) {
      return absl::InternalError(absl::StrCat("the model's ", what, " did not return List[int]"));
    }
    ids.push_back(v.toInt());
  }
  return ids;
}

absl::StatusOr<std::string> Decode(runner::TorchModel& model, const std::vector<int64_t>& ids) {
  auto text = model.RunMethod("decode", {c10::IValue(ids)});
  if (!text.ok()) return text.status();
  if (!text->isString()) return absl::InternalError("the model's decode did not return str");
  return text->toStringRef();
}

}  // namespace

namespace {

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
    AudioToTextOptions options;
    if (config != nullptr) {
      auto parsed = ParseAudioToTextOptions(config->options);
      if (!parsed.ok()) return BadOptions(*config, parsed.status());
      options = *parsed;
    }
    // Decoding first: bad audio never makes a cold model load.
    auto audio = DecodeAudio(request.audio(), options.sample_rate, options.channels,
                             options.max_audio_seconds);
    if (!audio.ok()) return audio.status();
    return Params{*std::move(mode), *std::move(audio)};
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    DecodedAudio& audio = params.audio;
    at::Tensor input =
        at::from_blob(audio.planar.data(), {audio.channels, audio.samples}, at::kFloat).clone();
    auto result = RunForward(*ctx.executor, {input, c10::IValue(params.mode)}, ctx.deadline,
                             ctx.is_cancelled, false);
    if (!result.ok()) return result.status();
    if (absl::Status st = FillTranscription(*result, params.mode, response); !st.ok()) return st;
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
    TextToSpeechOptions options;
    if (config != nullptr) {
      auto parsed = ParseTextToSpeechOptions(config->options);
      if (!parsed.ok()) return BadOptions(*config, parsed.status());
      options = *parsed;
    }
    if (absl::Status st = ValidateTextToSpeech(request, options); !st.ok()) return st;
    return Params{options, request.description().empty() ? kDefaultSpeakerDescription
                                                         : request.description()};
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request,
                                         Params& params, Response* response) {
    int sample_rate = params.options.sample_rate;
    if (sample_rate <= 0) {
      auto attr = ctx.executor->model()->IntAttribute("sample_rate");
      sample_rate = attr && *attr >= 1000 && *attr <= 384000 ? static_cast<int>(*attr) : 24000;
    }
    auto result =
        RunForward(*ctx.executor, {c10::IValue(request.text()), c10::IValue(params.description)},
                   ctx.deadline, ctx.is_cancelled, false);
    if (!result.ok()) return result.status();
    if (!result->isTensor()) return absl::InternalError("model did not return a waveform tensor");
    int channels = 1;
    auto samples = WaveformToInterleaved(result->toTensor(), &channels);
    if (!samples.ok()) return samples.status();
    const int64_t frames = static_cast<int64_t>(samples->size()) / channels;
    auto* media = response->mutable_audio();
    media->set_data(EncodeWav(*samples, channels, sample_rate));
    media->set_content_type("audio/wav");
    return absl::StrCat(request.text().size(), " chars -> ", frames, " samples at ", sample_rate,
                        " Hz");
  }
};

}  // namespace

grpc::Status OrchestratorService::AudioToText(grpc::ServerContext* context,
                                              const v1::AudioToTextRequest* request,
                                              v1::TextResponse* response) {
  return ServeUnary<AudioToTextPipeline>(context, request, response);
}

grpc::Status OrchestratorService::TextToSpeech(grpc::ServerContext* context,
                                               const v1::TextToSpeechRequest* request,
                                               v1::AudioResponse* response) {
  return ServeUnary<TextToSpeechPipeline>(context, request, response);
}

grpc::Status OrchestratorService::LLM(grpc::ServerContext* context, const v1::LLMRequest* request,
                                      grpc::ServerWriter<v1::LLMResponse>* writer) {
  const std::string rid = RequestIdOf(context);
  absl::Time start = absl::Now();
  if (request->model().empty()) return Invalid("model is required");
  LlmOptions options;
  if (const ModelConfig* c = Lookup(models_, pipelines::kLlm, request->model())) {
    auto parsed = ParseLlmOptions(c->options);
    if (!parsed.ok()) return ToGrpcStatus(BadOptions(*c, parsed.status()));
    options = *parsed;
  }
  auto params = ValidateLlmRequest(*request, options);
  if (!params.ok()) return ToGrpcStatus(params.status());

  auto model = AcquireModel(context, pipelines::kLlm, request->model());
  if (!model.ok()) return ToGrpcStatus(model.status());
  runner::TorchModel& torch_model = *model->executor->model();
  if (!torch_model.HasMethod("encode") || !torch_model.HasMethod("decode")) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("model '", request->model(),
                                     "' lacks encode(str) -> List[int] or decode(List[int]) -> "
                                     "str (docs/pipelines-audio-text.md)"));
  }
  int64_t eos = options.eos_token_id;
  if (eos < 0) eos = torch_model.IntAttribute("eos_token_id").value_or(-1);

  // Prompt.
  std::vector<std::string> roles, contents;
  for (const auto& m : request->messages()) {
    roles.push_back(m.role());
    contents.push_back(m.content());
  }
  std::string prompt;
  if (torch_model.HasMethod("apply_chat_template")) {
    auto templated =
        torch_model.RunMethod("apply_chat_template", {c10::IValue(roles), c10::IValue(contents)});
    if (!templated.ok()) return ToGrpcStatus(templated.status());
    if (!templated->isString()) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          "the model's apply_chat_template did not return str");
    }
    prompt = templated->toStringRef();
  } else {
    prompt = DefaultChatTemplate(roles, contents);
  }
  auto encoded = torch_model.RunMethod("encode", {c10::IValue(prompt)});
  if (!encoded.ok()) return ToGrpcStatus(encoded.status());
  auto prompt_ids = ToIds(*encoded, "encode");
  if (!prompt_ids.ok()) return ToGrpcStatus(prompt_ids.status());
  const int prompt_tokens = static_cast<int>(prompt_ids->size());
  if (prompt_tokens == 0) return Invalid("messages encode to no tokens");
  if (prompt_tokens >= options.max_context_tokens) {
    return Invalid(absl::StrCat("messages are ", prompt_tokens, " tokens, the model's context is ",
                                options.max_context_tokens));
  }

  const absl::Time deadline = DeadlineOf(context);
  std::mt19937_64 rng(static_cast<uint64_t>(options.seed));
  std::vector<int64_t> ids = *prompt_ids;
  std::vector<int64_t> generated;
  std::string emitted, decoded;
  std::string finish = "length";
  const std::string completion_id = absl::StrCat("chatcmpl-", rid);
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  auto message = [&](const std::string& delta, const std::string& finish_reason) {
    v1::LLMResponse r;
    r.set_id(completion_id);
    r.set_model(request->model());
    r.set_created(created);
    auto* usage = r.mutable_usage();
    usage->set_prompt_tokens(prompt_tokens);
    usage->set_completion_tokens(static_cast<int>(generated.size()));
    usage->set_total_tokens(prompt_tokens + static_cast<int>(generated.size()));
    auto* choice = r.add_choices();
    choice->set_index(0);
    choice->set_finish_reason(finish_reason);
    choice->mutable_delta()->set_role("assistant");
    choice->mutable_delta()->set_content(delta);
    return r;
  };

  board_->Changed();
  grpc::Status status = grpc::Status::OK;
  for (int step = 0; step < params->max_tokens; ++step) {
    if (static_cast<int>(ids.size()) >= options.max_context_tokens) break;  // "length"
    if (context->IsCancelled()) {
      status = grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the stream");
      break;
    }
    at::Tensor input =
        at::from_blob(ids.data(), {1, static_cast<int64_t>(ids.size())}, at::kLong).clone();
    auto out = RunForward(
        *model->executor, {input}, deadline, [context] { return context->IsCancelled(); },
        step > 0);
    if (!out.ok()) {
      status = ToGrpcStatus(out.status());
      break;
    }
    if (!out->isTensor()) {
      status = grpc::Status(grpc::StatusCode::INTERNAL, "model did not return a logits tensor");
      break;
    }
    at::Tensor logits = out->toTensor();
    if (logits.dim() == 3 && logits.size(0) == 1) logits = logits[0][-1];
    if (logits.dim() == 2 && logits.size(0) == 1) logits = logits[0];
    if (logits.dim() != 1 || logits.size(0) < 1 || !logits.is_floating_point()) {
      status = grpc::Status(
          grpc::StatusCode::INTERNAL,
          absl::StrCat("model returned logits of shape ", c10::str(out->toTensor().sizes()),
                       ", expected float [1, V] or [1, T, V]"));
      break;
    }
    logits = logits.to(at::kFloat).contiguous();
    std::vector<float> values(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
    const int64_t token = SampleToken(values, *params, rng);
    if (token == eos) {
      finish = "stop";
      break;
    }
    generated.push_back(token);
    ids.push_back(token);
    auto text = Decode(torch_model, generated);
    if (!text.ok()) {
      status = ToGrpcStatus(text.status());
      break;
    }
    decoded = std::move(*text);
    std::string delta = NewText(decoded, emitted);
    if (delta.empty() && decoded.compare(0, emitted.size(), emitted) != 0) {
      // The tokenizer rewrote earlier text: emit this token's own text instead.
      auto own = Decode(torch_model, {token});
      if (own.ok()) delta = *own;
      decoded = emitted + delta;
    }
    if (delta.empty()) continue;
    emitted += delta;
    if (!writer->Write(message(ValidUtf8(delta), ""))) {
      status = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      break;
    }
  }
  board_->Changed();
  if (!status.ok()) {
    spdlog::warn("[{}] llm {} stopped after {} tokens: {}", rid, LogSafe(request->model()),
                 generated.size(), LogSafe(status.error_message(), kLogSafeMaxErrorBytes));
    return status;
  }
  // Text held back (an incomplete character) goes with the last message.
  std::string rest =
      decoded.size() > emitted.size() && decoded.compare(0, emitted.size(), emitted) == 0
          ? decoded.substr(emitted.size())
          : std::string();
  v1::LLMResponse last = message(ValidUtf8(rest), finish);
  FillJobInfo(context, *model->config, ReportedUnits(metering::LlmUnits(last.usage(), 0, 0), rid),
              start, last.mutable_job());
  if (!writer->Write(last)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  spdlog::info("[{}] llm {} {} prompt + {} completion tokens ({}) in {:.0f} ms", rid,
               LogSafe(request->model()), prompt_tokens, generated.size(), finish,
               last.job().compute_ms());
  return grpc::Status::OK;
}

}  // namespace switchyard::orchestrator
