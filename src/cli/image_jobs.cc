// The image pipelines' jobs: upscale, text-to-image, image-to-image and image-to-video
// (job_command.h says what a Job is).
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_files.h"
#include "cli/job_command.h"
#include "common/status.h"

namespace switchyard::cli::internal {

namespace fs = std::filesystem;
namespace v1 = switchyard::v1;

namespace {

constexpr int kMaxImagesPerPrompt = 16;
constexpr int kMaxDimension = 16384;

// `--loras` must be a JSON object of adapter -> weight, as the Livepeer API takes it.
absl::Status CheckLoras(const std::string& loras) {
  if (loras.empty()) return absl::OkStatus();
  const Json parsed = Json::parse(loras, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--loras must be a JSON object of adapter weights, e.g. "
                     "'{\"nerijs/pixel-art-xl\": 1.2}', got ",
                     Quote(loras)));
  }
  for (const auto& [name, weight] : parsed.items()) {
    if (!weight.is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--loras: the weight of ", Quote(name), " must be a number"));
    }
  }
  return absl::OkStatus();
}

// Output path of the i-th of `n` media: `out` itself when there is one, else "<stem>-<i+1><ext>"
// next to it (out.png -> out-1.png, out-2.png, ...).
fs::path MediaPath(const std::string& out, int i, int n) {
  if (n <= 1) return fs::path(out);
  const fs::path p(out);
  fs::path name = p.stem();
  name += absl::StrCat("-", i + 1);
  name += p.extension();
  return p.parent_path() / name;
}

// Writes every medium of a response, then prints them: under `key` with --json, else one line
// each and the job line.
template <typename Response>
int WriteMedia(const GlobalOptions& global, absl::string_view pipeline, absl::string_view key,
               const Response& response, const std::string& model, const std::string& out_path,
               double elapsed_ms, std::ostream& out, std::ostream& err) {
  const auto& media = response.images();
  Json list = Json::array();
  std::vector<std::string> lines;
  for (int i = 0; i < media.size(); ++i) {
    const v1::Media& m = media.Get(i);
    const fs::path path = MediaPath(out_path, i, media.size());
    if (absl::Status s = WriteFileAtomically(path, m.data()); !s.ok()) {
      return ReportUsageError(s, err);
    }
    list.push_back(Json{{"path", path.string()},
                        {"bytes", m.data().size()},
                        {"width", m.width()},
                        {"height", m.height()},
                        {"content_type", m.content_type()},
                        {"seed", m.seed()},
                        {"nsfw", m.nsfw()}});
    lines.push_back(absl::StrCat("wrote ", path.string(), " (", m.width(), "x", m.height(), ", ",
                                 m.data().size(), " bytes, ", m.content_type(), ", seed ", m.seed(),
                                 m.nsfw() ? ", flagged NSFW" : "", ")"));
  }
  if (global.json) {
    return PrintJobJson(Json{{key, std::move(list)}}, global, elapsed_ms, response.job(), out);
  }
  for (const std::string& line : lines) out << line << "\n";
  out << JobLine(pipeline, response.job(), model) << "\n";
  return kExitOk;
}

// The answer of text-to-image and image-to-image: at least one image.
int ReportImages(const GlobalOptions& global, absl::string_view pipeline,
                 const v1::ImageResponse& response, const std::string& model,
                 const std::string& out_path, double elapsed_ms, std::ostream& out,
                 std::ostream& err) {
  if (response.images_size() == 0) return NoResult(global, "image", err);
  return WriteMedia(global, pipeline, "images", response, model, out_path, elapsed_ms, out, err);
}

// The flags the generation pipelines share; proto3 optionals stay unset unless given.
struct GenerationFlags {
  std::string out;
  OptionalFlag<int64_t> seed;
  OptionalFlag<int32_t> steps;
  bool no_safety_check = false;

  void AddSeedStepsSafety(CLI::App& c, absl::string_view steps_default) {
    seed.Add(c, "--seed", "Seed (default: random; the one used is printed)");
    steps.Add(c, "--steps", absl::StrCat("Inference steps (gateway default: ", steps_default, ")"))
        ->check(CLI::PositiveNumber);
    c.add_flag("--no-safety-check", no_safety_check,
               "Skip the safety checker (it runs by default)");
  }
  template <typename Request>
  void ApplySeedStepsSafety(Request& request) const {
    if (seed.given()) request.set_seed(seed.value);
    if (steps.given()) request.set_num_inference_steps(steps.value);
    if (no_safety_check) request.set_safety_check(false);
  }
};

struct SizeFlags {
  OptionalFlag<int32_t> width;
  OptionalFlag<int32_t> height;

  void Add(CLI::App& c, absl::string_view what) {
    width.Add(c, "--width", absl::StrCat("Width of the ", what, " in pixels (default 1024)"))
        ->check(CLI::Range(1, kMaxDimension));
    height.Add(c, "--height", absl::StrCat("Height of the ", what, " in pixels (default 576)"))
        ->check(CLI::Range(1, kMaxDimension));
  }
  template <typename Request>
  void ApplyTo(Request& request) const {
    if (width.given()) request.set_width(width.value);
    if (height.given()) request.set_height(height.value);
  }
};

// Prompted image generation: text-to-image and image-to-image.
struct PromptFlags {
  std::string prompt;
  std::string negative_prompt;
  std::string loras;
  OptionalFlag<float> guidance_scale;
  OptionalFlag<int32_t> num_images;

  void AddNegativePromptLoras(CLI::App& c) {
    c.add_option("--negative-prompt", negative_prompt, "What to exclude from the image");
    c.add_option("--loras", loras, "LoRA adapters as a JSON object, e.g. '{\"name\": 1.2}'");
  }
  void AddGuidance(CLI::App& c) {
    guidance_scale.Add(c, "--guidance-scale", "Guidance scale (default 7.5)")
        ->check(CLI::NonNegativeNumber);
  }
  void AddNumImages(CLI::App& c) {
    num_images.Add(c, "--num-images", "Images per prompt (default 1)")
        ->check(CLI::Range(1, kMaxImagesPerPrompt));
  }
  template <typename Request>
  void ApplyTo(Request& request) const {
    request.set_prompt(prompt);
    request.set_negative_prompt(negative_prompt);
    request.set_loras(loras);
    if (guidance_scale.given()) request.set_guidance_scale(guidance_scale.value);
    if (num_images.given()) request.set_num_images_per_prompt(num_images.value);
  }
};

}  // namespace

template <>
struct Job<v1::UpscaleRequest> : ModelInFlags {
  static constexpr char kDescription[] =
      "Upscale a PNG or JPEG image with a super-resolution model";
  static constexpr auto kMethod = &v1::Gateway::Stub::Upscale;
  std::string out, prompt;
  OptionalFlag<int64_t> seed;
  OptionalFlag<int32_t> steps;
  bool no_safety_check = false;
  std::pair<int, int> in_size;

  void AddOptions(CLI::App& c) {
    c.add_option("--model", model, "Model id, e.g. esrgan-slim-x4")->required();
    c.add_option("--in", in, "Input image (PNG or JPEG)")->required();
    c.add_option("--out", out, "Output image (PNG)")->required();
    c.add_option("--prompt", prompt, "Prompt, for models that take one");
    seed.Add(c, "--seed", "Seed, for non-deterministic models");
    steps.Add(c, "--steps", "Inference steps, for diffusion upscalers")->check(CLI::PositiveNumber);
    c.add_flag("--no-safety-check", no_safety_check, "Skip the safety checker");
  }

  absl::StatusOr<v1::UpscaleRequest> BuildRequest() {
    absl::StatusOr<v1::UpscaleRequest> request = RequestWithImage<v1::UpscaleRequest>(&in_size);
    if (!request.ok()) return request;
    SY_RETURN_IF_ERROR(CheckWritableFile(out));
    request->set_prompt(prompt);
    if (no_safety_check) request->set_safety_check(false);
    if (seed.given()) request->set_seed(seed.value);
    if (steps.given()) request->set_num_inference_steps(steps.value);
    return request;
  }

  int Report(const GlobalOptions& global, const v1::ImageResponse& response, double elapsed_ms,
             std::ostream& o, std::ostream& err) {
    if (response.images_size() == 0 || response.images(0).data().empty()) {
      return NoResult(global, "image", err);
    }
    const v1::Media& media = response.images(0);
    if (absl::Status s = WriteFileAtomically(out, media.data()); !s.ok()) {
      return ReportUsageError(s, err);
    }
    const v1::JobInfo& job = response.job();
    if (global.json) {
      return PrintJobJson(Json{{"input", in},
                               {"input_width", in_size.first},
                               {"input_height", in_size.second},
                               {"output", out},
                               {"bytes", media.data().size()},
                               {"width", media.width()},
                               {"height", media.height()},
                               {"content_type", media.content_type()},
                               {"seed", media.seed()},
                               {"nsfw", media.nsfw()}},
                          global, elapsed_ms, job, o);
    }
    o << "upscaled " << in << " (" << in_size.first << "x" << in_size.second << ") -> " << out
      << " (" << media.width() << "x" << media.height() << ")" << JobLine("", job, model) << "\n";
    if (media.nsfw()) o << "warning: the output was flagged as NSFW\n";
    return kExitOk;
  }
};

template <>
struct Job<v1::TextToImageRequest> : GenerationFlags, PromptFlags, SizeFlags {
  static constexpr char kDescription[] = "Generate images from a text prompt";
  static constexpr auto kMethod = &v1::Gateway::Stub::TextToImage;
  std::string model;

  void AddOptions(CLI::App& c) {
    c.add_option("--model", model, "Model id (see `switchyard capabilities`)")->required();
    c.add_option("--prompt", prompt, "Text prompt; separate several prompts with '|'")->required();
    c.add_option("--out", out,
                 "Output PNG; with several images OUT's name gets -1, -2, ... before the "
                 "extension")
        ->required();
    AddNegativePromptLoras(c);
    SizeFlags::Add(c, "image");
    AddGuidance(c);
    AddNumImages(c);
    AddSeedStepsSafety(c, "50");
  }

  absl::StatusOr<v1::TextToImageRequest> BuildRequest() const {
    SY_RETURN_IF_ERROR(CheckLoras(loras));
    SY_RETURN_IF_ERROR(CheckWritableFile(out));
    v1::TextToImageRequest request;
    request.set_model_id(model);
    PromptFlags::ApplyTo(request);
    SizeFlags::ApplyTo(request);
    ApplySeedStepsSafety(request);
    return request;
  }

  int Report(const GlobalOptions& global, const v1::ImageResponse& response, double elapsed_ms,
             std::ostream& o, std::ostream& err) const {
    return ReportImages(global, pipelines::kTextToImage, response, model, out, elapsed_ms, o, err);
  }
};

template <>
struct Job<v1::ImageToImageRequest> : ModelInFlags, GenerationFlags, PromptFlags {
  static constexpr char kDescription[] = "Transform an image guided by a text prompt";
  static constexpr auto kMethod = &v1::Gateway::Stub::ImageToImage;
  OptionalFlag<float> strength;
  OptionalFlag<float> image_guidance_scale;

  void AddOptions(CLI::App& c) {
    AddModelIn(c, "Input image (PNG or JPEG)");
    c.add_option("--prompt", prompt, "Text prompt")->required();
    c.add_option("--out", out, "Output PNG (-1, -2, ... added with several images)")->required();
    AddNegativePromptLoras(c);
    strength.Add(c, "--strength", "How much to transform the image, 0 to 1 (default 0.8)")
        ->check(CLI::Range(0.0, 1.0));
    AddGuidance(c);
    image_guidance_scale
        .Add(c, "--image-guidance-scale", "Pull towards the input image (default 1.5)")
        ->check(CLI::NonNegativeNumber);
    AddNumImages(c);
    AddSeedStepsSafety(c, "100");
  }

  absl::StatusOr<v1::ImageToImageRequest> BuildRequest() const {
    absl::StatusOr<v1::ImageToImageRequest> request = RequestWithImage<v1::ImageToImageRequest>();
    if (!request.ok()) return request;
    SY_RETURN_IF_ERROR(CheckLoras(loras));
    SY_RETURN_IF_ERROR(CheckWritableFile(out));
    PromptFlags::ApplyTo(*request);
    if (strength.given()) request->set_strength(strength.value);
    if (image_guidance_scale.given()) request->set_image_guidance_scale(image_guidance_scale.value);
    ApplySeedStepsSafety(*request);
    return request;
  }

  int Report(const GlobalOptions& global, const v1::ImageResponse& response, double elapsed_ms,
             std::ostream& o, std::ostream& err) const {
    return ReportImages(global, pipelines::kImageToImage, response, model, out, elapsed_ms, o, err);
  }
};

template <>
struct Job<v1::ImageToVideoRequest> : ModelInFlags, GenerationFlags, SizeFlags {
  static constexpr char kDescription[] = "Generate a video (MP4) from an image";
  static constexpr auto kMethod = &v1::Gateway::Stub::ImageToVideo;
  OptionalFlag<int32_t> fps;
  OptionalFlag<int32_t> motion_bucket_id;
  OptionalFlag<float> noise_aug_strength;

  void AddOptions(CLI::App& c) {
    AddModelIn(c, "Conditioning image (PNG or JPEG)");
    c.add_option("--out", out, "Output MP4 file")->required();
    SizeFlags::Add(c, "video");
    fps.Add(c, "--fps", "Frames per second (default 6)")->check(CLI::Range(1, 240));
    motion_bucket_id.Add(c, "--motion-bucket-id", "Amount of motion, higher is more (default 127)")
        ->check(CLI::NonNegativeNumber);
    noise_aug_strength.Add(c, "--noise-aug-strength", "Noise added to the image (default 0.02)")
        ->check(CLI::NonNegativeNumber);
    AddSeedStepsSafety(c, "25");
  }

  absl::StatusOr<v1::ImageToVideoRequest> BuildRequest() const {
    absl::StatusOr<v1::ImageToVideoRequest> request = RequestWithImage<v1::ImageToVideoRequest>();
    if (!request.ok()) return request;
    SY_RETURN_IF_ERROR(CheckWritableFile(out));
    SizeFlags::ApplyTo(*request);
    if (fps.given()) request->set_fps(fps.value);
    if (motion_bucket_id.given()) request->set_motion_bucket_id(motion_bucket_id.value);
    if (noise_aug_strength.given()) request->set_noise_aug_strength(noise_aug_strength.value);
    ApplySeedStepsSafety(*request);
    return request;
  }

  int Report(const GlobalOptions& global, const v1::VideoResponse& response, double elapsed_ms,
             std::ostream& o, std::ostream& err) const {
    if (response.images_size() == 0 || response.images(0).data().empty()) {
      return NoResult(global, "video", err);
    }
    // The API returns a list (named "images" after the Livepeer API); models make one video.
    return WriteMedia(global, pipelines::kImageToVideo, "videos", response, model, out, elapsed_ms,
                      o, err);
  }
};

template CommandPtr NewJobCommand<v1::UpscaleRequest>();
template CommandPtr NewJobCommand<v1::TextToImageRequest>();
template CommandPtr NewJobCommand<v1::ImageToImageRequest>();
template CommandPtr NewJobCommand<v1::ImageToVideoRequest>();
template QuotePartPtr NewQuotePart<v1::UpscaleRequest>();
template QuotePartPtr NewQuotePart<v1::TextToImageRequest>();
template QuotePartPtr NewQuotePart<v1::ImageToImageRequest>();
template QuotePartPtr NewQuotePart<v1::ImageToVideoRequest>();

}  // namespace switchyard::cli::internal
