// The OCR bundle (docs/pipelines-image.md, "OCR contract"): one TorchScript module holding a
// text detector, a text recogniser and optionally an orientation classifier (PaddleOCR's three
// networks, converted from ONNX by switchyard-convert ocr), with the CTC alphabet. The
// orchestrator's image-to-text pipeline runs its methods and does the post-processing in C++
// (orchestrator/pipelines/ocr.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <torch/script.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::runner {

// The marker attribute (int) of a module that follows the OCR contract, and its version.
inline constexpr char kOcrContractAttribute[] = "ocr_contract";
inline constexpr int64_t kOcrContractVersion = 1;
// Int attribute: 1 when the bundle has an orientation classifier (method "classify").
inline constexpr char kOcrClassifierAttribute[] = "ocr_classifier";

// Limits of a keys (dictionary) file: PaddleOCR's ppocr_keys_v1.txt is 26 KB, 6623 lines.
inline constexpr int64_t kMaxOcrKeysBytes = int64_t{1} << 20;
inline constexpr int64_t kMaxOcrKeys = 65536;
inline constexpr int64_t kMaxOcrKeyBytes = 32;  // one character, maybe with combining marks

// The characters of a keys file's bytes: one per line ("\n" or "\r\n"; a final newline is
// optional). INVALID_ARGUMENT naming `what` and the line for invalid UTF-8, an empty line, a line
// over kMaxOcrKeyBytes, more than kMaxOcrKeys lines or none.
absl::StatusOr<std::vector<std::string>> ParseOcrKeys(absl::string_view data,
                                                      absl::string_view what);
// ParseOcrKeys of a file, refused before reading when over kMaxOcrKeysBytes.
absl::StatusOr<std::vector<std::string>> ReadOcrKeys(const std::filesystem::path& path);

// The CTC alphabet of `keys`: index 0 the blank (""), then the keys, then " " (PaddleOCR's
// use_space_char).
std::vector<std::string> OcrAlphabet(const std::vector<std::string>& keys);

// The three networks, each a module whose forward(x) takes the normalised input PaddleOCR
// feeds it (BGR): det [1,3,H,W] -> [1,1,H,W] probabilities; rec [N,3,48,W] -> [N,T,C]
// probabilities with C the alphabet's size; cls [N,3,48,192] -> [N,2] probabilities (0, 180).
struct OcrNetworks {
  torch::jit::Module det;
  torch::jit::Module rec;
  std::optional<torch::jit::Module> cls;
};

// Builds the bundle (eval mode): the networks as submodules det, rec (and cls), the attributes
// `characters` (List[str], OcrAlphabet(keys)), ocr_contract, ocr_classifier and scale (1), and
// the methods of the contract, which take RGB 0..255 and normalise inside:
//   detect(image [1,3,H,W]) -> [1,1,H,W]      H, W multiples of 32
//   recognize(lines [N,3,48,W]) -> [N,T,C]
//   classify(lines [N,3,48,192]) -> [N,2]     only with a classifier
//   alphabet() -> List[str]
//   forward(image [1,3,H,W], prompt) -> str   warm-up only: runs each network once, returns ""
// INVALID_ARGUMENT when a network has no forward or keys is empty; INTERNAL for libtorch errors.
absl::StatusOr<torch::jit::Module> BuildOcrBundle(OcrNetworks networks,
                                                  const std::vector<std::string>& keys);

}  // namespace switchyard::runner
