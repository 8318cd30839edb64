// The CLI's subcommands for the AI pipelines besides upscale (text-to-image, image-to-image,
// image-to-video, audio-to-text, segment-anything-2, llm, image-to-text, text-to-speech) and the
// per-orchestrator listing. Each one checks its arguments and input files before calling (exit
// 2 without a call), makes one call to the gateway, writes outputs atomically and prints either a
// short human summary or, with --json, one JSON document on stdout.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/cli_internal.h"

namespace switchyard::cli::internal {
namespace {

namespace fs = std::filesystem;
namespace v1 = switchyard::v1;

// SAM2's low-resolution mask prompt is 1x256x256.
constexpr int kMaskInputValues = 256 * 256;
constexpr int kMaxImagesPerPrompt = 16;
constexpr int kMaxDimension = 16384;

// Options that only some pipelines take; CLI::Option pointers tell whether they were given, so
// that the request leaves a proto3 optional unset (the gateway's default) otherwise.
struct ImageGenerationOptions {
  std::string model;
  std::string prompt;
  std::string negative_prompt;
  std::string loras;
  std::string in;
  std::string out;
  int32_t width = 0;
  int32_t height = 0;
  float guidance_scale = 0;
  float image_guidance_scale = 0;
  float strength = 0;
  int64_t seed = 0;
  int32_t steps = 0;
  int32_t num_images = 1;
  int32_t fps = 0;
  int32_t motion_bucket_id = 0;
  float noise_aug_strength = 0;
  bool no_safety_check = false;
  CLI::Option* width_opt = nullptr;
  CLI::Option* height_opt = nullptr;
  CLI::Option* guidance_opt = nullptr;
  CLI::Option* image_guidance_opt = nullptr;
  CLI::Option* strength_opt = nullptr;
  CLI::Option* seed_opt = nullptr;
  CLI::Option* steps_opt = nullptr;
  CLI::Option* num_images_opt = nullptr;
  CLI::Option* fps_opt = nullptr;
  CLI::Option* motion_opt = nullptr;
  CLI::Option* noise_opt = nullptr;
};

struct AudioToTextOptions {
  std::string model;
  std::string in;
  std::string timestamps;
};

struct SegmentOptions {
  std::string model;
  std::string in;
  std::string out;
  std::vector<std::string> points;
  std::string box;
  std::string mask_input;
  bool single_mask = false;
  bool no_logits = false;
  bool no_normalize = false;
};

struct LlmOptions {
  std::string model;
  std::string prompt;
  std::string system;
  std::vector<std::string> messages;
  float temperature = 0;
  int32_t max_tokens = 0;
  float top_p = 0;
  int32_t top_k = 0;
  CLI::Option* temperature_opt = nullptr;
  CLI::Option* max_tokens_opt = nullptr;
  CLI::Option* top_p_opt = nullptr;
  CLI::Option* top_k_opt = nullptr;
};

struct ImageToTextOptions {
  std::string model;
  std::string in;
  std::string prompt;
};

struct TextToSpeechOptions {
  std::string model;
  std::string text;
  std::string description;
  std::string out;
};

struct OrchestratorsOptions {
  bool offers = false;
};

// ---------------------------------------------------------------------------------------------
// Helpers.

// Reads an input image and checks it is a PNG or JPEG, so that a wrong file is a usage error
// (exit 2) and not a round trip to the gateway.
absl::StatusOr<std::string> ReadInputImage(const std::string& path) {
  absl::StatusOr<std::string> image = ReadInputFile(path, "input image");
  if (!image.ok()) return image.status();
  absl::StatusOr<std::pair<int, int>> size = ProbeImageSize(*image);
  if (!size.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input image ", Quote(path), " is not a PNG or JPEG image: ", size.status().message()));
  }
  return image;
}

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

// Writes every medium of a response; returns their JSON descriptions and, in `lines`, one human
// line each.
absl::StatusOr<Json> WriteMedia(const google::protobuf::RepeatedPtrField<v1::Media>& media,
                                const std::string& out, std::vector<std::string>* lines) {
  Json list = Json::array();
  for (int i = 0; i < media.size(); ++i) {
    const v1::Media& m = media.Get(i);
    const fs::path path = MediaPath(out, i, media.size());
    if (absl::Status s = WriteFileAtomically(path, m.data()); !s.ok()) return s;
    list.push_back(Json{{"path", path.string()},
                        {"bytes", m.data().size()},
                        {"width", m.width()},
                        {"height", m.height()},
                        {"content_type", m.content_type()},
                        {"seed", m.seed()},
                        {"nsfw", m.nsfw()}});
    lines->push_back(absl::StrCat("wrote ", path.string(), " (", m.width(), "x", m.height(), ", ",
                                  m.data().size(), " bytes, ", m.content_type(), ", seed ",
                                  m.seed(), m.nsfw() ? ", flagged NSFW" : "", ")"));
  }
  return list;
}

// "<pipeline> with <model> on <orchestrator> in <ms> ms (attempts <n>)".
std::string JobLine(absl::string_view pipeline, const v1::JobInfo& job, const std::string& model) {
  return absl::StrCat(pipeline, " with ", job.model_id().empty() ? model : job.model_id(), " on ",
                      job.orchestrator().empty() ? "?" : job.orchestrator(), " in ",
                      FormatMs(job.compute_ms()), " ms (attempts ", job.attempts(), ")");
}

template <typename Request, typename Response>
using UnaryMethod = grpc::Status (v1::Gateway::Stub::*)(grpc::ClientContext*, const Request&,
                                                        Response*);

// One unary call with the global deadline and request id. nullopt on success; otherwise the exit
// code after printing the error.
template <typename Request, typename Response>
std::optional<int> CallUnary(const GlobalOptions& global, UnaryMethod<Request, Response> method,
                             const Request& request, Response* response, double* elapsed_ms,
                             std::ostream& err) {
  grpc::ClientContext context;
  PrepareContext(global, context);
  auto stub = MakeStub(global);
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = ((*stub).*method)(&context, request, response);
  *elapsed_ms = MillisecondsSince(start);
  if (!status.ok()) return ReportRpcError(global, status, err);
  return std::nullopt;
}

int NoResult(const GlobalOptions& global, absl::string_view what, std::ostream& err) {
  err << "error: the gateway returned no " << what << "\n";
  err << "request id: " << global.request_id << "\n";
  return kExitRpcError;
}

void PrintJson(const Json& json, std::ostream& out) { out << json.dump(2) << "\n"; }

// Parses "A,B,..." into exactly `count` finite numbers (count 0: 2 or 3 values).
absl::StatusOr<std::vector<float>> ParseNumbers(absl::string_view text) {
  std::vector<float> values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    float v = 0;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(part), &v) || !std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat(Quote(part), " is not a number"));
    }
    values.push_back(v);
  }
  return values;
}

// The shape of a nested JSON array, e.g. [[[..]]] of 3x4x5 -> {3, 4, 5}.
std::vector<size_t> JsonShape(const Json& json) {
  std::vector<size_t> shape;
  const Json* level = &json;
  while (level->is_array()) {
    shape.push_back(level->size());
    if (level->empty()) break;
    level = &(*level)[0];
  }
  return shape;
}

void FlattenNumbers(const Json& json, std::vector<float>* out, bool* ok) {
  if (json.is_array()) {
    for (const Json& item : json) FlattenNumbers(item, out, ok);
  } else if (json.is_number()) {
    out->push_back(json.get<float>());
  } else {
    *ok = false;
  }
}

// A JSON-encoded field of the response, parsed; null when empty, the raw string when it is not
// JSON (the gateway's contract is JSON, but the CLI should still show what came back).
Json ParseJsonField(const std::string& text) {
  if (text.empty()) return nullptr;
  Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() ? Json(text) : parsed;
}

struct WavInfo {
  int channels = 0;
  int sample_rate = 0;
  int bits = 0;
  double seconds = 0;
};

// Reads the format and length of a PCM WAV file (the text-to-speech contract's output).
std::optional<WavInfo> ProbeWav(absl::string_view data) {
  const auto le16 = [&](size_t i) {
    return static_cast<int>(static_cast<uint8_t>(data[i]) |
                            (static_cast<uint8_t>(data[i + 1]) << 8));
  };
  const auto le32 = [&](size_t i) {
    return static_cast<uint32_t>(le16(i)) | (static_cast<uint32_t>(le16(i + 2)) << 16);
  };
  if (data.size() < 12 || data.substr(0, 4) != "RIFF" || data.substr(8, 4) != "WAVE") {
    return std::nullopt;
  }
  WavInfo info;
  size_t pos = 12;
  while (pos + 8 <= data.size()) {
    const absl::string_view id = data.substr(pos, 4);
    const uint32_t size = le32(pos + 4);
    const size_t body = pos + 8;
    if (id == "fmt " && body + 16 <= data.size()) {
      info.channels = le16(body + 2);
      info.sample_rate = static_cast<int>(le32(body + 4));
      info.bits = le16(body + 14);
    } else if (id == "data") {
      const size_t bytes = std::min<size_t>(size, data.size() - body);
      const int frame = info.channels * info.bits / 8;
      if (frame <= 0 || info.sample_rate <= 0) return std::nullopt;
      info.seconds = static_cast<double>(bytes / static_cast<size_t>(frame)) / info.sample_rate;
      return info;
    }
    pos = body + size + (size & 1);
  }
  return std::nullopt;
}

constexpr char kFooter[] =
    "Global options (--gateway, --timeout, --json, --request-id) may also follow the command.\n";

constexpr char kSafetyHelp[] = "Skip the safety checker (it runs by default)";

}  // namespace

// ---------------------------------------------------------------------------------------------

struct PipelineCommands::State {
  ImageGenerationOptions t2i;
  ImageGenerationOptions i2i;
  ImageGenerationOptions i2v;
  AudioToTextOptions a2t;
  SegmentOptions sam2;
  LlmOptions llm;
  ImageToTextOptions i2t;
  TextToSpeechOptions tts;
  OrchestratorsOptions orchestrators;
  CLI::App* t2i_cmd = nullptr;
  CLI::App* i2i_cmd = nullptr;
  CLI::App* i2v_cmd = nullptr;
  CLI::App* a2t_cmd = nullptr;
  CLI::App* sam2_cmd = nullptr;
  CLI::App* llm_cmd = nullptr;
  CLI::App* i2t_cmd = nullptr;
  CLI::App* tts_cmd = nullptr;
  CLI::App* orchestrators_cmd = nullptr;

  int RunTextToImage(const GlobalOptions& global, std::ostream& out, std::ostream& err);
  int RunImageToImage(const GlobalOptions& global, std::ostream& out, std::ostream& err);
  int RunImageToVideo(const GlobalOptions& global, std::ostream& out, std::ostream& err);
  int RunAudioToText(const GlobalOptions& global, std::ostream& out, std::ostream& err);
  int RunSegmentAnything2(const GlobalOptions& global, std::ostream& out, std::ostream& err);
  int RunLlm(const GlobalOptions& global, std::ostream& out, std::ostream& err);
  int RunImageToText(const GlobalOptions& global, std::ostream& out, std::ostream& err);
  int RunTextToSpeech(const GlobalOptions& global, std::ostream& out, std::ostream& err);
  int RunOrchestrators(const GlobalOptions& global, std::ostream& out, std::ostream& err);
};

namespace {

void AddSeedStepsSafety(CLI::App* cmd, ImageGenerationOptions& o, absl::string_view steps_default) {
  o.seed_opt = cmd->add_option("--seed", o.seed, "Seed (default: random; the one used is printed)");
  o.steps_opt =
      cmd->add_option("--steps", o.steps,
                      absl::StrCat("Inference steps (gateway default: ", steps_default, ")"))
          ->check(CLI::PositiveNumber);
  cmd->add_flag("--no-safety-check", o.no_safety_check, kSafetyHelp);
}

void AddSize(CLI::App* cmd, ImageGenerationOptions& o, absl::string_view what) {
  o.width_opt = cmd->add_option("--width", o.width,
                                absl::StrCat("Width of the ", what, " in pixels (default 1024)"))
                    ->check(CLI::Range(1, kMaxDimension));
  o.height_opt = cmd->add_option("--height", o.height,
                                 absl::StrCat("Height of the ", what, " in pixels (default 576)"))
                     ->check(CLI::Range(1, kMaxDimension));
}

}  // namespace

PipelineCommands::PipelineCommands(CLI::App& app) : state_(std::make_unique<State>()) {
  State& s = *state_;

  // text-to-image
  s.t2i_cmd = app.add_subcommand("text-to-image", "Generate images from a text prompt");
  {
    CLI::App* c = s.t2i_cmd;
    ImageGenerationOptions& o = s.t2i;
    c->add_option("--model", o.model, "Model id (see `switchyard capabilities`)")->required();
    c->add_option("--prompt", o.prompt, "Text prompt; separate several prompts with '|'")
        ->required();
    c->add_option("--out", o.out,
                  "Output PNG; with several images OUT's name gets -1, -2, ... before the "
                  "extension")
        ->required();
    c->add_option("--negative-prompt", o.negative_prompt, "What to exclude from the image");
    c->add_option("--loras", o.loras, "LoRA adapters as a JSON object, e.g. '{\"name\": 1.2}'");
    AddSize(c, o, "image");
    o.guidance_opt =
        c->add_option("--guidance-scale", o.guidance_scale, "Guidance scale (default 7.5)")
            ->check(CLI::NonNegativeNumber);
    o.num_images_opt = c->add_option("--num-images", o.num_images, "Images per prompt (default 1)")
                           ->check(CLI::Range(1, kMaxImagesPerPrompt));
    AddSeedStepsSafety(c, o, "50");
    c->footer(kFooter);
  }

  // image-to-image
  s.i2i_cmd = app.add_subcommand("image-to-image", "Transform an image guided by a text prompt");
  {
    CLI::App* c = s.i2i_cmd;
    ImageGenerationOptions& o = s.i2i;
    c->add_option("--model", o.model, "Model id")->required();
    c->add_option("--in", o.in, "Input image (PNG or JPEG)")->required();
    c->add_option("--prompt", o.prompt, "Text prompt")->required();
    c->add_option("--out", o.out, "Output PNG (-1, -2, ... added with several images)")->required();
    c->add_option("--negative-prompt", o.negative_prompt, "What to exclude from the image");
    c->add_option("--loras", o.loras, "LoRA adapters as a JSON object, e.g. '{\"name\": 1.2}'");
    o.strength_opt = c->add_option("--strength", o.strength,
                                   "How much to transform the image, 0 to 1 "
                                   "(default 0.8)")
                         ->check(CLI::Range(0.0, 1.0));
    o.guidance_opt =
        c->add_option("--guidance-scale", o.guidance_scale, "Guidance scale (default 7.5)")
            ->check(CLI::NonNegativeNumber);
    o.image_guidance_opt = c->add_option("--image-guidance-scale", o.image_guidance_scale,
                                         "Pull towards the input image (default 1.5)")
                               ->check(CLI::NonNegativeNumber);
    o.num_images_opt = c->add_option("--num-images", o.num_images, "Images per prompt (default 1)")
                           ->check(CLI::Range(1, kMaxImagesPerPrompt));
    AddSeedStepsSafety(c, o, "100");
    c->footer(kFooter);
  }

  // image-to-video
  s.i2v_cmd = app.add_subcommand("image-to-video", "Generate a video (MP4) from an image");
  {
    CLI::App* c = s.i2v_cmd;
    ImageGenerationOptions& o = s.i2v;
    c->add_option("--model", o.model, "Model id")->required();
    c->add_option("--in", o.in, "Conditioning image (PNG or JPEG)")->required();
    c->add_option("--out", o.out, "Output MP4 file")->required();
    AddSize(c, o, "video");
    o.fps_opt =
        c->add_option("--fps", o.fps, "Frames per second (default 6)")->check(CLI::Range(1, 240));
    o.motion_opt = c->add_option("--motion-bucket-id", o.motion_bucket_id,
                                 "Amount of motion, higher is more (default 127)")
                       ->check(CLI::NonNegativeNumber);
    o.noise_opt = c->add_option("--noise-aug-strength", o.noise_aug_strength,
                                "Noise added to the image (default 0.02)")
                      ->check(CLI::NonNegativeNumber);
    AddSeedStepsSafety(c, o, "25");
    c->footer(kFooter);
  }

  // audio-to-text
  s.a2t_cmd = app.add_subcommand("audio-to-text", "Transcribe audio (any format FFmpeg reads)");
  {
    CLI::App* c = s.a2t_cmd;
    c->add_option("--model", s.a2t.model, "Model id")->required();
    c->add_option("--in", s.a2t.in, "Input audio (WAV, MP3, M4A, FLAC, ...)")->required();
    c->add_option("--timestamps", s.a2t.timestamps,
                  "Timestamped chunks: sentence, word or false (default: sentence, not printed "
                  "unless asked for)")
        ->check(CLI::IsMember({"sentence", "word", "true", "false"}));
    c->footer(kFooter);
  }

  // segment-anything-2
  s.sam2_cmd = app.add_subcommand("segment-anything-2",
                                  "Segment an image from point or box prompts into masks");
  {
    CLI::App* c = s.sam2_cmd;
    SegmentOptions& o = s.sam2;
    c->add_option("--model", o.model, "Model id")->required();
    c->add_option("--in", o.in, "Input image (PNG or JPEG)")->required();
    c->add_option("--point", o.points,
                  "Point prompt X,Y[,LABEL] in pixels, LABEL 1 foreground (default) or 0 "
                  "background; repeat for several")
        ->allow_extra_args(false);
    c->add_option("--box", o.box, "Box prompt X0,Y0,X1,Y1 in pixels");
    c->add_option("--mask-input", o.mask_input,
                  "JSON file with a previous low-resolution mask (1x256x256 numbers)");
    c->add_option("--out", o.out, "Write masks, scores and logits to this JSON file");
    c->add_flag("--single-mask", o.single_mask, "One mask instead of three (multimask off)");
    c->add_flag("--no-logits", o.no_logits, "Thresholded masks instead of raw logits");
    c->add_flag("--no-normalize-coords", o.no_normalize, "Do not normalise point coordinates");
    c->footer(kFooter);
  }

  // llm
  s.llm_cmd = app.add_subcommand(
      "llm", "Chat completion: prints the tokens as they stream (--json: the final result)");
  {
    CLI::App* c = s.llm_cmd;
    LlmOptions& o = s.llm;
    c->add_option("--model", o.model, "Model id")->required();
    c->add_option("--prompt", o.prompt, "The user's message (sent last)");
    c->add_option("--system", o.system, "A system message (sent first)");
    c->add_option("--message", o.messages,
                  "A message ROLE=CONTENT (ROLE system, user or assistant), in order between "
                  "--system and --prompt; repeat for a conversation")
        ->allow_extra_args(false);
    o.temperature_opt =
        c->add_option("--temperature", o.temperature, "Sampling temperature (default 0.7)")
            ->check(CLI::Range(0.0, 100.0));
    o.max_tokens_opt =
        c->add_option("--max-tokens", o.max_tokens, "Most tokens to generate (default 256)")
            ->check(CLI::PositiveNumber);
    o.top_p_opt = c->add_option("--top-p", o.top_p, "Nucleus sampling probability (default 1)")
                      ->check(CLI::Range(0.0, 1.0));
    o.top_k_opt = c->add_option("--top-k", o.top_k, "Top-k sampling, -1 off (default -1)")
                      ->check(CLI::Range(-1, 1 << 20));
    c->footer(kFooter);
  }

  // image-to-text
  s.i2t_cmd = app.add_subcommand("image-to-text", "Describe an image in text");
  {
    CLI::App* c = s.i2t_cmd;
    c->add_option("--model", s.i2t.model, "Model id")->required();
    c->add_option("--in", s.i2t.in, "Input image (PNG or JPEG)")->required();
    c->add_option("--prompt", s.i2t.prompt, "Prompt to guide the description");
    c->footer(kFooter);
  }

  // text-to-speech
  s.tts_cmd = app.add_subcommand("text-to-speech", "Synthesise speech from text into a WAV file");
  {
    CLI::App* c = s.tts_cmd;
    c->add_option("--model", s.tts.model, "Model id")->required();
    c->add_option("--text", s.tts.text, "Text to speak")->required();
    c->add_option("--description", s.tts.description,
                  "Description of the speaker (gateway default: the Livepeer one)");
    c->add_option("--out", s.tts.out, "Output WAV file")->required();
    c->footer(kFooter);
  }

  // orchestrators
  s.orchestrators_cmd = app.add_subcommand(
      "orchestrators",
      "List the orchestrators the gateway knows, with their models (from ListCapabilities)");
  s.orchestrators_cmd->add_flag("--offers", s.orchestrators.offers,
                                "Also list each orchestrator's models one per line");
  s.orchestrators_cmd->footer(kFooter);
}

PipelineCommands::~PipelineCommands() = default;

std::optional<int> PipelineCommands::Run(const GlobalOptions& global, std::ostream& out,
                                         std::ostream& err) {
  State& s = *state_;
  if (*s.t2i_cmd) return s.RunTextToImage(global, out, err);
  if (*s.i2i_cmd) return s.RunImageToImage(global, out, err);
  if (*s.i2v_cmd) return s.RunImageToVideo(global, out, err);
  if (*s.a2t_cmd) return s.RunAudioToText(global, out, err);
  if (*s.sam2_cmd) return s.RunSegmentAnything2(global, out, err);
  if (*s.llm_cmd) return s.RunLlm(global, out, err);
  if (*s.i2t_cmd) return s.RunImageToText(global, out, err);
  if (*s.tts_cmd) return s.RunTextToSpeech(global, out, err);
  if (*s.orchestrators_cmd) return s.RunOrchestrators(global, out, err);
  return std::nullopt;
}

namespace {

// Prints an image response (writes its files first); shared by text-to-image and image-to-image.
int FinishImages(const GlobalOptions& global, absl::string_view pipeline,
                 const v1::ImageResponse& response, const ImageGenerationOptions& o,
                 double elapsed_ms, std::ostream& out, std::ostream& err) {
  if (response.images_size() == 0) return NoResult(global, "image", err);
  std::vector<std::string> lines;
  absl::StatusOr<Json> images = WriteMedia(response.images(), o.out, &lines);
  if (!images.ok()) return ReportUsageError(images.status(), err);
  if (global.json) {
    PrintJson(Json{{"images", *std::move(images)},
                   {"request_id", global.request_id},
                   {"elapsed_ms", elapsed_ms},
                   {"job", JobToJson(response.job())}},
              out);
    return kExitOk;
  }
  for (const std::string& line : lines) out << line << "\n";
  out << JobLine(pipeline, response.job(), o.model) << "\n";
  return kExitOk;
}

}  // namespace

int PipelineCommands::State::RunTextToImage(const GlobalOptions& global, std::ostream& out,
                                            std::ostream& err) {
  const ImageGenerationOptions& o = t2i;
  if (absl::Status st = CheckLoras(o.loras); !st.ok()) return ReportUsageError(st, err);
  if (absl::Status st = CheckWritableFile(o.out); !st.ok()) return ReportUsageError(st, err);
  v1::TextToImageRequest request;
  request.set_model_id(o.model);
  request.set_prompt(o.prompt);
  request.set_negative_prompt(o.negative_prompt);
  request.set_loras(o.loras);
  if (o.width_opt->count() > 0) request.set_width(o.width);
  if (o.height_opt->count() > 0) request.set_height(o.height);
  if (o.guidance_opt->count() > 0) request.set_guidance_scale(o.guidance_scale);
  if (o.seed_opt->count() > 0) request.set_seed(o.seed);
  if (o.steps_opt->count() > 0) request.set_num_inference_steps(o.steps);
  if (o.num_images_opt->count() > 0) request.set_num_images_per_prompt(o.num_images);
  if (o.no_safety_check) request.set_safety_check(false);
  v1::ImageResponse response;
  double elapsed_ms = 0;
  if (auto rc = CallUnary(global, &v1::Gateway::Stub::TextToImage, request, &response, &elapsed_ms,
                          err)) {
    return *rc;
  }
  return FinishImages(global, "text-to-image", response, o, elapsed_ms, out, err);
}

int PipelineCommands::State::RunImageToImage(const GlobalOptions& global, std::ostream& out,
                                             std::ostream& err) {
  const ImageGenerationOptions& o = i2i;
  absl::StatusOr<std::string> image = ReadInputImage(o.in);
  if (!image.ok()) return ReportUsageError(image.status(), err);
  if (absl::Status st = CheckLoras(o.loras); !st.ok()) return ReportUsageError(st, err);
  if (absl::Status st = CheckWritableFile(o.out); !st.ok()) return ReportUsageError(st, err);
  v1::ImageToImageRequest request;
  request.set_model_id(o.model);
  request.set_prompt(o.prompt);
  request.set_image(*std::move(image));
  request.set_negative_prompt(o.negative_prompt);
  request.set_loras(o.loras);
  if (o.strength_opt->count() > 0) request.set_strength(o.strength);
  if (o.guidance_opt->count() > 0) request.set_guidance_scale(o.guidance_scale);
  if (o.image_guidance_opt->count() > 0) request.set_image_guidance_scale(o.image_guidance_scale);
  if (o.seed_opt->count() > 0) request.set_seed(o.seed);
  if (o.steps_opt->count() > 0) request.set_num_inference_steps(o.steps);
  if (o.num_images_opt->count() > 0) request.set_num_images_per_prompt(o.num_images);
  if (o.no_safety_check) request.set_safety_check(false);
  v1::ImageResponse response;
  double elapsed_ms = 0;
  if (auto rc = CallUnary(global, &v1::Gateway::Stub::ImageToImage, request, &response, &elapsed_ms,
                          err)) {
    return *rc;
  }
  return FinishImages(global, "image-to-image", response, o, elapsed_ms, out, err);
}

int PipelineCommands::State::RunImageToVideo(const GlobalOptions& global, std::ostream& out,
                                             std::ostream& err) {
  const ImageGenerationOptions& o = i2v;
  absl::StatusOr<std::string> image = ReadInputImage(o.in);
  if (!image.ok()) return ReportUsageError(image.status(), err);
  if (absl::Status st = CheckWritableFile(o.out); !st.ok()) return ReportUsageError(st, err);
  v1::ImageToVideoRequest request;
  request.set_model_id(o.model);
  request.set_image(*std::move(image));
  if (o.width_opt->count() > 0) request.set_width(o.width);
  if (o.height_opt->count() > 0) request.set_height(o.height);
  if (o.fps_opt->count() > 0) request.set_fps(o.fps);
  if (o.motion_opt->count() > 0) request.set_motion_bucket_id(o.motion_bucket_id);
  if (o.noise_opt->count() > 0) request.set_noise_aug_strength(o.noise_aug_strength);
  if (o.seed_opt->count() > 0) request.set_seed(o.seed);
  if (o.steps_opt->count() > 0) request.set_num_inference_steps(o.steps);
  if (o.no_safety_check) request.set_safety_check(false);
  v1::VideoResponse response;
  double elapsed_ms = 0;
  if (auto rc = CallUnary(global, &v1::Gateway::Stub::ImageToVideo, request, &response, &elapsed_ms,
                          err)) {
    return *rc;
  }
  if (response.images_size() == 0 || response.images(0).data().empty()) {
    return NoResult(global, "video", err);
  }
  // The API returns a list (named "images" after the Livepeer API); models make one video.
  std::vector<std::string> lines;
  absl::StatusOr<Json> videos = WriteMedia(response.images(), o.out, &lines);
  if (!videos.ok()) return ReportUsageError(videos.status(), err);
  if (global.json) {
    PrintJson(Json{{"videos", *std::move(videos)},
                   {"request_id", global.request_id},
                   {"elapsed_ms", elapsed_ms},
                   {"job", JobToJson(response.job())}},
              out);
    return kExitOk;
  }
  for (const std::string& line : lines) out << line << "\n";
  out << JobLine("image-to-video", response.job(), o.model) << "\n";
  return kExitOk;
}

int PipelineCommands::State::RunAudioToText(const GlobalOptions& global, std::ostream& out,
                                            std::ostream& err) {
  absl::StatusOr<std::string> audio = ReadInputFile(a2t.in, "input audio");
  if (!audio.ok()) return ReportUsageError(audio.status(), err);
  v1::AudioToTextRequest request;
  request.set_model_id(a2t.model);
  request.set_audio(*std::move(audio));
  request.set_return_timestamps(a2t.timestamps);
  v1::TextResponse response;
  double elapsed_ms = 0;
  if (auto rc = CallUnary(global, &v1::Gateway::Stub::AudioToText, request, &response, &elapsed_ms,
                          err)) {
    return *rc;
  }
  if (global.json) {
    Json chunks = Json::array();
    for (const v1::Chunk& c : response.chunks()) {
      chunks.push_back(
          Json{{"timestamp", std::vector<double>(c.timestamp().begin(), c.timestamp().end())},
               {"text", c.text()}});
    }
    PrintJson(Json{{"text", response.text()},
                   {"chunks", std::move(chunks)},
                   {"request_id", global.request_id},
                   {"elapsed_ms", elapsed_ms},
                   {"job", JobToJson(response.job())}},
              out);
    return kExitOk;
  }
  // The transcription alone on stdout (so it can be piped); chunks when asked for.
  out << response.text() << "\n";
  if (!a2t.timestamps.empty() && a2t.timestamps != "false") {
    for (const v1::Chunk& c : response.chunks()) {
      const double start = c.timestamp_size() > 0 ? c.timestamp(0) : 0;
      const double end = c.timestamp_size() > 1 ? c.timestamp(1) : start;
      out << "[" << FormatDouble(start, "%.2f") << " - " << FormatDouble(end, "%.2f") << "] "
          << c.text() << "\n";
    }
  }
  err << JobLine("audio-to-text", response.job(), a2t.model) << "\n";
  return kExitOk;
}

int PipelineCommands::State::RunSegmentAnything2(const GlobalOptions& global, std::ostream& out,
                                                 std::ostream& err) {
  const SegmentOptions& o = sam2;
  absl::StatusOr<std::string> image = ReadInputImage(o.in);
  if (!image.ok()) return ReportUsageError(image.status(), err);
  v1::SegmentAnything2Request request;
  request.set_model_id(o.model);
  request.set_image(*std::move(image));
  if (o.points.empty() && o.box.empty()) {
    return ReportUsageError(
        absl::InvalidArgumentError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1"),
        err);
  }
  for (const std::string& point : o.points) {
    absl::StatusOr<std::vector<float>> v = ParseNumbers(point);
    const bool ok = v.ok() && (v->size() == 2 || v->size() == 3) &&
                    (v->size() == 2 || (*v)[2] == 0 || (*v)[2] == 1);
    if (!ok) {
      return ReportUsageError(absl::InvalidArgumentError(absl::StrCat(
                                  "invalid --point ", Quote(point),
                                  ": expected X,Y or X,Y,LABEL (LABEL 1 foreground, "
                                  "0 background)",
                                  v.ok() ? "" : absl::StrCat(": ", v.status().message()))),
                              err);
    }
    request.add_point_coords((*v)[0]);
    request.add_point_coords((*v)[1]);
    request.add_point_labels(v->size() == 3 ? static_cast<int32_t>((*v)[2]) : 1);
  }
  if (!o.box.empty()) {
    absl::StatusOr<std::vector<float>> v = ParseNumbers(o.box);
    if (!v.ok() || v->size() != 4 || (*v)[2] < (*v)[0] || (*v)[3] < (*v)[1]) {
      return ReportUsageError(
          absl::InvalidArgumentError(absl::StrCat(
              "invalid --box ", Quote(o.box), ": expected X0,Y0,X1,Y1 with X1 >= X0, Y1 >= Y0",
              v.ok() ? "" : absl::StrCat(": ", v.status().message()))),
          err);
    }
    for (float f : *v) request.add_box(f);
  }
  if (!o.mask_input.empty()) {
    absl::StatusOr<std::string> text = ReadInputFile(o.mask_input, "mask input");
    if (!text.ok()) return ReportUsageError(text.status(), err);
    const Json json = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    std::vector<float> values;
    bool ok = !json.is_discarded();
    if (ok) FlattenNumbers(json, &values, &ok);
    if (!ok || values.size() != kMaskInputValues) {
      return ReportUsageError(
          absl::InvalidArgumentError(absl::StrCat(
              "--mask-input ", Quote(o.mask_input), " must be a JSON array of ", kMaskInputValues,
              " numbers (1x256x256)", ok ? absl::StrCat(", got ", values.size()) : "")),
          err);
    }
    for (float f : values) request.add_mask_input(f);
  }
  if (o.single_mask) request.set_multimask_output(false);
  if (o.no_logits) request.set_return_logits(false);
  if (o.no_normalize) request.set_normalize_coords(false);
  if (!o.out.empty()) {
    if (absl::Status st = CheckWritableFile(o.out); !st.ok()) return ReportUsageError(st, err);
  }

  v1::MasksResponse response;
  double elapsed_ms = 0;
  if (auto rc = CallUnary(global, &v1::Gateway::Stub::SegmentAnything2, request, &response,
                          &elapsed_ms, err)) {
    return *rc;
  }
  Json result = {{"masks", ParseJsonField(response.masks())},
                 {"scores", ParseJsonField(response.scores())},
                 {"logits", ParseJsonField(response.logits())}};
  if (!o.out.empty()) {
    if (absl::Status st = WriteFileAtomically(o.out, result.dump() + "\n"); !st.ok()) {
      return ReportUsageError(st, err);
    }
  }
  const std::vector<size_t> shape = JsonShape(result["masks"]);
  if (global.json) {
    result["mask_shape"] = shape;
    if (!o.out.empty()) result["output"] = o.out;
    result["request_id"] = global.request_id;
    result["elapsed_ms"] = elapsed_ms;
    result["job"] = JobToJson(response.job());
    PrintJson(result, out);
    return kExitOk;
  }
  const size_t masks = shape.empty() ? 0 : shape[0];
  out << masks << (masks == 1 ? " mask" : " masks");
  if (shape.size() == 3) out << " of " << shape[2] << "x" << shape[1];
  out << ", scores " << response.scores();
  if (!o.out.empty()) out << " -> " << o.out;
  out << "\n" << JobLine("segment-anything-2", response.job(), o.model) << "\n";
  return kExitOk;
}

int PipelineCommands::State::RunLlm(const GlobalOptions& global, std::ostream& out,
                                    std::ostream& err) {
  const LlmOptions& o = llm;
  v1::LLMRequest request;
  request.set_model(o.model);
  if (!o.system.empty()) {
    v1::LLMMessage* m = request.add_messages();
    m->set_role("system");
    m->set_content(o.system);
  }
  for (const std::string& message : o.messages) {
    const size_t eq = message.find('=');
    const std::string role = eq == std::string::npos ? "" : message.substr(0, eq);
    if (role != "system" && role != "user" && role != "assistant") {
      return ReportUsageError(absl::InvalidArgumentError(absl::StrCat(
                                  "invalid --message ", Quote(message),
                                  ": expected ROLE=CONTENT with ROLE system, user or assistant")),
                              err);
    }
    v1::LLMMessage* m = request.add_messages();
    m->set_role(role);
    m->set_content(message.substr(eq + 1));
  }
  if (!o.prompt.empty()) {
    v1::LLMMessage* m = request.add_messages();
    m->set_role("user");
    m->set_content(o.prompt);
  }
  if (request.messages_size() == 0) {
    return ReportUsageError(
        absl::InvalidArgumentError("give a --prompt (or --message ROLE=CONTENT)"), err);
  }
  if (o.temperature_opt->count() > 0) request.set_temperature(o.temperature);
  if (o.max_tokens_opt->count() > 0) request.set_max_tokens(o.max_tokens);
  if (o.top_p_opt->count() > 0) request.set_top_p(o.top_p);
  if (o.top_k_opt->count() > 0) request.set_top_k(o.top_k);

  grpc::ClientContext context;
  PrepareContext(global, context);
  auto stub = MakeStub(global);
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<grpc::ClientReader<v1::LLMResponse>> reader = stub->LLM(&context, request);
  v1::LLMResponse message;
  v1::LLMResponse last;
  std::string text;
  std::string finish_reason;
  int messages = 0;
  double first_token_ms = -1;
  while (reader->Read(&message)) {
    ++messages;
    for (const v1::LLMChoice& choice : message.choices()) {
      if (!choice.delta().content().empty()) {
        if (first_token_ms < 0) first_token_ms = MillisecondsSince(start);
        text += choice.delta().content();
        // Streams to the terminal as the tokens come, which is the point of the streaming RPC.
        if (!global.json) out << choice.delta().content() << std::flush;
      }
      if (!choice.finish_reason().empty()) finish_reason = choice.finish_reason();
    }
    last = message;
  }
  const grpc::Status status = reader->Finish();
  const double elapsed_ms = MillisecondsSince(start);
  if (!global.json && !text.empty()) out << "\n";
  if (!status.ok()) return ReportRpcError(global, status, err);
  if (messages == 0) return NoResult(global, "tokens", err);

  const v1::LLMTokenUsage& usage = last.usage();
  if (global.json) {
    PrintJson(Json{{"id", last.id()},
                   {"model", last.model()},
                   {"created", last.created()},
                   {"text", text},
                   {"finish_reason", finish_reason},
                   {"usage", Json{{"prompt_tokens", usage.prompt_tokens()},
                                  {"completion_tokens", usage.completion_tokens()},
                                  {"total_tokens", usage.total_tokens()}}},
                   {"messages", messages},
                   {"first_token_ms", first_token_ms},
                   {"request_id", global.request_id},
                   {"elapsed_ms", elapsed_ms},
                   {"job", JobToJson(last.job())}},
              out);
    return kExitOk;
  }
  // The statistics go to stderr so that stdout holds the completion alone.
  err << "llm: " << usage.prompt_tokens() << " prompt + " << usage.completion_tokens()
      << " completion tokens, finish " << (finish_reason.empty() ? "?" : finish_reason) << "; "
      << JobLine("llm", last.job(), o.model) << "\n";
  return kExitOk;
}

int PipelineCommands::State::RunImageToText(const GlobalOptions& global, std::ostream& out,
                                            std::ostream& err) {
  absl::StatusOr<std::string> image = ReadInputImage(i2t.in);
  if (!image.ok()) return ReportUsageError(image.status(), err);
  v1::ImageToTextRequest request;
  request.set_model_id(i2t.model);
  request.set_image(*std::move(image));
  request.set_prompt(i2t.prompt);
  v1::ImageToTextResponse response;
  double elapsed_ms = 0;
  if (auto rc = CallUnary(global, &v1::Gateway::Stub::ImageToText, request, &response, &elapsed_ms,
                          err)) {
    return *rc;
  }
  if (global.json) {
    PrintJson(Json{{"text", response.text()},
                   {"request_id", global.request_id},
                   {"elapsed_ms", elapsed_ms},
                   {"job", JobToJson(response.job())}},
              out);
    return kExitOk;
  }
  out << response.text() << "\n";
  err << JobLine("image-to-text", response.job(), i2t.model) << "\n";
  return kExitOk;
}

int PipelineCommands::State::RunTextToSpeech(const GlobalOptions& global, std::ostream& out,
                                             std::ostream& err) {
  if (absl::Status st = CheckWritableFile(tts.out); !st.ok()) return ReportUsageError(st, err);
  v1::TextToSpeechRequest request;
  request.set_model_id(tts.model);
  request.set_text(tts.text);
  request.set_description(tts.description);
  v1::AudioResponse response;
  double elapsed_ms = 0;
  if (auto rc = CallUnary(global, &v1::Gateway::Stub::TextToSpeech, request, &response, &elapsed_ms,
                          err)) {
    return *rc;
  }
  const std::string& wav = response.audio().data();
  if (wav.empty()) return NoResult(global, "audio", err);
  if (absl::Status st = WriteFileAtomically(tts.out, wav); !st.ok()) {
    return ReportUsageError(st, err);
  }
  const std::optional<WavInfo> info = ProbeWav(wav);
  if (global.json) {
    Json json = {{"output", tts.out},
                 {"bytes", wav.size()},
                 {"content_type", response.audio().content_type()}};
    if (info) {
      json["sample_rate"] = info->sample_rate;
      json["channels"] = info->channels;
      json["duration_seconds"] = info->seconds;
    }
    json["request_id"] = global.request_id;
    json["elapsed_ms"] = elapsed_ms;
    json["job"] = JobToJson(response.job());
    PrintJson(json, out);
    return kExitOk;
  }
  out << "wrote " << tts.out << " (" << wav.size() << " bytes, " << response.audio().content_type();
  if (info) {
    out << ", " << FormatDouble(info->seconds, "%.2f") << " s, " << info->sample_rate << " Hz, "
        << info->channels << (info->channels == 1 ? " channel" : " channels");
  }
  out << ")\n" << JobLine("text-to-speech", response.job(), tts.model) << "\n";
  return kExitOk;
}

// The gateway's public API has no per-orchestrator RPC, and needs none: ListCapabilities returns
// every orchestrator it knows and every offer, which are grouped here.
int PipelineCommands::State::RunOrchestrators(const GlobalOptions& global, std::ostream& out,
                                              std::ostream& err) {
  v1::ListCapabilitiesRequest request;
  v1::ListCapabilitiesResponse response;
  double elapsed_ms = 0;
  if (auto rc = CallUnary(global, &v1::Gateway::Stub::ListCapabilities, request, &response,
                          &elapsed_ms, err)) {
    return *rc;
  }
  std::map<std::string, std::vector<const v1::ModelOffer*>> offers;
  for (const v1::ModelOffer& o : response.offers()) offers[o.orchestrator()].push_back(&o);

  if (global.json) {
    Json list = Json::array();
    for (const v1::OrchestratorInfo& o : response.orchestrators()) {
      Json models = Json::array();
      for (const v1::ModelOffer* m : offers[o.id()]) {
        models.push_back(Json{{"pipeline", m->pipeline()},
                              {"model_id", m->model_id()},
                              {"state", m->state()},
                              {"warm", m->warm()},
                              {"capacity", m->capacity()},
                              {"in_use", m->in_use()},
                              {"price_per_unit", m->price_per_unit()},
                              {"unit", m->unit()}});
      }
      list.push_back(
          Json{{"id", o.id()},
               {"address", o.address()},
               {"source", o.source()},
               {"ready", o.ready()},
               {"in_flight", o.in_flight()},
               {"hardware", std::vector<std::string>(o.hardware().begin(), o.hardware().end())},
               {"offers", std::move(models)}});
    }
    PrintJson(Json{{"orchestrators", std::move(list)}}, out);
    return kExitOk;
  }
  if (response.orchestrators().empty()) {
    out << "no orchestrators known to the gateway\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ORCHESTRATOR", "ADDRESS", "SOURCE", "READY", "IN FLIGHT", "MODELS", "WARM", "HARDWARE"}};
  for (const v1::OrchestratorInfo& o : response.orchestrators()) {
    const auto& mine = offers[o.id()];
    const auto warm =
        std::count_if(mine.begin(), mine.end(), [](const v1::ModelOffer* m) { return m->warm(); });
    rows.push_back({o.id(), o.address(), o.source().empty() ? "-" : o.source(),
                    o.ready() ? "yes" : "no", absl::StrCat(o.in_flight()),
                    absl::StrCat(mine.size()), absl::StrCat(warm),
                    o.hardware().empty() ? "-" : absl::StrJoin(o.hardware(), ",")});
  }
  out << FormatTable(rows);
  if (orchestrators.offers) {
    std::vector<std::vector<std::string>> offer_rows = {
        {"ORCHESTRATOR", "PIPELINE", "MODEL", "STATE", "CAPACITY", "IN USE", "PRICE", "UNIT"}};
    for (const v1::OrchestratorInfo& o : response.orchestrators()) {
      for (const v1::ModelOffer* m : offers[o.id()]) {
        offer_rows.push_back({o.id(), m->pipeline(), m->model_id(),
                              m->state().empty() ? (m->warm() ? "ready" : "-") : m->state(),
                              absl::StrCat(m->capacity()), absl::StrCat(m->in_use()),
                              FormatPrice(m->price_per_unit()),
                              m->unit().empty() ? "-" : m->unit()});
      }
    }
    out << "\n" << FormatTable(offer_rows);
  }
  return kExitOk;
}

}  // namespace switchyard::cli::internal
