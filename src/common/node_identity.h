// An orchestrator's long-lived identity (issue 23; docs/security.md, "Node identity"): an Ed25519
// key pair through OpenSSL. The node registers with the public key and proves on every
// registration that it holds the private key by signing the gateway's fresh challenge; gateways
// bind node ids to keys. The proof message binds the signature to one gateway, one challenge,
// the node id, the key and the node's address, so it cannot be replayed elsewhere.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <openssl/evp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

inline constexpr size_t kNodePublicKeyBytes = 32;  // Ed25519
inline constexpr size_t kNodeSignatureBytes = 64;
inline constexpr size_t kRegistrationNonceBytes = 32;

class NodeKey;
using NodeKeyPtr = std::unique_ptr<NodeKey>;

class NodeKey {
 public:
  // The key in `path` (PEM PKCS#8 Ed25519 private key), created on first use: a new key written
  // with mode 0600 (its folder created 0700 if missing), atomically (a temporary file renamed).
  // An existing file must be a regular file of at most 16 KiB, not readable or writable by group
  // or others (FAILED_PRECONDITION naming the mode and `chmod 600`), holding an Ed25519 key
  // (INVALID_ARGUMENT otherwise). Errors name the path.
  static absl::StatusOr<NodeKeyPtr> LoadOrCreate(const std::filesystem::path& path);
  // A key that lives only in memory (no key_file configured, tests).
  static absl::StatusOr<NodeKeyPtr> Generate();

  NodeKey(const NodeKey&) = delete;
  NodeKey& operator=(const NodeKey&) = delete;

  // 32 raw bytes.
  const std::string& public_key() const { return public_key_; }
  // 64 raw bytes. INTERNAL if OpenSSL fails.
  absl::StatusOr<std::string> Sign(absl::string_view message) const;

 private:
  struct PkeyFree {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  };
  using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
  static absl::StatusOr<NodeKeyPtr> FromPkey(PkeyPtr pkey);
  explicit NodeKey(PkeyPtr pkey) : pkey_(std::move(pkey)) {}

  PkeyPtr pkey_;
  std::string public_key_;
};

// OK when `signature` is `public_key`'s Ed25519 signature of `message`; UNAUTHENTICATED when not
// (or when either has the wrong length), with a message that says which.
absl::Status VerifyNodeSignature(absl::string_view public_key, absl::string_view message,
                                 absl::string_view signature);

// What a node signs to answer a gateway's challenge: a domain tag, then each field with its
// length, so no two different field lists give the same bytes.
std::string RegistrationProofMessage(absl::string_view gateway_id, absl::string_view nonce,
                                     absl::string_view node_id, absl::string_view public_key,
                                     absl::string_view address);

// Writes `text` to `path` whole or not at all (a temporary file in the same folder, fsynced,
// renamed over it), mode 0600 whatever the umask: identity keys and key bindings.
// UNAVAILABLE naming the path on failure.
absl::Status WritePrivateFile(const std::filesystem::path& path, absl::string_view text);

// A key as operators write it in policy files and read it in logs: 64 lowercase hex digits.
std::string NodeKeyHex(absl::string_view public_key);
// The inverse; INVALID_ARGUMENT unless exactly 64 hex digits.
absl::StatusOr<std::string> ParseNodeKeyHex(absl::string_view hex);

}  // namespace switchyard
