// Certificates for TLS tests, made with the openssl CLI: a CA, a server certificate for
// 127.0.0.1 / localhost, a client certificate (mutual TLS), and a second CA nobody trusts.
#pragma once

#include <filesystem>

#include "absl/status/statusor.h"

namespace switchyard::testing {

struct TestCerts {
  std::filesystem::path ca;           // ca.pem: signs server and client
  std::filesystem::path server_cert;  // SAN IP:127.0.0.1, DNS:localhost; serverAuth, clientAuth
  std::filesystem::path server_key;
  std::filesystem::path client_cert;  // CN=switchyard-test-client; clientAuth
  std::filesystem::path client_key;
  std::filesystem::path other_ca;    // a CA that signed nothing here
  std::filesystem::path rogue_cert;  // signed by other_ca (SAN 127.0.0.1), with rogue_key
  std::filesystem::path rogue_key;
};

// Writes the files into `dir` (EC P-256 keys, valid two days). Fails with openssl's output.
absl::StatusOr<TestCerts> MakeTestCerts(const std::filesystem::path& dir);

}  // namespace switchyard::testing
