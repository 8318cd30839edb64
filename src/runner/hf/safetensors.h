// Hugging Face safetensors checkpoints, read without copying: a `.safetensors` file is an 8-byte
// little-endian header length, a JSON header ({name: {dtype, shape, data_offsets}} plus an
// optional string map `__metadata__`) and the raw little-endian tensor bytes. Files are
// memory-mapped; every tensor handed out views the mapping and keeps it alive through its
// deleter, so weights cost no second copy when the compute dtype matches the stored one.
//
// Every file is treated as hostile: the header length, the tensor count, ranks and dims are
// bounded, offsets must lie inside the data area and must not overlap, and shape x dtype size must
// equal the byte range. A sharded checkpoint (`model.safetensors.index.json`) may only name plain
// file names inside its folder.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard::runner::hf {

struct SafetensorsLimits {
  uint64_t max_header_bytes = uint64_t{100} << 20;  // real headers are well under 1 MiB
  size_t max_tensors = 100000;                      // per file
  size_t max_rank = 8;
  size_t max_shards = 4096;                       // files named by an index
  uint64_t max_index_bytes = uint64_t{64} << 20;  // model.safetensors.index.json
};

enum class StDtype { kF32, kF16, kBF16 };

struct StTensorInfo {
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets in the data area (after the header)
  uint64_t end = 0;
};

// One memory-mapped .safetensors file. Shared: tensors hold a reference to the mapping.
class SafetensorsFile {
 public:
  // Maps and validates `path`. INVALID_ARGUMENT naming the file (and the tensor) on any violation;
  // NOT_FOUND when it does not exist.
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(
      const std::filesystem::path& path, const SafetensorsLimits& limits = {});

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, StTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor of the stored dtype (float, half or bfloat16) viewing the mapping; the mapping
  // stays alive while the tensor (or any view of it) does. The mapping is private copy-on-write,
  // so an in-place op on the tensor never reaches the file. NOT_FOUND for an unknown name.
  absl::StatusOr<at::Tensor> Tensor(const std::string& name) const;

 private:
  struct Mapping;
  SafetensorsFile() = default;

  std::filesystem::path path_;
  std::shared_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::map<std::string, StTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint folder: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json` (`weight_map`: tensor name -> file name in the folder). As in
// transformers, a single `model.safetensors` wins over an index.
class Checkpoint {
 public:
  static absl::StatusOr<Checkpoint> Open(const std::filesystem::path& folder,
                                         const SafetensorsLimits& limits = {});

  bool Has(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<std::string> Names() const;
  // Stored dtype and shape, or nullptr for an unknown name.
  const StTensorInfo* Info(const std::string& name) const;
  // See SafetensorsFile::Tensor.
  absl::StatusOr<at::Tensor> Tensor(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index in files_
};

const char* StDtypeName(StDtype dtype);

}  // namespace switchyard::runner::hf
