#include "gateway/api/live_video.h"

#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/json_limits.h"
#include "common/logging.h"
#include "common/tls_client.h"
#include "gateway/billing/api_keys.h"

namespace switchyard::gateway {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Json = nlohmann::json;

// Runs `ioc` until `*done`, cancelling the pending operation (through `cancel`) once `*stop` is
// set or `deadline` passes. CANCELLED / DEADLINE_EXCEEDED then, else OK.
template <typename Cancel>
absl::Status RunUntil(net::io_context& ioc, const bool* done, absl::Time deadline,
                      const std::atomic<bool>* stop, Cancel cancel, const std::string& what) {
  bool cancelled = false;
  bool stopped = false;
  while (!*done) {
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(50));
    if (*done || cancelled) continue;
    stopped = stop != nullptr && stop->load();
    if (stopped || absl::Now() >= deadline) {
      cancel();
      cancelled = true;
    }
  }
  if (!cancelled) return absl::OkStatus();
  if (stopped) return absl::CancelledError(absl::StrCat(what, ": stopped"));
  return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
}

std::string SecondsText(absl::Duration d) { return absl::StrCat(absl::ToInt64Seconds(d), " s"); }

}  // namespace

absl::StatusOr<HttpUrl> ParseHttpUrl(absl::string_view url) { return ParseUrl(url, false); }

absl::StatusOr<HttpUrl> ParseUrl(absl::string_view url, bool allow_https) {
  HttpUrl out;
  if (absl::StartsWithIgnoreCase(url, "https://")) {
    if (!allow_https)
      return absl::InvalidArgumentError("https URLs are not supported (use http://)");
    out.https = true;
    url.remove_prefix(8);
  } else if (absl::StartsWithIgnoreCase(url, "http://")) {
    url.remove_prefix(7);
  } else {
    return absl::InvalidArgumentError(allow_https ? "must be an http:// or https:// URL"
                                                  : "must be an http:// URL");
  }
  const size_t slash = url.find_first_of("/?#");
  absl::string_view authority = url.substr(0, slash);
  out.target = slash == absl::string_view::npos ? "/" : std::string(url.substr(slash));
  if (absl::StrContains(out.target, '#')) out.target.resize(out.target.find('#'));
  if (!out.target.empty() && out.target[0] == '?') out.target = "/" + out.target;
  if (absl::StrContains(authority, '@')) {
    return absl::InvalidArgumentError("must not carry credentials (user@host)");
  }
  absl::string_view host = authority, port = out.https ? "443" : "80";
  if (absl::StartsWith(authority, "[")) {  // [IPv6]:port
    const size_t end = authority.find(']');
    if (end == absl::string_view::npos) return absl::InvalidArgumentError("has a bad IPv6 host");
    host = authority.substr(1, end - 1);
    absl::string_view rest = authority.substr(end + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return absl::InvalidArgumentError("has a bad host");
      port = rest.substr(1);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != absl::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  int port_number = 0;
  if (host.empty()) return absl::InvalidArgumentError("has no host");
  if (!absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("has a bad port '", port, "'"));
  }
  out.host = std::string(host);
  out.port = std::string(port);
  return out;
}

absl::StatusOr<TrickleResponse> TrickleRequest(
    const EgressPolicy& policy, const std::string& method, const std::string& url,
    const std::string& body, const std::string& content_type, absl::Duration timeout,
    int64_t max_body, const std::atomic<bool>* stop,
    const std::map<std::string, std::string>& headers, const TrickleTls* tls) {
  auto parsed = ParseUrl(url, /*allow_https=*/tls != nullptr);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(url, ": ", parsed.status().message()));
  }
  if (tls != nullptr && (!parsed->https || tls->context == nullptr)) {
    // No plain-HTTP fallback for a caller that asked for TLS.
    return absl::InvalidArgumentError(absl::StrCat(url, ": must be an https:// URL"));
  }
  const std::string what = absl::StrCat(method, " ", url);
  const absl::Time deadline = absl::Now() + timeout;
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  // Plain: `plain`. TLS: `secure`, whose own TCP stream is the one connected.
  beast::tcp_stream plain(ioc);
  std::optional<net::ssl::stream<beast::tcp_stream>> secure;
  if (tls != nullptr) secure.emplace(ioc, *tls->context);
  beast::tcp_stream& tcp_layer = secure ? secure->next_layer() : plain;
  auto cancel = [&] {
    resolver.cancel();
    beast::error_code ignored;
    tcp_layer.socket().cancel(ignored);
  };
  bool done = false;
  beast::error_code ec;
  tcp::resolver::results_type endpoints;
  resolver.async_resolve(parsed->host, parsed->port,
                         [&](beast::error_code e, tcp::resolver::results_type r) {
                           ec = e;
                           endpoints = std::move(r);
                           done = true;
                         });
  if (auto st = RunUntil(ioc, &done, deadline, stop, cancel, what); !st.ok()) return st;
  if (ec) {
    spdlog::info("{}: cannot resolve {}: {}", what, LogSafe(parsed->host), ec.message());
    return absl::UnavailableError(absl::StrCat(what, ": cannot resolve the host"));
  }
  // Every address this lookup gave is checked, and the connection goes to exactly these: a name
  // that resolves elsewhere on another lookup (DNS rebinding) is checked again then.
  for (const auto& entry : endpoints) {
    if (absl::Status st = policy.CheckResolved(parsed->host, entry.endpoint().address());
        !st.ok()) {
      spdlog::warn("{}: refused: {} ({})", what,
                   LogSafe(std::string(st.message()), kLogSafeMaxErrorBytes),
                   entry.endpoint().address().to_string());
      return absl::PermissionDeniedError(absl::StrCat(what, ": refused by policy"));
    }
  }

  done = false;
  tcp_layer.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) {
    ec = e;
    done = true;
  });
  if (auto st = RunUntil(ioc, &done, deadline, stop, cancel, what); !st.ok()) return st;
  if (ec) {
    // Which error (refused, unreachable, reset) would tell a caller whether a port is open.
    spdlog::info("{}: cannot connect: {}", what, ec.message());
    return absl::UnavailableError(absl::StrCat(what, ": cannot connect"));
  }

  if (secure) {
    // The certificate must chain to the configured CA and name the configured server name, else
    // the URL's host; the handshake counts against the same deadline.
    const std::string& name = tls->server_name.empty() ? parsed->host : tls->server_name;
    if (auto st = RequireServerName(secure->native_handle(), name); !st.ok()) {
      return absl::InternalError(absl::StrCat(what, ": ", st.message()));
    }
    done = false;
    secure->async_handshake(net::ssl::stream_base::client, [&](beast::error_code e) {
      ec = e;
      done = true;
    });
    if (auto st = RunUntil(ioc, &done, deadline, stop, cancel, what); !st.ok()) return st;
    if (ec) {
      return absl::UnavailableError(absl::StrCat(
          what, ": TLS handshake failed: ",
          LogSafe(TlsHandshakeError(ec, secure->native_handle()), kLogSafeMaxErrorBytes)));
    }
  }

  bhttp::request<bhttp::string_body> req;
  req.method(bhttp::string_to_verb(method));
  req.target(parsed->target);
  req.version(11);
  req.set(bhttp::field::host, absl::StrContains(parsed->host, ':')
                                  ? absl::StrCat("[", parsed->host, "]:", parsed->port)
                                  : absl::StrCat(parsed->host, ":", parsed->port));
  req.set(bhttp::field::user_agent, "switchyard-gateway");
  req.set(bhttp::field::connection, "close");
  if (!content_type.empty()) req.set(bhttp::field::content_type, content_type);
  for (const auto& [name, value] : headers) req.set(name, value);
  req.body() = body;
  if (!body.empty()) {
    req.chunked(true);  // as trickle publishers send segments
  } else if (method == "POST" || method == "PUT") {
    req.content_length(0);
  }
  // The exchange itself, the same over either stream.
  auto exchange = [&](auto& stream) -> absl::StatusOr<TrickleResponse> {
    done = false;
    bhttp::async_write(stream, req, [&](beast::error_code e, size_t) {
      ec = e;
      done = true;
    });
    if (auto st = RunUntil(ioc, &done, deadline, stop, cancel, what); !st.ok()) return st;
    if (ec) return absl::UnavailableError(absl::StrCat(what, ": sending: ", ec.message()));

    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(static_cast<uint64_t>(max_body));
    beast::flat_buffer buffer;
    done = false;
    bhttp::async_read(stream, buffer, parser, [&](beast::error_code e, size_t) {
      ec = e;
      done = true;
    });
    if (auto st = RunUntil(ioc, &done, deadline, stop, cancel, what); !st.ok()) return st;
    if (ec == bhttp::error::body_limit ||
        (!ec && parser.get().body().size() > static_cast<size_t>(max_body))) {
      return absl::ResourceExhaustedError(
          absl::StrCat(what, ": the response is over ", max_body, " bytes"));
    }
    if (ec) return absl::UnavailableError(absl::StrCat(what, ": reading: ", ec.message()));
    TrickleResponse out;
    auto& res = parser.get();
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    for (const auto& field : res) {
      out.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
          std::string(field.value());
    }
    return out;
  };
  auto out = secure ? exchange(*secure) : exchange(plain);
  // Connection: close, and the whole response is read: no TLS close_notify is waited for (a peer
  // that never answers one would only hold this thread).
  beast::error_code ignored;
  tcp_layer.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return out;
}

// One session: a thread reading the input channel, running each segment and publishing it, and
// (with a control_url) a thread reading parameter updates.
class LiveVideoSessions::Session {
 public:
  Session(std::shared_ptr<v1::Gateway::Stub> stub, const LiveVideoOptions& options,
          LiveVideoParams params)
      : stub_(std::move(stub)), options_(options), p_(std::move(params)), params_(p_.params) {}

  ~Session() {
    RequestStop();
    Join();
  }

  void Start() {
    thread_ = std::thread([this] {
      Run();
      done_ = true;
    });
    if (!p_.control_url.empty()) control_ = std::thread([this] { ControlLoop(); });
  }

  void RequestStop() {
    stop_ = true;
    MutexLock lock(&mu_);
    if (call_ != nullptr) call_->TryCancel();
  }

  void Join() {
    if (thread_.joinable()) thread_.join();
    if (control_.joinable()) control_.join();
  }

  bool done() const { return done_; }

 private:
  // Sleeps up to `d`, waking early when stopped.
  void Pause(absl::Duration d) {
    const absl::Time until = absl::Now() + d;
    while (!stop_ && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  }

  std::string CurrentParams() {
    MutexLock lock(&mu_);
    return params_;
  }

  // POSTs one event to events_url/<seq>, best effort. `last` events are sent even when stopping.
  void PostEvent(Json event, bool last = false) {
    if (p_.events_url.empty()) return;
    MutexLock lock(&events_mu_);  // one sequence for both threads
    if (events_refused_) return;
    event["request_id"] = p_.request_id;
    event["stream_id"] = p_.stream_id;
    event["timestamp_ms"] = absl::ToUnixMillis(absl::Now());
    auto r = TrickleRequest(options_.egress, "POST", absl::StrCat(p_.events_url, "/", event_seq_),
                            event.dump(-1, ' ', false, Json::error_handler_t::replace),
                            "application/json", last ? absl::Seconds(2) : options_.http_timeout,
                            1 << 20, last ? nullptr : &stop_);
    ++event_seq_;
    if (absl::IsPermissionDenied(r.status())) events_refused_ = true;  // no more tries
    if (!r.ok() || r->status / 100 != 2) {
      spdlog::debug("[{}] live event to {}: {}", p_.request_id, LogSafe(p_.events_url),
                    r.ok() ? absl::StrCat("HTTP ", r->status) : r.status().ToString());
    }
  }

  void ControlLoop() {
    int64_t seq = 0;
    int errors = 0;
    while (!stop_) {
      auto r = TrickleRequest(options_.egress, "GET", absl::StrCat(p_.control_url, "/", seq), "",
                              "", options_.idle_timeout, options_.max_control_bytes, &stop_);
      if (stop_) return;
      if (!r.ok()) {
        if (absl::IsDeadlineExceeded(r.status())) continue;  // no update for a while: ask again
        if (absl::IsPermissionDenied(r.status())) {
          PostEvent({{"type", "error"},
                     {"message", "control_url refused by policy; parameters stay as they are"}});
          return;
        }
        if (absl::IsResourceExhausted(r.status())) {  // too large to copy into events
          PostEvent({{"type", "error"},
                     {"message",
                      absl::StrCat("control message ", seq, " is over ", options_.max_control_bytes,
                                   " bytes; parameters unchanged")}});
          ++seq;
          continue;
        }
        if (++errors > 5) {
          spdlog::warn("[{}] live control channel {} given up: {}", p_.request_id,
                       LogSafe(p_.control_url), r.status().ToString());
          return;
        }
        Pause(absl::Milliseconds(500));
        continue;
      }
      errors = 0;
      if (r->status == 404 || r->headers.count("lp-trickle-closed") > 0) return;
      if (r->status == 470) {
        int64_t latest = 0;
        auto it = r->headers.find("lp-trickle-latest");
        seq = it != r->headers.end() && absl::SimpleAtoi(it->second, &latest) && latest > seq
                  ? latest
                  : seq + 1;
        continue;
      }
      if (r->status != 200) {
        Pause(absl::Milliseconds(500));
        continue;
      }
      int64_t served = seq;
      if (auto it = r->headers.find("lp-trickle-seq"); it != r->headers.end()) {
        if (!absl::SimpleAtoi(it->second, &served) || served < 0) served = seq;
      }
      seq = served + 1;
      // Bounded in size above and in depth here: it is copied into events and segment calls.
      auto parsed = ParseJson(r->body);
      if (!parsed.ok() || !parsed->is_object()) {
        PostEvent(
            {{"type", "error"},
             {"message",
              absl::StrCat("control message ", served, " is not a JSON object",
                           parsed.ok() ? "" : absl::StrCat(" (", parsed.status().message(), ")"),
                           "; parameters unchanged")}});
        continue;
      }
      Json update = *std::move(parsed);
      {
        MutexLock lock(&mu_);
        params_ = update.dump(-1, ' ', false, Json::error_handler_t::replace);
      }
      spdlog::info("[{}] live parameters updated from control message {}", p_.request_id, served);
      PostEvent({{"type", "params_updated"}, {"params", update}});
    }
  }

  void Run() {
    const absl::Time start = absl::Now();
    spdlog::info("[{}] live-video-to-video '{}' started: {} -> {}", p_.request_id,
                 LogSafe(p_.model_id), LogSafe(p_.subscribe_url), LogSafe(p_.publish_url));
    PostEvent({{"type", "status"}, {"state", "started"}, {"model_id", p_.model_id}});
    int64_t in_seq = 0, out_seq = 0, frames = 0;
    int failures_in_a_row = 0, read_errors = 0;
    bool failed = false;
    std::string reason;
    while (true) {
      if (stop_) {
        reason = "the gateway stopped the session (shutting down)";
        break;
      }
      if (absl::Now() - start >= options_.max_lifetime) {
        reason = absl::StrCat("the session reached its maximum lifetime (",
                              SecondsText(options_.max_lifetime), ")");
        break;
      }
      const std::string in_url = absl::StrCat(p_.subscribe_url, "/", in_seq);
      auto got = TrickleRequest(options_.egress, "GET", in_url, "", "", options_.idle_timeout,
                                options_.max_segment_bytes, &stop_);
      if (!got.ok()) {
        if (stop_) continue;
        if (absl::IsDeadlineExceeded(got.status())) {
          reason = absl::StrCat("no input segment for ", SecondsText(options_.idle_timeout));
          break;
        }
        if (absl::IsResourceExhausted(got.status()) || absl::IsInvalidArgument(got.status()) ||
            absl::IsPermissionDenied(got.status()) || ++read_errors > 3) {
          failed = true;
          reason = absl::StrCat("cannot read the input: ", got.status().message());
          break;
        }
        Pause(absl::Milliseconds(500));
        continue;
      }
      read_errors = 0;
      if (got->status == 404 || got->headers.count("lp-trickle-closed") > 0) {
        reason = "the input stream ended";
        break;
      }
      if (got->status == 470) {  // gone: jump to the live edge
        int64_t latest = 0;
        auto it = got->headers.find("lp-trickle-latest");
        in_seq =
            it != got->headers.end() && absl::SimpleAtoi(it->second, &latest) && latest > in_seq
                ? latest
                : in_seq + 1;
        continue;
      }
      if (got->status != 200) {
        failed = true;
        reason = absl::StrCat("GET ", in_url, " answered HTTP ", got->status);
        break;
      }
      int64_t served = in_seq;
      if (auto it = got->headers.find("lp-trickle-seq"); it != got->headers.end()) {
        if (!absl::SimpleAtoi(it->second, &served) || served < 0) served = in_seq;
      }
      in_seq = served + 1;
      if (got->body.empty()) continue;

      v1::LiveVideoSegmentRequest request;
      v1::LiveVideoSegmentResponse response;
      request.set_model_id(p_.model_id);
      request.set_segment(std::move(got->body));
      request.set_stream_id(p_.stream_id);
      request.set_sequence(served);
      request.set_params(CurrentParams());
      grpc::Status status;
      {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             absl::ToChronoMilliseconds(options_.segment_timeout));
        context.AddMetadata("x-request-id", absl::StrCat(p_.request_id, "-", served));
        if (!p_.authorization.empty()) context.AddMetadata("authorization", p_.authorization);
        {
          MutexLock lock(&mu_);
          call_ = &context;
        }
        if (stop_) context.TryCancel();
        status = stub_->LiveVideoSegment(&context, request, &response);
        MutexLock lock(&mu_);
        call_ = nullptr;
      }
      if (!status.ok()) {
        if (stop_) continue;
        ++failures_in_a_row;
        spdlog::warn("[{}] live segment {} failed: {}", p_.request_id, served,
                     status.error_message());
        PostEvent({{"type", "error"},
                   {"segment", served},
                   {"message", absl::StrCat("segment ", served, " failed: ", status.error_message(),
                                            " (dropped)")}});
        if (failures_in_a_row >= options_.max_failures_in_a_row) {
          failed = true;
          reason = absl::StrCat(failures_in_a_row,
                                " segments failed in a row; last: ", status.error_message());
          break;
        }
        continue;
      }
      failures_in_a_row = 0;
      const std::string out_url = absl::StrCat(p_.publish_url, "/", out_seq);
      auto put = TrickleRequest(options_.egress, "POST", out_url, response.segment(), "video/mp2t",
                                options_.http_timeout, 1 << 20, &stop_);
      if (!put.ok() || put->status / 100 != 2) {
        if (stop_) continue;
        failed = true;
        reason =
            absl::StrCat("cannot publish the output: ",
                         put.ok() ? absl::StrCat("POST ", out_url, " answered HTTP ", put->status)
                                  : std::string(put.status().message()));
        break;
      }
      ++out_seq;
      frames += response.frames();
      PostEvent({{"type", "status"},
                 {"state", "running"},
                 {"input_segment", served},
                 {"output_segment", out_seq - 1},
                 {"frames", response.frames()},
                 {"width", response.width()},
                 {"height", response.height()},
                 {"first_pts_seconds", response.first_pts_seconds()},
                 {"last_pts_seconds", response.last_pts_seconds()},
                 {"orchestrator", response.job().orchestrator()},
                 {"compute_ms", response.job().compute_ms()}});
    }
    stop_ = true;  // ends the control loop; what follows is sent regardless
    // Close the output channel, then say why the session ended.
    auto closed = TrickleRequest(options_.egress, "DELETE", p_.publish_url, "", "",
                                 absl::Seconds(2), 1 << 20, nullptr);
    if (!closed.ok()) {
      spdlog::debug("[{}] closing {}: {}", p_.request_id, LogSafe(p_.publish_url),
                    closed.status().ToString());
    }
    PostEvent({{"type", "status"},
               {"state", failed ? "failed" : "ended"},
               {"reason", reason},
               {"segments", out_seq},
               {"frames", frames}},
              /*last=*/true);
    if (!p_.events_url.empty()) {
      bool refused = false;
      {
        MutexLock lock(&events_mu_);
        refused = events_refused_;
      }
      if (!refused) {
        (void)TrickleRequest(options_.egress, "DELETE", p_.events_url, "", "", absl::Seconds(2),
                             1 << 20, nullptr);
      }
    }
    spdlog::info("[{}] live-video-to-video {}: {} ({} segments, {} frames)", p_.request_id,
                 failed ? "failed" : "ended", reason, out_seq, frames);
  }

  const std::shared_ptr<v1::Gateway::Stub> stub_;
  const LiveVideoOptions options_;
  const LiveVideoParams p_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  Mutex events_mu_;
  int64_t event_seq_ ABSL_GUARDED_BY(events_mu_) = 0;        // the next events_url sequence number
  bool events_refused_ ABSL_GUARDED_BY(events_mu_) = false;  // events_url refused by policy
  Mutex mu_;
  std::string params_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* call_ ABSL_GUARDED_BY(mu_) = nullptr;  // the segment call in flight
  std::thread thread_;
  std::thread control_;
};

LiveVideoSessions::LiveVideoSessions(std::shared_ptr<v1::Gateway::Stub> stub,
                                     LiveVideoOptions options)
    : stub_(std::move(stub)), options_(options) {}

LiveVideoSessions::~LiveVideoSessions() { Stop(); }

void LiveVideoSessions::Reap() {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (it->second->done()) {
      session_keys_.erase(it->first);
      it = sessions_.erase(it);  // joins: its threads are finishing
    } else {
      ++it;
    }
  }
}

namespace {

// Whose session this is, for max_sessions_per_key: the key id the handler found, else the key the
// client presented (as ApiKeyAuth reads it: "Bearer <key>"), hashed so that no key is kept
// twice. "" when the client sent no key.
std::string KeyBucket(const LiveVideoParams& p) {
  if (!p.api_key_id.empty()) return absl::StrCat("id:", p.api_key_id);
  absl::string_view value = absl::StripAsciiWhitespace(p.authorization);
  if (value.size() > 7 && absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
    value = absl::StripAsciiWhitespace(value.substr(7));
  }
  if (value.empty()) return "";
  return absl::StrCat("sha256:", Sha256Hex(value));
}

}  // namespace

absl::Status LiveVideoSessions::CheckUrl(absl::string_view field, absl::string_view url) const {
  auto parsed = ParseHttpUrl(url);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", parsed.status().message()));
  }
  if (absl::Status st = options_.egress.CheckHost(parsed->host, options_.resolve_timeout);
      !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", st.message()));
  }
  return absl::OkStatus();
}

absl::Status LiveVideoSessions::Start(LiveVideoParams params) {
  const std::string key = KeyBucket(params);
  MutexLock lock(&mu_);
  if (stopped_) return absl::UnavailableError("the gateway is shutting down");
  Reap();
  if (static_cast<int>(sessions_.size()) >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this gateway runs ", options_.max_sessions,
                     " live sessions already (its limit, live_video.max_sessions)"));
  }
  if (!key.empty()) {
    int of_key = 0;
    for (const auto& [id, k] : session_keys_) of_key += k == key ? 1 : 0;
    if (of_key >= options_.max_sessions_per_key) {
      return absl::ResourceExhaustedError(absl::StrCat("this API key runs ", of_key,
                                                       " live sessions already (the limit per key, "
                                                       "live_video.max_sessions_per_key, is ",
                                                       options_.max_sessions_per_key, ")"));
    }
  }
  if (sessions_.count(params.request_id) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("a live session '", params.request_id, "' is running already"));
  }
  const std::string id = params.request_id;
  auto session = std::make_unique<Session>(stub_, options_, std::move(params));
  session->Start();
  sessions_[id] = std::move(session);
  session_keys_[id] = key;
  return absl::OkStatus();
}

void LiveVideoSessions::Stop() {
  std::map<std::string, std::unique_ptr<Session>> sessions;
  {
    MutexLock lock(&mu_);
    stopped_ = true;
    sessions.swap(sessions_);
    session_keys_.clear();
  }
  for (auto& [id, s] : sessions) s->RequestStop();
  for (auto& [id, s] : sessions) s->Join();
}

int LiveVideoSessions::active() const {
  MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [id, s] : sessions_) n += s->done() ? 0 : 1;
  return n;
}

}  // namespace switchyard::gateway
