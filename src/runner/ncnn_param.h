// ncnn's model files as the ncnn converter reads them (ncnn_converter.h): the .param text graph
// parsed into layers with typed parameter getters, and the .bin weights read blob by blob. Every
// error names the .param (and the layer's line), so the getters take its path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace switchyard::runner::ncnn {

// One `key=value` of a layer line.
struct Param {
  std::string text;                // scalar value as written
  bool is_array = false;           // written as -23300-key=count,v1,v2,...
  std::vector<std::string> items;  // array elements as written
};

// One layer line: `<type> <name> <bottom count> <top count> <bottoms...> <tops...> <params...>`.
struct Layer {
  int line = 0;
  std::string type;
  std::string name;
  std::vector<std::string> bottoms;
  std::vector<std::string> tops;
  std::map<int, Param> params;
};

// INVALID_ARGUMENT "<param_path>: <reason>".
absl::Status ParamError(const std::filesystem::path& param_path, const std::string& reason);
// INVALID_ARGUMENT "<param_path>: line N: layer '<name>' (<type>): <reason>".
absl::Status LayerError(const std::filesystem::path& param_path, const Layer& layer,
                        const std::string& reason);

// Parses the .param text (magic number, counts, layer lines) into `layers`, checking the declared
// counts, blob names produced once, parameter ids and array lengths against the limits.
absl::Status ParseParam(const std::filesystem::path& param_path, const std::string& text,
                        std::vector<Layer>* layers);

// Refuses parameters outside `allowed`: an unknown one may change what the layer computes.
absl::Status OnlyParams(const std::filesystem::path& param_path, const Layer& layer,
                        std::initializer_list<int> allowed);
// Parameter `key` as an int32 (written without '.'/'e'), or `fallback` when absent.
absl::Status GetInt(const std::filesystem::path& param_path, const Layer& layer, int key,
                    int64_t fallback, int64_t* out);
// Parameter `key` as a finite float written with '.' or 'e' (rounded to float32, as ncnn keeps
// it), or `fallback` when absent.
absl::Status GetFloat(const std::filesystem::path& param_path, const Layer& layer, int key,
                      double fallback, double* out);
// Array parameter `key` of finite floats (rounded to float32); empty when absent.
absl::Status GetFloatArray(const std::filesystem::path& param_path, const Layer& layer, int key,
                           std::vector<double>* out);

// IEEE half to float, exactly (subnormals, infinities and NaN included).
float HalfToFloat(uint16_t h);

// Reads weight blobs from the .bin in order; errors say what was short and where.
class BinReader {
 public:
  explicit BinReader(const std::string& data) : data_(data) {}

  size_t offset() const { return offset_; }
  size_t left() const { return data_.size() - offset_; }

  // ncnn's "type 0" blob: a 4-byte tag, then float16 (padded to 4 bytes) or float32 values.
  absl::Status ReadTagged(int64_t count, std::vector<float>* out);
  // ncnn's "type 1" blob: raw float32.
  absl::Status ReadRaw(int64_t count, std::vector<float>* out);

 private:
  absl::Status Short(const char* what, size_t bytes) const;

  const std::string& data_;
  size_t offset_ = 0;
};

}  // namespace switchyard::runner::ncnn
