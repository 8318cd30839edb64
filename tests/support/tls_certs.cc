#include "support/tls_certs.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

constexpr char kNewKey[] = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

// A key and a certificate signed by `ca` (`ca`.pem and `ca`.key in `dir`).
absl::Status Issue(const std::filesystem::path& dir, const std::string& name,
                   const std::string& subject, const std::string& ca, const std::string& ext) {
  const std::string d = dir.string();
  WriteFile(dir / (name + ".ext"), ext);
  std::string log;
  const std::string cmd = absl::StrCat(
      "cd '", d, "' && openssl req ", kNewKey, " -keyout ", name, ".key -out ", name,
      ".csr -subj '", subject, "' && openssl x509 -req -in ", name, ".csr -CA ", ca, ".pem -CAkey ",
      ca, ".key -CAcreateserial -days 2 -out ", name, ".pem -extfile ", name, ".ext");
  if (RunCommand("(" + cmd + ") 2>&1", &log) != 0) {
    return absl::InternalError(absl::StrCat("openssl failed (", cmd, "):\n", log));
  }
  return absl::OkStatus();
}

absl::Status MakeCa(const std::filesystem::path& dir, const std::string& name) {
  std::string log;
  const std::string cmd =
      absl::StrCat("cd '", dir.string(), "' && openssl req -x509 ", kNewKey, " -keyout ", name,
                   ".key -out ", name, ".pem -days 2 -subj '/CN=", name, "'");
  if (RunCommand("(" + cmd + ") 2>&1", &log) != 0) {
    return absl::InternalError(absl::StrCat("openssl failed (", cmd, "):\n", log));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TestCerts> MakeTestCerts(const std::filesystem::path& dir) {
  const std::string server_ext =
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n";
  for (absl::Status st :
       {MakeCa(dir, "ca"), MakeCa(dir, "other-ca"),
        Issue(dir, "server", "/CN=localhost", "ca", server_ext),
        Issue(dir, "client", "/CN=switchyard-test-client", "ca", "extendedKeyUsage=clientAuth\n"),
        Issue(dir, "rogue", "/CN=localhost", "other-ca", server_ext)}) {
    if (!st.ok()) return st;
  }
  TestCerts c;
  c.ca = dir / "ca.pem";
  c.server_cert = dir / "server.pem";
  c.server_key = dir / "server.key";
  c.client_cert = dir / "client.pem";
  c.client_key = dir / "client.key";
  c.other_ca = dir / "other-ca.pem";
  c.rogue_cert = dir / "rogue.pem";
  c.rogue_key = dir / "rogue.key";
  return c;
}

}  // namespace switchyard::testing
