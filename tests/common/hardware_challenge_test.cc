// The challenge's definition (common/hardware_challenge.h) against values computed independently
// with Python's integers and hashlib (the commands are in the comments), and its limits.
#include "common/hardware_challenge.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/escaping.h"

namespace switchyard {
namespace {

constexpr char kSeed[] = "0123456789abcdef";

node::v1::HardwareChallengeRequest Request(int matrices, int size, std::string seed = kSeed) {
  node::v1::HardwareChallengeRequest r;
  r.set_seed(std::move(seed));
  r.set_matrices(matrices);
  r.set_size(size);
  return r;
}

// python3: M = 2**31 - 1
//   stream = int.from_bytes(sha256(seed + f":{m}:{op}".encode()).digest()[:8], "big") % M
//   x = (r * 2654435761 + c * 40503 + s) % M; x = x * 48271 % M; x = x * 48271 % M; x % 17 - 8
TEST(HardwareChallengeTest, StreamsAndElementsAreTheDefinitions) {
  EXPECT_EQ(ChallengeStream(kSeed, 0, 0), 1005612692);
  EXPECT_EQ(ChallengeStream(kSeed, 1, 1), 1389910248);
  EXPECT_EQ(ChallengeElement(1005612692, 0, 0), -3);
  EXPECT_EQ(ChallengeElement(1005612692, 3, 7), -7);
  EXPECT_EQ(ChallengeElement(1005612692, 7, 2), -7);
  for (int r = 0; r < 1024; r += 37) {
    for (int c = 0; c < 1024; c += 41) {
      const int v = ChallengeElement(ChallengeStream(kSeed, r % 64, c % 2), r, c);
      EXPECT_GE(v, -8);
      EXPECT_LE(v, 8);
    }
  }
}

// python3: C = A @ B in integers; sha256(b"".join(struct.pack("<i", v) for v in C row-major)).
TEST(HardwareChallengeTest, ReferenceDigestsMatchAnIndependentComputation) {
  const auto r = Request(3, 8);
  EXPECT_EQ(absl::BytesToHexString(ReferenceChallengeDigest(r, 0)),
            "fa2e0c87a27bf223774927665a88b79c6e7388d23a26e5dc02f9df9398388d32");
  EXPECT_EQ(absl::BytesToHexString(ReferenceChallengeDigest(r, 1)),
            "05d78492e4884f97e45daccf8a85b518bf703b3d139449513df891ab98f64b6f");
  EXPECT_EQ(absl::BytesToHexString(ReferenceChallengeDigest(Request(3, 13), 2)),
            "cfacbd3febf6d97603b6344991239a407f4f766725ee93d46656304e2a96e6a7");
  // Another seed, another answer.
  EXPECT_NE(ReferenceChallengeDigest(Request(3, 8, "fedcba9876543210"), 0),
            ReferenceChallengeDigest(r, 0));
}

TEST(HardwareChallengeTest, LimitsAreCheckedNamingTheField) {
  EXPECT_TRUE(ValidateChallenge(Request(16, 1024)).ok());
  EXPECT_TRUE(ValidateChallenge(Request(1, 8)).ok());
  struct Case {
    node::v1::HardwareChallengeRequest request;
    const char* field;
  };
  for (const Case& c :
       {Case{Request(1, 8, "short"), "seed"}, Case{Request(1, 8, std::string(65, 's')), "seed"},
        Case{Request(0, 8), "matrices"}, Case{Request(65, 8), "matrices"},
        Case{Request(1, 7), "size"}, Case{Request(1, 1025), "size"},
        Case{Request(17, 1024), "matrices x size x size"},
        Case{Request(64, 600), "matrices x size x size"}}) {
    const absl::Status st = ValidateChallenge(c.request);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(std::string(st.message()).find(c.field), std::string::npos) << st;
  }
}

}  // namespace
}  // namespace switchyard
