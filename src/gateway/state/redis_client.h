// A small synchronous Redis client over hiredis, shared by the state several gateways keep in
// Redis (config `state.redis`; docs/operations.md "Several gateways"): API key quotas
// (billing/redis_quota.h) and stream affinity (routing/redis_affinity.h).
//
// Each command takes a connection from a small pool (so calls do not wait on each other's round
// trips), with the configured timeout on connect and on every command. A failure marks Redis
// down for `retry_interval`: commands meanwhile fail at once, so an outage does not add a connect
// timeout to every call. Every byte Redis answers is checked like a peer's (RedisReply).
//
// With `tls` set, each connection is a TLS one (RedisTlsTunnels: hiredis 0.14 has no TLS of its
// own, so it speaks through a local tunnel); everything else is the same.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "common/tls.h"

struct redisContext;

namespace switchyard::gateway {

struct RedisClientOptions {
  std::string address;                               // HOST:PORT ("[::1]:6379" for IPv6)
  std::string password;                              // AUTH with it when not empty
  absl::Duration timeout = absl::Milliseconds(200);  // connect and each command
  // After a failed connection or command, commands do not try Redis again for this long.
  absl::Duration retry_interval = absl::Milliseconds(500);
  // state.redis.tls: enabled means TLS, with ca_file required (server_name_override is the
  // config's server_name). Disabled: plain TCP.
  TlsClientConfig tls;
};

// A Redis reply copied out of hiredis's (which is freed at once). Arrays nest at most 5 deep:
// deeper is not an answer of ours and comes back as kOther.
struct RedisReply {
  enum class Type { kString, kStatus, kInteger, kNil, kError, kArray, kOther };
  Type type = Type::kOther;
  std::string str;
  long long integer = 0;
  std::vector<RedisReply> elements;

  // What the reply is, for error messages (never the whole string: it may be large).
  std::string Describe() const;
};

// A Lua script, run by EVALSHA (EVAL when Redis does not know it yet).
struct RedisScript {
  explicit RedisScript(const char* script_text);
  const char* text;
  std::string sha;  // SHA-1 of the text, hex
};

// Thread-safe.
class RedisTlsTunnels;

class RedisClient {
 public:
  // Validates the options (errors name the state.redis fields; with TLS, also the files: readable
  // PEM, the key the certificate's) and starts the TLS tunnels' thread; does not connect. Sets
  // SIGPIPE to be ignored: hiredis writes with write(2), and a write to a connection that Redis (or
  // something posing as it) reset must be an error, not the end of the process.
  static absl::StatusOr<std::unique_ptr<RedisClient>> Create(RedisClientOptions options);
  ~RedisClient();

  // One command. Redis's error replies come back as replies (type kError); a failed connection,
  // a timeout or bytes that are not Redis's protocol as UNAVAILABLE naming the address.
  absl::StatusOr<RedisReply> Run(const std::vector<std::string>& argv) ABSL_LOCKS_EXCLUDED(mu_);
  // EVALSHA, and EVAL when Redis answers NOSCRIPT (a new or restarted server, SCRIPT FLUSH).
  absl::StatusOr<RedisReply> Eval(const RedisScript& script, const std::vector<std::string>& keys,
                                  const std::vector<std::string>& args);
  // One PING: OK when Redis answers PONG.
  absl::Status Ping();
  // Sends one command without waiting for its answer, for commands whose result the caller does
  // not need (a quota slot given back): the call does not wait a round trip for it. The bytes
  // are written before Send returns; the connection goes back to the pool owing the answer, and
  // whoever takes it next reads that first (an error answer is logged, debug). `answered` (may
  // be empty) runs once: with true when the answer was read (Redis ran the command), with false
  // when the connection was dropped first (Redis may or may not have run it). Redis serves each
  // connection in order but not connections in the order their bytes came: a command sent later
  // on another connection may run first; callers that need the order use `answered`.
  // Errors: the write's (UNAVAILABLE), as Run's. With TLS the tunnel writes on its own thread;
  // there Send waits for the answer like Run.
  using Answered = std::function<void(bool answered)>;
  absl::Status Send(const std::vector<std::string>& argv, Answered answered = {});

  const RedisClientOptions& options() const { return options_; }

 private:
  struct ContextDeleter {
    void operator()(redisContext* c) const;
  };
  using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;
  // A connection and the answers it owes (to commands Send wrote and nobody read yet), each
  // with its Send's `answered`: dropped unread, they are told so.
  struct Connection {
    Connection() = default;
    explicit Connection(ContextPtr c) : context(std::move(c)) {}
    Connection(Connection&&) = default;
    Connection& operator=(Connection&&) = default;
    ~Connection() {
      for (auto& answered : owed) {
        if (answered) answered(false);
      }
    }
    ContextPtr context;
    std::vector<Answered> owed;
  };

  RedisClient(RedisClientOptions options, std::string host, int port,
              std::unique_ptr<RedisTlsTunnels> tunnels);
  // A connected context: plain TCP, or hiredis's end of a TLS tunnel.
  absl::StatusOr<ContextPtr> Connect();
  // A connection owing no answers: an idle one (its owed answers read first; one that fails to
  // give them is dropped) or a new one.
  absl::StatusOr<Connection> Take(bool* pooled) ABSL_LOCKS_EXCLUDED(mu_);
  // Reads the answers `c` owes; false when it cannot (the connection is then of no use).
  bool Settle(Connection& c) const;
  // Back to the pool; when the pool is full, dropped (its owed answers unread: `answered(false)`).
  void Give(Connection c) ABSL_LOCKS_EXCLUDED(mu_);
  void DropIdle() ABSL_LOCKS_EXCLUDED(mu_);
  void MarkDown(const std::string& why) ABSL_LOCKS_EXCLUDED(mu_);
  std::string Failure(const redisContext* c) const;

  static constexpr size_t kMaxIdle = 16;
  const RedisClientOptions options_;
  const std::string host_;
  const int port_;
  // Declared before the pool: destroyed after it, so hiredis closes its ends first.
  const std::unique_ptr<RedisTlsTunnels> tunnels_;  // null: plain TCP
  Mutex mu_;
  std::vector<Connection> idle_ ABSL_GUARDED_BY(mu_);  // the last given back on top
  absl::Time down_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::gateway
