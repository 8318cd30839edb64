// Audio and text pipelines of the orchestrator service: audio-to-text, text-to-speech, llm.
#include "orchestrator/orchestrator_service.h"
#include "orchestrator/warmup.h"

namespace switchyard::orchestrator {
namespace {

grpc::Status NotYet(const char* pipeline) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      std::string("the ") + pipeline + " pipeline is not implemented yet");
}

}  // namespace

// No warm-up until these pipelines have contracts.
WarmupInputs AudioTextWarmupInputs(const ModelConfig&) { return std::nullopt; }

grpc::Status OrchestratorService::AudioToText(grpc::ServerContext*, const v1::AudioToTextRequest*,
                                              v1::TextResponse*) {
  return NotYet("audio-to-text");
}
grpc::Status OrchestratorService::TextToSpeech(grpc::ServerContext*, const v1::TextToSpeechRequest*,
                                               v1::AudioResponse*) {
  return NotYet("text-to-speech");
}
grpc::Status OrchestratorService::LLM(grpc::ServerContext*, const v1::LLMRequest*,
                                      grpc::ServerWriter<v1::LLMResponse>*) {
  return NotYet("llm");
}

}  // namespace switchyard::orchestrator
