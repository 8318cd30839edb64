// Unguessable identifiers. Ids a client can collect (request ids, async job ids, stream and video
// ids) must not come from std::mt19937_64: its whole state can be rebuilt from 312 outputs, and
// from it every id handed to another client. These come from OpenSSL's CSPRNG.
#pragma once

#include <cstdint>
#include <string>

namespace switchyard {

// `bytes` random bytes as lowercase hex (2 * bytes characters). Aborts the process if OpenSSL's
// generator fails: an id service must not hand out predictable ids.
std::string SecureRandomHex(size_t bytes = 16);

// `bytes` random raw bytes (challenges, nonces), same generator and failure rule.
std::string SecureRandomBytes(size_t bytes);

// A random 64-bit value from the same generator, for injected `() -> uint64_t` id sources.
uint64_t SecureRandomU64();

}  // namespace switchyard
