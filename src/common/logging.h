// Process-wide logging setup (spdlog). Daemons call InitLogging once from main.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace switchyard {

// `level`: trace, debug, info, warn, error. `format`: "text" or "json" (one JSON object a line).
absl::Status InitLogging(const std::string& level, const std::string& format,
                         const std::string& component);

}  // namespace switchyard
