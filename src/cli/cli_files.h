// The CLI's files: inputs read whole and checked before any call (a bad input is a usage error,
// exit 2, not a round trip to the gateway), outputs checked before the call and written
// atomically after it.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::cli::internal {

// Reads a whole input file; errors name it as `what` ("input image", "mask input", ...).
absl::StatusOr<std::string> ReadInputFile(const std::string& path, absl::string_view what);
// Reads an input image and checks it is a PNG or JPEG; its size goes to `size` when given.
absl::StatusOr<std::string> ReadInputImage(const std::string& path,
                                           std::pair<int, int>* size = nullptr);
// Checks that `path` can be created or overwritten, without touching it.
absl::Status CheckWritableFile(const std::string& path);
// Creates `dir` (and its parents) when missing; checks that it is a writable directory.
absl::Status PrepareOutputDirectory(const std::string& dir);
// Writes `data` to a temporary file next to `path`, then renames it over `path`, so that a reader
// never sees a partial output.
absl::Status WriteFileAtomically(const std::filesystem::path& path, absl::string_view data);

// A name that is safe as a file name: [A-Za-z0-9._-], not starting with '.'.
bool IsSafeName(absl::string_view name);
// `name` with every other character replaced by '_'.
std::string SanitizeName(absl::string_view name);

}  // namespace switchyard::cli::internal
