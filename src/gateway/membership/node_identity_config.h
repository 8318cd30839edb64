// The gateway's `node_identity` config block (docs/security.md, "Node identity"); NodeKeys
// (node_keys.h) applies it.
#pragma once

#include <filesystem>

namespace switchyard::gateway {

struct NodeIdentityConfig {
  enum class Mode {
    kOff,      // keys ignored: no challenge, no binding (the registration secrets still apply)
    kVerify,   // a node that sends a key must prove it and is bound to it; nodes without keys
               // are still accepted unless their id is bound to a key or an allow list is set
    kRequire,  // every node must register with a key and prove it
  };
  Mode mode = Mode::kVerify;
  // {"allow": [{"public_key": HEX, "node_id": ID?}], "deny": [{"public_key": HEX} |
  // {"node_id": ID}], "rebind": [ID]}; empty: no lists. Re-read on SIGHUP.
  std::filesystem::path policy_file;
  // {"nodes": [{"node_id": ID, "public_key": HEX}]}: the bindings, rewritten (atomically) when
  // one is added; empty: kept in memory only (a gateway restart forgets them).
  std::filesystem::path bindings_file;
};

}  // namespace switchyard::gateway
