// TLS for the daemons' listeners (gRPC and HTTP) and their gRPC clients: the config blocks, their
// checks at start (files readable, PEM that parses, a key that matches its certificate; errors
// name the field and the file), and the gRPC credentials made from them. docs/security.md.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/config.h"

namespace switchyard {

// A listener's TLS: {"cert_file", "key_file", "client_ca_file", "require_client_cert"}.
// Absent (cert_file empty): plaintext.
struct TlsServerConfig {
  std::filesystem::path cert_file;       // PEM certificate chain, the server's first
  std::filesystem::path key_file;        // PEM private key of that certificate
  std::filesystem::path client_ca_file;  // PEM CA(s) client certificates must chain to
  // Mutual TLS: a client without a certificate signed by client_ca_file is refused in the
  // handshake. Without it, a client certificate is asked for and verified only when sent.
  bool require_client_cert = false;

  bool enabled() const { return !cert_file.empty(); }
};

// A gRPC client's TLS: {"ca_file", "cert_file", "key_file", "server_name_override"}.
// Absent (enabled false): plaintext.
struct TlsClientConfig {
  bool enabled = false;
  std::filesystem::path ca_file;    // PEM CA(s) the server's certificate must chain to; empty:
                                    // the system's roots
  std::filesystem::path cert_file;  // client certificate (mutual TLS), with key_file
  std::filesystem::path key_file;
  std::string server_name_override;  // name checked in the server's certificate instead of the
                                     // address's host (e.g. "localhost")
};

// Reads the server block `key` of `parent` when present: unknown fields, a missing key_file,
// unreadable files, PEM that does not parse and a key that does not match its certificate are
// errors naming the field and the file. Relative paths are taken from the config file's folder.
absl::Status ReadTlsServerConfig(const ConfigObject& parent, absl::string_view key,
                                 TlsServerConfig* out);
// The same for a client block.
absl::Status ReadTlsClientConfig(const ConfigObject& parent, absl::string_view key,
                                 TlsClientConfig* out);

// The checks ReadTls*Config make, on their own (e.g. for command-line flags); `what` prefixes
// the messages.
absl::Status CheckTlsServerConfig(const TlsServerConfig& tls, absl::string_view what);
absl::Status CheckTlsClientConfig(const TlsClientConfig& tls, absl::string_view what);

// The whole file, or an error naming it ("cannot read '...': No such file or directory").
absl::StatusOr<std::string> ReadPemFile(const std::filesystem::path& path);

// SslServerCredentials for an enabled config, InsecureServerCredentials otherwise.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeGrpcServerCredentials(
    const TlsServerConfig& tls);

// How a gRPC client opens channels: plaintext, or TLS with the configured CA, client
// certificate and name override.
class GrpcClientSecurity {
 public:
  GrpcClientSecurity() = default;  // plaintext
  static absl::StatusOr<GrpcClientSecurity> Create(const TlsClientConfig& tls);

  bool tls() const { return credentials_ != nullptr; }
  // A channel to `target` with `args` (plus the TLS name override when set).
  std::shared_ptr<grpc::Channel> CreateChannel(const std::string& target,
                                               grpc::ChannelArguments args) const;

 private:
  std::shared_ptr<grpc::ChannelCredentials> credentials_;  // null: insecure
  std::string server_name_override_;
};

}  // namespace switchyard
