#include "runner/ncnn_param.h"

#include <bit>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "runner/converter_support.h"
#include "runner/ncnn_converter.h"

namespace switchyard::runner::ncnn {
namespace {

using convert::CommentText;
using convert::Quote;

static_assert(std::endian::native == std::endian::little,
              "ncnn .bin files are little-endian; big-endian hosts are not supported");

constexpr int kNcnnMagic = 7767517;
constexpr int kMaxParamId = 32;         // NCNN_MAX_PARAM_COUNT
constexpr int kMaxBlobsPerLayer = 256;  // bottoms or tops of one layer
constexpr int kMaxArrayLength = 4096;   // an array parameter's elements
// ncnn's weight tags (src/modelbin.cpp): what precedes each "type 0" blob, e.g. a Convolution's
// weights. Bias and PReLU slopes are "type 1": raw float32 without a tag.
constexpr uint32_t kTagFloat16 = 0x01306B47;
constexpr uint32_t kTagFloat32 = 0;

// ncnn tells floats from ints by their text ('.', 'e'), and reads an int where a float is
// expected as the int's bits, so the getters insist on the type.
bool LooksFloat(absl::string_view s) { return s.find_first_of(".eE") != absl::string_view::npos; }

bool ParseInt(absl::string_view s, int64_t* out) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && p == end && !s.empty();
}

bool ParseFloat(absl::string_view s, double* out) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && p == end && !s.empty() && std::isfinite(*out);
}

absl::Status ParseKeyValue(const std::filesystem::path& param_path, absl::string_view token,
                           Layer* layer) {
  const size_t eq = token.find('=');
  int64_t key = 0;
  if (eq == absl::string_view::npos || !ParseInt(token.substr(0, eq), &key)) {
    return LayerError(
        param_path, *layer,
        absl::StrCat("malformed parameter ", Quote(token), " (expected <id>=<value>)"));
  }
  Param param;
  const absl::string_view value = token.substr(eq + 1);
  if (key <= -23300) {
    key = -key - 23300;
    param.is_array = true;
    std::vector<absl::string_view> parts = absl::StrSplit(value, ',');
    int64_t n = 0;
    if (!ParseInt(parts[0], &n) || n < 0 || n > kMaxArrayLength ||
        static_cast<size_t>(n) != parts.size() - 1) {
      return LayerError(param_path, *layer,
                        absl::StrCat("array parameter ", Quote(token),
                                     ": its length does not match its elements"));
    }
    for (size_t i = 1; i < parts.size(); ++i) param.items.emplace_back(parts[i]);
  } else {
    param.text = std::string(value);
  }
  if (key < 0 || key >= kMaxParamId) {
    return LayerError(
        param_path, *layer,
        absl::StrCat("parameter id in ", Quote(token), " is outside 0..", kMaxParamId - 1));
  }
  if (value.empty())
    return LayerError(param_path, *layer, absl::StrCat("parameter ", Quote(token), " is empty"));
  if (!layer->params.emplace(static_cast<int>(key), std::move(param)).second) {
    return LayerError(param_path, *layer, absl::StrCat("parameter ", key, " is given twice"));
  }
  return absl::OkStatus();
}

// Parameter `key` of `layer`, or null after setting `*out` to `fallback` when it is absent.
template <typename T>
const Param* FindOr(const Layer& layer, int key, T fallback, T* out) {
  auto it = layer.params.find(key);
  if (it != layer.params.end()) return &it->second;
  *out = fallback;
  return nullptr;
}

// A parameter's value as messages quote it.
std::string Shown(const Param& p) { return Quote(p.is_array ? "[array]" : p.text); }

}  // namespace

absl::Status ParamError(const std::filesystem::path& param_path, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(param_path.string(), ": ", reason));
}

absl::Status LayerError(const std::filesystem::path& param_path, const Layer& layer,
                        const std::string& reason) {
  return ParamError(param_path,
                    absl::StrCat("line ", layer.line, ": layer ", Quote(CommentText(layer.name)),
                                 " (", CommentText(layer.type), "): ", reason));
}

absl::Status ParseParam(const std::filesystem::path& param_path, const std::string& text,
                        std::vector<Layer>* layers) {
  layers->clear();
  if (text.find('\0') != std::string::npos) {
    return ParamError(param_path, "not a text file (NUL byte)");
  }
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  size_t next = 0;
  int line_no = 0;
  // Returns the whitespace-separated tokens of the next non-blank line.
  auto next_line = [&](std::vector<absl::string_view>* tokens) {
    while (next < lines.size()) {
      ++line_no;
      *tokens = absl::StrSplit(lines[next++], absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
      if (!tokens->empty()) return true;
    }
    return false;
  };
  std::vector<absl::string_view> tokens;
  int64_t magic = 0;
  if (!next_line(&tokens) || tokens.size() != 1 || !ParseInt(tokens[0], &magic) ||
      magic != kNcnnMagic) {
    return ParamError(param_path,
                      absl::StrCat("first line is not the ncnn magic number ", kNcnnMagic,
                                   " (a binary .param.bin or another format?)"));
  }
  int64_t layer_count = 0, blob_count = 0;
  if (!next_line(&tokens) || tokens.size() != 2 || !ParseInt(tokens[0], &layer_count) ||
      !ParseInt(tokens[1], &blob_count)) {
    return ParamError(param_path, "second line is not '<layer count> <blob count>'");
  }
  if (layer_count < 1 || layer_count > kMaxNcnnLayers) {
    return ParamError(param_path,
                      absl::StrCat("layer count ", layer_count, " is outside 1..", kMaxNcnnLayers));
  }
  if (blob_count < 1 || blob_count > kMaxNcnnLayers * kMaxBlobsPerLayer) {
    return ParamError(param_path, absl::StrCat("blob count ", blob_count, " is out of range"));
  }
  std::set<std::string> blob_names;
  while (next_line(&tokens)) {
    if (static_cast<int64_t>(layers->size()) == layer_count) {
      return ParamError(param_path, absl::StrCat("line ", line_no,
                                                 ": more layers than the declared ", layer_count));
    }
    Layer layer;
    layer.line = line_no;
    if (tokens.size() < 4) {
      return ParamError(
          param_path,
          absl::StrCat("line ", line_no, ": expected '<type> <name> <bottoms> <tops> ...'"));
    }
    layer.type = std::string(tokens[0]);
    layer.name = std::string(tokens[1]);
    int64_t nb = 0, nt = 0;
    if (!ParseInt(tokens[2], &nb) || !ParseInt(tokens[3], &nt) || nb < 0 || nt < 0 ||
        nb > kMaxBlobsPerLayer || nt > kMaxBlobsPerLayer) {
      return LayerError(param_path, layer,
                        absl::StrCat("bad bottom/top counts ", tokens[2], " ", tokens[3],
                                     " (each 0..", kMaxBlobsPerLayer, ")"));
    }
    if (tokens.size() < static_cast<size_t>(4 + nb + nt)) {
      return LayerError(
          param_path, layer,
          absl::StrCat("names ", nb, " bottom and ", nt, " top blobs but the line is shorter"));
    }
    size_t t = 4;
    for (int64_t i = 0; i < nb; ++i) layer.bottoms.emplace_back(tokens[t++]);
    for (int64_t i = 0; i < nt; ++i) {
      std::string top(tokens[t++]);
      if (top.find('=') != std::string::npos) {
        return LayerError(param_path, layer,
                          absl::StrCat("top blob name ", Quote(CommentText(top)),
                                       " looks like a parameter: too few names"));
      }
      if (!blob_names.insert(top).second) {
        return LayerError(param_path, layer,
                          absl::StrCat("blob ", Quote(CommentText(top)), " is produced twice"));
      }
      layer.tops.push_back(std::move(top));
    }
    for (; t < tokens.size(); ++t) SY_RETURN_IF_ERROR(ParseKeyValue(param_path, tokens[t], &layer));
    layers->push_back(std::move(layer));
  }
  if (static_cast<int64_t>(layers->size()) != layer_count) {
    return ParamError(param_path,
                      absl::StrCat("declares ", layer_count, " layers but has ", layers->size()));
  }
  if (static_cast<int64_t>(blob_names.size()) != blob_count) {
    return ParamError(
        param_path,
        absl::StrCat("declares ", blob_count, " blobs but its layers produce ", blob_names.size()));
  }
  return absl::OkStatus();
}

absl::Status OnlyParams(const std::filesystem::path& param_path, const Layer& layer,
                        std::initializer_list<int> allowed) {
  for (const auto& [key, param] : layer.params) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return LayerError(
          param_path, layer,
          absl::StrCat("parameter ", key, "=", param.is_array ? "[array]" : param.text,
                       " is unsupported for ", layer.type));
    }
  }
  return absl::OkStatus();
}

absl::Status GetInt(const std::filesystem::path& param_path, const Layer& layer, int key,
                    int64_t fallback, int64_t* out) {
  const Param* p = FindOr(layer, key, fallback, out);
  if (p == nullptr) return absl::OkStatus();
  if (p->is_array || LooksFloat(p->text) || !ParseInt(p->text, out) || *out < INT32_MIN ||
      *out > INT32_MAX) {
    return LayerError(param_path, layer,
                      absl::StrCat("parameter ", key, " must be an int, got ", Shown(*p)));
  }
  return absl::OkStatus();
}

absl::Status GetFloat(const std::filesystem::path& param_path, const Layer& layer, int key,
                      double fallback, double* out) {
  const Param* p = FindOr(layer, key, fallback, out);
  if (p == nullptr) return absl::OkStatus();
  if (p->is_array || !LooksFloat(p->text) || !ParseFloat(p->text, out)) {
    return LayerError(param_path, layer,
                      absl::StrCat("parameter ", key,
                                   " must be a finite float written with '.' or 'e' "
                                   "(ncnn reads an int there as raw bits), got ",
                                   Shown(*p)));
  }
  // ncnn keeps it as a float32.
  *out = static_cast<double>(static_cast<float>(*out));
  return absl::OkStatus();
}

absl::Status GetFloatArray(const std::filesystem::path& param_path, const Layer& layer, int key,
                           std::vector<double>* out) {
  out->clear();
  auto it = layer.params.find(key);
  if (it == layer.params.end()) return absl::OkStatus();
  if (!it->second.is_array) {
    return LayerError(
        param_path, layer,
        absl::StrCat("parameter ", key, " must be an array (written as -", 23300 + key, "=n,...)"));
  }
  for (const std::string& item : it->second.items) {
    double v = 0;
    if (!LooksFloat(item) || !ParseFloat(item, &v)) {
      return LayerError(param_path, layer,
                        absl::StrCat("array parameter ", key, ": element ", Quote(item),
                                     " is not a finite float"));
    }
    out->push_back(static_cast<double>(static_cast<float>(v)));
  }
  return absl::OkStatus();
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float v = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -v : v;
  }
  if (exponent == 31) {
    return mantissa ? std::numeric_limits<float>::quiet_NaN()
                    : (sign ? -std::numeric_limits<float>::infinity()
                            : std::numeric_limits<float>::infinity());
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

absl::Status BinReader::ReadTagged(int64_t count, std::vector<float>* out) {
  if (left() < 4) return Short("a 4-byte weight tag", 4);
  uint32_t tag;
  std::memcpy(&tag, data_.data() + offset_, 4);
  if (tag == kTagFloat16) {
    const size_t bytes = (static_cast<size_t>(count) * 2 + 3) / 4 * 4;
    if (left() - 4 < bytes) return Short("float16 weights", bytes + 4);
    offset_ += 4;
    out->resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, data_.data() + offset_ + 2 * i, 2);
      (*out)[static_cast<size_t>(i)] = HalfToFloat(h);
    }
    offset_ += bytes;
    return absl::OkStatus();
  }
  if (tag == kTagFloat32) {
    offset_ += 4;
    return ReadRaw(count, out);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "weight tag 0x", absl::Hex(tag, absl::kZeroPad8), " at byte ", offset_,
      " is unsupported (only 0x01306B47 float16 and 0 float32; int8 and quantized tables "
      "are not read)"));
}

absl::Status BinReader::ReadRaw(int64_t count, std::vector<float>* out) {
  const size_t bytes = static_cast<size_t>(count) * sizeof(float);
  if (left() < bytes) return Short("float32 values", bytes);
  out->resize(static_cast<size_t>(count));
  if (bytes > 0) std::memcpy(out->data(), data_.data() + offset_, bytes);
  offset_ += bytes;
  return absl::OkStatus();
}

absl::Status BinReader::Short(const char* what, size_t bytes) const {
  return absl::InvalidArgumentError(absl::StrCat("the .bin is truncated: ", what, " need ", bytes,
                                                 " bytes at byte ", offset_, ", ", left(),
                                                 " left"));
}

}  // namespace switchyard::runner::ncnn
