// Image pipelines of the orchestrator: request validation, pre-processing (image decoding to
// tensors), running the TorchScript model, and post-processing (PNG, MP4, JSON masks).
//
// TorchScript contracts (docs/pipelines-image.md). Images are float32 [N, 3, H, W], RGB, 0..255.
//   text-to-image:  forward(prompt: str, negative_prompt: str, seed: int, num_inference_steps: int,
//                           guidance_scale: float, height: int, width: int, num_images: int)
//                   -> float32 [num_images, 3, height, width]
//   image-to-image: forward(image: [1,3,H,W], prompt: str, negative_prompt: str, seed: int,
//                           strength: float, guidance_scale: float, image_guidance_scale: float,
//                           num_inference_steps: int, num_images: int)
//                   -> float32 [num_images, 3, H', W']
//   image-to-video: forward(image: [1,3,H,W], seed: int, height: int, width: int, fps: int,
//                           motion_bucket_id: int, noise_aug_strength: float,
//                           num_inference_steps: int) -> float32 [F, 3, height, width]
//   segment-anything-2: forward(image: [1,3,H,W], point_coords: float32 [P,2],
//                           point_labels: int64 [P], box: float32 [B,4] (B 0 or 1),
//                           mask_input: float32 [M,256,256] (M 0 or 1), multimask_output: bool,
//                           normalize_coords: bool)
//                   -> (masks float32 [K,H,W], scores float32 [K], low_res_logits float32 [K,h,w])
//   image-to-text:  forward(image: [1,3,H,W], prompt: str) -> str, or the OCR contract (a module
//                   with the int attribute ocr_contract: detect/recognize/classify/alphabet,
//                   runner/ocr_bundle.h), post-processed here in C++ (ocr.h)
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/media/image_codec.h"
#include "orchestrator/orchestrator_config.h"
#include "orchestrator/pipelines/prompt_limits.h"
#include "orchestrator/pipelines/request_validation.h"
#include "runner/model_executor.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::orchestrator {

// The pipeline names, ImageLimits, ImageLimitsFor, ResolveSeed, the validated *Params and the
// Validate* functions: request_validation.h (torch-free).

// What every run function needs besides its parameters.
struct RunContext {
  runner::ModelExecutor* executor = nullptr;
  const ModelConfig* model = nullptr;
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> is_cancelled;
};

struct EncodedImage {
  std::string png;
  int width = 0;
  int height = 0;
};
struct ImagesResult {
  std::vector<EncodedImage> images;
  int64_t output_pixels = 0;  // billing unit: sum of w * h over the images
  int input_width = 0;
  int input_height = 0;
};

// Runs the model once per prompt; images in prompt order.
absl::StatusOr<ImagesResult> RunTextToImage(const RunContext& ctx, const TextToImageParams& params);
// Decodes `image` (INVALID_ARGUMENT if corrupt or over the model's max_input_pixels) first.
absl::StatusOr<ImagesResult> RunImageToImage(const RunContext& ctx, const std::string& image,
                                             const ImageToImageParams& params);

struct VideoResult {
  std::string mp4;  // fragmented MP4, H.264 yuv420p
  int width = 0;
  int height = 0;
  int frames = 0;
  int64_t output_pixels = 0;  // frames * width * height
};
absl::StatusOr<VideoResult> RunImageToVideo(const RunContext& ctx, const std::string& image,
                                            const ImageToVideoParams& params);

struct MasksResult {
  // JSON, or (packed_tensors) the *_tensor fields with the same values.
  std::string masks;   // JSON [K][H][W]: logits, or 0/1 when return_logits is false
  std::string scores;  // JSON [K]
  std::string logits;  // JSON [K][h][w]
  v1::FloatTensor masks_tensor;
  v1::FloatTensor scores_tensor;
  v1::FloatTensor logits_tensor;
  int num_masks = 0;
  int input_width = 0;
  int input_height = 0;
};
absl::StatusOr<MasksResult> RunSegmentAnything2(const RunContext& ctx, const std::string& image,
                                                const SegmentAnything2Params& params);

struct TextResult {
  std::string text;
  int input_width = 0;
  int input_height = 0;
};
absl::StatusOr<TextResult> RunImageToText(const RunContext& ctx, const std::string& image,
                                          const std::string& prompt);

// Building blocks, exposed for tests.

// RGB24 image -> float32 [1, 3, H, W] in 0..255.
at::Tensor ImageToTensor(const media::RgbImage& image);
// Checks a model's image batch: a float32 tensor [n, 3, H, W] (n, H, W checked when >= 0, and
// H, W > 0); INTERNAL naming the model and the shape otherwise.
absl::StatusOr<at::Tensor> CheckImageBatch(const c10::IValue& value, const std::string& model_id,
                                           int64_t n, int64_t height, int64_t width);
// float [N, 3, H, W] -> N PNGs (clamped to 0..255 and rounded).
absl::StatusOr<std::vector<EncodedImage>> EncodePngs(const at::Tensor& images);
// float [F, 3, H, W] in 0..255 -> fragmented MP4 (H.264 libx264, yuv420p, `fps` frames per
// second) in memory. INVALID_ARGUMENT for odd sizes or a bad fps.
absl::StatusOr<std::string> EncodeMp4(const at::Tensor& frames, int fps, int encoder_threads = 1);
// A float tensor as JSON nested arrays (shortest round-trip float text); `as_binary` writes
// value > 0 as 1, else 0.
std::string TensorToJson(const at::Tensor& tensor, bool as_binary = false);
// The same tensor packed as float32 (the API's FloatTensor).
void TensorToPacked(const at::Tensor& tensor, v1::FloatTensor* out);

}  // namespace switchyard::orchestrator
