// Tiny deterministic TorchScript models for every AI pipeline, saved on the spot, and the
// orchestrator config entries that serve them: the client tests (the CLI binary, the Python and
// Node examples) run every pipeline on a LocalCluster without downloading weights. The models
// follow docs/pipelines-image.md and docs/pipelines-audio-text.md; what each returns is written
// next to its source in tiny_models.cc so that tests can check exact outputs.
#pragma once

#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

namespace switchyard::testing {

// The reply of the "tiny-llm" model to any prompt (one byte per token, then end of sequence).
inline constexpr char kTinyLlmReply[] = "Hello from the tiny LLM";

// Saves the models into `dir` and returns one orchestrator "models" entry per model, all warm on
// the CPU: t2i-test (text-to-image), i2i-test (image-to-image), i2v-test (image-to-video),
// sam2-test (segment-anything-2), i2t-test (image-to-text), tiny-asr (audio-to-text), tiny-tts
// (text-to-speech, 16 kHz) and tiny-llm (llm).
std::vector<nlohmann::json> SaveTinyModels(const std::filesystem::path& dir);

}  // namespace switchyard::testing
