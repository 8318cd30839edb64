// The client side of TLS over Boost.Asio (OpenSSL) for the gateway's own outgoing connections:
// TLS to Redis (state.redis.tls, gateway/state/redis_tls_tunnel.h) and HTTPS to peer gateways
// (state.peer_tls, gateway/api/peer_gateways.h). One context per configured block; each
// connection then checks the server's name. docs/security.md.
#pragma once

#include <openssl/ssl.h>

#include <string>

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tls.h"

namespace switchyard {

// A client context from `tls`: TLS 1.2 or later, no renegotiation, the server's certificate
// verified against `tls.ca_file` (required here: never the system's roots), and the client
// certificate and key (mutual TLS) when given. The files are checked first (CheckTlsClientConfig:
// readable PEM, a key that is the certificate's); errors are INVALID_ARGUMENT naming
// `what`.<field> and the file.
absl::StatusOr<boost::asio::ssl::context> MakeTlsClientContext(const TlsClientConfig& tls,
                                                               absl::string_view what);

// Per connection, before its handshake: the server's certificate must chain to the context's CA
// (verify_peer) and name `name`: an IP address is matched against the certificate's IP SANs, a
// DNS name against its DNS names (no partial wildcards) and also sent as SNI.
absl::Status RequireServerName(SSL* ssl, const std::string& name);

// Why a handshake failed: the error's text and, for a certificate that did not verify, the
// verification's reason (the part an operator acts on: wrong CA, name mismatch, expired), e.g.
// "certificate verify failed (unable to get local issuer certificate)".
std::string TlsHandshakeError(const boost::system::error_code& ec, SSL* ssl);

}  // namespace switchyard
