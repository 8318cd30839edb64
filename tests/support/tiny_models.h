// Tiny deterministic TorchScript models for the AI pipelines, saved on the spot, so tests run
// every pipeline without downloading weights. The models follow docs/pipelines-image.md and
// docs/pipelines-audio-text.md; what each returns is written next to its source in
// tiny_models.cc so that tests can check exact outputs. Tests that need a model of their own
// (a wrong output, a fault) keep its source and save it with SaveScriptModule.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace switchyard::testing {

// TorchScript sources (the methods of one module) of the tiny models.
extern const char* const kTinyTextToImageSource;
extern const char* const kTinyImageToImageSource;
extern const char* const kTinyImageToVideoSource;
extern const char* const kTinySegmentSource;
extern const char* const kTinyImageToTextSource;
extern const char* const kTinyAsrSource;
// Needs the attributes of TinyTtsAttributes().
extern const char* const kTinyTtsSource;
// Needs the attributes of TinyLlmAttributes().
extern const char* const kTinyLlmSource;

// The reply of the "tiny-llm" model of SaveTinyModels to any prompt (one byte per token, then
// end of sequence).
inline constexpr char kTinyLlmReply[] = "Hello from the tiny LLM";

// Registers a module's attributes before its methods are defined.
using ModuleAttributes = std::function<void(torch::jit::Module&)>;

// The TTS model's sample rate: 16 kHz.
ModuleAttributes TinyTtsAttributes();
// The LLM's end-of-sequence id (256), the `reply` it gives and `work`: how many 256x256 matmuls
// each token costs (0: as fast as it gets; the tests that need a slow stream choose it).
ModuleAttributes TinyLlmAttributes(int64_t work, std::string reply);

// Saves a module with these methods (and attributes) as TorchScript at `path`. Throws
// c10::Error if the source does not compile, which fails the test that saves it.
void SaveScriptModule(const std::filesystem::path& path, std::string_view source,
                      const ModuleAttributes& attributes = nullptr);

// Saves the tiny models into `dir` and returns one orchestrator "models" entry per model, all
// warm on the CPU: t2i-test (text-to-image), i2i-test (image-to-image), i2v-test
// (image-to-video), sam2-test (segment-anything-2), i2t-test (image-to-text), tiny-asr
// (audio-to-text), tiny-tts (text-to-speech, 16 kHz) and tiny-llm (llm, replying
// kTinyLlmReply).
std::vector<nlohmann::json> SaveTinyModels(const std::filesystem::path& dir);

}  // namespace switchyard::testing
