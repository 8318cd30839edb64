// Helpers shared by the fuzz targets (fuzz/README.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace switchyard::fuzz {

// A property every input must keep. Failing it aborts, which libFuzzer reports as a crash with
// the input saved, and which fails the seed-replay test.
#define SWITCHYARD_FUZZ_CHECK(cond, what)                                                     \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s (%s)\n", __FILE__, __LINE__, #cond, \
                   std::string(what).c_str());                                                \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// Bad input must be answered with INVALID_ARGUMENT and a message saying what was wrong.
inline void CheckInvalidArgument(const absl::Status& status) {
  SWITCHYARD_FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument,
                        status.ToString());
  SWITCHYARD_FUZZ_CHECK(!status.message().empty(), "an error without a message");
}

// Splits "first line\nrest" at the first '\n' (no '\n': all of it is the first line).
inline std::pair<std::string_view, std::string_view> SplitFirstLine(std::string_view in) {
  const size_t nl = in.find('\n');
  if (nl == std::string_view::npos) return {in, {}};
  return {in.substr(0, nl), in.substr(nl + 1)};
}

}  // namespace switchyard::fuzz
