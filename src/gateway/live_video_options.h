// Limits of the gateway's live video-to-video sessions (live_video.h), apart from it so that the
// gateway's config (gateway_config.h, the `live_video` block) can hold them without gRPC.
#pragma once

#include <cstdint>

#include "absl/time/time.h"
#include "gateway/egress_policy.h"

namespace switchyard::gateway {

struct LiveVideoOptions {
  int max_sessions = 64;                               // sessions at once; more refused (429)
  int max_sessions_per_key = 8;                        // ... and per API key (429)
  absl::Duration max_lifetime = absl::Hours(12);       // a session ends after this long
  absl::Duration idle_timeout = absl::Seconds(60);     // ... or when no segment came for this long
  absl::Duration http_timeout = absl::Seconds(30);     // each publish or event request
  absl::Duration segment_timeout = absl::Seconds(60);  // each segment's gRPC call
  int64_t max_segment_bytes = 64 << 20;                // a larger input segment ends the session
  // A larger control message is dropped (with an error event): its JSON is copied into the
  // params_updated event and every later segment call.
  int64_t max_control_bytes = 64 << 10;
  int max_failures_in_a_row = 3;  // segments that fail one after another before the session ends
  // Where the session's URLs may point (live_video.allowed_hosts), and how long the request-time
  // check waits for a host name to resolve (it runs on the HTTP thread; a slower name is checked
  // at its first connection instead).
  EgressPolicy egress;
  absl::Duration resolve_timeout = absl::Milliseconds(500);
};

}  // namespace switchyard::gateway
