#include "orchestrator/pipelines/upscale_pipeline.h"

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "orchestrator/pipelines/tensor_image.h"
#include "orchestrator/pipelines/warmup.h"

namespace switchyard::orchestrator {

absl::StatusOr<UpscaleResult> RunUpscale(runner::ModelExecutor& executor, const std::string& image,
                                         int64_t max_input_pixels, absl::Time deadline,
                                         const std::function<bool()>& is_cancelled) {
  auto decoded = media::DecodeImage(image, max_input_pixels);
  if (!decoded.ok()) return decoded.status();
  const int w = decoded->width, h = decoded->height;
  at::Tensor input = Rgb24ToTensor(*decoded);
  runner::CancelToken cancel;
  auto watch = runner::WatchForCancel(is_cancelled, cancel);
  auto output = executor.RunBatchable(std::move(input), deadline, cancel);
  if (!output.ok()) return output.status();

  const at::Tensor& out = *output;
  if (out.dim() != 4 || out.size(0) != 1 || out.size(1) != 3) {
    return absl::InternalError(absl::StrCat("model returned a tensor of shape ",
                                            c10::str(out.sizes()), ", expected [1, 3, H, W]"));
  }
  auto result = TensorToImage(out[0]);
  if (!result.ok()) return result.status();
  auto png = media::EncodePng(*result);
  if (!png.ok()) return png.status();
  return UpscaleResult{std::move(*png), w, h, result->width, result->height};
}

WarmupInputs UpscaleWarmupInputs(const ModelConfig& model) {
  if (model.warmup_size <= 0) return std::nullopt;
  return runner::ModelExecutor::Inputs{
      at::zeros({1, 3, model.warmup_size, model.warmup_size}, at::kFloat)};
}

}  // namespace switchyard::orchestrator
