// Which hosts the gateway may connect to on a client's behalf (the URLs of a live-video session,
// live_video.h). A client names the URLs, so without a policy the gateway would connect to its own
// loopback, the cloud metadata service (169.254.169.254) or the operator's private network for
// anyone who can send a request, and report back what it found (docs/security.md).
//
// Default: any address except loopback, link-local, private (RFC 1918, unique local, CGNAT),
// unspecified, multicast, broadcast and reserved ones, also when written as IPv4-mapped,
// NAT64 or 6to4 IPv6. The operator's allowlist (live_video.allowed_hosts) opens host names
// (exact, case-insensitive: the name is trusted whatever it resolves to) and CIDRs (matched on
// the resolved address).
//
// The decision is taken on resolved addresses: callers resolve once per connection, check every
// address with CheckResolved() and connect only to the addresses they checked, so a name that
// resolves differently on the next lookup (DNS rebinding) cannot slip past.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchyard::gateway {

// What kind of address `address` is when the default policy refuses it ("a loopback address",
// "a private address", ...), or "" when it is a public unicast address. IPv4-mapped
// (::ffff:a.b.c.d), IPv4-compatible, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) IPv6 addresses are
// judged by the IPv4 address they carry.
absl::string_view RefusedAddressKind(const boost::asio::ip::address& address);

class EgressPolicy {
 public:
  // The default policy: no allowlist.
  EgressPolicy() = default;

  // `allowed_hosts`: host names ("media.internal"), addresses ("127.0.0.1", "::1") and CIDRs
  // ("10.1.0.0/16", "fd00::/8"). INVALID_ARGUMENT naming the entry for a bad one.
  static absl::StatusOr<EgressPolicy> Create(const std::vector<std::string>& allowed_hosts);

  // OK when the gateway may connect to `address` for a URL naming `host`. Otherwise
  // PERMISSION_DENIED "host H resolves to a loopback address, which live_video.allowed_hosts does
  // not allow" (the kind of address, never the address).
  absl::Status CheckResolved(absl::string_view host, const boost::asio::ip::address& address) const;

  // The check at request time, before any connection: a literal address is checked at once; an
  // allowed host name passes; another name is resolved (bounded by `resolve_timeout`, on a
  // thread of its own so that a slow DNS server cannot hold the caller longer) and every address
  // it resolves to must pass. A name that does not resolve in time, or not at all, passes here:
  // each connection checks again (CheckResolved), and refuses then. A `resolve_timeout` of zero
  // checks literal addresses only.
  absl::Status CheckHost(absl::string_view host, absl::Duration resolve_timeout) const;

  // True when `host` (a URL's host, not an address) is on the allowlist by name.
  bool HostNameAllowed(absl::string_view host) const;

  const std::vector<std::string>& allowed_hosts() const { return entries_; }

 private:
  struct Cidr {
    boost::asio::ip::address base;  // IPv4 when an IPv4 network
    int prefix = 0;
  };
  bool AddressAllowed(const boost::asio::ip::address& address) const;

  std::vector<std::string> entries_;  // as configured, for messages and docs
  std::vector<std::string> names_;    // lower case, no trailing dot
  std::vector<Cidr> cidrs_;
};

}  // namespace switchyard::gateway
