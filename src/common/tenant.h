// The tenant of a stateful call between gateway and orchestrator: the API key id the gateway
// admitted the client with. Orchestrators key per-stream state (transcode sessions) by
// (tenant, stream id), so one key cannot continue, reset or close another key's stream by naming
// its id. Only the gateway sets it; orchestrators use it as a namespace, never as a credential.
// Empty (not sent) when the gateway needs no API key: every client is then one tenant.
#pragma once

#include <cstddef>

namespace switchyard {

// gRPC metadata carrying the tenant. Binary ("-bin"): key ids may hold any bytes.
inline constexpr char kTenantMetadataKey[] = "x-switchyard-tenant-bin";
// Longest tenant an orchestrator accepts (longer: INVALID_ARGUMENT).
inline constexpr size_t kMaxTenantBytes = 256;
// Trailing metadata on a RESOURCE_EXHAUSTED answer meaning "this tenant holds as many sessions as
// one tenant may on this node": waiting for a free slot there would not help.
inline constexpr char kTenantLimitTrailerKey[] = "x-switchyard-tenant-limit";

}  // namespace switchyard
