#include "orchestrator/pipelines/tensor_image.h"

#include <algorithm>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_cat.h"

namespace switchyard::orchestrator {
namespace {

// 2^23: adding it to a float in [0, 2^23) leaves no fraction bits, so the sum is the value rounded
// in the current rounding mode (to nearest, ties to even, as std::nearbyint and torch.round),
// without a libm call per value. The build does not use -ffast-math, which could fold it away.
// The scalar path: the tail of each chunk, and CPUs without SSE2.
constexpr float kRoundingBias = 8388608.0f;

inline uint8_t ToByte(float v) {
  v = v > 0.0f ? v : 0.0f;      // NaN and negatives (-inf too) -> 0
  v = v < 255.0f ? v : 255.0f;  // +inf -> 255
  return static_cast<uint8_t>(static_cast<int>((v + kRoundingBias) - kRoundingBias));
}

at::Tensor ContiguousFloat(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

absl::Status WrongShape(const at::Tensor& t, const char* expected) {
  return absl::InternalError(
      absl::StrCat("expected an image tensor ", expected, ", got ", c10::str(t.sizes())));
}

// One plane's values to bytes. The SSE2 path (every x86-64 CPU) is 8x faster than the scalar
// loop, which GCC does not vectorize: maxps(v, 0) gives 0 for NaN as nan_to_num does, and
// cvtps2dq rounds in the default mode, half to even, as torch.round.
void PlaneToBytes(const float* src, int64_t count, uint8_t* dst) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 zero = _mm_setzero_ps();
  const __m128 max = _mm_set1_ps(255.0f);
  for (; i + 16 <= count; i += 16) {
    __m128i ints[4];
    for (int k = 0; k < 4; ++k) {
      const __m128 v = _mm_min_ps(_mm_max_ps(_mm_loadu_ps(src + i + 4 * k), zero), max);
      ints[k] = _mm_cvtps_epi32(v);
    }
    const __m128i low = _mm_packs_epi32(ints[0], ints[1]);
    const __m128i high = _mm_packs_epi32(ints[2], ints[3]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_packus_epi16(low, high));
  }
#endif
  for (; i < count; ++i) dst[i] = ToByte(src[i]);
}

}  // namespace

void PlanesToRgb24(const float* planes, int64_t pixels, uint8_t* out) {
  // A chunk of each plane to bytes, then interleaved: the planes' loops vectorize, the
  // interleave is a plain byte copy.
  constexpr int64_t kChunk = 256;
  uint8_t bytes[3][kChunk];
  for (int64_t start = 0; start < pixels; start += kChunk) {
    const int64_t count = std::min(kChunk, pixels - start);
    for (int c = 0; c < 3; ++c) PlaneToBytes(planes + c * pixels + start, count, bytes[c]);
    uint8_t* dst = out + 3 * start;
    for (int64_t i = 0; i < count; ++i) {
      dst[3 * i] = bytes[0][i];
      dst[3 * i + 1] = bytes[1][i];
      dst[3 * i + 2] = bytes[2][i];
    }
  }
}

absl::StatusOr<media::RgbImage> TensorToImage(const at::Tensor& chw) {
  if (chw.dim() != 3 || chw.size(0) != 3) return WrongShape(chw, "[3, H, W]");
  const at::Tensor planes = ContiguousFloat(chw);
  media::RgbImage image;
  image.height = static_cast<int>(planes.size(1));
  image.width = static_cast<int>(planes.size(2));
  const int64_t pixels = planes.size(1) * planes.size(2);
  image.pixels.resize(static_cast<size_t>(pixels) * 3);
  PlanesToRgb24(planes.data_ptr<float>(), pixels, image.pixels.data());
  return image;
}

absl::StatusOr<at::Tensor> TensorsToRgb24(const at::Tensor& nchw) {
  if (nchw.dim() != 4 || nchw.size(1) != 3) return WrongShape(nchw, "[N, 3, H, W]");
  const at::Tensor planes = ContiguousFloat(nchw);
  const int64_t n = planes.size(0), h = planes.size(2), w = planes.size(3);
  at::Tensor out = at::empty({n, h, w, 3}, at::kByte);
  const float* src = planes.data_ptr<float>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) PlanesToRgb24(src + i * 3 * h * w, h * w, dst + i * h * w * 3);
  return out;
}

at::Tensor Rgb24ToTensor(const media::RgbImage& image) {
  const int64_t pixels = static_cast<int64_t>(image.width) * image.height;
  at::Tensor out = at::empty({1, 3, image.height, image.width}, at::kFloat);
  float* r = out.data_ptr<float>();
  float* g = r + pixels;
  float* b = g + pixels;
  const uint8_t* src = image.pixels.data();
  for (int64_t i = 0; i < pixels; ++i) {
    r[i] = src[3 * i];
    g[i] = src[3 * i + 1];
    b[i] = src[3 * i + 2];
  }
  return out;
}

}  // namespace switchyard::orchestrator
