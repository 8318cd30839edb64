#include "common/secure_random.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace switchyard {
namespace {

void Fill(unsigned char* out, size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) != 1) {
    spdlog::critical("OpenSSL RAND_bytes failed: cannot make unguessable ids");
    std::abort();
  }
}

}  // namespace

std::string SecureRandomHex(size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::vector<unsigned char> raw(bytes);
  Fill(raw.data(), raw.size());
  std::string out(2 * bytes, '0');
  for (size_t i = 0; i < bytes; ++i) {
    out[2 * i] = kHex[raw[i] >> 4];
    out[2 * i + 1] = kHex[raw[i] & 0xf];
  }
  return out;
}

std::string SecureRandomBytes(size_t bytes) {
  std::string out(bytes, '\0');
  Fill(reinterpret_cast<unsigned char*>(out.data()), out.size());
  return out;
}

uint64_t SecureRandomU64() {
  unsigned char raw[8];
  Fill(raw, sizeof(raw));
  uint64_t v;
  std::memcpy(&v, raw, sizeof(v));
  return v;
}

}  // namespace switchyard
