// Node identity keys (common/node_identity.h): created once with mode 0600 and loaded again,
// refused when others can read them or they are not Ed25519, and signatures checked against an
// independent implementation (the openssl command line tool).
#include "common/node_identity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "absl/strings/match.h"
#include "support/media_fixtures.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(NodeKeyTest, IsCreatedOnceWithMode0600AndLoadedAgain) {
  testing::TempDir tmp;
  const fs::path path = tmp.path() / "state" / "node.key";  // its folder is made too
  auto first = NodeKey::LoadOrCreate(path);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(ModeOf(path), 0600u);
  EXPECT_EQ(ModeOf(path.parent_path()), 0700u);
  EXPECT_EQ((*first)->public_key().size(), kNodePublicKeyBytes);
  auto again = NodeKey::LoadOrCreate(path);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->public_key(), (*first)->public_key());
  // No temporary file left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(path.parent_path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  // Another key file is another key.
  auto other = NodeKey::LoadOrCreate(tmp.path() / "other.key");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE((*other)->public_key(), (*first)->public_key());
}

TEST(NodeKeyTest, RefusesAKeyFileOthersCanRead) {
  testing::TempDir tmp;
  const fs::path path = tmp.path() / "node.key";
  ASSERT_TRUE(NodeKey::LoadOrCreate(path).ok());
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  auto loaded = NodeKey::LoadOrCreate(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(loaded.status().message(), "mode 0644")) << loaded.status();
  EXPECT_TRUE(absl::StrContains(loaded.status().message(), "chmod 600")) << loaded.status();
}

TEST(NodeKeyTest, RefusesWhatIsNotAnEd25519PrivateKey) {
  testing::TempDir tmp;
  auto write = [&](const std::string& name, const std::string& text) {
    const fs::path p = tmp.path() / name;
    std::ofstream(p) << text;
    chmod(p.c_str(), 0600);
    return p;
  };
  // Garbage, an empty file, a PEM of another kind.
  for (const fs::path& p :
       {write("garbage.key", "not a key\n"), write("empty.key", ""),
        write("cert.key", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}) {
    auto loaded = NodeKey::LoadOrCreate(p);
    ASSERT_FALSE(loaded.ok()) << p;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
    EXPECT_TRUE(absl::StrContains(loaded.status().message(), p.string())) << loaded.status();
  }
  // A real private key of another algorithm (P-256).
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  ASSERT_NE(ec, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PrivateKey(bio, ec, nullptr, nullptr, 0, nullptr, nullptr), 1);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);  // NOLINT(runtime/int)
  const fs::path p = write("ec.key", std::string(data, static_cast<size_t>(size)));
  BIO_free(bio);
  EVP_PKEY_free(ec);
  auto loaded = NodeKey::LoadOrCreate(p);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(absl::StrContains(loaded.status().message(), "not an Ed25519 key"))
      << loaded.status();
  // Too large to be a key file.
  auto big = NodeKey::LoadOrCreate(write("big.key", std::string(20000, 'A')));
  ASSERT_FALSE(big.ok());
  EXPECT_TRUE(absl::StrContains(big.status().message(), "at most")) << big.status();
  // A folder where the key should be.
  fs::create_directories(tmp.path() / "dir.key");
  EXPECT_FALSE(NodeKey::LoadOrCreate(tmp.path() / "dir.key").ok());
}

TEST(NodeKeyTest, SignaturesVerifyOnlyForTheirKeyAndMessage) {
  auto key = NodeKey::Generate();
  ASSERT_TRUE(key.ok()) << key.status();
  auto other = NodeKey::Generate();
  ASSERT_TRUE(other.ok());
  auto sig = (*key)->Sign("hello");
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_EQ(sig->size(), kNodeSignatureBytes);
  EXPECT_TRUE(VerifyNodeSignature((*key)->public_key(), "hello", *sig).ok());
  EXPECT_EQ(VerifyNodeSignature((*key)->public_key(), "hellO", *sig).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyNodeSignature((*other)->public_key(), "hello", *sig).code(),
            absl::StatusCode::kUnauthenticated);
  std::string flipped = *sig;
  flipped[10] ^= 1;
  EXPECT_FALSE(VerifyNodeSignature((*key)->public_key(), "hello", flipped).ok());
  EXPECT_FALSE(VerifyNodeSignature((*key)->public_key(), "hello", sig->substr(1)).ok());
  EXPECT_FALSE(VerifyNodeSignature((*key)->public_key().substr(1), "hello", *sig).ok());
  EXPECT_FALSE(VerifyNodeSignature(std::string(32, '\0'), "hello", *sig).ok());
}

// The openssl command line tool (another implementation of the same primitives) verifies what
// NodeKey signs with the key file NodeKey wrote, and NodeKey verifies what the tool signs.
TEST(NodeKeyTest, InteroperatesWithTheOpensslTool) {
  if (std::system("openssl version > /dev/null 2>&1") != 0) {
    GTEST_FAIL() << "the openssl tool is missing (Debian: apt-get install openssl)";
  }
  testing::TempDir tmp;
  const fs::path key_file = tmp.path() / "node.key";
  auto key = NodeKey::LoadOrCreate(key_file);
  ASSERT_TRUE(key.ok()) << key.status();
  const std::string message =
      RegistrationProofMessage("gateway-1", std::string(32, '\x07'), "orch-1",
                               (*key)->public_key(), "127.0.0.1:50061");
  std::ofstream(tmp.path() / "msg", std::ios::binary) << message;
  auto sig = (*key)->Sign(message);
  ASSERT_TRUE(sig.ok());
  std::ofstream(tmp.path() / "sig", std::ios::binary) << *sig;
  const std::string d = tmp.path().string();
  ASSERT_EQ(std::system(("openssl pkey -in " + d + "/node.key -pubout -out " + d + "/pub.pem")
                            .c_str()),
            0);
  EXPECT_EQ(std::system(("openssl pkeyutl -verify -pubin -inkey " + d + "/pub.pem -rawin -in " +
                         d + "/msg -sigfile " + d + "/sig > /dev/null")
                            .c_str()),
            0);
  // The tool's public key is ours (the last 32 bytes of its DER SubjectPublicKeyInfo).
  ASSERT_EQ(std::system(("openssl pkey -pubin -in " + d + "/pub.pem -outform DER -out " + d +
                         "/pub.der")
                            .c_str()),
            0);
  const std::string der = ReadAll(tmp.path() / "pub.der");
  ASSERT_GE(der.size(), kNodePublicKeyBytes);
  EXPECT_EQ(der.substr(der.size() - kNodePublicKeyBytes), (*key)->public_key());
  // The tool signs with our key file; we verify.
  ASSERT_EQ(std::system(("openssl pkeyutl -sign -inkey " + d + "/node.key -rawin -in " + d +
                         "/msg -out " + d + "/tool.sig")
                            .c_str()),
            0);
  EXPECT_TRUE(
      VerifyNodeSignature((*key)->public_key(), message, ReadAll(tmp.path() / "tool.sig")).ok());
}

TEST(NodeKeyTest, ProofMessagesOfDifferentFieldsDiffer) {
  std::set<std::string> seen;
  seen.insert(RegistrationProofMessage("ab", "c", "d", "e", "f"));
  seen.insert(RegistrationProofMessage("a", "bc", "d", "e", "f"));
  seen.insert(RegistrationProofMessage("a", "b", "cd", "e", "f"));
  seen.insert(RegistrationProofMessage("a", "b", "c", "de", "f"));
  seen.insert(RegistrationProofMessage("a", "b", "c", "d", "ef"));
  seen.insert(RegistrationProofMessage("a\n1:b", "", "c", "d", "e"));
  EXPECT_EQ(seen.size(), 6u);
}

TEST(NodeKeyTest, HexKeysRoundTripAndBadOnesAreRefused) {
  auto key = NodeKey::Generate();
  ASSERT_TRUE(key.ok());
  const std::string hex = NodeKeyHex((*key)->public_key());
  EXPECT_EQ(hex.size(), 64u);
  auto back = ParseNodeKeyHex(hex);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, (*key)->public_key());
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(ParseNodeKeyHex(upper).value_or(""), (*key)->public_key());
  EXPECT_FALSE(ParseNodeKeyHex(hex.substr(1)).ok());
  EXPECT_FALSE(ParseNodeKeyHex(hex + "0").ok());
  EXPECT_FALSE(ParseNodeKeyHex(std::string(63, 'a') + "g").ok());
}

}  // namespace
}  // namespace switchyard
