// The audio-to-text pipeline for a Hugging Face Whisper checkpoint folder ("format": "hf",
// docs/hf-checkpoints.md): runner::hf::WhisperTranscriber (log-mel, encoder-decoder, greedy
// decoding with the checkpoint's tokenizer.json and generation_config.json), loaded once per model
// by the model manager (it rides on a payload executor, runner/model_executor.h) and shared by
// every request. At most `instances` transcriptions run at once and `queue_size` more wait; more
// are refused with RESOURCE_EXHAUSTED.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/pipelines/audio_decode.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::runner::hf {
class WhisperTranscriber;
}  // namespace switchyard::runner::hf

namespace switchyard::orchestrator {

class HfWhisper {
 public:
  // Loads <config.path> in config.hf.dtype on `device` and transcribes 0.1 s of silence with the
  // configured language and task (the warm-up, which also checks them). Errors name the file.
  static absl::StatusOr<std::shared_ptr<HfWhisper>> Load(const ModelConfig& config,
                                                         const std::string& device);
  ~HfWhisper();

  int64_t memory_bytes() const { return memory_bytes_; }

  // Transcribes 16 kHz mono `audio` into the response's text and, when `mode` is "sentence",
  // chunks (one per timestamped segment). "word" is INVALID_ARGUMENT (not supported). Honours
  // ctx.deadline and ctx.is_cancelled between decoder steps.
  absl::Status Transcribe(const RunContext& ctx, const DecodedAudio& audio, const std::string& mode,
                          v1::TextResponse* response) const;

 private:
  HfWhisper() = default;

  std::unique_ptr<runner::hf::WhisperTranscriber> transcriber_;
  std::string language_;
  bool translate_ = false;
  int64_t max_new_tokens_ = 224;
  int64_t memory_bytes_ = 0;
  int instances_ = 1;
  int queue_size_ = 4;
  mutable absl::Mutex mu_;
  mutable int running_ ABSL_GUARDED_BY(mu_) = 0;
  mutable int waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace switchyard::orchestrator
