#include "common/node_identity.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/secure_random.h"

namespace switchyard {
namespace {

constexpr size_t kMaxKeyFileBytes = 16 * 1024;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};

// The last OpenSSL error as text (the queue cleared), for messages.
std::string OpenSslError() {
  unsigned long code = ERR_get_error();  // NOLINT(runtime/int): OpenSSL's type
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

// Never prompts on a terminal for a passphrase: an encrypted key file is refused.
int NoPassphrase(char*, int, int, void*) { return -1; }

void AppendField(std::string* out, absl::string_view field) {
  absl::StrAppend(out, field.size(), ":", field, "\n");
}

}  // namespace

absl::StatusOr<NodeKeyPtr> NodeKey::FromPkey(PkeyPtr pkey) {
  if (pkey == nullptr || EVP_PKEY_id(pkey.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError("not an Ed25519 key");
  }
  std::string pub(kNodePublicKeyBytes, '\0');
  size_t len = pub.size();
  if (EVP_PKEY_get_raw_public_key(pkey.get(), reinterpret_cast<unsigned char*>(pub.data()), &len) !=
          1 ||
      len != kNodePublicKeyBytes) {
    return absl::InternalError(absl::StrCat("reading the public key: ", OpenSslError()));
  }
  NodeKeyPtr key(new NodeKey(std::move(pkey)));
  key->public_key_ = std::move(pub);
  return key;
}

absl::StatusOr<NodeKeyPtr> NodeKey::Generate() {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  EVP_PKEY* raw = nullptr;
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return absl::InternalError(absl::StrCat("generating an Ed25519 key: ", OpenSslError()));
  }
  return FromPkey(PkeyPtr(raw));
}

absl::StatusOr<NodeKeyPtr> NodeKey::LoadOrCreate(const std::filesystem::path& path) {
  const std::string where = path.string();
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("identity key ", where, " is not a regular file"));
    }
    if ((st.st_mode & 077) != 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "identity key %s has mode %04o: group and others must have no access (chmod 600 %s)",
          where, st.st_mode & 07777, where));
    }
    if (static_cast<size_t>(st.st_size) > kMaxKeyFileBytes) {
      return absl::InvalidArgumentError(absl::StrCat("identity key ", where, " is ", st.st_size,
                                                     " bytes; a key file is at most ",
                                                     kMaxKeyFileBytes));
    }
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in.good() && !in.eof()) {
      return absl::UnavailableError(absl::StrCat("cannot read identity key ", where));
    }
    const std::string pem = text.str().substr(0, kMaxKeyFileBytes);
    std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
    if (pkey == nullptr) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat(
          "identity key ", where,
          " is not an unencrypted PEM private key (move it away to have a new one made)"));
    }
    auto key = FromPkey(std::move(pkey));
    if (!key.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("identity key ", where, ": ", key.status().message()));
    }
    return key;
  }
  if (errno != ENOENT) {
    return absl::UnavailableError(
        absl::StrCat("cannot stat identity key ", where, ": ", std::strerror(errno)));
  }

  // First start: a new key, written whole or not at all.
  auto key = Generate();
  if (!key.ok()) return key.status();
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PrivateKey(bio.get(), (*key)->pkey_.get(), nullptr, nullptr, 0, nullptr,
                               nullptr) != 1) {
    return absl::InternalError(absl::StrCat("encoding the identity key: ", OpenSslError()));
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);  // NOLINT(runtime/int): OpenSSL's type
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot create the folder of identity key ", where, ": ", ec.message()));
    }
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  }
  if (auto st = WritePrivateFile(path, absl::string_view(data, static_cast<size_t>(size)));
      !st.ok()) {
    return absl::UnavailableError(absl::StrCat("identity key: ", st.message()));
  }
  return key;
}

absl::StatusOr<std::string> NodeKey::Sign(absl::string_view message) const {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::string sig(kNodeSignatureBytes, '\0');
  size_t len = sig.size();
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      len != kNodeSignatureBytes) {
    return absl::InternalError(absl::StrCat("signing: ", OpenSslError()));
  }
  return sig;
}

absl::Status VerifyNodeSignature(absl::string_view public_key, absl::string_view message,
                                 absl::string_view signature) {
  if (public_key.size() != kNodePublicKeyBytes) {
    return absl::UnauthenticatedError(absl::StrCat("the public key is ", public_key.size(),
                                                   " bytes; an Ed25519 key is ",
                                                   kNodePublicKeyBytes));
  }
  if (signature.size() != kNodeSignatureBytes) {
    return absl::UnauthenticatedError(absl::StrCat("the signature is ", signature.size(),
                                                   " bytes; an Ed25519 signature is ",
                                                   kNodeSignatureBytes));
  }
  std::unique_ptr<EVP_PKEY, PkeyFree> pkey(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(public_key.data()),
      public_key.size()));
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (pkey == nullptr || ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) {
    ERR_clear_error();
    return absl::UnauthenticatedError("the public key is not a valid Ed25519 key");
  }
  const int ok = EVP_DigestVerify(
      ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
      reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();
  if (ok != 1) return absl::UnauthenticatedError("the signature does not verify with the key");
  return absl::OkStatus();
}

absl::Status WritePrivateFile(const std::filesystem::path& path, absl::string_view text) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  const std::filesystem::path tmp =
      dir / absl::StrCat(".", path.filename().string(), ".", SecureRandomHex(8), ".tmp");
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", path.string(), ": ", std::strerror(errno)));
  }
  bool ok = fchmod(fd, 0600) == 0;  // whatever the umask
  for (size_t done = 0; ok && done < text.size();) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ok && fsync(fd) == 0;
  const int write_errno = errno;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = ok ? errno : write_errno;
    unlink(tmp.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot write ", path.string(), ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

std::string RegistrationProofMessage(absl::string_view gateway_id, absl::string_view nonce,
                                     absl::string_view node_id, absl::string_view public_key,
                                     absl::string_view address) {
  std::string out = "switchyard node registration v1\n";
  for (absl::string_view field : {gateway_id, nonce, node_id, public_key, address}) {
    AppendField(&out, field);
  }
  return out;
}

std::string NodeKeyHex(absl::string_view public_key) { return absl::BytesToHexString(public_key); }

absl::StatusOr<std::string> ParseNodeKeyHex(absl::string_view hex) {
  if (hex.size() != 2 * kNodePublicKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a node key is ", 2 * kNodePublicKeyBytes, " hex digits, not ", hex.size()));
  }
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError("a node key is hex digits only");
    }
  }
  return absl::HexStringToBytes(absl::AsciiStrToLower(hex));
}

}  // namespace switchyard
