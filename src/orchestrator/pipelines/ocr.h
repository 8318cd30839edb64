// OCR post-processing for image-to-text models that follow the OCR contract (PaddleOCR bundles,
// docs/pipelines-image.md): the geometry and decoding around the bundle's networks, free of
// libtorch so that it is unit-tested and fuzzed on its own. The runs of the networks themselves
// are in image_pipelines.cc (RunImageToText).
//
// What PaddleOCR does (tools/infer/predict_system.py), with axis-aligned boxes: printed
// horizontal text needs no rotated rectangles, and an axis-aligned crop needs no perspective warp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/media/image_codec.h"

namespace switchyard::orchestrator::ocr {

struct Size {
  int width = 0;
  int height = 0;
};

// The detector's input size for a `width` x `height` image: scaled down (never up) so that the
// longest side is at most `limit_side`, then each side rounded to a multiple of 32 (at least 32),
// as PaddleOCR's DetResizeForTest (limit_type "max") does.
Size DetectionSize(int width, int height, int limit_side = 960);

// A text box in source-image pixels: columns [x0, x1), rows [y0, y1), and the detector's mean
// probability inside it.
struct Box {
  int x0 = 0;
  int y0 = 0;
  int x1 = 0;
  int y1 = 0;
  float score = 0;
  int width() const { return x1 - x0; }
  int height() const { return y1 - y0; }
};

// PaddleOCR's DBPostProcess defaults (det_db_thresh, det_db_box_thresh, det_db_unclip_ratio).
struct DbParams {
  float threshold = 0.3f;      // a pixel is text when its probability is above this
  float box_threshold = 0.6f;  // a box is kept when its mean probability is at least this
  float unclip_ratio = 1.5f;   // boxes grow by area * ratio / perimeter on each side
  int min_size = 3;            // boxes with a shorter side (before growing) are noise
  int max_boxes = 256;         // more boxes than this: INVALID_ARGUMENT before any recognition
};

// DB post-processing of the detector's probability map (`map_width` x `map_height`, row-major,
// for the image resized to that size): binarises at params.threshold, takes the 8-connected
// components, scores each by the mean probability over its bounding rectangle, grows the kept
// ones by the unclip distance and maps them back to the `src_width` x `src_height` image.
// Boxes come in reading order (ReadingOrder). INVALID_ARGUMENT when sizes are not positive or
// when more than params.max_boxes boxes are found.
absl::StatusOr<std::vector<Box>> DbPostProcess(const float* map, int map_width, int map_height,
                                               int src_width, int src_height,
                                               const DbParams& params = {});

// Reading order: boxes grouped into lines (a box joins a line when its vertical centre lies
// within the line's first box's rows), lines top to bottom, boxes left to right within a line.
// Returns the indices of `boxes`, line by line.
std::vector<std::vector<size_t>> ReadingOrder(const std::vector<Box>& boxes);

// The pixels of `box` (clipped to the image); an empty image when nothing is left.
media::RgbImage Crop(const media::RgbImage& image, const Box& box);
// Bilinear resize with pixel centres aligned (OpenCV's INTER_LINEAR). Sizes must be positive.
media::RgbImage Resize(const media::RgbImage& image, int width, int height);
media::RgbImage Rotate180(const media::RgbImage& image);

// A text line's width once resized to `height` keeping its aspect ratio (rounded up, at least
// 1, at most `max_width`), as PaddleOCR's resize_norm_img.
int LineWidth(int width, int height, int target_height, int max_width);

struct DecodedLine {
  std::string text;
  float score = 0;  // mean probability of the kept characters (0 when none)
};

// CTC greedy decoding of one line's probabilities [steps, classes] (row-major): argmax per step,
// repeats collapsed, blanks (index 0) dropped. `alphabet` has `classes` entries (index 0 the
// blank); INVALID_ARGUMENT otherwise.
absl::StatusOr<DecodedLine> CtcGreedyDecode(const float* probs, int64_t steps, int64_t classes,
                                            const std::vector<std::string>& alphabet);

// Lines of text from the recognised boxes in reading order: boxes of a line joined with " ",
// lines with "\n"; empty texts are left out.
std::string JoinText(const std::vector<std::vector<size_t>>& order,
                     const std::vector<std::string>& texts);

}  // namespace switchyard::orchestrator::ocr
