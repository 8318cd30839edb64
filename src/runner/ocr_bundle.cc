#include "runner/ocr_bundle.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "runner/converter_support.h"

namespace switchyard::runner {
namespace {

// Length of the valid UTF-8 sequence at the start of `s`, or 0 (overlong forms, surrogates and
// code points past U+10FFFF are invalid).
size_t Utf8SequenceLength(absl::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto cont = [&](size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(1) >= 0x90) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

// The bundle's methods. Inputs are RGB 0..255; PaddleOCR's networks were trained on OpenCV's BGR
// images, hence the flip, and normalised as its DetResizeForTest/NormalizeImage (det: ImageNet
// mean and std) and resize_norm_img (rec, cls: x / 127.5 - 1) do.
constexpr char kBundleSource[] = R"(
def detect(self, image: Tensor) -> Tensor:
    x = image.flip([1]) / 255.0
    return self.det.forward((x - self.det_mean) / self.det_std)

def recognize(self, lines: Tensor) -> Tensor:
    return self.rec.forward(lines.flip([1]) / 127.5 - 1.0)

def alphabet(self) -> List[str]:
    return self.characters
)";

constexpr char kClassifySource[] = R"(
def classify(self, lines: Tensor) -> Tensor:
    return self.cls.forward(lines.flip([1]) / 127.5 - 1.0)
)";

// forward exists because a model file needs one (the loader checks it) and the orchestrator's
// warm-up calls forward(image, ""): it runs each network once so the first request does not pay
// for lazy initialisation. The text comes from the contract's methods, never from forward.
constexpr char kForwardSource[] = R"(
def forward(self, image: Tensor, prompt: str) -> str:
    h = (image.size(2) + 31) // 32 * 32
    w = (image.size(3) + 31) // 32 * 32
    padded = torch.constant_pad_nd(image, [0, w - image.size(3), 0, h - image.size(2)], 0.0)
    self.detect(padded)
    line = torch.full([1, 3, 48, 320], 127.5, dtype=image.dtype, device=image.device)
    self.recognize(line)
)";

constexpr char kForwardClassifySource[] = R"(
    self.classify(line[:, :, :, :192])
)";

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseOcrKeys(absl::string_view data,
                                                      absl::string_view what) {
  std::vector<std::string> keys;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < data.size()) {
    ++line_no;
    size_t end = data.find('\n', pos);
    if (end == absl::string_view::npos) end = data.size();
    absl::string_view line = data.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": line ", line_no, " ", why));
    };
    if (line.empty()) return bad("is empty (one character per line)");
    if (static_cast<int64_t>(line.size()) > kMaxOcrKeyBytes) {
      return bad(absl::StrCat("has ", line.size(), " bytes, more than the limit of ",
                              kMaxOcrKeyBytes, " (one character per line)"));
    }
    for (size_t i = 0; i < line.size();) {
      const size_t n = Utf8SequenceLength(line.substr(i));
      if (n == 0) return bad(absl::StrCat("is not valid UTF-8 (byte ", i + 1, ")"));
      if (static_cast<unsigned char>(line[i]) < 0x20 || line[i] == 0x7F) {
        return bad("holds a control character");
      }
      i += n;
    }
    if (static_cast<int64_t>(keys.size()) >= kMaxOcrKeys) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": more than ", kMaxOcrKeys, " lines (characters)"));
    }
    keys.emplace_back(line);
  }
  if (keys.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no characters"));
  return keys;
}

absl::StatusOr<std::vector<std::string>> ReadOcrKeys(const std::filesystem::path& path) {
  auto data = convert::ReadFileLimited(path, "OCR keys file", kMaxOcrKeysBytes);
  if (!data.ok()) return data.status();
  return ParseOcrKeys(*data, path.string());
}

std::vector<std::string> OcrAlphabet(const std::vector<std::string>& keys) {
  std::vector<std::string> alphabet;
  alphabet.reserve(keys.size() + 2);
  alphabet.emplace_back();
  alphabet.insert(alphabet.end(), keys.begin(), keys.end());
  alphabet.emplace_back(" ");
  return alphabet;
}

absl::StatusOr<torch::jit::Module> BuildOcrBundle(OcrNetworks networks,
                                                  const std::vector<std::string>& keys) {
  if (keys.empty()) return absl::InvalidArgumentError("OCR bundle: the keys are empty");
  auto build = [&]() -> absl::StatusOr<torch::jit::Module> {
    const std::pair<const char*, torch::jit::Module*> parts[] = {
        {"det", &networks.det},
        {"rec", &networks.rec},
        {"cls", networks.cls ? &*networks.cls : nullptr}};
    for (const auto& [name, module] : parts) {
      if (module != nullptr && !module->find_method("forward")) {
        return absl::InvalidArgumentError(
            absl::StrCat("OCR bundle: the ", name, " network has no forward method"));
      }
    }
    torch::jit::Module bundle("PaddleOcrBundle");
    bundle.register_module("det", networks.det);
    bundle.register_module("rec", networks.rec);
    if (networks.cls) bundle.register_module("cls", *networks.cls);
    bundle.register_buffer("det_mean", torch::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1}));
    bundle.register_buffer("det_std", torch::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1}));
    c10::List<std::string> characters;
    for (std::string& c : OcrAlphabet(keys)) characters.push_back(std::move(c));
    bundle.register_attribute("characters", c10::ListType::ofStrings(), characters);
    bundle.register_attribute(kOcrContractAttribute, c10::IntType::get(),
                              c10::IValue(kOcrContractVersion));
    bundle.register_attribute(kOcrClassifierAttribute, c10::IntType::get(),
                              c10::IValue(int64_t{networks.cls ? 1 : 0}));
    bundle.register_attribute("scale", c10::IntType::get(), c10::IValue(int64_t{1}));
    std::string source = kBundleSource;
    if (networks.cls) source += kClassifySource;
    source += kForwardSource;
    if (networks.cls) source += kForwardClassifySource;
    source += "    return \"\"\n";
    try {
      bundle.define(source);
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("OCR bundle: TorchScript does not compile: ", e.what_without_backtrace()));
    }
    bundle.eval();
    // A keys file that does not belong to the recogniser would decode to the wrong characters
    // silently: its output classes must be the alphabet's size.
    c10::InferenceMode guard;
    const c10::IValue out = bundle.run_method("recognize", torch::full({1, 3, 48, 320}, 127.5f));
    const int64_t alphabet_size = static_cast<int64_t>(keys.size()) + 2;
    if (!out.isTensor() || out.toTensor().dim() != 3 || out.toTensor().size(0) != 1 ||
        out.toTensor().size(2) != alphabet_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "OCR bundle: the recogniser returns ",
          out.isTensor() ? c10::str(out.toTensor().sizes()) : out.tagKind(),
          " for one line, expected [1, T, ", alphabet_size, "] (the keys' ", keys.size(),
          " characters, the blank and the space): do the keys belong to this recogniser?"));
    }
    return bundle;
  };
  return convert::NoExceptions("OCR bundle", build);
}

}  // namespace switchyard::runner
