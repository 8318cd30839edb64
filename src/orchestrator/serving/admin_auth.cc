#include "orchestrator/serving/admin_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "orchestrator/orchestrator_config.h"

namespace switchyard::orchestrator {

AdminAuth::AdminAuth(const std::vector<std::string>& secrets, const std::string& admin_token) {
  for (const std::string& s : secrets) {
    if (!s.empty()) secrets_.push_back(Sha256(s));
  }
  if (!admin_token.empty()) token_ = Sha256(admin_token);
}

AdminAuth AdminAuth::FromConfig(const OrchestratorConfig& config) {
  std::vector<std::string> secrets{config.registration_secret};
  for (const auto& [address, secret] : config.registration_secrets) secrets.push_back(secret);
  return AdminAuth(secrets, config.admin_token);
}

AdminAuth::Digest AdminAuth::Sha256(absl::string_view data) {
  Digest out{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

absl::Status AdminAuth::Check(absl::string_view call, std::optional<absl::string_view> secret,
                              std::optional<absl::string_view> authorization) const {
  if (open()) return absl::OkStatus();
  if (secret.has_value()) {
    const Digest got = Sha256(*secret);
    int matches = 0;
    for (const Digest& want : secrets_) {
      matches |= CRYPTO_memcmp(got.data(), want.data(), got.size()) == 0 ? 1 : 0;
    }
    if (matches != 0) return absl::OkStatus();
  }
  std::optional<absl::string_view> token;
  if (authorization.has_value()) {
    constexpr absl::string_view kBearer = "bearer ";
    if (authorization->size() > kBearer.size() &&
        absl::EqualsIgnoreCase(authorization->substr(0, kBearer.size()), kBearer)) {
      token = authorization->substr(kBearer.size());
    }
    if (token.has_value() && token_.has_value()) {
      const Digest got = Sha256(*token);
      if (CRYPTO_memcmp(got.data(), token_->data(), got.size()) == 0) return absl::OkStatus();
    }
  }
  std::string why;
  if (secret.has_value()) {
    why = "wrong registration secret";
  } else if (authorization.has_value() && !token.has_value()) {
    why = "authorization is not 'Bearer TOKEN'";
  } else if (token.has_value()) {
    why = token_.has_value() ? "wrong admin token" : "this node has no admin_token configured";
  } else {
    why = "no credential";
  }
  return absl::UnauthenticatedError(absl::StrCat(
      call, " is an admin call and was refused (", why,
      "): send a registration secret this node has configured (x-switchyard-registration-secret) "
      "or its admin token (authorization: Bearer TOKEN)"));
}

}  // namespace switchyard::orchestrator
