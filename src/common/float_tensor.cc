#include "common/float_tensor.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace switchyard {

// The wire format is little-endian; the data is copied as is.
static_assert(std::endian::native == std::endian::little,
              "FloatTensor.data is little-endian float32: a big-endian host must swap bytes");

namespace {

void AppendValue(float v, bool as_binary, std::string* out) {
  if (as_binary) {
    out->push_back(v > 0 ? '1' : '0');
  } else if (!std::isfinite(v)) {
    out->append("null");
  } else {
    char buf[32];
    const auto res = std::to_chars(buf, buf + sizeof(buf), v);
    out->append(buf, res.ptr);
  }
}

// One dimension's array; `strides` are the numbers of values one step of each dimension spans.
// Stops (false) once `out` passes `max_bytes`, so an oversized answer is never built whole.
bool AppendLevel(const float* data, std::span<const int64_t> shape,
                 std::span<const int64_t> strides, bool as_binary, size_t max_bytes,
                 std::string* out) {
  out->push_back('[');
  for (int64_t i = 0; i < shape[0]; ++i) {
    if (i > 0) out->push_back(',');
    const float* p = data + i * strides[0];
    if (shape.size() > 1) {
      if (!AppendLevel(p, shape.subspan(1), strides.subspan(1), as_binary, max_bytes, out)) {
        return false;
      }
    } else {
      AppendValue(*p, as_binary, out);
      if ((i & 4095) == 4095 && out->size() > max_bytes) return false;  // a long last dimension
    }
  }
  out->push_back(']');
  return out->size() <= max_bytes;
}

int64_t Elements(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool AppendJson(const float* data, std::span<const int64_t> shape, bool as_binary, size_t max_bytes,
                std::string* out) {
  if (shape.empty()) {
    AppendValue(*data, as_binary, out);
    return out->size() <= max_bytes;
  }
  if (shape.size() > static_cast<size_t>(kMaxFloatTensorDims)) {  // callers check; never read
    out->append("null");
    return false;
  }
  int64_t strides[kMaxFloatTensorDims];
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  const size_t guess = static_cast<size_t>(Elements(shape)) * (as_binary ? 2 : 11) + 16;
  out->reserve(out->size() + std::min(guess, max_bytes));
  return AppendLevel(data, shape, std::span<const int64_t>(strides, shape.size()), as_binary,
                     max_bytes, out);
}

}  // namespace

void AppendFloatsAsJson(const float* data, std::span<const int64_t> shape, bool as_binary,
                        std::string* out) {
  AppendJson(data, shape, as_binary, std::numeric_limits<size_t>::max(), out);
}

void PackFloatTensor(const float* data, std::span<const int64_t> shape, v1::FloatTensor* out) {
  out->Clear();
  for (int64_t d : shape) out->add_shape(d);
  out->mutable_data()->assign(reinterpret_cast<const char*>(data),
                              static_cast<size_t>(Elements(shape)) * sizeof(float));
}

absl::Status CheckFloatTensor(const v1::FloatTensor& tensor, absl::string_view name, int dims,
                              int64_t max_elements) {
  if (tensor.shape_size() != dims) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has ", tensor.shape_size(), " dimensions, expected ", dims));
  }
  int64_t elements = 1;
  for (int64_t d : tensor.shape()) {
    // Checked one factor at a time, so the product cannot overflow.
    if (d < 0 || (d > 0 && elements > max_elements / d)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " has a dimension of ", d, " (at most ",
                                                     max_elements, " values in all)"));
    }
    elements *= d;
  }
  // Divided rather than multiplied: 4 x a huge count would wrap around.
  const size_t bytes = tensor.data().size();
  if (bytes % sizeof(float) != 0 || bytes / sizeof(float) != static_cast<uint64_t>(elements)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " holds ", tensor.data().size(),
                                                   " bytes for ", elements,
                                                   " float32 values (4 bytes each)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FloatTensorToJson(const v1::FloatTensor& tensor, int64_t max_bytes) {
  if (tensor.shape_size() > kMaxFloatTensorDims) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a tensor of ", tensor.shape_size(), " dimensions (at most ", kMaxFloatTensorDims, ")"));
  }
  // Checked again here (cheap), so an unchecked tensor is refused rather than read past its end.
  if (absl::Status st = CheckFloatTensor(tensor, "the tensor", tensor.shape_size(),
                                         std::numeric_limits<int64_t>::max() / 4);
      !st.ok()) {
    return st;
  }
  const std::vector<int64_t> shape(tensor.shape().begin(), tensor.shape().end());
  const int64_t elements = Elements(shape);
  if (elements > max_bytes / 2) {  // "0," per value at the least
    return absl::ResourceExhaustedError(
        absl::StrCat("a tensor of ", elements, " values is at least ", elements * 2,
                     " bytes as JSON, more than the limit of ", max_bytes));
  }
  // Aligned copy: the bytes of a protobuf string have no float alignment.
  std::vector<float> values(static_cast<size_t>(elements));
  if (!values.empty()) std::memcpy(values.data(), tensor.data().data(), values.size() * 4);
  const float zero = 0;
  std::string out;
  if (!AppendJson(values.empty() ? &zero : values.data(), shape, false,
                  static_cast<size_t>(max_bytes), &out)) {
    return absl::ResourceExhaustedError(absl::StrCat("a tensor of ", elements,
                                                     " values is more than ", max_bytes,
                                                     " bytes as JSON (the limit)"));
  }
  return out;
}

}  // namespace switchyard
