// Process-wide logging setup (spdlog). Daemons call InitLogging once from main.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace switchyard {

// `level`: trace, debug, info, warn, error. `format`: "text" or "json" (one JSON object a line).
absl::Status InitLogging(const std::string& level, const std::string& format,
                         const std::string& component);

// How much of one client-supplied string a log line shows (LogSafe).
inline constexpr size_t kLogSafeMaxBytes = 128;
// An error message may quote client strings (each cut by whoever wrote it, or not): a larger
// bound for the whole message, still escaped.
inline constexpr size_t kLogSafeMaxErrorBytes = 1024;

// A client-supplied string (model id, manifest id, request id, stream id...) made safe to put in
// a log line: a client must not forge lines (newlines), rewrite the terminal (escape sequences),
// break the JSON log format (quotes) or flood the log (a megabyte id). The first `max_bytes` bytes
// are kept, printable ASCII as is; '"' and '\' get a backslash; \n, \r and \t are written so;
// every other byte (controls, DEL, bytes >= 0x80) as \u00XX with the byte's value, which is valid
// inside a JSON string too. A longer string is cut, marked "...(N bytes)" with its full size.
// The result is printable ASCII of at most about 6 * max_bytes + 24 characters.
std::string LogSafe(std::string_view s, size_t max_bytes = kLogSafeMaxBytes);

}  // namespace switchyard
