#include "cli/cli_files.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_commands.h"
#include "cli/cli_support.h"

namespace switchyard::cli {
namespace internal {
namespace {

namespace fs = std::filesystem;

// Longest input the CLI sends: the message limit less room for the other request fields.
constexpr int64_t kMaxInputBytes = kMaxMessageBytes - 64 * 1024;

std::string ErrnoMessage(int errnum) { return std::generic_category().message(errnum); }

absl::Status CheckWritableDirectory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("output directory ", Quote(dir.string()), " does not exist"));
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("output directory ", Quote(dir.string()),
                                                    " is not writable: ", ErrnoMessage(errno)));
  }
  return absl::OkStatus();
}

bool IsSafeChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

}  // namespace

absl::StatusOr<std::string> ReadInputFile(const std::string& path, absl::string_view what) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    return absl::NotFoundError(absl::StrCat(what, " ", Quote(path), " does not exist"));
  }
  if (fs::is_directory(st)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(path), " is a directory"));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot read ", what, " ", Quote(path), ": ", ErrnoMessage(errno)));
  }
  std::string data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) {
    return absl::DataLossError(
        absl::StrCat("cannot read ", what, " ", Quote(path), ": ", ErrnoMessage(errno)));
  }
  if (data.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(path), " is empty"));
  }
  if (static_cast<int64_t>(data.size()) > kMaxInputBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(path), " is too large (",
                                                   data.size(), " bytes, at most ", kMaxInputBytes,
                                                   ")"));
  }
  return data;
}

absl::StatusOr<std::string> ReadInputImage(const std::string& path, std::pair<int, int>* size) {
  absl::StatusOr<std::string> image = ReadInputFile(path, "input image");
  if (!image.ok()) return image.status();
  absl::StatusOr<std::pair<int, int>> probed = ProbeImageSize(*image);
  if (!probed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input image ", Quote(path), " is not a PNG or JPEG image: ", probed.status().message()));
  }
  if (size != nullptr) *size = *probed;
  return image;
}

absl::Status CheckWritableFile(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("output ", Quote(path), " is a directory"));
  }
  const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (absl::Status s = CheckWritableDirectory(parent); !s.ok()) return s;
  if (fs::exists(p, ec) && ::access(p.c_str(), W_OK) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("output ", Quote(path), " is not writable: ", ErrnoMessage(errno)));
  }
  return absl::OkStatus();
}

absl::Status PrepareOutputDirectory(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create output directory ", Quote(dir), ": ", ec.message()));
    }
  } else if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("output ", Quote(dir), " is not a directory"));
  }
  return CheckWritableDirectory(dir);
}

absl::Status WriteFileAtomically(const fs::path& path, absl::string_view data) {
  fs::path tmp = path;
  tmp += absl::StrCat(".tmp-", GenerateRequestId().substr(0, 8));
  {
    std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
    if (!file) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write ", Quote(path.string()), ": ", ErrnoMessage(errno)));
    }
    file.write(data.data(), static_cast<std::streamsize>(data.size()));
    file.close();
    if (!file) {
      const int saved = errno;
      std::error_code ignored;
      fs::remove(tmp, ignored);
      return absl::DataLossError(
          absl::StrCat("cannot write ", Quote(path.string()), ": ", ErrnoMessage(saved)));
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", Quote(path.string()), ": ", ec.message()));
  }
  return absl::OkStatus();
}

bool IsSafeName(absl::string_view name) {
  if (name.empty() || name.front() == '.' || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), IsSafeChar);
}

std::string SanitizeName(absl::string_view name) {
  std::string out;
  for (char c : name.substr(0, 64)) out.push_back(IsSafeChar(c) ? c : '_');
  if (out.empty() || out.front() == '.') out.insert(0, "r");
  return out;
}

}  // namespace internal

absl::StatusOr<std::pair<int, int>> ProbeImageSize(absl::string_view data) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(data[i]); };
  const auto be16 = [&](size_t i) { return (byte(i) << 8) | byte(i + 1); };
  const auto be32 = [&](size_t i) {
    return (uint32_t{byte(i)} << 24) | (uint32_t{byte(i + 1)} << 16) |
           (uint32_t{byte(i + 2)} << 8) | uint32_t{byte(i + 3)};
  };
  static constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";
  if (data.size() >= 8 && data.substr(0, 8) == absl::string_view(kPngSignature, 8)) {
    if (data.size() < 24 || data.substr(12, 4) != "IHDR") {
      return absl::InvalidArgumentError("truncated PNG header");
    }
    const uint32_t width = be32(16);
    const uint32_t height = be32(20);
    if (width == 0 || height == 0 || width > INT32_MAX || height > INT32_MAX) {
      return absl::InvalidArgumentError("bad PNG size");
    }
    return std::pair<int, int>{static_cast<int>(width), static_cast<int>(height)};
  }
  if (data.size() >= 3 && byte(0) == 0xFF && byte(1) == 0xD8 && byte(2) == 0xFF) {
    size_t pos = 2;
    while (pos < data.size()) {
      if (byte(pos) != 0xFF) return absl::InvalidArgumentError("corrupt JPEG header");
      while (pos < data.size() && byte(pos) == 0xFF) ++pos;  // fill bytes
      if (pos >= data.size()) break;
      const uint8_t marker = byte(pos++);
      if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no payload
      if (marker == 0xD9 || marker == 0xDA) {
        return absl::InvalidArgumentError("JPEG without a frame header");
      }
      if (pos + 2 > data.size()) break;
      const size_t length = be16(pos);
      if (length < 2) return absl::InvalidArgumentError("corrupt JPEG header");
      const bool is_sof =
          marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (is_sof) {
        if (pos + 7 > data.size()) break;
        const int height = be16(pos + 3);
        const int width = be16(pos + 5);
        if (width == 0 || height == 0) return absl::InvalidArgumentError("bad JPEG size");
        return std::pair<int, int>{width, height};
      }
      pos += length;
    }
    return absl::InvalidArgumentError("truncated JPEG header");
  }
  return absl::InvalidArgumentError("unknown format");
}

}  // namespace switchyard::cli
