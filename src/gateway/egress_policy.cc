#include "gateway/egress_policy.h"

#include <netdb.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/mutex.h"

namespace switchyard::gateway {
namespace {

namespace ip = boost::asio::ip;

using V4 = std::array<uint8_t, 4>;

bool InV4(const V4& a, uint8_t b0, uint8_t b1, int prefix) {
  const uint32_t x = (uint32_t{a[0]} << 24) | (uint32_t{a[1]} << 16) | (uint32_t{a[2]} << 8) | a[3];
  const uint32_t net = (uint32_t{b0} << 24) | (uint32_t{b1} << 16);
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return (x & mask) == (net & mask);
}

absl::string_view V4Kind(const V4& a) {
  if (InV4(a, 0, 0, 8)) return "an unspecified address";  // 0.0.0.0/8 reaches this host
  if (InV4(a, 127, 0, 8)) return "a loopback address";
  if (InV4(a, 169, 254, 16)) return "a link-local address";
  if (InV4(a, 10, 0, 8) || InV4(a, 172, 16, 12) || InV4(a, 192, 168, 16)) {
    return "a private address";
  }
  if (InV4(a, 100, 64, 10)) return "a private (carrier-grade NAT) address";
  if (InV4(a, 224, 0, 4)) return "a multicast address";
  if (a == V4{255, 255, 255, 255}) return "a broadcast address";
  if (InV4(a, 240, 0, 4)) return "a reserved address";
  // 192.0.0.0/24 (IETF protocol assignments), 198.18.0.0/15 (benchmarking networks).
  if ((a[0] == 192 && a[1] == 0 && a[2] == 0) || InV4(a, 198, 18, 15)) {
    return "a reserved address";
  }
  return "";
}

// The IPv4 address an IPv6 address carries in a form that reaches IPv4 hosts, if it does.
bool EmbeddedV4(const ip::address_v6::bytes_type& b, V4* out) {
  auto zero = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      if (b[i] != 0) return false;
    }
    return true;
  };
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated; :: and ::1 are not).
  if (zero(0, 10) && ((b[10] == 0xff && b[11] == 0xff) || zero(10, 12))) {
    *out = {b[12], b[13], b[14], b[15]};
    return true;
  }
  // 64:ff9b::/96, the well-known NAT64 prefix.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && zero(4, 12)) {
    *out = {b[12], b[13], b[14], b[15]};
    return true;
  }
  // 2002:AABB:CCDD::/48, 6to4.
  if (b[0] == 0x20 && b[1] == 0x02) {
    *out = {b[2], b[3], b[4], b[5]};
    return true;
  }
  return false;
}

// An IPv4-mapped IPv6 address as the IPv4 address it is; others unchanged.
ip::address Canonical(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  }
  return a;
}

bool InCidr(const ip::address& address, const ip::address& base, int prefix) {
  if (address.is_v4() != base.is_v4()) return false;
  std::vector<uint8_t> a, n;
  if (address.is_v4()) {
    auto x = address.to_v4().to_bytes(), y = base.to_v4().to_bytes();
    a.assign(x.begin(), x.end());
    n.assign(y.begin(), y.end());
  } else {
    auto x = address.to_v6().to_bytes(), y = base.to_v6().to_bytes();
    a.assign(x.begin(), x.end());
    n.assign(y.begin(), y.end());
  }
  for (int bit = 0; bit < prefix; ++bit) {
    const int byte = bit / 8, shift = 7 - bit % 8;
    if (((a[byte] >> shift) & 1) != ((n[byte] >> shift) & 1)) return false;
  }
  return true;
}

std::string NormalizeName(absl::string_view host) {
  std::string name = absl::AsciiStrToLower(host);
  while (!name.empty() && name.back() == '.') name.pop_back();
  return name;
}

// Every address getaddrinfo gives for `host`; `numeric_only`: without asking DNS (a literal,
// including the inet_aton forms "127.1" and "0x7f.0.0.1" that connect() would also reach).
bool GetAddresses(const std::string& host, bool numeric_only, std::vector<ip::address>* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = numeric_only ? AI_NUMERICHOST : 0;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &result) != 0) return false;
  for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      ip::address_v4::bytes_type bytes;
      std::memcpy(bytes.data(), &sin->sin_addr, 4);
      out->push_back(ip::make_address_v4(bytes));
    } else if (ai->ai_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      ip::address_v6::bytes_type bytes;
      std::memcpy(bytes.data(), &sin6->sin6_addr, 16);
      out->push_back(ip::make_address_v6(bytes, sin6->sin6_scope_id));
    }
  }
  freeaddrinfo(result);
  return !out->empty();
}

// Request-time lookups running now (each on a detached thread that ends when getaddrinfo does).
// Past the cap a request skips the early check instead of starting another thread: the check at
// each connection still applies.
std::atomic<int> lookups_running{0};
constexpr int kMaxLookups = 16;

}  // namespace

absl::string_view RefusedAddressKind(const ip::address& address) {
  if (address.is_v4()) return V4Kind(address.to_v4().to_bytes());
  const ip::address_v6 v6 = address.to_v6();
  if (v6.is_unspecified()) return "an unspecified address";
  if (v6.is_loopback()) return "a loopback address";
  const auto b = v6.to_bytes();
  if (V4 v4; EmbeddedV4(b, &v4)) {
    absl::string_view kind = V4Kind(v4);
    return kind;
  }
  if (b[0] == 0xff) return "a multicast address";
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "a link-local address";  // fe80::/10
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return "a private address";     // fec0::/10
  if ((b[0] & 0xfe) == 0xfc) return "a private address";                     // fc00::/7
  return "";
}

absl::StatusOr<EgressPolicy> EgressPolicy::Create(const std::vector<std::string>& allowed_hosts) {
  EgressPolicy policy;
  for (size_t i = 0; i < allowed_hosts.size(); ++i) {
    const std::string& entry = allowed_hosts[i];
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("allowed_hosts[", i, "] '", entry, "': ", why));
    };
    if (entry.empty()) return bad("is empty");
    absl::string_view text = entry;
    int prefix = -1;
    if (const size_t slash = text.find('/'); slash != absl::string_view::npos) {
      if (!absl::SimpleAtoi(text.substr(slash + 1), &prefix)) return bad("has a bad prefix length");
      text = text.substr(0, slash);
    }
    boost::system::error_code ec;
    ip::address address =
        ip::make_address(std::string(absl::StripPrefix(absl::StripSuffix(text, "]"), "[")), ec);
    if (!ec) {
      address = Canonical(address);
      const int max = address.is_v4() ? 32 : 128;
      if (prefix == -1) prefix = max;
      if (prefix < 0 || prefix > max) {
        return bad(absl::StrCat("the prefix length must be 0..", max));
      }
      policy.cidrs_.push_back({address, prefix});
    } else {
      if (prefix != -1) return bad("a CIDR needs an IP address before the '/'");
      const std::string name = NormalizeName(text);
      if (name.empty()) return bad("is not a host name");
      for (char c : name) {
        if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' &&
            c != '_') {
          return bad("is neither a host name, an IP address nor a CIDR");
        }
      }
      policy.names_.push_back(name);
    }
    policy.entries_.push_back(entry);
  }
  return policy;
}

bool EgressPolicy::HostNameAllowed(absl::string_view host) const {
  const std::string name = NormalizeName(host);
  for (const auto& n : names_) {
    if (n == name) return true;
  }
  return false;
}

bool EgressPolicy::AddressAllowed(const ip::address& address) const {
  const ip::address a = Canonical(address);
  for (const auto& cidr : cidrs_) {
    if (InCidr(a, cidr.base, cidr.prefix)) return true;
  }
  return RefusedAddressKind(a).empty();
}

absl::Status EgressPolicy::CheckResolved(absl::string_view host, const ip::address& address) const {
  if (HostNameAllowed(host) || AddressAllowed(address)) return absl::OkStatus();
  // The kind of address, not the address: a caller must not learn the operator's internal DNS.
  return absl::PermissionDeniedError(
      absl::StrCat("host ", host, " resolves to ", RefusedAddressKind(Canonical(address)),
                   ", which live_video.allowed_hosts does not allow"));
}

absl::Status EgressPolicy::CheckHost(absl::string_view host, absl::Duration resolve_timeout) const {
  const std::string name(host);
  std::vector<ip::address> addresses;
  if (!GetAddresses(name, /*numeric_only=*/true, &addresses)) {
    if (HostNameAllowed(host) || resolve_timeout <= absl::ZeroDuration()) {
      return absl::OkStatus();
    }
    if (lookups_running.fetch_add(1) >= kMaxLookups) {
      --lookups_running;
      return absl::OkStatus();  // checked at connection time
    }
    struct Lookup {
      Mutex mu;
      CondVar cv;
      bool done ABSL_GUARDED_BY(mu) = false;
      std::vector<ip::address> addresses ABSL_GUARDED_BY(mu);
    };
    auto lookup = std::make_shared<Lookup>();
    std::thread([lookup, name] {
      std::vector<ip::address> found;
      GetAddresses(name, /*numeric_only=*/false, &found);
      {
        MutexLock lock(&lookup->mu);
        lookup->addresses = std::move(found);
        lookup->done = true;
      }
      lookup->cv.SignalAll();
      --lookups_running;
    }).detach();
    MutexLock lock(&lookup->mu);
    if (!lookup->cv.WaitFor(
            &lookup->mu, absl::ToChronoMilliseconds(resolve_timeout),
            [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lookup->mu) { return lookup->done; })) {
      return absl::OkStatus();  // not at once: checked at connection time
    }
    addresses = lookup->addresses;
  }
  for (const auto& address : addresses) {
    if (absl::Status st = CheckResolved(host, address); !st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace switchyard::gateway
