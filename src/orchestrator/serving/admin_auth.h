// Who may call the orchestrator's admin RPCs (LoadModel, UnloadModel, CloseTranscodeSession): a
// gateway, with a registration secret this node has configured (x-switchyard-registration-secret),
// or an operator, with the admin token (authorization: Bearer TOKEN). See docs/security.md,
// "Node identity and admin calls".
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace switchyard::orchestrator {

struct OrchestratorConfig;

class AdminAuth {
 public:
  // `secrets`: registration secrets accepted from gateways; `admin_token`: the operator's token
  // ("" for none). Empty strings are ignored. With neither, every caller is admitted (open).
  AdminAuth(const std::vector<std::string>& secrets, const std::string& admin_token);
  // The node's registration_secret, every registration_secrets value, and admin_token.
  static AdminAuth FromConfig(const OrchestratorConfig& config);

  static constexpr const char* kSecretMetadata = "x-switchyard-registration-secret";

  // True when no credential is configured: admin calls are open (warned about at start).
  bool open() const { return secrets_.empty() && !token_.has_value(); }

  // OK if open, or `secret` is one of the accepted secrets, or `authorization` is
  // "Bearer <admin token>". UNAUTHENTICATED otherwise, with a message that names `call` and what
  // was missing or wrong. Compared in constant time (SHA-256 digests, CRYPTO_memcmp), every
  // configured credential tried, so timing tells neither which one nor how much matched.
  absl::Status Check(absl::string_view call, std::optional<absl::string_view> secret,
                     std::optional<absl::string_view> authorization) const;

 private:
  using Digest = std::array<unsigned char, 32>;
  static Digest Sha256(absl::string_view data);

  std::vector<Digest> secrets_;
  std::optional<Digest> token_;
};

}  // namespace switchyard::orchestrator
