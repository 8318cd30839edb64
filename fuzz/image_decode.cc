// Fuzzes media::DecodeImage (PNG/JPEG from requests: upscale, image-to-image, image-to-video,
// segment-anything-2, image-to-text) with a pixel cap, and checks that what decodes is a
// consistent RGB24 image that survives a PNG round trip.
#include <cstdint>

#include "common/media/image_codec.h"
#include "fuzz/ffmpeg_quiet.h"
#include "fuzz/fuzz_util.h"

namespace {
// The orchestrator's default max_input_pixels (512x512): larger images must be refused.
constexpr int64_t kMaxPixels = 512 * 512;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = switchyard::fuzz::QuietFfmpeg();
  (void)quiet;
  using switchyard::media::DecodeImage;
  auto image = DecodeImage(switchyard::fuzz::AsView(data, size), kMaxPixels);
  if (!image.ok()) {
    switchyard::fuzz::CheckInvalidArgument(image.status());
    return 0;
  }
  const int64_t pixels = int64_t{image->width} * image->height;
  SWITCHYARD_FUZZ_CHECK(image->width > 0 && image->height > 0, "empty image decoded");
  SWITCHYARD_FUZZ_CHECK(pixels <= kMaxPixels, "an image over the pixel cap decoded");
  SWITCHYARD_FUZZ_CHECK(image->pixels.size() == static_cast<size_t>(3 * pixels),
                        "pixel buffer size != 3 * width * height");
  auto png = switchyard::media::EncodePng(*image);
  SWITCHYARD_FUZZ_CHECK(png.ok(), png.status().ToString());
  auto again = DecodeImage(*png, kMaxPixels);
  SWITCHYARD_FUZZ_CHECK(again.ok(), again.status().ToString());
  SWITCHYARD_FUZZ_CHECK(again->width == image->width && again->height == image->height &&
                            again->pixels == image->pixels,
                        "the PNG round trip changed the image");
  return 0;
}
