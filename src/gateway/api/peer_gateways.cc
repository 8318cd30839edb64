#include "gateway/api/peer_gateways.h"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/tls_client.h"
#include "gateway/billing/api_keys.h"

namespace switchyard::gateway {
namespace {

bool IsPeerId(absl::string_view id) {
  return !id.empty() && id.size() <= 16 && std::all_of(id.begin(), id.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
  });
}

bool IsLowerHex(absl::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char ch) { return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'); });
}

}  // namespace

absl::StatusOr<std::shared_ptr<PeerGateways>> PeerGateways::Create(PeerGatewaysOptions options) {
  if (!IsPeerId(options.self_id)) {
    return absl::InvalidArgumentError("state.gateway_id: must be 1..16 characters a-z, 0-9, '-'");
  }
  if (options.secret.size() < 16) {
    return absl::InvalidArgumentError("state.internal_secret_file: the secret is too short");
  }
  if (options.threads < 1 || options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("peer fetch threads and timeout must be positive");
  }
  std::vector<std::string> hosts;
  const bool https = options.tls.enabled;
  for (const auto& [id, url] : options.peers) {
    if (!IsPeerId(id) || id == options.self_id) {
      return absl::InvalidArgumentError(absl::StrCat("state.peers: bad peer id '", id, "'"));
    }
    // All one scheme: with TLS configured, an http:// peer would get the secret in clear text.
    auto parsed = ParseUrl(url, /*allow_https=*/true);
    if (!parsed.ok() || parsed->target != "/" || parsed->https != https) {
      return absl::InvalidArgumentError(
          absl::StrCat("state.peers.", id, ": '", url, "' is not ",
                       https ? "https://HOST:PORT (state.peer_tls is set)"
                             : "http://HOST:PORT (https:// needs state.peer_tls)"));
    }
    hosts.push_back(parsed->host);
  }
  std::optional<TrickleTls> tls;
  if (https) {
    auto context = MakeTlsClientContext(options.tls, "state.peer_tls");
    if (!context.ok()) return context.status();
    tls = TrickleTls{std::make_shared<boost::asio::ssl::context>(*std::move(context)),
                     options.tls.server_name_override};
  }
  // The egress check every connection passes: exactly the peers' hosts (by name or address).
  auto policy = EgressPolicy::Create(hosts);
  if (!policy.ok()) return policy.status();
  return std::shared_ptr<PeerGateways>(
      new PeerGateways(std::move(options), *std::move(policy), std::move(tls)));
}

PeerGateways::PeerGateways(PeerGatewaysOptions options, EgressPolicy policy,
                           std::optional<TrickleTls> tls)
    : options_(std::move(options)), policy_(std::move(policy)), tls_(std::move(tls)) {
  for (int i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { Work(); });
}

PeerGateways::~PeerGateways() { Stop(); }

void PeerGateways::Stop() {
  std::deque<Task> left;
  {
    MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    left.swap(queue_);
  }
  cancel_ = true;
  wake_.SignalAll();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  for (auto& task : left) task.done(absl::CancelledError("the gateway is shutting down"));
}

std::optional<std::string> PeerGateways::HolderOf(absl::string_view id) const {
  if (id.size() > kMaxIdBytes) return std::nullopt;
  const size_t dot = id.find('.');
  // An id of a gateway without peers (or from before they were configured): 32 hex digits.
  if (dot == absl::string_view::npos) {
    if (id.size() == 32 && IsLowerHex(id)) return std::string();
    return std::nullopt;
  }
  const absl::string_view gateway = id.substr(0, dot);
  const absl::string_view random = id.substr(dot + 1);
  if (random.size() != 32 || !IsLowerHex(random)) return std::nullopt;
  if (gateway == options_.self_id) return std::string();
  if (options_.peers.count(std::string(gateway)) == 0) return std::nullopt;
  return std::string(gateway);
}

std::optional<http::Response> PeerGateways::CheckSecret(const http::Request& req) const {
  auto it = req.headers.find(kSecretHeader);
  if (it == req.headers.end() || it->second.empty()) {
    return http::Error(401, "internal endpoint: the gateways' shared secret is required");
  }
  // Digests of equal length, compared in constant time: neither the secret's length nor how much
  // of it a guess matches shows in the time the answer takes.
  const std::string want = Sha256Hex(options_.secret);
  const std::string got = Sha256Hex(it->second);
  if (CRYPTO_memcmp(want.data(), got.data(), want.size()) != 0) {
    return http::Error(403, "internal endpoint: wrong secret");
  }
  return std::nullopt;
}

void PeerGateways::Fetch(const std::string& peer, const std::string& path,
                         std::map<std::string, std::string> headers, int64_t max_body,
                         std::function<void(absl::StatusOr<TrickleResponse>)> done) {
  auto it = options_.peers.find(peer);
  if (it == options_.peers.end()) {
    return done(absl::NotFoundError(absl::StrCat("no gateway '", peer, "' among the peers")));
  }
  headers[kSecretHeader] = options_.secret;
  Task task{absl::StrCat(it->second, path), std::move(headers), max_body, std::move(done)};
  bool stopped = false;
  {
    MutexLock lock(&mu_);
    stopped = stopped_;
    if (!stopped_ && queue_.size() < options_.max_queued) {
      queue_.push_back(std::move(task));
      wake_.Signal();
      return;
    }
  }
  task.done(stopped ? absl::CancelledError("the gateway is shutting down")
                    : absl::AbortedError("too many requests to other gateways at once"));
}

void PeerGateways::Work() {
  while (true) {
    Task task;
    {
      MutexLock lock(&mu_);
      wake_.Wait(&mu_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopped_ || !queue_.empty();
      });
      if (stopped_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    auto answer = TrickleRequest(policy_, "GET", task.url, "", "", options_.timeout, task.max_body,
                                 &cancel_, task.headers, tls_ ? &*tls_ : nullptr);
    task.done(std::move(answer));
  }
}

}  // namespace switchyard::gateway
