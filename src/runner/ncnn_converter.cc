#include "runner/ncnn_converter.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace switchyard::runner {
namespace {

static_assert(std::endian::native == std::endian::little,
              "ncnn .bin files are little-endian; big-endian hosts are not supported");

#define SY_NCNN_RETURN_IF_ERROR(expr)                     \
  do {                                                    \
    if (absl::Status _st = (expr); !_st.ok()) return _st; \
  } while (false)

constexpr int kNcnnMagic = 7767517;
constexpr int kMaxParamId = 32;          // NCNN_MAX_PARAM_COUNT
constexpr int kMaxBlobsPerLayer = 256;   // bottoms or tops of one layer
constexpr int kMaxArrayLength = 4096;    // an array parameter's elements
constexpr int64_t kMaxChannels = 65536;  // of any blob
constexpr int64_t kMaxKernel = 63;
constexpr int64_t kMaxScale = 16;  // PixelShuffle factor, nearest Interp factor
// Of any blob against the input, up or down: chains of upsampling layers in a hostile file would
// otherwise ask for images of unbounded size at run time (and overflow the scale).
constexpr double kMaxTotalScale = 64;
// ncnn's weight tags (src/modelbin.cpp): what precedes each "type 0" blob, e.g. a Convolution's
// weights. Bias and PReLU slopes are "type 1": raw float32 without a tag.
constexpr uint32_t kTagFloat16 = 0x01306B47;
constexpr uint32_t kTagFloat32 = 0;

std::string Quote(absl::string_view s) { return absl::StrCat("'", s, "'"); }

// Makes a string safe for a TorchScript identifier.
std::string Identifier(absl::string_view s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    out += ok ? c : '_';
  }
  if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out = "l_" + out;
  return out;
}

// Makes a string safe for a one-line TorchScript comment.
std::string CommentText(absl::string_view s) {
  std::string out;
  for (char c : s) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

// A double as TorchScript source that reads back to the same value.
std::string FloatLiteral(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
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

absl::StatusOr<std::string> ReadFileLimited(const std::filesystem::path& path,
                                            const std::string& what, int64_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(what, " not found: ", path.string()));
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot stat ", what, ": ", path.string()));
  if (size > static_cast<uintmax_t>(max_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", what, " is ", size,
                                                   " bytes, more than the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", what, ": ", path.string()));
  std::string data(static_cast<size_t>(size), '\0');
  in.read(data.data(), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size)) {
    return absl::DataLossError(absl::StrCat("error reading ", what, ": ", path.string()));
  }
  return data;
}

// One `key=value` of a layer line. ncnn tells floats from ints by their text ('.', 'e'), and
// reads an int where a float is expected as the int's bits, so the getters insist on the type.
struct Param {
  std::string text;                // scalar value as written
  bool is_array = false;           // written as -23300-key=count,v1,v2,...
  std::vector<std::string> items;  // array elements as written
};

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

struct Layer {
  int line = 0;
  std::string type;
  std::string name;
  std::vector<std::string> bottoms;
  std::vector<std::string> tops;
  std::map<int, Param> params;
};

// What code generation knows about a blob.
struct Blob {
  std::string var;       // TorchScript variable
  int64_t channels = 0;  // known for every blob (the input has 3)
  double scale = 1.0;    // spatial size / the model input's
  bool consumed = false;
};

class BinReader {
 public:
  explicit BinReader(const std::string& data) : data_(data) {}

  size_t offset() const { return offset_; }
  size_t left() const { return data_.size() - offset_; }

  // ncnn's "type 0" blob: a 4-byte tag, then float16 (padded to 4 bytes) or float32 values.
  absl::Status ReadTagged(int64_t count, std::vector<float>* out) {
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

  // ncnn's "type 1" blob: raw float32.
  absl::Status ReadRaw(int64_t count, std::vector<float>* out) {
    const size_t bytes = static_cast<size_t>(count) * sizeof(float);
    if (left() < bytes) return Short("float32 values", bytes);
    out->resize(static_cast<size_t>(count));
    if (bytes > 0) std::memcpy(out->data(), data_.data() + offset_, bytes);
    offset_ += bytes;
    return absl::OkStatus();
  }

 private:
  absl::Status Short(const char* what, size_t bytes) const {
    return absl::InvalidArgumentError(absl::StrCat("the .bin is truncated: ", what, " need ", bytes,
                                                   " bytes at byte ", offset_, ", ", left(),
                                                   " left"));
  }

  const std::string& data_;
  size_t offset_ = 0;
};

class Converter {
 public:
  Converter(std::filesystem::path param_path, std::filesystem::path bin_path,
            NcnnConvertOptions options)
      : param_path_(std::move(param_path)), bin_path_(std::move(bin_path)), options_(options) {}

  absl::StatusOr<torch::jit::Module> Run() {
    if (!(options_.value_range > 0) || !std::isfinite(options_.value_range)) {
      return absl::InvalidArgumentError(
          absl::StrCat("value_range must be positive, got ", options_.value_range));
    }
    auto param_text = ReadFileLimited(param_path_, "ncnn .param", kMaxNcnnParamBytes);
    if (!param_text.ok()) return param_text.status();
    SY_NCNN_RETURN_IF_ERROR(ParseParam(*param_text));
    auto bin = ReadFileLimited(bin_path_, "ncnn .bin", kMaxNcnnBinBytes);
    if (!bin.ok()) return bin.status();
    BinReader reader(*bin);
    SY_NCNN_RETURN_IF_ERROR(Generate(&reader));
    if (reader.left() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(bin_path_.string(), ": the graph's weights end at byte ", reader.offset(),
                       " but the .bin has ", bin->size(), " bytes (wrong .bin for this .param?)"));
    }
    return BuildModule();
  }

 private:
  absl::Status Invalid(const std::string& reason) const {
    return absl::InvalidArgumentError(absl::StrCat(param_path_.string(), ": ", reason));
  }
  absl::Status LayerError(const Layer& layer, const std::string& reason) const {
    return Invalid(absl::StrCat("line ", layer.line, ": layer ", Quote(CommentText(layer.name)),
                                " (", CommentText(layer.type), "): ", reason));
  }

  // --- .param -----------------------------------------------------------------------------

  absl::Status ParseParam(const std::string& text) {
    if (text.find('\0') != std::string::npos) return Invalid("not a text file (NUL byte)");
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
      return Invalid(absl::StrCat("first line is not the ncnn magic number ", kNcnnMagic,
                                  " (a binary .param.bin or another format?)"));
    }
    int64_t layer_count = 0, blob_count = 0;
    if (!next_line(&tokens) || tokens.size() != 2 || !ParseInt(tokens[0], &layer_count) ||
        !ParseInt(tokens[1], &blob_count)) {
      return Invalid("second line is not '<layer count> <blob count>'");
    }
    if (layer_count < 1 || layer_count > kMaxNcnnLayers) {
      return Invalid(absl::StrCat("layer count ", layer_count, " is outside 1..", kMaxNcnnLayers));
    }
    if (blob_count < 1 || blob_count > kMaxNcnnLayers * kMaxBlobsPerLayer) {
      return Invalid(absl::StrCat("blob count ", blob_count, " is out of range"));
    }
    std::set<std::string> blob_names;
    while (next_line(&tokens)) {
      if (static_cast<int64_t>(layers_.size()) == layer_count) {
        return Invalid(
            absl::StrCat("line ", line_no, ": more layers than the declared ", layer_count));
      }
      Layer layer;
      layer.line = line_no;
      if (tokens.size() < 4) {
        return Invalid(
            absl::StrCat("line ", line_no, ": expected '<type> <name> <bottoms> <tops> ...'"));
      }
      layer.type = std::string(tokens[0]);
      layer.name = std::string(tokens[1]);
      int64_t nb = 0, nt = 0;
      if (!ParseInt(tokens[2], &nb) || !ParseInt(tokens[3], &nt) || nb < 0 || nt < 0 ||
          nb > kMaxBlobsPerLayer || nt > kMaxBlobsPerLayer) {
        return LayerError(layer, absl::StrCat("bad bottom/top counts ", tokens[2], " ", tokens[3],
                                              " (each 0..", kMaxBlobsPerLayer, ")"));
      }
      if (tokens.size() < static_cast<size_t>(4 + nb + nt)) {
        return LayerError(layer, absl::StrCat("names ", nb, " bottom and ", nt,
                                              " top blobs but the line is shorter"));
      }
      size_t t = 4;
      for (int64_t i = 0; i < nb; ++i) layer.bottoms.emplace_back(tokens[t++]);
      for (int64_t i = 0; i < nt; ++i) {
        std::string top(tokens[t++]);
        if (top.find('=') != std::string::npos) {
          return LayerError(layer, absl::StrCat("top blob name ", Quote(CommentText(top)),
                                                " looks like a parameter: too few names"));
        }
        if (!blob_names.insert(top).second) {
          return LayerError(layer,
                            absl::StrCat("blob ", Quote(CommentText(top)), " is produced twice"));
        }
        layer.tops.push_back(std::move(top));
      }
      for (; t < tokens.size(); ++t) SY_NCNN_RETURN_IF_ERROR(ParseKeyValue(tokens[t], &layer));
      layers_.push_back(std::move(layer));
    }
    if (static_cast<int64_t>(layers_.size()) != layer_count) {
      return Invalid(absl::StrCat("declares ", layer_count, " layers but has ", layers_.size()));
    }
    if (static_cast<int64_t>(blob_names.size()) != blob_count) {
      return Invalid(absl::StrCat("declares ", blob_count, " blobs but its layers produce ",
                                  blob_names.size()));
    }
    return absl::OkStatus();
  }

  absl::Status ParseKeyValue(absl::string_view token, Layer* layer) const {
    const size_t eq = token.find('=');
    int64_t key = 0;
    if (eq == absl::string_view::npos || !ParseInt(token.substr(0, eq), &key)) {
      return LayerError(
          *layer, absl::StrCat("malformed parameter ", Quote(token), " (expected <id>=<value>)"));
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
        return LayerError(*layer, absl::StrCat("array parameter ", Quote(token),
                                               ": its length does not match its elements"));
      }
      for (size_t i = 1; i < parts.size(); ++i) param.items.emplace_back(parts[i]);
    } else {
      param.text = std::string(value);
    }
    if (key < 0 || key >= kMaxParamId) {
      return LayerError(*layer, absl::StrCat("parameter id in ", Quote(token), " is outside 0..",
                                             kMaxParamId - 1));
    }
    if (value.empty())
      return LayerError(*layer, absl::StrCat("parameter ", Quote(token), " is empty"));
    if (!layer->params.emplace(static_cast<int>(key), std::move(param)).second) {
      return LayerError(*layer, absl::StrCat("parameter ", key, " is given twice"));
    }
    return absl::OkStatus();
  }

  // Refuses parameters outside `allowed`: an unknown one may change what the layer computes.
  absl::Status OnlyParams(const Layer& layer, std::initializer_list<int> allowed) const {
    for (const auto& [key, param] : layer.params) {
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        return LayerError(
            layer, absl::StrCat("parameter ", key, "=", param.is_array ? "[array]" : param.text,
                                " is unsupported for ", layer.type));
      }
    }
    return absl::OkStatus();
  }

  absl::Status GetInt(const Layer& layer, int key, int64_t fallback, int64_t* out) const {
    auto it = layer.params.find(key);
    if (it == layer.params.end()) {
      *out = fallback;
      return absl::OkStatus();
    }
    if (it->second.is_array || LooksFloat(it->second.text) || !ParseInt(it->second.text, out) ||
        *out < INT32_MIN || *out > INT32_MAX) {
      return LayerError(layer,
                        absl::StrCat("parameter ", key, " must be an int, got ",
                                     Quote(it->second.is_array ? "[array]" : it->second.text)));
    }
    return absl::OkStatus();
  }

  absl::Status GetFloat(const Layer& layer, int key, double fallback, double* out) const {
    auto it = layer.params.find(key);
    if (it == layer.params.end()) {
      *out = fallback;
      return absl::OkStatus();
    }
    if (it->second.is_array || !LooksFloat(it->second.text) || !ParseFloat(it->second.text, out)) {
      return LayerError(layer,
                        absl::StrCat("parameter ", key,
                                     " must be a finite float written with '.' or 'e' "
                                     "(ncnn reads an int there as raw bits), got ",
                                     Quote(it->second.is_array ? "[array]" : it->second.text)));
    }
    // ncnn keeps it as a float32.
    *out = static_cast<double>(static_cast<float>(*out));
    return absl::OkStatus();
  }

  absl::Status GetFloatArray(const Layer& layer, int key, std::vector<double>* out) const {
    out->clear();
    auto it = layer.params.find(key);
    if (it == layer.params.end()) return absl::OkStatus();
    if (!it->second.is_array) {
      return LayerError(layer, absl::StrCat("parameter ", key, " must be an array (written as -",
                                            23300 + key, "=n,...)"));
    }
    for (const std::string& item : it->second.items) {
      double v = 0;
      if (!LooksFloat(item) || !ParseFloat(item, &v)) {
        return LayerError(layer, absl::StrCat("array parameter ", key, ": element ", Quote(item),
                                              " is not a finite float"));
      }
      out->push_back(static_cast<double>(static_cast<float>(v)));
    }
    return absl::OkStatus();
  }

  // --- code generation --------------------------------------------------------------------

  absl::Status Generate(BinReader* reader) {
    std::map<std::string, Blob> blobs;
    bool have_input = false;
    int var_index = 0;
    for (const Layer& layer : layers_) {
      std::vector<Blob*> in;
      for (const std::string& name : layer.bottoms) {
        auto it = blobs.find(name);
        if (it == blobs.end()) {
          return LayerError(layer, absl::StrCat("bottom blob ", Quote(CommentText(name)),
                                                " is produced by no earlier layer"));
        }
        it->second.consumed = true;
        in.push_back(&it->second);
      }
      auto expect = [&](size_t bottoms, size_t tops) -> absl::Status {
        if (layer.bottoms.size() != bottoms || layer.tops.size() != tops) {
          return LayerError(
              layer, absl::StrCat("has ", layer.bottoms.size(), " bottom and ", layer.tops.size(),
                                  " top blobs, expected ", bottoms, " and ", tops));
        }
        return absl::OkStatus();
      };
      Blob out;
      std::string expr;
      if (layer.type == "Input") {
        SY_NCNN_RETURN_IF_ERROR(expect(0, 1));
        if (have_input) return LayerError(layer, "only one Input layer is supported");
        have_input = true;
        SY_NCNN_RETURN_IF_ERROR(OnlyParams(layer, {0, 1, 2}));
        int64_t w, h, c;
        SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 0, 0, &w));
        SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 1, 0, &h));
        SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 2, 0, &c));
        if (c != 0 && c != 3) {
          return LayerError(
              layer, absl::StrCat("declares ", c, " channels; the contract's images have 3"));
        }
        out.channels = 3;
        expr = "x";
      } else if (layer.type == "Split") {
        if (layer.bottoms.size() != 1 || layer.tops.empty()) {
          return LayerError(layer, "expects 1 bottom and at least 1 top blob");
        }
        SY_NCNN_RETURN_IF_ERROR(OnlyParams(layer, {}));
        for (const std::string& top : layer.tops) {
          Blob copy = *in[0];
          copy.consumed = false;
          blobs[top] = copy;  // the same tensor: nothing in the module writes in place
        }
        continue;
      } else if (layer.type == "Convolution") {
        SY_NCNN_RETURN_IF_ERROR(expect(1, 1));
        SY_NCNN_RETURN_IF_ERROR(Convolution(layer, *in[0], reader, &out, &expr));
      } else if (layer.type == "PReLU") {
        SY_NCNN_RETURN_IF_ERROR(expect(1, 1));
        SY_NCNN_RETURN_IF_ERROR(PRelu(layer, *in[0], reader, &out, &expr));
      } else if (layer.type == "PixelShuffle") {
        SY_NCNN_RETURN_IF_ERROR(expect(1, 1));
        SY_NCNN_RETURN_IF_ERROR(PixelShuffle(layer, *in[0], &out, &expr));
      } else if (layer.type == "Interp") {
        SY_NCNN_RETURN_IF_ERROR(expect(1, 1));
        SY_NCNN_RETURN_IF_ERROR(Interp(layer, *in[0], &out, &expr));
      } else if (layer.type == "BinaryOp") {
        SY_NCNN_RETURN_IF_ERROR(BinaryOp(layer, in, &out, &expr));
      } else if (layer.type == "Eltwise") {
        SY_NCNN_RETURN_IF_ERROR(Eltwise(layer, in, &out, &expr));
      } else if (layer.type == "Concat") {
        SY_NCNN_RETURN_IF_ERROR(Concat(layer, in, &out, &expr));
      } else {
        return LayerError(layer,
                          absl::StrCat("unsupported layer type ", Quote(CommentText(layer.type)),
                                       " (supported: Input, Split, Convolution, PReLU, "
                                       "PixelShuffle, Interp, BinaryOp, Eltwise, Concat)"));
      }
      if (!(out.scale <= kMaxTotalScale && out.scale >= 1.0 / kMaxTotalScale)) {
        return LayerError(layer, absl::StrCat("scales the image by ", out.scale,
                                              " in all, beyond the limit of ", kMaxTotalScale));
      }
      out.var = absl::StrCat("t", var_index++);
      absl::StrAppend(&network_, "    ", out.var, " = ", expr, "  # ", CommentText(layer.name),
                      " (", CommentText(layer.type), ")\n");
      blobs[layer.tops[0]] = out;
    }
    if (!have_input) return Invalid("the graph has no Input layer");
    std::vector<std::string> outputs;
    const Blob* result = nullptr;
    for (const auto& [name, blob] : blobs) {
      if (!blob.consumed) {
        outputs.push_back(Quote(CommentText(name)));
        result = &blob;
      }
    }
    if (outputs.size() != 1) {
      return Invalid(
          absl::StrCat("the graph must have exactly one output (a blob no layer "
                       "consumes), it has ",
                       outputs.size(), ": ", absl::StrJoin(outputs, ", ")));
    }
    if (result->channels != 3) {
      return Invalid(absl::StrCat("the output has ", result->channels,
                                  " channels; the contract's images have 3"));
    }
    const double rounded = std::round(result->scale);
    if (rounded < 1 || std::abs(result->scale - rounded) > 1e-6) {
      return Invalid(absl::StrCat("the output is scaled by ", result->scale,
                                  ", not a whole number of times the input"));
    }
    scale_ = static_cast<int64_t>(rounded);
    output_var_ = result->var;
    return absl::OkStatus();
  }

  std::string ParamName(const Layer& layer, const std::string& suffix) {
    std::string base = Identifier(layer.name);
    std::string name = absl::StrCat(base, "_", suffix);
    for (int n = 2; used_names_.count(name); ++n) name = absl::StrCat(base, "_", n, "_", suffix);
    used_names_.insert(name);
    return name;
  }

  absl::Status CheckFinite(const Layer& layer, const std::vector<float>& values,
                           const char* what) const {
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) {
        return LayerError(layer, absl::StrCat(what, " value ", i, " is not finite"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Convolution(const Layer& layer, const Blob& in, BinReader* reader, Blob* out,
                           std::string* expr) {
    SY_NCNN_RETURN_IF_ERROR(
        OnlyParams(layer, {0, 1, 11, 2, 12, 3, 13, 4, 15, 14, 16, 18, 5, 6, 8, 9, 10, 19}));
    int64_t num_output, kw, kh, dw, dh, sw, sh, pl, pr, pt, pb, bias_term, weight_size, int8,
        activation, dynamic;
    double pad_value;
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 0, 0, &num_output));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 1, 0, &kw));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 11, kw, &kh));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 2, 1, &dw));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 12, dw, &dh));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 3, 1, &sw));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 13, sw, &sh));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 4, 0, &pl));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 15, pl, &pr));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 14, pl, &pt));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 16, pt, &pb));
    SY_NCNN_RETURN_IF_ERROR(GetFloat(layer, 18, 0.0, &pad_value));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 5, 0, &bias_term));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 6, 0, &weight_size));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 8, 0, &int8));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 9, 0, &activation));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 19, 0, &dynamic));
    if (num_output < 1 || num_output > kMaxChannels) {
      return LayerError(
          layer, absl::StrCat("num_output (0) ", num_output, " is outside 1..", kMaxChannels));
    }
    if (kw < 1 || kh < 1 || kw > kMaxKernel || kh > kMaxKernel) {
      return LayerError(layer, absl::StrCat("kernel ", kw, "x", kh, " is outside 1..", kMaxKernel));
    }
    if (dw < 1 || dh < 1 || dw > kMaxKernel || dh > kMaxKernel) {
      return LayerError(layer, absl::StrCat("dilation ", dw, "x", dh, " is unsupported"));
    }
    if (sw != 1 || sh != 1) {
      return LayerError(layer, absl::StrCat("stride ", sw, "x", sh, " is unsupported (only 1)"));
    }
    if (pl < 0 || pr < 0 || pt < 0 || pb < 0 || pl > kMaxKernel * kMaxKernel ||
        pr > kMaxKernel * kMaxKernel || pt > kMaxKernel * kMaxKernel ||
        pb > kMaxKernel * kMaxKernel) {
      return LayerError(layer, absl::StrCat("padding ", pl, ",", pr, ",", pt, ",", pb,
                                            " is unsupported (only explicit non-negative "
                                            "padding; -233/-234 'same' modes are not read)"));
    }
    if (pad_value != 0.0) {
      return LayerError(layer,
                        absl::StrCat("pad_value (18) ", pad_value, " is unsupported (only 0)"));
    }
    if (bias_term != 0 && bias_term != 1) {
      return LayerError(layer, absl::StrCat("bias_term (5) ", bias_term, " is not 0 or 1"));
    }
    if (int8 != 0) return LayerError(layer, "int8 convolution (8) is unsupported");
    if (dynamic != 0) return LayerError(layer, "dynamic_weight (19) is unsupported");
    const int64_t per_input = num_output * kw * kh;
    if (weight_size < 1 || weight_size % per_input != 0 || weight_size / per_input != in.channels) {
      return LayerError(
          layer, absl::StrCat("weight_data_size (6) ", weight_size, " is not ", num_output,
                              " outputs x ", in.channels, " input channels x ", kw, "x", kh));
    }
    std::string activation_fmt = "{}";
    std::vector<double> activation_params;
    SY_NCNN_RETURN_IF_ERROR(GetFloatArray(layer, 10, &activation_params));
    if (activation == 0 || activation == 1) {
      if (!activation_params.empty()) {
        return LayerError(layer,
                          "activation parameters (10) given without an activation that "
                          "takes them");
      }
      if (activation == 1) activation_fmt = "torch.relu({})";
    } else if (activation == 2) {
      double slope = 0.0;
      if (activation_params.size() == 1) {
        slope = activation_params[0];
      } else if (!activation_params.empty()) {
        return LayerError(layer, "leaky ReLU takes one activation parameter (10)");
      }
      activation_fmt = absl::StrCat("torch.leaky_relu({}, ", FloatLiteral(slope), ")");
    } else {
      return LayerError(layer, absl::StrCat("activation_type (9) ", activation,
                                            " is unsupported (only 0 none, 1 ReLU, 2 leaky ReLU)"));
    }

    std::vector<float> weights;
    if (absl::Status st = reader->ReadTagged(weight_size, &weights); !st.ok()) {
      return LayerError(layer, absl::StrCat("weights: ", st.message()));
    }
    SY_NCNN_RETURN_IF_ERROR(CheckFinite(layer, weights, "weight"));
    const std::string weight_name = ParamName(layer, "weight");
    params_.emplace_back(
        weight_name,
        torch::from_blob(weights.data(), {num_output, in.channels, kh, kw}, torch::kFloat32)
            .clone());
    std::string bias_arg = "None";
    if (bias_term) {
      std::vector<float> bias;
      if (absl::Status st = reader->ReadRaw(num_output, &bias); !st.ok()) {
        return LayerError(layer, absl::StrCat("bias: ", st.message()));
      }
      SY_NCNN_RETURN_IF_ERROR(CheckFinite(layer, bias, "bias"));
      const std::string bias_name = ParamName(layer, "bias");
      params_.emplace_back(bias_name,
                           torch::from_blob(bias.data(), {num_output}, torch::kFloat32).clone());
      bias_arg = "self." + bias_name;
    }
    std::string input = in.var;
    int64_t pad_h = pt, pad_w = pl;
    if (pl != pr || pt != pb) {
      input = absl::StrCat("torch.constant_pad_nd(", input, ", [", pl, ", ", pr, ", ", pt, ", ", pb,
                           "], 0.0)");
      pad_h = pad_w = 0;
    }
    const std::string conv =
        absl::StrCat("torch.conv2d(", input, ", self.", weight_name, ", ", bias_arg, ", [1, 1], [",
                     pad_h, ", ", pad_w, "], [", dh, ", ", dw, "], 1)");
    *expr = absl::StrReplaceAll(activation_fmt, {{"{}", conv}});
    *out = in;
    out->consumed = false;
    out->channels = num_output;
    return absl::OkStatus();
  }

  absl::Status PRelu(const Layer& layer, const Blob& in, BinReader* reader, Blob* out,
                     std::string* expr) {
    SY_NCNN_RETURN_IF_ERROR(OnlyParams(layer, {0}));
    int64_t num_slope;
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 0, 0, &num_slope));
    if (num_slope != 1 && num_slope != in.channels) {
      return LayerError(layer, absl::StrCat("num_slope (0) ", num_slope, " is neither 1 nor the ",
                                            in.channels, " channels"));
    }
    std::vector<float> slope;
    if (absl::Status st = reader->ReadRaw(num_slope, &slope); !st.ok()) {
      return LayerError(layer, absl::StrCat("slopes: ", st.message()));
    }
    SY_NCNN_RETURN_IF_ERROR(CheckFinite(layer, slope, "slope"));
    const std::string name = ParamName(layer, "slope");
    params_.emplace_back(name,
                         torch::from_blob(slope.data(), {num_slope}, torch::kFloat32).clone());
    *expr = absl::StrCat("torch.prelu(", in.var, ", self.", name, ")");
    *out = in;
    out->consumed = false;
    return absl::OkStatus();
  }

  absl::Status PixelShuffle(const Layer& layer, const Blob& in, Blob* out,
                            std::string* expr) const {
    SY_NCNN_RETURN_IF_ERROR(OnlyParams(layer, {0, 1}));
    int64_t factor, mode;
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 0, 1, &factor));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 1, 0, &mode));
    if (factor < 1 || factor > kMaxScale) {
      return LayerError(layer,
                        absl::StrCat("upscale_factor (0) ", factor, " is outside 1..", kMaxScale));
    }
    // ncnn mode 0 reads input channel p*r*r + sh*r + sw for output channel p, row offset sh,
    // column offset sw: exactly torch.pixel_shuffle. Mode 1 (TF's depth-to-space) is not done.
    if (mode != 0) {
      return LayerError(layer, absl::StrCat("mode (1) ", mode, " is unsupported (only 0)"));
    }
    if (in.channels % (factor * factor) != 0) {
      return LayerError(
          layer, absl::StrCat(in.channels, " channels do not divide by ", factor, "x", factor));
    }
    *expr = absl::StrCat("torch.pixel_shuffle(", in.var, ", ", factor, ")");
    *out = in;
    out->consumed = false;
    out->channels = in.channels / (factor * factor);
    out->scale = in.scale * static_cast<double>(factor);
    return absl::OkStatus();
  }

  absl::Status Interp(const Layer& layer, const Blob& in, Blob* out, std::string* expr) const {
    SY_NCNN_RETURN_IF_ERROR(OnlyParams(layer, {0, 1, 2, 3, 4, 5, 6}));
    int64_t type, out_h, out_w, dynamic, align_corner;
    double hs, ws;
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 0, 0, &type));
    SY_NCNN_RETURN_IF_ERROR(GetFloat(layer, 1, 1.0, &hs));
    SY_NCNN_RETURN_IF_ERROR(GetFloat(layer, 2, 1.0, &ws));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 3, 0, &out_h));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 4, 0, &out_w));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 5, 0, &dynamic));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 6, 0, &align_corner));
    if (out_h != 0 || out_w != 0 || dynamic != 0) {
      return LayerError(layer,
                        "a fixed or dynamic output size (3, 4, 5) is unsupported (only "
                        "scale factors)");
    }
    if (align_corner != 0) return LayerError(layer, "align_corner (6) 1 is unsupported");
    if (hs != ws) {
      return LayerError(layer, absl::StrCat("height scale ", hs, " and width scale ", ws,
                                            " differ (unsupported)"));
    }
    *out = in;
    out->consumed = false;
    const std::string& x = in.var;
    if (type == 1) {
      // ncnn's nearest reads source pixel floor(y / scale); for a whole scale that is an exact
      // repeat, done with expand + reshape: [N,C,H,W] -> [N,C,H,s,W,s] -> [N,C,H*s,W*s].
      const double k = std::round(hs);
      if (k < 1 || k > kMaxScale || k != hs) {
        return LayerError(
            layer, absl::StrCat("nearest scale ", hs, " is unsupported (only whole numbers 1..",
                                kMaxScale, ")"));
      }
      const int64_t s = static_cast<int64_t>(k);
      *expr = absl::StrCat(x, ".unsqueeze(3).unsqueeze(5).expand(-1, -1, -1, ", s, ", -1, ", s,
                           ").reshape(", x, ".size(0), ", x, ".size(1), ", x, ".size(2) * ", s,
                           ", ", x, ".size(3) * ", s, ")");
      out->scale = in.scale * k;
    } else if (type == 3) {
      // ncnn's bicubic: A = -0.75, source x = (dx + 0.5) * in/out - 0.5, taps outside the image
      // clamped to the edge (its coefficient folding is the same as clamping), output size
      // int(size * scale): what aten's upsample_bicubic2d does given that output size. (The
      // size is computed in double here, float32 in ncnn: they agree for 0.5 and 0.75.)
      if (!(hs > 0) || hs > kMaxScale) {
        return LayerError(layer,
                          absl::StrCat("bicubic scale ", hs, " is outside (0, ", kMaxScale, "]"));
      }
      const std::string s = FloatLiteral(hs);
      *expr = absl::StrCat("torch.upsample_bicubic2d(", x, ", [int(float(", x, ".size(2)) * ", s,
                           "), int(float(", x, ".size(3)) * ", s, ")], False, None, None)");
      out->scale = in.scale * hs;
    } else {
      return LayerError(layer, absl::StrCat("resize_type (0) ", type,
                                            " is unsupported (only 1 nearest, 3 bicubic)"));
    }
    return absl::OkStatus();
  }

  absl::Status SameGrid(const Layer& layer, const std::vector<Blob*>& in) const {
    for (const Blob* b : in) {
      if (b->channels != in[0]->channels) {
        return LayerError(layer, absl::StrCat("inputs have different channel counts ",
                                              in[0]->channels, " and ", b->channels));
      }
      if (b->scale != in[0]->scale) {
        return LayerError(layer, absl::StrCat("inputs are scaled differently (", in[0]->scale,
                                              " and ", b->scale, ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status BinaryOp(const Layer& layer, const std::vector<Blob*>& in, Blob* out,
                        std::string* expr) const {
    SY_NCNN_RETURN_IF_ERROR(OnlyParams(layer, {0, 1, 2}));
    int64_t op, with_scalar;
    double b;
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 0, 0, &op));
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 1, 0, &with_scalar));
    SY_NCNN_RETURN_IF_ERROR(GetFloat(layer, 2, 0.0, &b));
    static const char* const kOps[] = {" + ", " - ", " * "};
    if (op < 0 || op > 2) {
      return LayerError(
          layer, absl::StrCat("op_type (0) ", op, " is unsupported (only 0 add, 1 sub, 2 mul)"));
    }
    if (layer.tops.size() != 1) return LayerError(layer, "expects 1 top blob");
    if (with_scalar == 1) {
      if (in.size() != 1) return LayerError(layer, "with_scalar=1 expects 1 bottom blob");
      *expr = absl::StrCat(in[0]->var, kOps[op], FloatLiteral(b));
    } else if (with_scalar == 0) {
      if (in.size() != 2) return LayerError(layer, "expects 2 bottom blobs");
      if (layer.params.count(2)) return LayerError(layer, "b (2) given without with_scalar=1");
      // ncnn broadcasts blobs of different shapes; only equal shapes are converted.
      SY_NCNN_RETURN_IF_ERROR(SameGrid(layer, in));
      *expr = absl::StrCat(in[0]->var, kOps[op], in[1]->var);
    } else {
      return LayerError(layer, absl::StrCat("with_scalar (1) ", with_scalar, " is not 0 or 1"));
    }
    *out = *in[0];
    out->consumed = false;
    return absl::OkStatus();
  }

  absl::Status Eltwise(const Layer& layer, const std::vector<Blob*>& in, Blob* out,
                       std::string* expr) const {
    SY_NCNN_RETURN_IF_ERROR(OnlyParams(layer, {0, 1}));
    if (in.size() < 2 || layer.tops.size() != 1) {
      return LayerError(layer, "expects at least 2 bottom blobs and 1 top blob");
    }
    SY_NCNN_RETURN_IF_ERROR(SameGrid(layer, in));
    int64_t op;
    std::vector<double> coeffs;
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 0, 0, &op));
    SY_NCNN_RETURN_IF_ERROR(GetFloatArray(layer, 1, &coeffs));
    if (op != 1) {
      return LayerError(layer, absl::StrCat("op_type (0) ", op, " is unsupported (only 1 sum)"));
    }
    if (!coeffs.empty() && coeffs.size() != in.size()) {
      return LayerError(
          layer, absl::StrCat(coeffs.size(), " coefficients (1) for ", in.size(), " inputs"));
    }
    std::vector<std::string> terms;
    for (size_t i = 0; i < in.size(); ++i) {
      terms.push_back(coeffs.empty() ? in[i]->var
                                     : absl::StrCat(in[i]->var, " * ", FloatLiteral(coeffs[i])));
    }
    *expr = absl::StrJoin(terms, " + ");
    *out = *in[0];
    out->consumed = false;
    return absl::OkStatus();
  }

  absl::Status Concat(const Layer& layer, const std::vector<Blob*>& in, Blob* out,
                      std::string* expr) const {
    SY_NCNN_RETURN_IF_ERROR(OnlyParams(layer, {0}));
    if (in.empty() || layer.tops.size() != 1) {
      return LayerError(layer, "expects at least 1 bottom blob and 1 top blob");
    }
    int64_t axis;
    SY_NCNN_RETURN_IF_ERROR(GetInt(layer, 0, 0, &axis));
    if (axis != 0) {
      return LayerError(layer, absl::StrCat("axis (0) ", axis,
                                            " is unsupported (only 0, "
                                            "channels)"));
    }
    std::vector<std::string> vars;
    int64_t channels = 0;
    for (const Blob* b : in) {
      if (b->scale != in[0]->scale) {
        return LayerError(layer, "inputs are scaled differently");
      }
      vars.push_back(b->var);
      channels += b->channels;
    }
    if (channels > kMaxChannels) return LayerError(layer, "too many channels");
    *expr = absl::StrCat("torch.cat([", absl::StrJoin(vars, ", "), "], 1)");
    *out = *in[0];
    out->consumed = false;
    out->channels = channels;
    return absl::OkStatus();
  }

  // --- module -----------------------------------------------------------------------------

  absl::StatusOr<torch::jit::Module> BuildModule() {
    torch::jit::Module module("NcnnModel");
    for (const auto& [name, tensor] : params_) module.register_parameter(name, tensor, false);
    module.register_attribute("scale", c10::IntType::get(), c10::IValue(scale_));
    // The network runs on 0..value_range; the contracts are on 0..255.
    const std::string to_net = FloatLiteral(options_.value_range / 255.0);
    const std::string from_net = FloatLiteral(255.0 / options_.value_range);
    std::string source = absl::StrCat("def network(self, x: Tensor) -> Tensor:\n", network_,
                                      "    return ", output_var_, "\n\n");
    if (options_.contract == NcnnContract::kUpscale) {
      absl::StrAppend(&source, "def forward(self, x: Tensor) -> Tensor:\n",
                      "    return self.network(x * ", to_net, ") * ", from_net, "\n");
    } else {
      absl::StrAppend(&source, "def forward(self, frame: Tensor, params: str) -> Tensor:\n",
                      "    y = self.network(frame * ", to_net, ") * ", from_net, "\n",
                      "    # live-video-to-video wants even sizes (x3 of an odd frame is odd)\n",
                      "    return y.narrow(2, 0, y.size(2) - y.size(2) % 2)"
                      ".narrow(3, 0, y.size(3) - y.size(3) % 2)\n");
    }
    try {
      module.define(source);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat(
          param_path_.string(),
          ": generated TorchScript does not compile: ", e.what_without_backtrace(), "\n", source));
    }
    module.eval();
    return module;
  }

  std::filesystem::path param_path_;
  std::filesystem::path bin_path_;
  NcnnConvertOptions options_;
  std::vector<Layer> layers_;
  std::set<std::string> used_names_ = {"forward", "network", "training", "scale"};
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::string network_;
  std::string output_var_;
  int64_t scale_ = 1;
};

}  // namespace

absl::StatusOr<torch::jit::Module> ConvertNcnnModel(const std::filesystem::path& param_path,
                                                    const std::filesystem::path& bin_path,
                                                    const NcnnConvertOptions& options) {
  try {
    return Converter(param_path, bin_path, options).Run();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(param_path.string(), ": libtorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(param_path.string(), ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(param_path.string(), ": unknown error"));
  }
}

}  // namespace switchyard::runner
