// Small helpers shared by the ncnn and waifu2x converter tests: temp files, float32 fixtures.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>

namespace switchyard::runner::testing {

inline std::string ReadBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return std::move(out).str();
}

inline void WriteBytes(const std::filesystem::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// A directory removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("sy-converter-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A float32 tensor from a fixture directory's fixtures.json entry ({"file", "shape"}).
inline torch::Tensor LoadF32(const std::filesystem::path& dir, const nlohmann::json& entry) {
  const std::vector<int64_t> shape = entry.at("shape").get<std::vector<int64_t>>();
  std::string bytes = ReadBytes(dir / entry.at("file").get<std::string>());
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), count * 4) << entry.dump();
  if (static_cast<int64_t>(bytes.size()) != count * 4) return torch::Tensor();
  return torch::from_blob(bytes.data(), shape, torch::kFloat32).clone();
}

inline double MaxAbsError(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

inline double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace switchyard::runner::testing
