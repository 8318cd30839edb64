// Validation of a ladder and of the options of a transcode, and the sizes of a rendition once the
// input's are known.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "orchestrator/transcode/transcode_types.h"

namespace switchyard::orchestrator::transcode {

// INVALID_ARGUMENT "renditions[<index>].<field>: <what>".
absl::Status RenditionError(size_t index, const char* field, const std::string& what);

// Checks the container and the ladder (its size, then each entry on its own: sizes needing the
// input are resolved later) and returns the ladder with defaults filled in.
absl::StatusOr<std::vector<RenditionSpec>> ValidateLadder(const std::vector<RenditionSpec>& ladder,
                                                          const TranscodeOptions& options);

// Checks the codec options (hardware decode and encode, audio), filling in their defaults and
// bounding the encoder threads. FAILED_PRECONDITION when a required GPU is not there.
absl::Status ValidateCodecOptions(TranscodeOptions& options);

// Fills in `spec`'s width and height (even, keeping the display aspect where one is 0) and its
// default name, for an input `input_height` pixels high with `display_aspect`.
// INVALID_ARGUMENT when the result is over the limits.
absl::Status ResolveRenditionSize(size_t index, double display_aspect, int input_height,
                                  const TranscodeOptions& options, RenditionSpec& spec);

}  // namespace switchyard::orchestrator::transcode
