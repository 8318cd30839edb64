// Converts a TensorFlow Lite flatbuffer (.tflite) into a TorchScript module, built with libtorch's
// script compiler (no TFLite runtime, no Python). Written for MediaPipe's selfie segmentation
// models (@mediapipe/selfie_segmentation: the 256x256 general model and the 144x256 landscape
// model), wrapped to the segment-anything-2 contract (a person mask) or to the
// live-video-to-video contract (background blur); docs/converters.md, docs/models.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <torch/script.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::runner {

// Which pipeline contract the module's `forward` follows (docs/pipelines-image.md).
enum class TfliteContract {
  // segment-anything-2: forward(image, point_coords, point_labels, box, mask_input,
  // multimask_output, normalize_coords) -> (masks [1, H, W] logits, scores [1],
  // low_res_logits [1, h, w]). The prompts are ignored: the mask is the model's PERSON mask
  // (it is not SAM 2). The 0..255 image is resized (bilinear, aspect not kept) to the model's
  // input size and divided by 255, as MediaPipe's selfie segmentation graph feeds it; the
  // logits (the input of the model's final LOGISTIC) are resized back to H x W (bilinear). h x w
  // is the model's input size. The score is how decided the mask is: the mean over the
  // low-resolution mask of |2p - 1| (1: every pixel surely person or background).
  kSegmentAnything2,
  // live-video-to-video: forward(frame [1, 3, H, W] 0..255, params: str) -> frame. The person
  // mask p (as above, at H x W) composites the frame over a blurred copy of itself:
  // out = p * frame + (1 - p) * blur(frame), where blur is a separable Gaussian of sigma
  // kTfliteBlurSigma pixels truncated at kTfliteBlurRadius (edges repeated). `params` is ignored.
  // An odd last row or column is cropped off (the contract wants even sizes).
  kLiveVideo,
};

inline constexpr int64_t kTfliteBlurSigma = 8;
inline constexpr int64_t kTfliteBlurRadius = 3 * kTfliteBlurSigma;

struct TfliteConvertOptions {
  TfliteContract contract = TfliteContract::kSegmentAnything2;
};

// Limits that keep a hostile file from making the converter allocate or loop without bound. The
// file is read whole after its size is checked, then checked by flatbuffers' Verifier (every
// offset, vector and string inside the buffer, nesting and table counts bounded) before any field
// is read; every constant's byte size is checked against its shape.
inline constexpr int64_t kMaxTfliteBytes = int64_t{256} << 20;
inline constexpr int64_t kMaxTfliteOperators = 10000;
inline constexpr int64_t kMaxTfliteTensors = 100000;

// Reads `path` and converts it (see ConvertTfliteBuffer).
absl::StatusOr<torch::jit::Module> ConvertTfliteModel(const std::filesystem::path& path,
                                                      const TfliteConvertOptions& options = {});

// Converts the .tflite bytes in `data` (`name` names them in errors) to a scripted module (eval
// mode) with `forward` per `options.contract`, a method `network(x: Tensor[1, 3, H, W] 0..1) ->
// Tensor[1, 1, H, W]` returning the model's output logits (NCHW; the model runs NHWC), and the
// int attribute `scale` (1).
//
// The model: one subgraph; one float32 input [1, H, W, 3] and one float32 output [1, H, W, 1]
// (H, W <= 4096) produced by LOGISTIC; activations of rank 4, float32, unquantized, not sparse.
// Operators: CONV_2D, DEPTHWISE_CONV_2D (any stride/dilation, SAME or VALID with TFLite's padding:
// the odd extra pixel after), AVERAGE_POOL_2D (VALID, or SAME averaging only the pixels inside
// the image as TFLite does), MEAN (over H and/or W with keep_dims), ADD, MUL (NHWC broadcasting,
// a constant operand allowed), HARD_SWISH, RELU, LOGISTIC, RESIZE_BILINEAR (half_pixel_centers or
// align_corners, constant size), DEQUANTIZE of float16 constants (folded at conversion), and
// MediaPipe's custom Convolution2DTransposeBias (weights OHWI, padding SAME/VALID, strides 1..16).
// Fused activations NONE, RELU, RELU_N1_TO_1, RELU6, TANH. Any other operator, option or tensor
// is INVALID_ARGUMENT naming the operator index and op; a malformed file (not a flatbuffer, fails
// verification, truncated, wrong identifier) is INVALID_ARGUMENT too; a shape that disagrees
// with what the operator computes, or a constant whose bytes do not match its shape, is
// INVALID_ARGUMENT naming the tensor. INTERNAL only for unexpected libtorch failures; no
// exception escapes.
absl::StatusOr<torch::jit::Module> ConvertTfliteBuffer(absl::string_view data,
                                                       const std::string& name,
                                                       const TfliteConvertOptions& options = {});

}  // namespace switchyard::runner
