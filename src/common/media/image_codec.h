// Still-image decoding and encoding with FFmpeg's libav* (PNG and JPEG in, PNG out).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard::media {

// A decoded image: packed RGB24, row-major, no padding (stride = 3 * width).
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // size == 3 * width * height
};

// Decodes a PNG or JPEG image (detected from its magic bytes) to RGB24. Any pixel format the
// decoder produces (gray, palette, RGBA, YUV, 16-bit) is converted; alpha is dropped.
// Errors: INVALID_ARGUMENT for empty, unknown-format, truncated or corrupt data, or an image with
// more than `max_pixels` pixels (checked from the header before full decoding where possible).
// Strictness: a PNG must have valid chunk CRCs and its IEND chunk; a JPEG must have its
// end-of-image marker after the scan data. Thread-safe; each call builds its own decoder.
absl::StatusOr<RgbImage> DecodeImage(std::string_view encoded, int64_t max_pixels);

// Width and height of a PNG or JPEG read from its header (no pixel is decoded), with the same
// header checks as DecodeImage. INVALID_ARGUMENT for empty, unknown-format or corrupt headers.
struct ImageSize {
  int64_t width = 0;
  int64_t height = 0;
};
absl::StatusOr<ImageSize> ReadImageSize(std::string_view encoded);

// Encodes an RGB24 image as PNG. INVALID_ARGUMENT if the image's size and buffer disagree.
absl::StatusOr<std::string> EncodePng(const RgbImage& image);

}  // namespace switchyard::media
