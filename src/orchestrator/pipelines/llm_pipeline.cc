#include "orchestrator/pipelines/llm_pipeline.h"

#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "orchestrator/pipelines/audio_text_pipelines.h"
#include "runner/cancel_token.h"

namespace switchyard::orchestrator {
namespace {

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

// The prompt's token ids: a raw prompt as is, else the messages through the module's
// apply_chat_template (else the built-in template), encoded.
absl::StatusOr<std::vector<int64_t>> EncodePrompt(runner::TorchModel& model,
                                                  const v1::LLMRequest& request) {
  if (request.has_prompt()) {
    auto encoded = model.RunMethod("encode", {c10::IValue(request.prompt())});
    if (!encoded.ok()) return encoded.status();
    return ToIds(*encoded, "encode");
  }
  std::vector<std::string> roles, contents;
  for (const auto& m : request.messages()) {
    roles.push_back(m.role());
    contents.push_back(m.content());
  }
  std::string prompt;
  if (model.HasMethod("apply_chat_template")) {
    auto templated =
        model.RunMethod("apply_chat_template", {c10::IValue(roles), c10::IValue(contents)});
    if (!templated.ok()) return templated.status();
    if (!templated->isString()) {
      return absl::InternalError("the model's apply_chat_template did not return str");
    }
    prompt = templated->toStringRef();
  } else {
    prompt = DefaultChatTemplate(roles, contents);
  }
  auto encoded = model.RunMethod("encode", {c10::IValue(prompt)});
  if (!encoded.ok()) return encoded.status();
  return ToIds(*encoded, "encode");
}

// The next-token logits of one forward pass, as floats: [1, T, V], [1, V] or [V] accepted.
absl::StatusOr<std::vector<float>> LastLogits(const c10::IValue& out) {
  if (!out.isTensor()) return absl::InternalError("model did not return a logits tensor");
  at::Tensor logits = out.toTensor();
  if (logits.dim() == 3 && logits.size(0) == 1) logits = logits[0][-1];
  if (logits.dim() == 2 && logits.size(0) == 1) logits = logits[0];
  if (logits.dim() != 1 || logits.size(0) < 1 || !logits.is_floating_point()) {
    return absl::InternalError(absl::StrCat("model returned logits of shape ",
                                            c10::str(out.toTensor().sizes()),
                                            ", expected float [1, V] or [1, T, V]"));
  }
  logits = logits.to(at::kFloat).contiguous();
  return std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
}

}  // namespace

absl::StatusOr<c10::IValue> RunForward(const RunContext& ctx, runner::ModelExecutor::Inputs inputs,
                                       bool wait_when_full) {
  runner::CancelToken cancel;
  auto watch = runner::WatchForCancel(ctx.is_cancelled, cancel);
  runner::RunOptions options;
  if (wait_when_full) options.when_full = runner::WhenFull::kWait;
  return ctx.executor->Run(std::move(inputs), ctx.deadline, cancel, options);
}

absl::StatusOr<ChatOutcome> GenerateChat(const RunContext& ctx, const v1::LLMRequest& request,
                                         const LlmOptions& options, const SamplingParams& params,
                                         const EmitDelta& emit) {
  runner::TorchModel& model = *ctx.executor->model();
  if (!model.HasMethod("encode") || !model.HasMethod("decode")) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", request.model(),
                     "' lacks encode(str) -> List[int] or decode(List[int]) -> "
                     "str (docs/pipelines-audio-text.md)"));
  }
  int64_t eos = options.eos_token_id;
  if (eos < 0) eos = model.IntAttribute("eos_token_id").value_or(-1);
  auto prompt_ids = EncodePrompt(model, request);
  if (!prompt_ids.ok()) return prompt_ids.status();
  ChatOutcome outcome;
  outcome.prompt_tokens = static_cast<int>(prompt_ids->size());
  if (outcome.prompt_tokens == 0) {
    return absl::InvalidArgumentError(request.has_prompt() ? "the prompt encodes to no tokens"
                                                           : "messages encode to no tokens");
  }
  if (outcome.prompt_tokens >= options.max_context_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(request.has_prompt() ? "prompt is " : "messages are ", outcome.prompt_tokens,
                     " tokens, the model's context is ", options.max_context_tokens));
  }

  std::mt19937_64 rng(static_cast<uint64_t>(params.seed));
  std::vector<int64_t> ids = *std::move(prompt_ids);
  std::vector<int64_t> generated;
  std::string emitted, decoded;
  for (int step = 0; step < params.max_tokens; ++step) {
    if (static_cast<int>(ids.size()) >= options.max_context_tokens) break;  // "length"
    if (ctx.is_cancelled()) {
      outcome.stopped = absl::CancelledError("the client cancelled the stream");
      break;
    }
    at::Tensor input =
        at::from_blob(ids.data(), {1, static_cast<int64_t>(ids.size())}, at::kLong).clone();
    auto out = RunForward(ctx, {input}, step > 0);
    if (!out.ok()) {
      outcome.stopped = out.status();
      break;
    }
    auto logits = LastLogits(*out);
    if (!logits.ok()) {
      outcome.stopped = logits.status();
      break;
    }
    const int64_t token = SampleToken(*logits, params, rng);
    if (token == eos) {
      outcome.finish_reason = "stop";
      break;
    }
    generated.push_back(token);
    ids.push_back(token);
    outcome.completion_tokens = static_cast<int>(generated.size());
    auto text = Decode(model, generated);
    if (!text.ok()) {
      outcome.stopped = text.status();
      break;
    }
    decoded = *std::move(text);
    std::string delta = NewText(decoded, emitted);
    if (delta.empty() && decoded.compare(0, emitted.size(), emitted) != 0) {
      // The tokenizer rewrote earlier text: emit this token's own text instead.
      auto own = Decode(model, {token});
      if (own.ok()) delta = *own;
      decoded = emitted + delta;
    }
    if (delta.empty()) continue;
    emitted += delta;
    if (!emit(ValidUtf8(delta), outcome.prompt_tokens, outcome.completion_tokens)) {
      outcome.stopped = absl::CancelledError("the client went away");
      break;
    }
  }
  // Text held back (an incomplete character) goes with the last message.
  if (decoded.size() > emitted.size() && decoded.compare(0, emitted.size(), emitted) == 0) {
    outcome.rest = ValidUtf8(decoded.substr(emitted.size()));
  }
  return outcome;
}

}  // namespace switchyard::orchestrator
