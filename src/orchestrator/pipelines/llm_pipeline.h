// The llm pipeline's generation: chat template, encode, then per token a forward pass, sampling
// and decode, streamed as text deltas. The orchestrator's LLM handler only translates between the
// proto and this (docs/pipelines-audio-text.md has the TorchScript contract).
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "orchestrator/pipelines/request_validation.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::orchestrator {

// Where a generation ended.
struct ChatOutcome {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  std::string finish_reason = "length";  // "stop" at the end-of-sequence token
  // Text held back at the end (an incomplete character), valid UTF-8: goes with the last message.
  std::string rest;
  // Not OK when the generation stopped half-way (cancelled, the deadline, a model error, the
  // client gone): what was emitted stands, the call ends with this status.
  absl::Status stopped;
};

// Told each new piece of text (valid UTF-8, never empty) with the token counts so far; returns
// false when the client went away.
using EmitDelta =
    std::function<bool(const std::string& delta, int prompt_tokens, int completion_tokens)>;

// Generates the assistant's reply to `request.messages()` with `ctx`'s model. Errors before the
// first token (a model without encode/decode: FAILED_PRECONDITION; a prompt that encodes to
// nothing or past the context: INVALID_ARGUMENT; tokenizer errors) are returned as the status.
absl::StatusOr<ChatOutcome> GenerateChat(const RunContext& ctx, const v1::LLMRequest& request,
                                         const LlmOptions& options, const SamplingParams& params,
                                         const EmitDelta& emit);

// Runs forward(*inputs) through `ctx`'s executor and waits for it (cancellation and deadline
// aware). `wait_when_full`: wait for a queue slot instead of RESOURCE_EXHAUSTED (a generation
// under way must not fail half-way for a busy queue).
absl::StatusOr<c10::IValue> RunForward(const RunContext& ctx, runner::ModelExecutor::Inputs inputs,
                                       bool wait_when_full);

}  // namespace switchyard::orchestrator
