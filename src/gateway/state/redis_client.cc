#include "gateway/state/redis_client.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/config.h"
#include "common/status.h"
#include "gateway/state/redis_tls_tunnel.h"

namespace switchyard::gateway {
namespace {

std::string Sha1Hex(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha1(), nullptr);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), static_cast<size_t>(len)));
}

RedisReply Copy(const redisReply* r, int depth) {
  RedisReply out;
  if (r == nullptr) return out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      out.type = r->type == REDIS_REPLY_STRING   ? RedisReply::Type::kString
                 : r->type == REDIS_REPLY_STATUS ? RedisReply::Type::kStatus
                                                 : RedisReply::Type::kError;
      if (r->str != nullptr) out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_NIL:
      out.type = RedisReply::Type::kNil;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      // Our scripts answer two levels at most; deeper is not an answer of ours.
      if (depth > 4) {
        out.type = RedisReply::Type::kOther;
        break;
      }
      for (size_t i = 0; i < r->elements && r->element != nullptr; ++i) {
        out.elements.push_back(Copy(r->element[i], depth + 1));
      }
      break;
    default:
      break;
  }
  return out;
}

// Whether the server closed the connection (a restart) rather than not answering in time.
bool Closed(const redisContext* c) {
  if (c->err == REDIS_ERR_EOF) return true;
  if (c->err != REDIS_ERR_IO) return false;
  const absl::string_view why(c->errstr);
  return why == std::strerror(ECONNRESET) || why == std::strerror(EPIPE);
}

}  // namespace

std::string RedisReply::Describe() const {
  switch (type) {
    case Type::kString:
      return "a string";
    case Type::kStatus:
      return "a status";
    case Type::kInteger:
      return absl::StrCat("the integer ", integer);
    case Type::kNil:
      return "nil";
    case Type::kError:
      return absl::StrCat("the error '", absl::CHexEscape(str.substr(0, 200)), "'");
    case Type::kArray:
      return absl::StrCat("an array of ", elements.size());
    case Type::kOther:
      break;
  }
  return "a reply of an unknown type";
}

RedisScript::RedisScript(const char* script_text) : text(script_text), sha(Sha1Hex(script_text)) {}

void RedisClient::ContextDeleter::operator()(redisContext* c) const { redisFree(c); }

absl::StatusOr<std::unique_ptr<RedisClient>> RedisClient::Create(RedisClientOptions options) {
  const std::string what = "state.redis.address";
  if (options.address.empty()) return absl::InvalidArgumentError(what + ": is required");
  SY_RETURN_IF_ERROR(ValidateHostPort(options.address, what));
  const size_t colon = options.address.rfind(':');
  std::string host = options.address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  if (host.empty() || !absl::SimpleAtoi(options.address.substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", options.address, "' is not HOST:PORT with a port 1..65535"));
  }
  if (options.timeout < absl::Milliseconds(1) || options.timeout > absl::Seconds(60)) {
    return absl::InvalidArgumentError("state.redis.timeout_ms: must be 1..60000");
  }
  if (options.retry_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("retry_interval must be >= 0");
  }
  // hiredis writes with write(2), not send(MSG_NOSIGNAL): a write to a connection Redis (or
  // something posing as it) has reset would raise SIGPIPE, whose default ends the gateway. The
  // gateway handles EPIPE as a failed call instead.
  std::signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<RedisTlsTunnels> tunnels;
  if (options.tls.enabled) {
    auto made =
        RedisTlsTunnels::Create(options.tls, host, port, options.address, "state.redis.tls");
    if (!made.ok()) return made.status();
    tunnels = *std::move(made);
  }
  return std::unique_ptr<RedisClient>(
      new RedisClient(std::move(options), std::move(host), port, std::move(tunnels)));
}

RedisClient::RedisClient(RedisClientOptions options, std::string host, int port,
                         std::unique_ptr<RedisTlsTunnels> tunnels)
    : options_(std::move(options)),
      host_(std::move(host)),
      port_(port),
      tunnels_(std::move(tunnels)) {}

RedisClient::~RedisClient() = default;

namespace {

// argv as hiredis takes it.
struct Argv {
  explicit Argv(const std::vector<std::string>& argv) {
    for (const auto& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
  }
  int count() const { return static_cast<int>(args.size()); }
  std::vector<const char*> args;
  std::vector<size_t> lens;
};

}  // namespace

absl::StatusOr<RedisReply> RedisClient::Run(const std::vector<std::string>& argv) {
  Argv command(argv);
  // A connection from the pool may have died with the server it knew (a Redis restart): one
  // failure on it drops the pool and tries once more on a new connection.
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool pooled = false;
    auto conn = Take(&pooled);
    if (!conn.ok()) return conn.status();
    redisContext* c = conn->context.get();
    auto* raw = static_cast<redisReply*>(
        redisCommandArgv(c, command.count(), command.args.data(), command.lens.data()));
    if (raw == nullptr) {
      const std::string why = Failure(c);
      // Only when the server closed the connection (a restart) before answering: a timeout may
      // have run the command, and running a script twice could, e.g., take two quota slots.
      if (pooled && attempt == 0 && Closed(c)) {
        DropIdle();
        continue;
      }
      MarkDown(why);
      return absl::UnavailableError(why);
    }
    RedisReply reply = Copy(raw, 0);
    freeReplyObject(raw);
    Give(*std::move(conn));
    return reply;
  }
  return absl::UnavailableError(absl::StrCat("Redis at ", options_.address, ": no connection"));
}

absl::Status RedisClient::Send(const std::vector<std::string>& argv, Answered answered) {
  if (tunnels_ != nullptr) {
    // hiredis's bytes reach Redis through the tunnel's thread, after Send would return.
    auto reply = Run(argv);
    if (!reply.ok()) {
      if (answered) answered(false);
      return reply.status();
    }
    if (reply->type == RedisReply::Type::kError) {
      spdlog::debug("Redis at {} answered {} with {}", options_.address, argv.front(),
                    reply->Describe());
    }
    if (answered) answered(true);
    return absl::OkStatus();
  }
  Argv command(argv);
  bool pooled = false;
  auto conn = Take(&pooled);
  if (!conn.ok()) {
    if (answered) answered(false);
    return conn.status();
  }
  redisContext* c = conn->context.get();
  // From here on the connection tells `answered` if it is dropped before the answer is read.
  conn->owed.push_back(std::move(answered));
  if (redisAppendCommandArgv(c, command.count(), command.args.data(), command.lens.data()) !=
      REDIS_OK) {
    return absl::UnavailableError(Failure(c));  // out of memory; the connection is dropped
  }
  // The whole command is written now (a blocking socket, with the command timeout).
  for (int done = 0; !done;) {
    if (redisBufferWrite(c, &done) != REDIS_OK) {
      const std::string why = Failure(c);
      MarkDown(why);
      return absl::UnavailableError(why);
    }
  }
  Give(*std::move(conn));
  return absl::OkStatus();
}

bool RedisClient::Settle(Connection& conn) const {
  while (!conn.owed.empty()) {
    void* raw = nullptr;
    if (redisGetReply(conn.context.get(), &raw) != REDIS_OK || raw == nullptr) {
      spdlog::debug("{} (reading the answer to a command sent before); connection dropped",
                    Failure(conn.context.get()));
      return false;
    }
    RedisReply reply = Copy(static_cast<redisReply*>(raw), 0);
    freeReplyObject(raw);
    if (reply.type == RedisReply::Type::kError) {
      spdlog::debug("Redis at {} answered a command sent before with {}", options_.address,
                    reply.Describe());
    }
    Answered answered = std::move(conn.owed.front());
    conn.owed.erase(conn.owed.begin());
    if (answered) answered(true);
  }
  return true;
}

absl::StatusOr<RedisReply> RedisClient::Eval(const RedisScript& script,
                                             const std::vector<std::string>& keys,
                                             const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"EVALSHA", script.sha, absl::StrCat(keys.size())};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  auto reply = Run(argv);
  if (reply.ok() && reply->type == RedisReply::Type::kError &&
      absl::StartsWith(reply->str, "NOSCRIPT")) {
    argv[0] = "EVAL";
    argv[1] = script.text;
    reply = Run(argv);
  }
  return reply;
}

absl::Status RedisClient::Ping() {
  auto reply = Run({"PING"});
  if (!reply.ok()) return reply.status();
  if (reply->type != RedisReply::Type::kStatus || reply->str != "PONG") {
    return absl::UnavailableError(
        absl::StrCat("Redis at ", options_.address, " answered PING with ", reply->Describe()));
  }
  return absl::OkStatus();
}

absl::StatusOr<RedisClient::Connection> RedisClient::Take(bool* pooled) {
  while (true) {
    Connection idle;
    {
      MutexLock lock(&mu_);
      if (idle_.empty()) {
        if (absl::Now() < down_until_) {
          return absl::UnavailableError(absl::StrCat(last_error_, " (not retried for ",
                                                     absl::FormatDuration(options_.retry_interval),
                                                     " after a failure)"));
        }
        break;
      }
      idle = std::move(idle_.back());
      idle_.pop_back();
    }
    // Most often the answers are here already: they came while the connection was idle.
    if (Settle(idle)) {
      *pooled = true;
      return idle;
    }
    // Closed by the server (a restart): the other idle connections are stale too; a new one is
    // tried. Any other failure (no answer in time, not Redis's protocol) is a failed command's:
    // Redis is marked down, so a hung server costs one timeout, not one per idle connection.
    if (Closed(idle.context.get())) {
      DropIdle();
      continue;
    }
    const std::string why = Failure(idle.context.get());
    MarkDown(why);
    return absl::UnavailableError(why);
  }
  *pooled = false;
  auto connected = Connect();
  if (!connected.ok()) {
    MarkDown(std::string(connected.status().message()));
    return connected.status();
  }
  Connection conn{*std::move(connected)};
  redisContext* c = conn.context.get();
  // On the tunnel's socketpair end too: a TLS server that stops answering times out like a
  // plain one.
  if (redisSetTimeout(c, absl::ToTimeval(options_.timeout)) != REDIS_OK) {
    const std::string why = Failure(c);
    MarkDown(why);
    return absl::UnavailableError(why);
  }
  if (!options_.password.empty()) {
    const char* argv[] = {"AUTH", options_.password.c_str()};
    const size_t lens[] = {4, options_.password.size()};
    auto* raw = static_cast<redisReply*>(redisCommandArgv(c, 2, argv, lens));
    if (raw == nullptr) {
      const std::string why = Failure(c);
      MarkDown(why);
      return absl::UnavailableError(why);
    }
    RedisReply reply = Copy(raw, 0);
    freeReplyObject(raw);
    if (reply.type != RedisReply::Type::kStatus || reply.str != "OK") {
      // The password is never in the message; Redis's own error text may be (WRONGPASS ...).
      const std::string why =
          absl::StrCat("Redis at ", options_.address,
                       " refused the password (state.redis.password_file): ", reply.Describe());
      MarkDown(why);
      return absl::UnavailableError(why);
    }
  }
  return conn;
}

absl::StatusOr<RedisClient::ContextPtr> RedisClient::Connect() {
  ContextPtr c;
  if (tunnels_ != nullptr) {
    auto fd = tunnels_->Open(options_.timeout);
    if (!fd.ok()) return fd.status();
    c.reset(redisConnectFd(*fd));
    if (c == nullptr) ::close(*fd);  // hiredis owns the fd only once it has a context
  } else {
    c.reset(redisConnectWithTimeout(host_.c_str(), port_, absl::ToTimeval(options_.timeout)));
  }
  if (c == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("Redis at ", options_.address, ": cannot allocate a connection"));
  }
  if (c->err != 0) return absl::UnavailableError(Failure(c.get()));
  return c;
}

void RedisClient::Give(Connection c) {
  {
    MutexLock lock(&mu_);
    if (idle_.size() < kMaxIdle) {
      idle_.push_back(std::move(c));
      return;
    }
  }
  // Dropped (closed after the lock is let go) without waiting for what it owes: each `answered`
  // hears false and keeps what it needs (the quota backend removes the release again).
}

void RedisClient::DropIdle() {
  std::vector<Connection> dropped;
  MutexLock lock(&mu_);
  dropped.swap(idle_);
}

void RedisClient::MarkDown(const std::string& why) {
  std::vector<Connection> dropped;  // closed after the lock is let go (they run `answered`)
  MutexLock lock(&mu_);
  down_until_ = absl::Now() + options_.retry_interval;
  last_error_ = why;
  dropped.swap(idle_);
}

std::string RedisClient::Failure(const redisContext* c) const {
  const absl::string_view why(c->errstr);
  if (c->err == REDIS_ERR_IO && why == std::strerror(EAGAIN)) {
    return absl::StrCat("Redis at ", options_.address, ": no answer within ",
                        absl::FormatDuration(options_.timeout), " (state.redis.timeout_ms)");
  }
  std::string what = c->err == REDIS_ERR_PROTOCOL ? "not Redis's protocol: " : "";
  std::string tls;
  if (tunnels_ != nullptr && (c->err == REDIS_ERR_EOF || c->err == REDIS_ERR_IO)) {
    // hiredis saw its tunnel close; the TLS side says why (e.g. Redis refused a missing client
    // certificate with an alert after a TLS 1.3 handshake).
    const std::string reason = tunnels_->CloseReason(c->fd);
    if (!reason.empty()) tls = absl::StrCat(" (TLS: ", reason, ")");
  }
  return absl::StrCat("Redis at ", options_.address, ": ", what,
                      absl::CHexEscape(why.substr(0, 200)), tls);
}

}  // namespace switchyard::gateway
