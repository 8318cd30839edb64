#include "common/hardware_challenge.h"

#include <openssl/evp.h>

#include "absl/strings/str_cat.h"

namespace switchyard {

absl::Status ValidateChallenge(const node::v1::HardwareChallengeRequest& request) {
  const auto seed = static_cast<int64_t>(request.seed().size());
  if (seed < kChallengeMinSeedBytes || seed > kChallengeMaxSeedBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "seed: ", seed, " bytes; want ", kChallengeMinSeedBytes, " to ", kChallengeMaxSeedBytes));
  }
  if (request.matrices() < 1 || request.matrices() > kChallengeMaxMatrices) {
    return absl::InvalidArgumentError(
        absl::StrCat("matrices: ", request.matrices(), "; want 1 to ", kChallengeMaxMatrices));
  }
  if (request.size() < kChallengeMinSize || request.size() > kChallengeMaxSize) {
    return absl::InvalidArgumentError(absl::StrCat("size: ", request.size(), "; want ",
                                                   kChallengeMinSize, " to ", kChallengeMaxSize));
  }
  const int64_t elements = int64_t{request.matrices()} * request.size() * request.size();
  if (elements > kChallengeMaxElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("matrices x size x size: ", elements, "; at most ", kChallengeMaxElements));
  }
  return absl::OkStatus();
}

namespace {

std::string Sha256(const void* data, size_t size) {
  std::string out(32, '\0');
  unsigned int len = 0;
  EVP_Digest(data, size, reinterpret_cast<unsigned char*>(out.data()), &len, EVP_sha256(), nullptr);
  return out;
}

}  // namespace

int64_t ChallengeStream(absl::string_view seed, int matrix, int operand) {
  std::string input(seed);
  absl::StrAppend(&input, ":", matrix, ":", operand);
  const std::string digest = Sha256(input.data(), input.size());
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(digest[i]);
  return static_cast<int64_t>(v % static_cast<uint64_t>(kChallengeModulus));
}

int32_t ChallengeElement(int64_t stream, int row, int col) {
  int64_t x = (int64_t{row} * 2654435761LL + int64_t{col} * 40503 + stream) % kChallengeModulus;
  x = (x * 48271) % kChallengeModulus;
  x = (x * 48271) % kChallengeModulus;
  return static_cast<int32_t>(x % 17) - 8;
}

std::string ChallengeProductDigest(const int32_t* values, int64_t count) {
  std::string bytes(static_cast<size_t>(count) * 4, '\0');
  for (int64_t i = 0; i < count; ++i) {
    const auto v = static_cast<uint32_t>(values[i]);
    bytes[4 * i] = static_cast<char>(v & 0xff);
    bytes[4 * i + 1] = static_cast<char>((v >> 8) & 0xff);
    bytes[4 * i + 2] = static_cast<char>((v >> 16) & 0xff);
    bytes[4 * i + 3] = static_cast<char>((v >> 24) & 0xff);
  }
  return Sha256(bytes.data(), bytes.size());
}

std::string ReferenceChallengeDigest(const node::v1::HardwareChallengeRequest& request,
                                     int matrix) {
  const int n = request.size();
  const int64_t a_stream = ChallengeStream(request.seed(), matrix, 0);
  const int64_t b_stream = ChallengeStream(request.seed(), matrix, 1);
  std::vector<int32_t> a(static_cast<size_t>(n) * n), b(a.size()), c(a.size(), 0);
  for (int r = 0; r < n; ++r) {
    for (int k = 0; k < n; ++k) {
      a[static_cast<size_t>(r) * n + k] = ChallengeElement(a_stream, r, k);
      b[static_cast<size_t>(r) * n + k] = ChallengeElement(b_stream, r, k);
    }
  }
  // i-k-j order: the inner loop runs over contiguous rows of b and c.
  for (int r = 0; r < n; ++r) {
    int32_t* row = &c[static_cast<size_t>(r) * n];
    for (int k = 0; k < n; ++k) {
      const int32_t av = a[static_cast<size_t>(r) * n + k];
      const int32_t* brow = &b[static_cast<size_t>(k) * n];
      for (int j = 0; j < n; ++j) row[j] += av * brow[j];
    }
  }
  return ChallengeProductDigest(c.data(), static_cast<int64_t>(c.size()));
}

}  // namespace switchyard
