// The module around the converted network: `person_logits` (the image resized to the model's
// input and back) and `forward` per the pipeline contract (tflite_converter.h), with the blur of
// the live-video contract. Apart from the operator translation (tflite_converter.cc) because it
// knows nothing of TFLite.
#include "runner/tflite_module.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runner/converter_support.h"

namespace switchyard::runner {

using convert::FloatLiteral;

absl::StatusOr<torch::jit::Module> BuildTfliteModule(
    const std::string& network, const std::string& logits_var, int64_t input_h, int64_t input_w,
    TfliteContract contract, std::vector<std::pair<std::string, torch::Tensor>> params,
    const std::string& name) {
  const std::string size = absl::StrCat("[", input_h, ", ", input_w, "]");
  std::string source = absl::StrCat(
      "def network(self, x: Tensor) -> Tensor:\n", network, "    return ", logits_var, "\n\n",
      // The 0..255 image, resized to the model's input as MediaPipe's graph does
      // (bilinear, aspect not kept), on 0..1; logits resized back to H x W.
      "def person_logits(self, image: Tensor) -> Tuple[Tensor, Tensor]:\n",
      "    x = torch.upsample_bilinear2d(image * ", FloatLiteral(1.0 / 255.0), ", ", size,
      ", False, None, None)\n", "    low = self.network(x)\n",
      "    full = torch.upsample_bilinear2d(low, [image.size(2), image.size(3)], "
      "False, None, None)\n",
      "    return full, low\n\n");
  if (contract == TfliteContract::kSegmentAnything2) {
    absl::StrAppend(
        &source,
        "def forward(self, image: Tensor, point_coords: Tensor, point_labels: Tensor, "
        "box: Tensor, mask_input: Tensor, multimask_output: bool, normalize_coords: bool) "
        "-> Tuple[Tensor, Tensor, Tensor]:\n",
        "    # a person mask: the prompts are ignored (this is not SAM 2)\n",
        "    full, low = self.person_logits(image)\n",
        "    score = torch.mean(torch.abs(torch.sigmoid(low) * 2.0 - 1.0)).reshape([1])\n",
        "    return full[0], score, low[0]\n");
  } else {
    const int64_t taps = 2 * kTfliteBlurRadius + 1;
    std::vector<float> kernel(static_cast<size_t>(taps));
    double sum = 0;
    for (int64_t i = 0; i < taps; ++i) {
      const double d = static_cast<double>(i - kTfliteBlurRadius);
      sum += std::exp(-d * d / (2.0 * kTfliteBlurSigma * kTfliteBlurSigma));
    }
    for (int64_t i = 0; i < taps; ++i) {
      const double d = static_cast<double>(i - kTfliteBlurRadius);
      kernel[static_cast<size_t>(i)] =
          static_cast<float>(std::exp(-d * d / (2.0 * kTfliteBlurSigma * kTfliteBlurSigma)) / sum);
    }
    torch::Tensor k = torch::from_blob(kernel.data(), {taps}, torch::kFloat32).clone();
    params.emplace_back("blur_v", k.reshape({1, 1, taps, 1}).repeat({3, 1, 1, 1}));
    params.emplace_back("blur_h", k.reshape({1, 1, 1, taps}).repeat({3, 1, 1, 1}));
    const std::string r = absl::StrCat(kTfliteBlurRadius);
    absl::StrAppend(&source, "def blur(self, f: Tensor) -> Tensor:\n",
                    "    # separable Gaussian, edge pixels repeated\n",
                    "    f = torch.cat([f.narrow(2, 0, 1).expand(-1, -1, ", r, ", -1), f, ",
                    "f.narrow(2, f.size(2) - 1, 1).expand(-1, -1, ", r, ", -1)], 2)\n",
                    "    f = torch.conv2d(f, self.blur_v, None, [1, 1], [0, 0], [1, 1], 3)\n",
                    "    f = torch.cat([f.narrow(3, 0, 1).expand(-1, -1, -1, ", r, "), f, ",
                    "f.narrow(3, f.size(3) - 1, 1).expand(-1, -1, -1, ", r, ")], 3)\n",
                    "    return torch.conv2d(f, self.blur_h, None, [1, 1], [0, 0], [1, 1], 3)\n\n",
                    "def forward(self, frame: Tensor, params: str) -> Tensor:\n",
                    "    # params are ignored\n", "    full, low = self.person_logits(frame)\n",
                    "    p = torch.sigmoid(full)\n",
                    "    y = frame * p + self.blur(frame) * (1.0 - p)\n",
                    "    # live-video-to-video wants even sizes\n",
                    "    return y.narrow(2, 0, y.size(2) - y.size(2) % 2)"
                    ".narrow(3, 0, y.size(3) - y.size(3) % 2)\n");
  }
  return convert::BuildModule("TfliteModel", params, 1, source, name);
}

}  // namespace switchyard::runner
