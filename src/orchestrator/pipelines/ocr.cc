#include "orchestrator/pipelines/ocr.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace switchyard::orchestrator::ocr {
namespace {

int RoundTo32(double v) { return std::max(32, static_cast<int>(std::lround(v / 32.0)) * 32); }

}  // namespace

Size DetectionSize(int width, int height, int limit_side) {
  const int longest = std::max(width, height);
  double ratio = 1.0;
  if (longest > limit_side && longest > 0) ratio = static_cast<double>(limit_side) / longest;
  return Size{RoundTo32(width * ratio), RoundTo32(height * ratio)};
}

absl::StatusOr<std::vector<Box>> DbPostProcess(const float* map, int map_width, int map_height,
                                               int src_width, int src_height,
                                               const DbParams& params) {
  if (map == nullptr || map_width <= 0 || map_height <= 0 || src_width <= 0 || src_height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("DB post-processing needs positive sizes, got ",
                                                   map_width, "x", map_height, " for ", src_width,
                                                   "x", src_height));
  }
  const int64_t w = map_width, h = map_height, n = w * h;
  // Integral image of the probabilities: each component's box score in O(1).
  std::vector<double> integral(static_cast<size_t>((w + 1) * (h + 1)), 0.0);
  for (int64_t y = 0; y < h; ++y) {
    double row = 0;
    for (int64_t x = 0; x < w; ++x) {
      const float p = map[y * w + x];
      row += std::isfinite(p) ? p : 0.0;
      integral[(y + 1) * (w + 1) + x + 1] = integral[y * (w + 1) + x + 1] + row;
    }
  }
  auto rect_mean = [&](int64_t x0, int64_t y0, int64_t x1, int64_t y1) {  // inclusive
    const double sum = integral[(y1 + 1) * (w + 1) + x1 + 1] - integral[y0 * (w + 1) + x1 + 1] -
                       integral[(y1 + 1) * (w + 1) + x0] + integral[y0 * (w + 1) + x0];
    return sum / static_cast<double>((x1 - x0 + 1) * (y1 - y0 + 1));
  };

  // 8-connected components of the binarised map (findContours' outer contours in PaddleOCR),
  // flood-filled with an explicit stack: no recursion depth to exhaust on a hostile map.
  std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) seen[i] = map[i] > params.threshold ? 0 : 1;
  std::vector<int64_t> stack;
  std::vector<Box> boxes;
  const double sx = static_cast<double>(src_width) / w, sy = static_cast<double>(src_height) / h;
  for (int64_t start = 0; start < n; ++start) {
    if (seen[start]) continue;
    seen[start] = 1;
    stack.assign(1, start);
    int64_t min_x = start % w, max_x = min_x, min_y = start / w, max_y = min_y;
    while (!stack.empty()) {
      const int64_t i = stack.back();
      stack.pop_back();
      const int64_t x = i % w, y = i / w;
      min_x = std::min(min_x, x);
      max_x = std::max(max_x, x);
      min_y = std::min(min_y, y);
      max_y = std::max(max_y, y);
      for (int64_t dy = -1; dy <= 1; ++dy) {
        for (int64_t dx = -1; dx <= 1; ++dx) {
          const int64_t nx = x + dx, ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
          const int64_t j = ny * w + nx;
          if (!seen[j]) {
            seen[j] = 1;
            stack.push_back(j);
          }
        }
      }
    }
    // The box through the component's outermost pixel centres, as cv2.minAreaRect gives for an
    // axis-aligned region: its sides are max - min, not max - min + 1.
    const double bw = static_cast<double>(max_x - min_x), bh = static_cast<double>(max_y - min_y);
    if (std::min(bw, bh) < params.min_size) continue;
    const double score = rect_mean(min_x, min_y, max_x, max_y);
    if (score < params.box_threshold) continue;
    // Unclip: pyclipper's offset of a rectangle by d, whose bounding rectangle grows d per side.
    const double d = bw * bh * params.unclip_ratio / (2.0 * (bw + bh));
    if (std::min(bw, bh) + 2 * d < params.min_size + 2) continue;
    auto clip = [](double v, int hi) {
      return static_cast<int>(std::clamp(std::round(v), 0.0, static_cast<double>(hi)));
    };
    Box box;
    box.x0 = clip((min_x - d) * sx, src_width);
    box.x1 = clip((max_x + d) * sx, src_width);
    box.y0 = clip((min_y - d) * sy, src_height);
    box.y1 = clip((max_y + d) * sy, src_height);
    box.score = static_cast<float>(score);
    if (box.width() <= 0 || box.height() <= 0) continue;
    if (static_cast<int>(boxes.size()) >= params.max_boxes) {
      return absl::InvalidArgumentError(absl::StrCat("the image holds more than ", params.max_boxes,
                                                     " text regions (the OCR limit)"));
    }
    boxes.push_back(box);
  }
  std::vector<Box> ordered;
  ordered.reserve(boxes.size());
  for (const auto& line : ReadingOrder(boxes)) {
    for (size_t i : line) ordered.push_back(boxes[i]);
  }
  return ordered;
}

std::vector<std::vector<size_t>> ReadingOrder(const std::vector<Box>& boxes) {
  std::vector<size_t> idx(boxes.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (boxes[a].y0 != boxes[b].y0) return boxes[a].y0 < boxes[b].y0;
    return boxes[a].x0 < boxes[b].x0;
  });
  std::vector<std::vector<size_t>> lines;
  for (size_t i : idx) {
    const Box& b = boxes[i];
    const int centre2 = b.y0 + b.y1;  // twice the vertical centre: no rounding
    if (!lines.empty()) {
      const Box& first = boxes[lines.back().front()];
      if (centre2 >= 2 * first.y0 && centre2 <= 2 * first.y1) {
        lines.back().push_back(i);
        continue;
      }
    }
    lines.push_back({i});
  }
  for (auto& line : lines) {
    std::stable_sort(line.begin(), line.end(),
                     [&](size_t a, size_t b) { return boxes[a].x0 < boxes[b].x0; });
  }
  return lines;
}

media::RgbImage Crop(const media::RgbImage& image, const Box& box) {
  const int x0 = std::clamp(box.x0, 0, image.width), x1 = std::clamp(box.x1, 0, image.width);
  const int y0 = std::clamp(box.y0, 0, image.height), y1 = std::clamp(box.y1, 0, image.height);
  media::RgbImage out;
  if (x1 <= x0 || y1 <= y0) return out;
  out.width = x1 - x0;
  out.height = y1 - y0;
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * 3);
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* src = image.pixels.data() + (static_cast<size_t>(y0 + y) * image.width + x0) * 3;
    std::copy(src, src + static_cast<size_t>(out.width) * 3,
              out.pixels.begin() + static_cast<size_t>(y) * out.width * 3);
  }
  return out;
}

media::RgbImage Resize(const media::RgbImage& image, int width, int height) {
  media::RgbImage out;
  if (width <= 0 || height <= 0 || image.width <= 0 || image.height <= 0) return out;
  out.width = width;
  out.height = height;
  out.pixels.resize(static_cast<size_t>(width) * height * 3);
  const double fx = static_cast<double>(image.width) / width;
  const double fy = static_cast<double>(image.height) / height;
  // Source positions and weights per output column, computed once.
  std::vector<int> xs0(width), xs1(width);
  std::vector<float> wx(width);
  for (int x = 0; x < width; ++x) {
    const double s = std::clamp((x + 0.5) * fx - 0.5, 0.0, image.width - 1.0);
    xs0[x] = static_cast<int>(s);
    xs1[x] = std::min(xs0[x] + 1, image.width - 1);
    wx[x] = static_cast<float>(s - xs0[x]);
  }
  for (int y = 0; y < height; ++y) {
    const double s = std::clamp((y + 0.5) * fy - 0.5, 0.0, image.height - 1.0);
    const int y0 = static_cast<int>(s), y1 = std::min(y0 + 1, image.height - 1);
    const float wy = static_cast<float>(s - y0);
    const uint8_t* r0 = image.pixels.data() + static_cast<size_t>(y0) * image.width * 3;
    const uint8_t* r1 = image.pixels.data() + static_cast<size_t>(y1) * image.width * 3;
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(y) * width * 3;
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        const float top = r0[xs0[x] * 3 + c] * (1 - wx[x]) + r0[xs1[x] * 3 + c] * wx[x];
        const float bottom = r1[xs0[x] * 3 + c] * (1 - wx[x]) + r1[xs1[x] * 3 + c] * wx[x];
        dst[x * 3 + c] = static_cast<uint8_t>(
            std::clamp(std::lround(top * (1 - wy) + bottom * wy), long{0}, long{255}));
      }
    }
  }
  return out;
}

media::RgbImage Rotate180(const media::RgbImage& image) {
  media::RgbImage out = image;
  const size_t pixels = static_cast<size_t>(image.width) * image.height;
  for (size_t i = 0; i < pixels; ++i) {
    std::copy(image.pixels.begin() + (pixels - 1 - i) * 3,
              image.pixels.begin() + (pixels - 1 - i) * 3 + 3, out.pixels.begin() + i * 3);
  }
  return out;
}

int LineWidth(int width, int height, int target_height, int max_width) {
  if (width <= 0 || height <= 0) return 1;
  const double w = std::ceil(static_cast<double>(target_height) * width / height);
  return static_cast<int>(std::clamp(w, 1.0, static_cast<double>(std::max(1, max_width))));
}

absl::StatusOr<DecodedLine> CtcGreedyDecode(const float* probs, int64_t steps, int64_t classes,
                                            const std::vector<std::string>& alphabet) {
  if (classes < 2 || static_cast<int64_t>(alphabet.size()) != classes || steps < 0 ||
      (steps > 0 && probs == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CTC decoding needs an alphabet of as many entries as classes: ", alphabet.size(),
        " entries for ", classes, " classes"));
  }
  DecodedLine line;
  double total = 0;
  int kept = 0;
  int64_t previous = -1;
  for (int64_t t = 0; t < steps; ++t) {
    const float* row = probs + t * classes;
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (row[c] > row[best]) best = c;  // NaN never wins: comparisons with it are false
    }
    if (best != 0 && best != previous) {
      line.text += alphabet[static_cast<size_t>(best)];
      total += row[best];
      ++kept;
    }
    previous = best;
  }
  line.score = kept > 0 ? static_cast<float>(total / kept) : 0.0f;
  return line;
}

std::string JoinText(const std::vector<std::vector<size_t>>& order,
                     const std::vector<std::string>& texts) {
  std::string out;
  for (const auto& line : order) {
    std::string joined;
    for (size_t i : line) {
      if (i >= texts.size() || texts[i].empty()) continue;
      if (!joined.empty()) joined += ' ';
      joined += texts[i];
    }
    if (joined.empty()) continue;
    if (!out.empty()) out += '\n';
    out += joined;
  }
  return out;
}

}  // namespace switchyard::orchestrator::ocr
