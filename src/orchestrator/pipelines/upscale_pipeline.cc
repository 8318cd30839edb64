#include "orchestrator/pipelines/upscale_pipeline.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "orchestrator/pipelines/warmup.h"

namespace switchyard::orchestrator {

absl::StatusOr<UpscaleResult> RunUpscale(runner::ModelExecutor& executor, const std::string& image,
                                         int64_t max_input_pixels, absl::Time deadline,
                                         const std::function<bool()>& is_cancelled) {
  auto decoded = media::DecodeImage(image, max_input_pixels);
  if (!decoded.ok()) return decoded.status();
  const int w = decoded->width, h = decoded->height;

  // HWC uint8 -> NCHW float32 in 0..255.
  at::Tensor input = at::from_blob(decoded->pixels.data(), {h, w, 3}, at::kByte)
                         .permute({2, 0, 1})
                         .unsqueeze(0)
                         .to(at::kFloat)
                         .contiguous();
  runner::CancelToken cancel;
  auto watch = runner::WatchForCancel(is_cancelled, cancel);
  auto output = executor.RunBatchable(std::move(input), deadline, cancel);
  if (!output.ok()) return output.status();

  const at::Tensor& out = *output;
  if (out.dim() != 4 || out.size(0) != 1 || out.size(1) != 3) {
    return absl::InternalError(absl::StrCat("model returned a tensor of shape ",
                                            c10::str(out.sizes()), ", expected [1, 3, H, W]"));
  }
  at::Tensor pixels =
      out.squeeze(0).clamp(0, 255).round().to(at::kByte).permute({1, 2, 0}).contiguous();
  media::RgbImage result;
  result.height = static_cast<int>(pixels.size(0));
  result.width = static_cast<int>(pixels.size(1));
  result.pixels.resize(static_cast<size_t>(pixels.numel()));
  std::memcpy(result.pixels.data(), pixels.data_ptr<uint8_t>(), result.pixels.size());

  auto png = media::EncodePng(result);
  if (!png.ok()) return png.status();
  return UpscaleResult{std::move(*png), w, h, result.width, result.height};
}

WarmupInputs UpscaleWarmupInputs(const ModelConfig& model) {
  if (model.warmup_size <= 0) return std::nullopt;
  return runner::ModelExecutor::Inputs{
      at::zeros({1, 3, model.warmup_size, model.warmup_size}, at::kFloat)};
}

}  // namespace switchyard::orchestrator
