#include "common/tls_client.h"

#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace switchyard {

namespace ssl = boost::asio::ssl;

absl::StatusOr<ssl::context> MakeTlsClientContext(const TlsClientConfig& tls,
                                                  absl::string_view what) {
  if (tls.ca_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".ca_file: is required (the CA the server's certificate chains to)"));
  }
  // Readable PEM files and a key that matches its certificate, with errors naming field and file.
  SY_RETURN_IF_ERROR(CheckTlsClientConfig(tls, what));
  ssl::context ctx(ssl::context::tls_client);
  boost::system::error_code ec;
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                  ec);
  if (ec || SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION) != 1) {
    return absl::InternalError(absl::StrCat(what, ": cannot require TLS 1.2 or later"));
  }
  // Our servers never renegotiate; a "server" that asks over and over would only spend our thread.
  SSL_CTX_set_options(ctx.native_handle(), SSL_OP_NO_RENEGOTIATION);
  ctx.load_verify_file(tls.ca_file.string(), ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".ca_file: cannot load '", tls.ca_file.string(), "': ", ec.message()));
  }
  if (!tls.cert_file.empty()) {
    ctx.use_certificate_chain_file(tls.cert_file.string(), ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat(what, ".cert_file: cannot load '",
                                                     tls.cert_file.string(), "': ", ec.message()));
    }
    ctx.use_private_key_file(tls.key_file.string(), ssl::context::pem, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat(what, ".key_file: cannot load '",
                                                     tls.key_file.string(), "': ", ec.message()));
    }
  }
  ctx.set_verify_mode(ssl::verify_peer);
  return ctx;
}

absl::Status RequireServerName(SSL* ssl, const std::string& name) {
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  boost::system::error_code not_ip;
  boost::asio::ip::make_address(name, not_ip);
  if (!not_ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1) {
      return absl::InternalError(
          absl::StrCat("cannot check the IP address ", name, " in the certificate"));
    }
  } else {
    // SNI too: a server (or a proxy before it) with several certificates picks by it.
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, name.c_str()) != 1 || SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
      return absl::InternalError(
          absl::StrCat("cannot check the name '", name, "' in the certificate"));
    }
  }
  SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
  return absl::OkStatus();
}

std::string TlsHandshakeError(const boost::system::error_code& ec, SSL* ssl) {
  std::string why = ec.message();
  if (ec.category() == boost::asio::error::get_ssl_category()) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      absl::StrAppend(&why, " (", X509_verify_cert_error_string(verify), ")");
    }
  }
  return why;
}

}  // namespace switchyard
