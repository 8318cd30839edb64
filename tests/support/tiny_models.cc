#include "support/tiny_models.h"

#include <utility>

#include <torch/script.h>

namespace switchyard::testing {

namespace fs = std::filesystem;

// pixel (n, c, y, x) = (len(prompt) * 7 + seed + n + c * 50 + y + x) % 256
const char* const kTinyTextToImageSource = R"(
def forward(self, prompt: str, negative_prompt: str, seed: int, num_inference_steps: int,
            guidance_scale: float, height: int, width: int, num_images: int):
    c = torch.arange(3).view([1, 3, 1, 1])
    y = torch.arange(height).view([1, 1, height, 1])
    x = torch.arange(width).view([1, 1, 1, width])
    n = torch.arange(num_images).view([num_images, 1, 1, 1])
    v = (c * 50 + y + x + n + (len(prompt) * 7 + seed)) % 256
    return v * 1.0
)";

// out[n] = (image + seed + len(prompt) + num_inference_steps + n) % 256
const char* const kTinyImageToImageSource = R"(
def forward(self, image, prompt: str, negative_prompt: str, seed: int, strength: float,
            guidance_scale: float, image_guidance_scale: float, num_inference_steps: int,
            num_images: int):
    n = torch.arange(num_images).view([num_images, 1, 1, 1])
    return (image + n + (seed + len(prompt) + num_inference_steps)) % 256
)";

// One frame per inference step.
const char* const kTinyImageToVideoSource = R"(
def forward(self, image, seed: int, height: int, width: int, fps: int, motion_bucket_id: int,
            noise_aug_strength: float, num_inference_steps: int):
    f = torch.arange(num_inference_steps).view([num_inference_steps, 1, 1, 1])
    c = torch.arange(3).view([1, 3, 1, 1])
    y = torch.arange(height).view([1, 1, height, 1])
    x = torch.arange(width).view([1, 1, 1, width])
    return (f * 10 + c * 50 + y + x + seed + int(image[0, 0, 0, 0])) % 256 * 1.0
)";

// mask[k, y, x] = x - px + 0.5 k (px: first point's x, or the box's x0, in pixels); scores
// 0.5, 0.75, 1; logits all equal to the sum of the point labels.
const char* const kTinySegmentSource = R"(
def forward(self, image, point_coords, point_labels, box, mask_input, multimask_output: bool,
            normalize_coords: bool):
    h = image.size(2)
    w = image.size(3)
    k = 3 if multimask_output else 1
    if point_coords.size(0) > 0:
        px = point_coords[0, 0]
    else:
        px = box[0, 0]
    if normalize_coords:
        px = px * w
    x = torch.arange(w).view([1, 1, w])
    kk = torch.arange(k).view([k, 1, 1])
    masks = (x - px + kk * 0.5).expand([k, h, w]).contiguous()
    scores = torch.arange(k) * 0.25 + 0.5
    logits = torch.zeros([k, 4, 4]) + point_labels.sum()
    return (masks, scores, logits)
)";

// "<prompt>:<width>x<height>:<red of the top-left pixel>"
const char* const kTinyImageToTextSource = R"(
def forward(self, image, prompt: str):
    size = str(image.size(3)) + "x" + str(image.size(2))
    return prompt + ":" + size + ":" + str(int(image[0, 0, 0, 0]))
)";

// "n=<samples> c=<channels>" of the 16 kHz mono audio it gets; "word" mode: two chunks.
const char* const kTinyAsrSource = R"(
def forward(self, audio: Tensor, timestamps: str) -> Tuple[str, List[str], Tensor]:
    n = audio.size(1)
    text = "n=" + str(n) + " c=" + str(audio.size(0))
    if timestamps == "word":
        return (text, ["n=" + str(n), "c=" + str(audio.size(0))],
                torch.tensor([[0.0, 0.5], [0.5, 1.0]]))
    return (text, [text], torch.tensor([[0.0, float(n) / 16000.0]]))
)";

// 0.1 s of a ramp per character of text, at 16 kHz.
const char* const kTinyTtsSource = R"(
def forward(self, text: str, description: str) -> Tensor:
    n = len(text) * 1600
    return (torch.arange(n).float() % 100.0) / 200.0
)";

// Byte tokenizer (ids 0..255, eos `self.eos_token_id`); replies `self.reply` one byte per step,
// counting the tokens after the prompt's last newline, then eos; `self.work` 256x256 matmuls per
// step.
const char* const kTinyLlmSource = R"(
def encode(self, text: str) -> List[int]:
    ids: List[int] = []
    for c in text:
        ids.append(ord(c))
    return ids

def decode(self, ids: List[int]) -> str:
    out = ""
    for i in ids:
        out += chr(i)
    return out

def forward(self, ids: Tensor) -> Tensor:
    n = ids.size(1)
    count = 0
    i = n - 1
    while i >= 0 and int(ids[0, i]) != 10:
        count += 1
        i -= 1
    a = torch.ones([256, 256])
    for _ in range(self.work):
        a = torch.mm(a, a) / 256.0
    logits = torch.zeros([1, 257])
    if count < len(self.reply):
        logits[0, ord(self.reply[count])] = 1.0
    else:
        logits[0, 256] = 1.0
    return logits
)";

ModuleAttributes TinyTtsAttributes() {
  return [](torch::jit::Module& m) {
    m.register_attribute("sample_rate", c10::IntType::get(), int64_t{16000});
  };
}

ModuleAttributes TinyLlmAttributes(int64_t work, std::string reply) {
  return [work, reply = std::move(reply)](torch::jit::Module& m) {
    m.register_attribute("eos_token_id", c10::IntType::get(), int64_t{256});
    m.register_attribute("work", c10::IntType::get(), work);
    m.register_attribute("reply", c10::StringType::get(), reply);
  };
}

void SaveScriptModule(const fs::path& path, std::string_view source,
                      const ModuleAttributes& attributes) {
  torch::jit::Module m("m");
  // The runner puts every module in eval mode when it loads it.
  m.register_attribute("training", c10::BoolType::get(), false);
  if (attributes) attributes(m);
  m.define(std::string(source));
  m.save(path.string());
}

std::vector<nlohmann::json> SaveTinyModels(const fs::path& dir) {
  SaveScriptModule(dir / "t2i.pt", kTinyTextToImageSource);
  SaveScriptModule(dir / "i2i.pt", kTinyImageToImageSource);
  SaveScriptModule(dir / "i2v.pt", kTinyImageToVideoSource);
  SaveScriptModule(dir / "sam2.pt", kTinySegmentSource);
  SaveScriptModule(dir / "i2t.pt", kTinyImageToTextSource);
  SaveScriptModule(dir / "asr.pt", kTinyAsrSource);
  SaveScriptModule(dir / "tts.pt", kTinyTtsSource, TinyTtsAttributes());
  SaveScriptModule(dir / "llm.pt", kTinyLlmSource, TinyLlmAttributes(0, kTinyLlmReply));
  const auto entry = [&](const std::string& id, const std::string& pipeline,
                         const std::string& file, nlohmann::json options) {
    return nlohmann::json{
        {"id", id},        {"pipeline", pipeline}, {"path", (dir / file).string()}, {"warm", true},
        {"device", "cpu"}, {"warmup_size", 16},    {"options", std::move(options)}};
  };
  return {
      entry(
          "t2i-test", "text-to-image", "t2i.pt",
          {{"max_width", 256}, {"max_height", 256}, {"default_width", 64}, {"default_height", 32}}),
      entry("i2i-test", "image-to-image", "i2i.pt", nlohmann::json::object()),
      entry("i2v-test", "image-to-video", "i2v.pt", {{"max_frames", 16}}),
      entry("sam2-test", "segment-anything-2", "sam2.pt", nlohmann::json::object()),
      entry("i2t-test", "image-to-text", "i2t.pt", nlohmann::json::object()),
      entry("tiny-asr", "audio-to-text", "asr.pt", {{"max_audio_seconds", 5}}),
      entry("tiny-tts", "text-to-speech", "tts.pt", nlohmann::json::object()),
      entry("tiny-llm", "llm", "llm.pt", {{"max_tokens", 512}}),
  };
}

}  // namespace switchyard::testing
