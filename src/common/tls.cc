#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace switchyard {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// OpenSSL's queued errors as text (and the queue cleared), for messages.
std::string OpenSslErrors() {
  std::string out;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    absl::StrAppend(&out, out.empty() ? "" : "; ", buf);
  }
  return out.empty() ? "" : absl::StrCat(" (", out, ")");
}

BioPtr MemBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate in `pem` (a chain's leaf), or an error naming `path`.
absl::StatusOr<X509Ptr> FirstCertificate(const std::string& pem,
                                         const std::filesystem::path& path) {
  ERR_clear_error();
  BioPtr bio = MemBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path.string(), "' holds no PEM certificate", OpenSslErrors()));
  }
  return cert;
}

absl::StatusOr<PkeyPtr> PrivateKey(const std::string& pem, const std::filesystem::path& path) {
  ERR_clear_error();
  BioPtr bio = MemBio(pem);
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path.string(), "' holds no (unencrypted) PEM private key", OpenSslErrors()));
  }
  return key;
}

absl::Status Prefixed(absl::string_view what, const absl::Status& st) {
  if (st.ok()) return st;
  return absl::Status(st.code(), absl::StrCat(what, ": ", st.message()));
}

// A certificate file and its key: both readable and PEM, the key the certificate's.
absl::Status CheckCertAndKey(const std::filesystem::path& cert_file,
                             const std::filesystem::path& key_file, absl::string_view cert_what,
                             absl::string_view key_what) {
  auto cert_pem = ReadPemFile(cert_file);
  if (!cert_pem.ok()) return Prefixed(cert_what, cert_pem.status());
  auto cert = FirstCertificate(*cert_pem, cert_file);
  if (!cert.ok()) return Prefixed(cert_what, cert.status());
  auto key_pem = ReadPemFile(key_file);
  if (!key_pem.ok()) return Prefixed(key_what, key_pem.status());
  auto key = PrivateKey(*key_pem, key_file);
  if (!key.ok()) return Prefixed(key_what, key.status());
  ERR_clear_error();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(key_what, ": the key in '", key_file.string(),
                                                   "' does not match the certificate in '",
                                                   cert_file.string(), "'"));
  }
  return absl::OkStatus();
}

absl::Status CheckCaFile(const std::filesystem::path& file, absl::string_view what) {
  auto pem = ReadPemFile(file);
  if (!pem.ok()) return Prefixed(what, pem.status());
  auto cert = FirstCertificate(*pem, file);
  if (!cert.ok()) return Prefixed(what, cert.status());
  return absl::OkStatus();
}

std::string Field(const ConfigObject& block, absl::string_view key) {
  return absl::StrCat(block.file(), ": ", block.Path(key));
}

}  // namespace

absl::StatusOr<std::string> ReadPemFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return absl::NotFoundError(
        absl::StrCat("cannot read '", path.string(), "': ", std::strerror(err)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(absl::StrCat("cannot read '", path.string(), "'"));
  }
  return ss.str();
}

absl::Status CheckTlsServerConfig(const TlsServerConfig& tls, absl::string_view what) {
  if (!tls.enabled()) return absl::OkStatus();
  if (tls.key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ".key_file: is required with cert_file"));
  }
  SY_RETURN_IF_ERROR(CheckCertAndKey(tls.cert_file, tls.key_file, absl::StrCat(what, ".cert_file"),
                                     absl::StrCat(what, ".key_file")));
  if (!tls.client_ca_file.empty()) {
    SY_RETURN_IF_ERROR(CheckCaFile(tls.client_ca_file, absl::StrCat(what, ".client_ca_file")));
  } else if (tls.require_client_cert) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ".require_client_cert: needs client_ca_file (the CA client certificates chain to)"));
  }
  return absl::OkStatus();
}

absl::Status CheckTlsClientConfig(const TlsClientConfig& tls, absl::string_view what) {
  if (!tls.enabled) return absl::OkStatus();
  if (!tls.ca_file.empty()) {
    SY_RETURN_IF_ERROR(CheckCaFile(tls.ca_file, absl::StrCat(what, ".ca_file")));
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, tls.cert_file.empty() ? ".cert_file" : ".key_file",
                     ": cert_file and key_file go together (a client certificate and its key)"));
  }
  if (!tls.cert_file.empty()) {
    SY_RETURN_IF_ERROR(CheckCertAndKey(tls.cert_file, tls.key_file,
                                       absl::StrCat(what, ".cert_file"),
                                       absl::StrCat(what, ".key_file")));
  }
  return absl::OkStatus();
}

absl::Status ReadTlsServerConfig(const ConfigObject& parent, absl::string_view key,
                                 TlsServerConfig* out) {
  *out = TlsServerConfig();
  if (!parent.Has(key)) return absl::OkStatus();
  ConfigObject block = parent.Child(key);
  SY_RETURN_IF_ERROR(
      block.CheckKeys({"cert_file", "key_file", "client_ca_file", "require_client_cert"}));
  std::string cert, tls_key, ca;
  SY_RETURN_IF_ERROR(block.Read("cert_file", &cert, /*required=*/true));
  SY_RETURN_IF_ERROR(block.Read("key_file", &tls_key, /*required=*/true));
  SY_RETURN_IF_ERROR(block.Read("client_ca_file", &ca));
  SY_RETURN_IF_ERROR(block.Read("require_client_cert", &out->require_client_cert));
  if (cert.empty()) return block.Error("cert_file", "must not be empty");
  if (tls_key.empty()) return block.Error("key_file", "must not be empty");
  if (block.Has("client_ca_file") && ca.empty()) {
    return block.Error("client_ca_file", "must not be empty (omit it to ask for no client cert)");
  }
  out->cert_file = ResolveConfigPath(parent.file(), cert);
  out->key_file = ResolveConfigPath(parent.file(), tls_key);
  if (!ca.empty()) out->client_ca_file = ResolveConfigPath(parent.file(), ca);
  return CheckTlsServerConfig(*out, Field(parent, key));
}

absl::Status ReadTlsClientConfig(const ConfigObject& parent, absl::string_view key,
                                 TlsClientConfig* out) {
  *out = TlsClientConfig();
  if (!parent.Has(key)) return absl::OkStatus();
  ConfigObject block = parent.Child(key);
  SY_RETURN_IF_ERROR(block.CheckKeys({"ca_file", "cert_file", "key_file", "server_name_override"}));
  std::string ca, cert, tls_key;
  SY_RETURN_IF_ERROR(block.Read("ca_file", &ca));
  SY_RETURN_IF_ERROR(block.Read("cert_file", &cert));
  SY_RETURN_IF_ERROR(block.Read("key_file", &tls_key));
  SY_RETURN_IF_ERROR(block.Read("server_name_override", &out->server_name_override));
  for (const char* field : {"ca_file", "cert_file", "key_file", "server_name_override"}) {
    std::string value;
    SY_RETURN_IF_ERROR(block.Read(field, &value));
    if (block.Has(field) && value.empty()) return block.Error(field, "must not be empty");
  }
  out->enabled = true;
  if (!ca.empty()) out->ca_file = ResolveConfigPath(parent.file(), ca);
  if (!cert.empty()) out->cert_file = ResolveConfigPath(parent.file(), cert);
  if (!tls_key.empty()) out->key_file = ResolveConfigPath(parent.file(), tls_key);
  return CheckTlsClientConfig(*out, Field(parent, key));
}

namespace {

// The PEM contents of a certificate chain file and its private key file.
struct CertAndKeyPem {
  std::string cert_chain;
  std::string private_key;
};
absl::StatusOr<CertAndKeyPem> ReadCertAndKeyPem(const std::string& cert_file,
                                                const std::string& key_file) {
  auto cert = ReadPemFile(cert_file);
  if (!cert.ok()) return cert.status();
  auto key = ReadPemFile(key_file);
  if (!key.ok()) return key.status();
  return CertAndKeyPem{*std::move(cert), *std::move(key)};
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeGrpcServerCredentials(
    const TlsServerConfig& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  auto pem = ReadCertAndKeyPem(tls.cert_file, tls.key_file);
  if (!pem.ok()) return pem.status();
  options.pem_key_cert_pairs.push_back({std::move(pem->private_key), std::move(pem->cert_chain)});
  if (!tls.client_ca_file.empty()) {
    auto ca = ReadPemFile(tls.client_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
    options.client_certificate_request =
        tls.require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  } else {
    options.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<GrpcClientSecurity> GrpcClientSecurity::Create(const TlsClientConfig& tls) {
  GrpcClientSecurity s;
  if (!tls.enabled) return s;
  grpc::SslCredentialsOptions options;
  if (!tls.ca_file.empty()) {
    auto ca = ReadPemFile(tls.ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  if (!tls.cert_file.empty()) {
    auto pem = ReadCertAndKeyPem(tls.cert_file, tls.key_file);
    if (!pem.ok()) return pem.status();
    options.pem_cert_chain = std::move(pem->cert_chain);
    options.pem_private_key = std::move(pem->private_key);
  }
  s.credentials_ = grpc::SslCredentials(options);
  s.server_name_override_ = tls.server_name_override;
  return s;
}

std::shared_ptr<grpc::Channel> GrpcClientSecurity::CreateChannel(
    const std::string& target, grpc::ChannelArguments args) const {
  if (credentials_ == nullptr) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  if (!server_name_override_.empty()) args.SetSslTargetNameOverride(server_name_override_);
  return grpc::CreateCustomChannel(target, credentials_, args);
}

}  // namespace switchyard
