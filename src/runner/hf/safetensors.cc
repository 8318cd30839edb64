#include "runner/hf/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runner/hf/json_bounded.h"

namespace switchyard::runner::hf {

// The format is little-endian and tensors are handed out as views of the raw bytes.
static_assert(std::endian::native == std::endian::little, "safetensors views need little-endian");

namespace {

absl::Status FileError(const std::filesystem::path& path, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", reason));
}

size_t DtypeSize(StDtype dtype) { return dtype == StDtype::kF32 ? 4 : 2; }

at::ScalarType TorchType(StDtype dtype) {
  switch (dtype) {
    case StDtype::kF32:
      return at::kFloat;
    case StDtype::kF16:
      return at::kHalf;
    case StDtype::kBF16:
      return at::kBFloat16;
  }
  return at::kFloat;
}

// Every dtype the format defines, so that a refusal can say "unsupported" rather than "unknown".
bool IsKnownUnsupportedDtype(const std::string& d) {
  for (const char* known : {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64",
                            "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}) {
    if (d == known) return true;
  }
  return false;
}

absl::Status ParseTensorEntry(const std::filesystem::path& path, const std::string& name,
                              const nlohmann::json& entry, uint64_t data_size,
                              const SafetensorsLimits& limits, StTensorInfo* info) {
  auto bad = [&](const std::string& reason) {
    return FileError(path, absl::StrCat("tensor '", name, "': ", reason));
  };
  if (!entry.is_object()) return bad("entry is not an object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string()) return bad("missing string 'dtype'");
  if (shape_it == entry.end() || !shape_it->is_array()) return bad("missing array 'shape'");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
    return bad("'data_offsets' must be [begin, end]");
  }
  const std::string dtype = dtype_it->get<std::string>();
  if (dtype == "F32") {
    info->dtype = StDtype::kF32;
  } else if (dtype == "F16") {
    info->dtype = StDtype::kF16;
  } else if (dtype == "BF16") {
    info->dtype = StDtype::kBF16;
  } else if (IsKnownUnsupportedDtype(dtype)) {
    return bad(absl::StrCat("dtype ", dtype, " is not supported (F32, F16 and BF16 are)"));
  } else {
    return bad(absl::StrCat("unknown dtype '", dtype.substr(0, 32), "'"));
  }
  if (shape_it->size() > limits.max_rank) {
    return bad(absl::StrCat("rank ", shape_it->size(), " exceeds ", limits.max_rank));
  }
  uint64_t elements = 1;
  info->shape.clear();
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_integer()) return bad("shape entries must be integers");
    // nlohmann parses non-negative integers as unsigned, so a signed one is negative.
    if (!dim.is_number_unsigned()) {
      return bad(absl::StrCat("negative dimension ", dim.get<int64_t>()));
    }
    uint64_t d = dim.get<uint64_t>();
    // Bounded so that the product check below and int64 shapes cannot overflow.
    if (d > (uint64_t{1} << 48)) return bad(absl::StrCat("dimension ", d, " is too large"));
    if (__builtin_mul_overflow(elements, d, &elements) || elements > (uint64_t{1} << 60)) {
      return bad("shape has too many elements");
    }
    info->shape.push_back(static_cast<int64_t>(d));
  }
  for (const auto& off : *offsets_it) {
    if (!off.is_number_unsigned()) return bad("'data_offsets' must be non-negative integers");
  }
  info->begin = (*offsets_it)[0].get<uint64_t>();
  info->end = (*offsets_it)[1].get<uint64_t>();
  if (info->begin > info->end || info->end > data_size) {
    return bad(absl::StrCat("data_offsets [", info->begin, ", ", info->end,
                            ") outside the data area of ", data_size, " bytes"));
  }
  uint64_t bytes = elements * DtypeSize(info->dtype);
  if (bytes != info->end - info->begin) {
    return bad(absl::StrCat("shape [", absl::StrJoin(info->shape, ", "), "] of ", dtype, " needs ",
                            bytes, " bytes but data_offsets span ", info->end - info->begin));
  }
  return absl::OkStatus();
}

}  // namespace

struct SafetensorsFile::Mapping {
  void* base = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (base != nullptr) munmap(base, size);
  }
};

const char* StDtypeName(StDtype dtype) {
  switch (dtype) {
    case StDtype::kF32:
      return "F32";
    case StDtype::kF16:
      return "F16";
    case StDtype::kBF16:
      return "BF16";
  }
  return "?";
}

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(
    const std::filesystem::path& path, const SafetensorsLimits& limits) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string reason = absl::StrCat(path.string(), ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(reason) : absl::InvalidArgumentError(reason);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileError(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return FileError(path, absl::StrCat("truncated: ", file_size, " bytes, no header length"));
  }
  auto mapping = std::make_shared<Mapping>();
  // Private and writable: copy-on-write, so an in-place op on a weight never reaches the file
  // and never faults.
  void* base = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) {
    return FileError(path, absl::StrCat("mmap failed: ", std::strerror(errno)));
  }
  mapping->base = base;
  mapping->size = file_size;
  const auto* bytes = static_cast<const unsigned char*>(base);

  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);
  if (header_len > limits.max_header_bytes) {
    return FileError(path, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                        limits.max_header_bytes, " bytes"));
  }
  if (header_len > file_size - 8) {
    return FileError(path, absl::StrCat("header length ", header_len, " runs past the end of the ",
                                        file_size, "-byte file (truncated?)"));
  }
  std::string_view header(reinterpret_cast<const char*>(bytes + 8), header_len);
  auto parsed = ParseBoundedJson(header, path.string() + ": header");
  if (!parsed.ok()) return parsed.status();
  const nlohmann::json& j = *parsed;
  if (!j.is_object()) return FileError(path, "header is not a JSON object");
  const size_t count = j.size() - (j.contains("__metadata__") ? 1 : 0);
  if (count > limits.max_tensors) {
    return FileError(
        path, absl::StrCat("header lists ", count, " tensors; the limit is ", limits.max_tensors));
  }

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->data_start_ = 8 + header_len;
  const uint64_t data_size = file_size - file->data_start_;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return FileError(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return FileError(path, "__metadata__ values must be strings");
        file->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    if (it.key().empty()) return FileError(path, "empty tensor name");
    StTensorInfo info;
    absl::Status s = ParseTensorEntry(path, it.key(), *it, data_size, limits, &info);
    if (!s.ok()) return s;
    file->tensors_.emplace(it.key(), std::move(info));
  }
  // Two tensors sharing bytes would alias weights that are meant to be independent.
  std::vector<std::tuple<uint64_t, uint64_t, const std::string*>> ranges;
  ranges.reserve(file->tensors_.size());
  for (const auto& [name, info] : file->tensors_) {
    if (info.end > info.begin) ranges.emplace_back(info.begin, info.end, &name);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (std::get<0>(ranges[i]) < std::get<1>(ranges[i - 1])) {
      return FileError(path, absl::StrCat("tensors '", *std::get<2>(ranges[i - 1]), "' and '",
                                          *std::get<2>(ranges[i]), "' overlap"));
    }
  }
  file->mapping_ = std::move(mapping);
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

absl::StatusOr<at::Tensor> SafetensorsFile::Tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(path_.string(), ": no tensor '", name, "'"));
  }
  const StTensorInfo& info = it->second;
  auto options = at::TensorOptions().dtype(TorchType(info.dtype)).device(at::kCPU);
  char* data = static_cast<char*>(mapping_->base) + data_start_ + info.begin;
  try {
    if (info.end == info.begin) return at::empty(info.shape, options);  // nothing to view
    if (reinterpret_cast<uintptr_t>(data) % DtypeSize(info.dtype) != 0) {
      // The format does not promise aligned offsets; kernels may assume element alignment.
      at::Tensor copy = at::empty(info.shape, options);
      std::memcpy(copy.data_ptr(), data, info.end - info.begin);
      return copy;
    }
    std::shared_ptr<Mapping> keep = mapping_;
    return at::from_blob(
        data, info.shape, [keep](void*) mutable { keep.reset(); }, options);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(path_.string(), ": tensor '", name, "': ", e.what_without_backtrace()));
  }
}

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::filesystem::path& folder,
                                            const SafetensorsLimits& limits) {
  Checkpoint ckpt;
  std::error_code ec;
  const std::filesystem::path single = folder / "model.safetensors";
  if (std::filesystem::exists(single, ec)) {
    auto file = SafetensorsFile::Open(single, limits);
    if (!file.ok()) return file.status();
    ckpt.files_.push_back(*file);
    for (const auto& [name, info] : (*file)->tensors()) ckpt.where_[name] = 0;
    return ckpt;
  }
  const std::filesystem::path index_path = folder / "model.safetensors.index.json";
  if (!std::filesystem::exists(index_path, ec)) {
    return absl::NotFoundError(absl::StrCat(folder.string(),
                                            ": neither model.safetensors nor "
                                            "model.safetensors.index.json"));
  }
  uint64_t index_size = std::filesystem::file_size(index_path, ec);
  if (ec) return FileError(index_path, "cannot stat: " + ec.message());
  if (index_size > limits.max_index_bytes) {
    return FileError(index_path, absl::StrCat(index_size, " bytes exceeds the limit of ",
                                              limits.max_index_bytes));
  }
  std::ifstream in(index_path, std::ios::binary);
  std::string text(index_size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(index_size))) {
    return FileError(index_path, "cannot read");
  }
  auto parsed = ParseBoundedJson(text, index_path.string());
  if (!parsed.ok()) return parsed.status();
  auto map_it = parsed->is_object() ? parsed->find("weight_map") : parsed->end();
  if (map_it == parsed->end() || !map_it->is_object()) {
    return FileError(index_path, "no 'weight_map' object");
  }
  std::map<std::string, size_t> file_index;  // shard file name -> index in files_
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    if (!it->is_string()) {
      return FileError(index_path, absl::StrCat("weight_map['", it.key(), "'] is not a string"));
    }
    const std::string shard = it->get<std::string>();
    // Only plain names in this folder: the index must not reach other files.
    if (shard.empty() || shard == "." || shard == ".." ||
        shard.find_first_of(std::string("/\\\0", 3)) != std::string::npos) {
      return FileError(
          index_path, absl::StrCat("shard name '", shard.substr(0, 200), "' for tensor '", it.key(),
                                   "' is not a plain file name in the folder"));
    }
    auto [fit, inserted] = file_index.emplace(shard, ckpt.files_.size());
    if (inserted) {
      if (file_index.size() > limits.max_shards) {
        return FileError(index_path, absl::StrCat("more than ", limits.max_shards, " shards"));
      }
      auto file = SafetensorsFile::Open(folder / shard, limits);
      if (!file.ok()) return file.status();
      ckpt.files_.push_back(*file);
    }
    if (ckpt.files_[fit->second]->tensors().count(it.key()) == 0) {
      return FileError(index_path,
                       absl::StrCat("tensor '", it.key(), "' is not in its shard '", shard, "'"));
    }
    ckpt.where_[it.key()] = fit->second;
  }
  return ckpt;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(where_.size());
  for (const auto& [name, file] : where_) names.push_back(name);
  return names;
}

const StTensorInfo* Checkpoint::Info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return nullptr;
  return &files_[it->second]->tensors().at(name);
}

absl::StatusOr<at::Tensor> Checkpoint::Tensor(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return absl::NotFoundError(absl::StrCat("no tensor '", name, "'"));
  return files_[it->second]->Tensor(name);
}

}  // namespace switchyard::runner::hf
