#include "orchestrator/pipelines/hf_whisper.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "orchestrator/pipelines/audio_text_pipelines.h"
#include "orchestrator/pipelines/hf_llm.h"
#include "runner/hf/log_mel.h"
#include "runner/hf/whisper_transcribe.h"
#include "runner/torch_model.h"

namespace switchyard::orchestrator {

HfWhisper::~HfWhisper() = default;

absl::StatusOr<std::shared_ptr<HfWhisper>> HfWhisper::Load(const ModelConfig& config,
                                                           const std::string& device) {
  auto resolved = runner::ResolveDevice(device);
  if (!resolved.ok()) return resolved.status();
  const at::ScalarType dtype = config.hf.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  std::shared_ptr<HfWhisper> model(new HfWhisper());
  auto options = ParseAudioToTextOptions(config.options);
  if (!options.ok()) return options.status();
  runner::hf::WhisperLimits limits;
  limits.max_samples = static_cast<int64_t>(options->max_audio_seconds * 16000) + 16000;
  auto transcriber = runner::hf::WhisperTranscriber::Load(config.path, *resolved, dtype, limits);
  if (!transcriber.ok()) return transcriber.status();
  model->transcriber_ = *std::move(transcriber);
  model->language_ = config.hf.language;
  model->translate_ = config.hf.task == "translate";
  if (config.hf.max_new_tokens > 0) model->max_new_tokens_ = config.hf.max_new_tokens;
  model->instances_ = config.instances;
  model->queue_size_ = config.queue_size;
  model->memory_bytes_ = SafetensorsBytes(config.path);
  runner::hf::WhisperRequest warmup;
  warmup.language = model->language_;
  warmup.translate = model->translate_;
  warmup.max_new_tokens = 1;
  auto result = model->transcriber_->Transcribe(std::vector<float>(1600, 0.0f), warmup);
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat(config.path.string(), ": warm-up transcription failed: ",
                                     result.status().message()));
  }
  return model;
}

absl::Status HfWhisper::Transcribe(const RunContext& ctx, const DecodedAudio& audio,
                                   const std::string& mode, v1::TextResponse* response) const {
  if (mode == "word") {
    return absl::InvalidArgumentError(
        "return_timestamps 'word' is not supported by Hugging Face Whisper models (use 'true' or "
        "'false')");
  }
  if (audio.sample_rate != runner::hf::kWhisperSampleRate || audio.channels != 1 ||
      static_cast<int64_t>(audio.planar.size()) != audio.samples) {
    return absl::InternalError("Whisper needs 16 kHz mono audio");
  }
  auto keep_going = [&ctx]() -> absl::Status {
    if (ctx.is_cancelled && ctx.is_cancelled()) return absl::CancelledError("client cancelled");
    if (absl::Now() > ctx.deadline) return absl::DeadlineExceededError("deadline exceeded");
    return absl::OkStatus();
  };
  {
    // At most `instances_` at once; `queue_size_` more wait (polling cancellation and deadline).
    absl::MutexLock lock(&mu_);
    if (running_ >= instances_ && waiting_ >= queue_size_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "all ", instances_, " transcription slots and ", queue_size_, " queue places are taken"));
    }
    ++waiting_;
    auto free_slot = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ < instances_; };
    while (running_ >= instances_) {
      mu_.AwaitWithTimeout(absl::Condition(&free_slot), absl::Milliseconds(50));
      if (absl::Status s = keep_going(); !s.ok()) {
        --waiting_;
        return s;
      }
    }
    --waiting_;
    ++running_;
  }
  runner::hf::WhisperRequest request;
  request.language = language_;
  request.translate = translate_;
  request.timestamps = mode == "sentence";
  request.max_new_tokens = max_new_tokens_;
  request.keep_going = keep_going;
  auto result = transcriber_->Transcribe(audio.planar, request);
  {
    absl::MutexLock lock(&mu_);
    --running_;
  }
  if (!result.ok()) return result.status();
  response->set_text(ValidUtf8(result->text));
  if (request.timestamps) {
    for (const auto& segment : result->chunks) {
      auto* chunk = response->add_chunks();
      chunk->set_text(ValidUtf8(segment.text));
      chunk->add_timestamp(segment.start);
      chunk->add_timestamp(segment.end);
    }
  }
  return absl::OkStatus();
}

}  // namespace switchyard::orchestrator
