// The Livepeer AI HTTP API: the routes from the one table (livepeer_api_routes.cc), what every
// call shares (errors, forwarded headers, async results, served media) and live video sessions.
#include "gateway/api/livepeer_api.h"

#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/json_limits.h"
#include "common/logging.h"
#include "common/quote_units.h"
#include "common/secure_random.h"
#include "gateway/api/live_video.h"
#include "gateway/api/livepeer_api_internal.h"
#include "gateway/api/peer_gateways.h"
#include "gateway/billing/api_keys.h"
#include "gateway/billing/auth_interceptor.h"

namespace switchyard::gateway {
namespace livepeer {

void ReplyGrpcError(const StubPtr& stub, const grpc::Status& status, http::Reply reply,
                    StatusRefiner refine) {
  int code = refine ? refine(status) : 0;
  if (code == 0) code = HttpStatusForGrpc(status.error_code());
  if (status.error_code() != grpc::StatusCode::NOT_FOUND) {
    return reply(HttpError(code, status.error_message()));
  }
  auto call =
      std::make_shared<UnaryCall<v1::ListCapabilitiesRequest, v1::ListCapabilitiesResponse>>();
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  stub->async()->ListCapabilities(
      &call->context, &call->request, &call->response,
      [call, code, message = status.error_message(), reply = std::move(reply)](grpc::Status st) {
        int ready = 0;
        for (const auto& o : call->response.orchestrators()) ready += o.ready() ? 1 : 0;
        if (st.ok() && ready == 0) {
          return reply(HttpError(503, absl::StrCat("no orchestrator available: ", message)));
        }
        reply(HttpError(code, message));
      });
}

namespace {

// gRPC metadata values are printable ASCII; anything else (HTTP allows bytes 0x80-0xFF in a
// header) makes gRPC abort the process as API misuse, so such a header is not forwarded.
bool IsMetadataValue(const std::string& value) {
  for (unsigned char c : value) {
    if (c < 0x20 || c > 0x7E) return false;
  }
  return true;
}

}  // namespace

void ForwardRequestId(const http::Request& req, grpc::ClientContext* context) {
  auto id = Header(req, "x-request-id");
  if (id && IsMetadataValue(*id)) context->AddMetadata("x-request-id", *id);
  // The API key travels on as gRPC metadata, so the gRPC API's one check covers HTTP too. A
  // value that cannot be one is no key: without it the call is refused as unauthenticated.
  auto auth = Header(req, "authorization");
  if (auth && IsMetadataValue(*auth)) context->AddMetadata("authorization", *auth);
  // The job's price caps (docs/metering.md), checked by the gRPC API. A value that cannot be
  // metadata is still sent, as one that fails the check: a cap must never be dropped silently.
  for (const char* cap : {"x-max-price-per-unit", "x-max-total-price"}) {
    if (auto v = Header(req, cap)) {
      context->AddMetadata(cap, IsMetadataValue(*v) ? *v : "<not printable ASCII>");
    }
  }
}

void SetQuoted(const google::protobuf::Message& request, v1::QuoteRequest* quote) {
  metering::SetQuoteRequest(request, quote);
}

void RunQuote(const Env& env, const http::Request& req, v1::QuoteRequest quote,
              StatusRefiner refine, http::Reply reply) {
  auto call = std::make_shared<UnaryCall<v1::QuoteRequest, v1::QuoteResponse>>();
  call->request = std::move(quote);
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  ForwardRequestId(req, &call->context);
  env.stub->async()->Quote(
      &call->context, &call->request, &call->response,
      [call, stub = env.stub, refine, reply = std::move(reply)](grpc::Status status) mutable {
        if (!status.ok()) return ReplyGrpcError(stub, status, std::move(reply), refine);
        google::protobuf::util::JsonPrintOptions print;
        print.always_print_primitive_fields = true;
        print.preserve_proto_field_names = true;
        std::string body;
        if (!google::protobuf::util::MessageToJsonString(call->response, &body, print).ok()) {
          return reply(HttpError(500, "cannot encode the quote as JSON"));
        }
        reply(http::Json(200, body));
      });
}

namespace {

// POST /quote/<anything else>: which pipelines can be quoted.
void UnknownQuote(const http::Request& req, http::Reply reply) {
  std::string names;
  for (const Route& route : Routes()) {
    if (route.quote == nullptr) continue;
    absl::StrAppend(&names, names.empty() ? "" : ", ", route.pipeline);
  }
  reply(HttpError(404, absl::StrCat("no quote for '", LogSafe(req.path),
                                    "': POST /quote/<pipeline> with the body of POST /<pipeline> (",
                                    names, ")")));
}

}  // namespace

std::string DataUrl(const std::string& content_type, const std::string& data) {
  return absl::StrCat("data:", content_type, ";base64,", absl::Base64Escape(data));
}

// A large decoded image is the client's to shrink: 413, as the spec lists for image inputs.
int ImageInputStatus(const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
      absl::StrContains(status.error_message(), "pixels, more than the limit")) {
    return 413;
  }
  return 0;
}

int AudioInputStatus(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) return 0;
  const std::string& m = status.error_message();
  if (absl::StartsWith(m, "audio could not be read") ||
      absl::StartsWith(m, "audio has no decodable audio stream") ||
      absl::StartsWith(m, "audio decoder could not be opened") ||
      absl::StartsWith(m, "audio stream parameters are invalid")) {
    return 415;
  }
  if (absl::StrContains(m, "max_audio_seconds")) return 413;
  return 0;
}

namespace {

// Job and video ids: 128 bits from OpenSSL's CSPRNG (32 hex digits). The old std::mt19937_64
// ids could be predicted from a few hundred collected ones, and with them other clients' videos
// and results fetched.
std::string RandomId() { return SecureRandomHex(16); }

}  // namespace

// Generated videos, kept in memory and served at GET /stream/<id>/<name> (as go-livepeer's
// gateway serves its object store there), and image-to-video's async results. Bounded in bytes
// and count; what is older than the TTL or pushed out by newer media is gone (404). Each entry
// belongs to an owner (Env::OwnerOf: the API key that made it, "" without keys); asked for by
// another owner it is answered as unknown, so a key cannot tell another key's ids from made-up
// ones.
class Store {
 public:
  static constexpr size_t kMaxMediaBytes = size_t{512} << 20;
  static constexpr size_t kMaxJobs = 1000;
  static constexpr auto kTtl = std::chrono::hours(1);

  // `id_prefix`: "<state.gateway_id>." when the gateway has peers (the ids say who holds them),
  // else "".
  explicit Store(std::string id_prefix = "") : id_prefix_(std::move(id_prefix)) {}

  // Keeps `data` and returns its path.
  std::string PutMedia(const std::string& owner, const std::string& content_type, std::string data,
                       const std::string& name) {
    const std::string path = absl::StrCat("/stream/", id_prefix_, RandomId(), "/", name);
    std::lock_guard<std::mutex> lock(mu_);
    Expire();
    media_bytes_ += data.size();
    media_[path] = {owner, content_type, std::make_shared<const std::string>(std::move(data)),
                    Clock::now()};
    media_order_.push_back(path);
    while (media_bytes_ > kMaxMediaBytes && media_order_.size() > 1) DropOldestMedia();
    return path;
  }

  std::optional<std::pair<std::string, std::shared_ptr<const std::string>>> GetMedia(
      const std::string& path, const std::string& owner) {
    std::lock_guard<std::mutex> lock(mu_);
    Expire();
    auto it = media_.find(path);
    if (it == media_.end() || it->second.owner != owner) return std::nullopt;
    return std::make_pair(it->second.content_type, it->second.data);
  }

  std::string NewJob(const std::string& owner) {
    std::string id = absl::StrCat(id_prefix_, RandomId());
    std::lock_guard<std::mutex> lock(mu_);
    Expire();
    jobs_[id] = {owner, false, Json(), Clock::now()};
    job_order_.push_back(id);
    while (job_order_.size() > kMaxJobs) {
      jobs_.erase(job_order_.front());
      job_order_.pop_front();
    }
    return id;
  }

  void FinishJob(const std::string& id, Json result) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;  // expired meanwhile
    it->second.done = true;
    it->second.result = std::move(result);
  }

  // {"status": "processing"} or {"status": "complete", "result": ...}; nullopt when unknown.
  std::optional<Json> JobStatus(const std::string& id, const std::string& owner) {
    std::lock_guard<std::mutex> lock(mu_);
    Expire();
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.owner != owner) return std::nullopt;
    if (!it->second.done) return Json{{"status", "processing"}};
    return Json{{"status", "complete"}, {"result", it->second.result}};
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Media {
    std::string owner;
    std::string content_type;
    std::shared_ptr<const std::string> data;
    Clock::time_point created;
  };
  struct Job {
    std::string owner;
    bool done = false;
    Json result;
    Clock::time_point created;
  };

  void DropOldestMedia() {
    auto it = media_.find(media_order_.front());
    if (it != media_.end()) {
      media_bytes_ -= it->second.data->size();
      media_.erase(it);
    }
    media_order_.pop_front();
  }

  void Expire() {
    const auto cutoff = Clock::now() - kTtl;
    while (!media_order_.empty()) {
      auto it = media_.find(media_order_.front());
      if (it != media_.end() && it->second.created > cutoff) break;
      DropOldestMedia();
    }
    while (!job_order_.empty()) {
      auto it = jobs_.find(job_order_.front());
      if (it != jobs_.end() && it->second.created > cutoff) break;
      if (it != jobs_.end()) jobs_.erase(it);
      job_order_.pop_front();
    }
  }

  const std::string id_prefix_;
  std::mutex mu_;
  std::map<std::string, Media> media_;
  std::deque<std::string> media_order_;
  size_t media_bytes_ = 0;
  std::map<std::string, Job> jobs_;
  std::deque<std::string> job_order_;
};

std::string Env::OwnerOf(const http::Request& req) const {
  // With API keys configured, the SHA-256 of the key it presented (the hash the keys file lists;
  // read from Authorization or x-api-key exactly as the gRPC API's check reads them), "" when it
  // presented none; without keys, everyone ("").
  if (auth == nullptr) return "";
  std::multimap<grpc::string_ref, grpc::string_ref> metadata;
  for (const char* name : {"authorization", "x-api-key"}) {
    auto it = req.headers.find(name);
    if (it != req.headers.end()) metadata.emplace(name, it->second);
  }
  const std::string key = ApiKeyAuth::PresentedKey(metadata);
  return key.empty() ? "" : Sha256Hex(key);
}

MediaSink Env::MediaFor(const http::Request& req) const {
  // Absolute URLs when the client sent a Host header (so it can fetch them as they are), else
  // bare paths.
  std::string base;
  if (auto host = Header(req, "host"); host && !host->empty()) {
    base = absl::StrCat(Header(req, "x-forwarded-proto").value_or("http"), "://", *host);
  }
  return MediaSink(store, OwnerOf(req), std::move(base));
}

std::string MediaSink::Put(const std::string& content_type, std::string data,
                           const std::string& name) const {
  return base_url_ + store_->PutMedia(owner_, content_type, std::move(data), name);
}

void RunCall(const Env& env, const http::Request& req, StatusRefiner refine, bool may_respond_async,
             const CallStarter& start, std::function<Json()> to_json, http::Reply reply) {
  auto prefer = Header(req, "prefer");
  if (!may_respond_async || !prefer ||
      !absl::StrContains(absl::AsciiStrToLower(*prefer), "respond-async")) {
    start([stub = env.stub, refine, to_json = std::move(to_json),
           reply = std::move(reply)](grpc::Status status) {
      if (!status.ok()) return ReplyGrpcError(stub, status, reply, refine);
      reply(http::Json(200, Dump(to_json())));
    });
    return;
  }
  const std::string id = env.store->NewJob(env.OwnerOf(req));
  start([store = env.store, id, to_json = std::move(to_json)](grpc::Status status) {
    store->FinishJob(id,
                     status.ok() ? to_json() : Json{{"error", {{"msg", status.error_message()}}}});
  });
  reply(http::Json(202, Json{{"request_id", id}}.dump()));
}

namespace {

// With peers (state.peers): ids say which gateway holds them ("<gateway id>.<hex>"). What another
// gateway holds is fetched from it (PeerGateways); what no known gateway could hold is unknown.

// The client's headers an internal call forwards: its API key (the holder applies the ownership
// rule itself) and its request id. Values that are not printable ASCII are not forwarded.
std::map<std::string, std::string> ForwardedHeaders(const http::Request& req) {
  std::map<std::string, std::string> out;
  for (const char* name : {"authorization", "x-api-key", "x-request-id"}) {
    auto value = Header(req, name);
    if (value && !value->empty() && value->size() <= 4096 && IsMetadataValue(*value)) {
      out[name] = *value;
    }
  }
  return out;
}

// The answer to a client when the gateway holding its id could not answer.
http::Response PeerFailure(const std::string& peer, const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      return HttpError(504, absl::StrCat("gateway '", peer,
                                         "', which holds this id, did not "
                                         "answer in time; try again"));
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
      return HttpError(503, absl::StrCat("gateway '", peer,
                                         "', which holds this id, cannot be "
                                         "asked now (",
                                         st.message(), ")"));
    case absl::StatusCode::kResourceExhausted:
      return HttpError(502, absl::StrCat("gateway '", peer,
                                         "' answered with more than this "
                                         "gateway relays"));
    default:
      return HttpError(502, absl::StrCat("gateway '", peer,
                                         "', which holds this id, cannot be "
                                         "reached; try again later"));
  }
}

// A media name as this gateway writes them ("video-0.mp4"): nothing a path could be built with.
bool IsMediaName(absl::string_view name) {
  if (name.empty() || name.size() > PeerGateways::kMaxNameBytes || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' ||
           ch == '_';
  });
}

void ServeMediaAcrossGateways(const Env& env, const http::Request& req, http::Reply reply) {
  absl::string_view rest = req.path;
  absl::ConsumePrefix(&rest, "/stream/");
  const size_t slash = rest.find('/');
  const absl::string_view id = rest.substr(0, slash);
  const absl::string_view name = slash == absl::string_view::npos ? "" : rest.substr(slash + 1);
  if (id.size() > PeerGateways::kMaxIdBytes || name.size() > PeerGateways::kMaxNameBytes) {
    return reply(HttpError(
        400, absl::StrCat("media path too long: ids are at most ", PeerGateways::kMaxIdBytes,
                          " bytes, names ", PeerGateways::kMaxNameBytes)));
  }
  const std::optional<std::string> holder = env.peers->HolderOf(id);
  const std::string unknown = absl::StrCat("no media at ", req.path);
  if (!holder || !IsMediaName(name)) return reply(HttpError(404, unknown));
  if (holder->empty()) {
    auto media = env.store->GetMedia(req.path, env.OwnerOf(req));
    if (!media) return reply(HttpError(404, unknown));
    http::Response r;
    r.content_type = media->first;
    r.body = *media->second;
    return reply(std::move(r));
  }
  // Built from the checked id and name only.
  env.peers->Fetch(
      *holder, absl::StrCat("/internal/v1/stream/", id, "/", name), ForwardedHeaders(req),
      PeerGateways::kMaxMediaBytes,
      [peer = *holder, unknown, reply = std::move(reply)](absl::StatusOr<TrickleResponse> r) {
        if (!r.ok()) {
          spdlog::warn("media from gateway '{}': {}", peer, r.status().ToString());
          return reply(PeerFailure(peer, r.status()));
        }
        if (r->status == 404) return reply(HttpError(404, unknown));
        if (r->status != 200) {
          spdlog::warn("media from gateway '{}': it answered {}", peer, r->status);
          return reply(PeerFailure(peer, absl::InternalError("")));
        }
        http::Response out;
        out.content_type = "application/octet-stream";
        if (auto it = r->headers.find("content-type");
            it != r->headers.end() && it->second.size() <= 128 && IsMetadataValue(it->second)) {
          out.content_type = it->second;
        }
        out.body = std::move(r->body);
        reply(std::move(out));
      });
}

void ServeResultAcrossGateways(const char* pipeline, const Env& env, const http::Request& req,
                               const std::string& id, const http::Reply& reply) {
  if (id.size() > PeerGateways::kMaxIdBytes) {
    return reply(HttpError(400, absl::StrCat("request_id is ", id.size(), " bytes; at most ",
                                             PeerGateways::kMaxIdBytes)));
  }
  const std::string unknown =
      absl::StrCat("no ", pipeline, " request '", LogSafe(id), "' (unknown or expired)");
  const std::optional<std::string> holder = env.peers->HolderOf(id);
  if (!holder) return reply(HttpError(404, unknown));
  if (holder->empty()) {
    auto status = env.store->JobStatus(id, env.OwnerOf(req));
    if (!status) return reply(HttpError(404, unknown));
    return reply(http::Json(200, Dump(*status)));
  }
  env.peers->Fetch(*holder, absl::StrCat("/internal/v1/result/", pipeline, "/", id),
                   ForwardedHeaders(req), PeerGateways::kMaxResultBytes,
                   [peer = *holder, unknown, reply](absl::StatusOr<TrickleResponse> r) {
                     if (!r.ok()) {
                       spdlog::warn("async result from gateway '{}': {}", peer,
                                    r.status().ToString());
                       return reply(PeerFailure(peer, r.status()));
                     }
                     if (r->status == 404) return reply(HttpError(404, unknown));
                     // The peer's bytes are checked like a client's: a JSON object, or no answer.
                     auto parsed = ParseJson(r->body);
                     if (r->status != 200 || !parsed.ok() || !parsed->is_object()) {
                       spdlog::warn("async result from gateway '{}': it answered {} ({})", peer,
                                    r->status, parsed.ok() ? "not an object" : "not JSON");
                       return reply(PeerFailure(peer, absl::InternalError("")));
                     }
                     reply(http::Json(200, Dump(*parsed)));
                   });
}

// The internal endpoints (PeerGateways): what this gateway holds, for a peer that carries the
// shared secret and the client's key. Never fetched further, so no loop between gateways.
void ServeInternal(const Env& env, const http::Request& req, http::Reply reply) {
  if (auto refused = env.peers->CheckSecret(req)) return reply(*std::move(refused));
  if (req.method != "GET") return reply(HttpError(405, "use GET"));
  absl::string_view rest = req.path;
  if (absl::ConsumePrefix(&rest, "/internal/v1/stream/")) {
    const size_t slash = rest.find('/');
    const absl::string_view id = rest.substr(0, slash);
    const absl::string_view name = slash == absl::string_view::npos ? "" : rest.substr(slash + 1);
    const std::optional<std::string> holder = env.peers->HolderOf(id);
    if (!holder || !holder->empty() || !IsMediaName(name)) {
      return reply(HttpError(404, "no such media here"));
    }
    auto media = env.store->GetMedia(absl::StrCat("/stream/", id, "/", name), env.OwnerOf(req));
    if (!media) return reply(HttpError(404, "no such media here"));
    http::Response r;
    r.content_type = media->first;
    r.body = *media->second;
    return reply(std::move(r));
  }
  if (absl::ConsumePrefix(&rest, "/internal/v1/result/")) {
    const size_t slash = rest.find('/');
    const absl::string_view id = slash == absl::string_view::npos ? "" : rest.substr(slash + 1);
    const std::optional<std::string> holder = env.peers->HolderOf(id);
    if (!holder || !holder->empty()) return reply(HttpError(404, "no such request here"));
    auto status = env.store->JobStatus(std::string(id), env.OwnerOf(req));
    if (!status) return reply(HttpError(404, "no such request here"));
    return reply(http::Json(200, Dump(*status)));
  }
  reply(HttpError(404, "no such internal endpoint"));
}

// POST /<pipeline>/result {"request_id"}: an async request's status, and its result when done.
void ServeResult(const char* pipeline, const Env& env, const http::Request& req,
                 http::Reply reply) {
  auto p = ReadBody(Body::kJson, req, reply);
  if (!p) return;
  auto id = p->Str("request_id", true);
  if (!p->ok()) return reply(p->Error());
  if (env.peers != nullptr) return ServeResultAcrossGateways(pipeline, env, req, *id, reply);
  auto status = env.store->JobStatus(*id, env.OwnerOf(req));
  if (!status) {
    return reply(
        HttpError(404, absl::StrCat("no ", pipeline, " request '", *id, "' (unknown or expired)")));
  }
  reply(http::Json(200, Dump(*status)));
}

// GET /stream/<id>/<name>: a video this gateway made, for the key that asked for it.
void ServeMedia(const Env& env, const http::Request& req, http::Reply reply) {
  if (req.method != "GET") return reply(HttpError(405, "use GET"));
  if (env.peers != nullptr) return ServeMediaAcrossGateways(env, req, std::move(reply));
  auto media = env.store->GetMedia(req.path, env.OwnerOf(req));
  if (!media) return reply(HttpError(404, absl::StrCat("no media at ", req.path)));
  http::Response r;
  r.content_type = media->first;
  r.body = *media->second;
  reply(std::move(r));
}

}  // namespace

// Validates the request, checks that some orchestrator offers the model (503 otherwise), starts
// a session (live_video.h) and answers at once with its URLs and request id.
void LiveVideoToVideo(const Env& env, const http::Request& req, http::Reply reply) {
  const std::shared_ptr<LiveVideoSessions>& sessions = env.live;
  if (sessions == nullptr) return reply(HttpError(503, "live video is not served by this gateway"));
  auto p = ReadBody(Body::kJson, req, reply);
  if (!p) return;
  LiveVideoParams lp;
  auto url = [&](const char* name, bool required) -> std::string {
    auto v = p->Str(name, required);
    if (!v || (v->empty() && !required)) return "";
    // Syntax and the egress policy (live_video.allowed_hosts), before any other work.
    if (absl::Status st = sessions->CheckUrl(name, *v); !st.ok()) {
      p->Fail(name, absl::StrCat("Value error, ", st.message()), "value_error");
      return "";
    }
    // The session appends "/<seq>" itself.
    return std::string(absl::StripSuffix(*v, "/"));
  };
  lp.subscribe_url = url("subscribe_url", true);
  lp.publish_url = url("publish_url", true);
  lp.control_url = url("control_url", false);
  lp.events_url = url("events_url", false);
  if (auto v = p->Str("model_id", true)) {
    if (v->empty()) {
      p->Fail("model_id", "Value error, model_id must name a live-video-to-video model",
              "value_error");
    }
    lp.model_id = *v;
  }
  if (const Json* params = p->Raw("params")) {
    if (!params->is_object()) {
      p->Fail("params", "Input should be a valid dictionary", "dict_type");
    } else {
      lp.params = params->dump(-1, ' ', false, Json::error_handler_t::replace);
    }
  }
  std::string gateway_request_id;
  if (auto v = p->Str("gateway_request_id")) gateway_request_id = *v;
  if (auto v = p->Str("manifest_id")) lp.manifest_id = *v;
  if (auto v = p->Str("stream_id")) lp.stream_id = *v;
  if (lp.stream_id.size() > 128) {
    p->Fail("stream_id", "String should have at most 128 characters", "string_too_long");
  }
  if (!p->ok()) return reply(p->Error());
  // Also the stream id when the client names none: 128 bits from the CSPRNG, not guessable.
  lp.request_id = absl::StrCat("live-", SecureRandomHex(16));
  if (lp.stream_id.empty()) lp.stream_id = lp.request_id;
  if (auto auth = Header(req, "authorization")) lp.authorization = *auth;
  // Every string here but the request id is the client's: cut and escaped (LogSafe).
  spdlog::info(
      "[{}] /live-video-to-video model '{}' stream '{}' (gateway_request_id '{}', "
      "manifest_id '{}')",
      lp.request_id, LogSafe(lp.model_id), LogSafe(lp.stream_id), LogSafe(gateway_request_id),
      LogSafe(lp.manifest_id));
  // Capacity first: some orchestrator must offer the model, or the session could never run.
  auto call =
      std::make_shared<UnaryCall<v1::ListCapabilitiesRequest, v1::ListCapabilitiesResponse>>();
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ForwardRequestId(req, &call->context);
  env.stub->async()->ListCapabilities(
      &call->context, &call->request, &call->response,
      [call, sessions, lp = std::move(lp), reply = std::move(reply)](grpc::Status status) mutable {
        if (!status.ok()) {
          return reply(HttpError(HttpStatusForGrpc(status.error_code()), status.error_message()));
        }
        bool offered = false;
        for (const auto& cap : call->response.capabilities()) {
          offered = offered || (cap.pipeline() == "live-video-to-video" &&
                                cap.model_id() == lp.model_id && cap.orchestrators() > 0);
        }
        if (!offered) {
          return reply(HttpError(
              503, absl::StrCat("no orchestrator available: none offers live-video-to-video "
                                "model '",
                                lp.model_id, "'")));
        }
        Json out = {{"subscribe_url", lp.subscribe_url}, {"publish_url", lp.publish_url},
                    {"control_url", lp.control_url},     {"events_url", lp.events_url},
                    {"request_id", lp.request_id},       {"manifest_id", lp.manifest_id}};
        if (absl::Status st = sessions->Start(std::move(lp)); !st.ok()) {
          return reply(HttpError(HttpStatusForGrpc(static_cast<grpc::StatusCode>(st.code())),
                                 std::string(st.message())));
        }
        reply(http::Json(200, Dump(out)));
      });
}

void LiveVideoQuote(const Env& env, const http::Request& req, http::Reply reply) {
  auto p = ReadBody(Body::kForm, req, reply);
  if (!p) return;
  v1::QuoteRequest quote;
  v1::LiveVideoSegmentRequest* segment = quote.mutable_live_video_segment();
  if (auto v = p->Str("model_id", true)) {
    if (v->empty()) {
      p->Fail("model_id", "Value error, model_id must name a live-video-to-video model",
              "value_error");
    }
    segment->set_model_id(*v);
  }
  // The segment as a session's input channel sends one (MPEG-TS); an empty file is missing.
  if (auto v = p->File("video", true)) segment->set_segment(*std::move(v));
  if (!p->ok()) return reply(p->Error());
  // A session ends on a larger input segment, so it is never a segment's price.
  const int64_t max_bytes =
      env.live != nullptr ? env.live->max_segment_bytes() : LiveVideoOptions{}.max_segment_bytes;
  if (static_cast<int64_t>(segment->segment().size()) > max_bytes) {
    return reply(HttpError(
        413, absl::StrCat("video: ", segment->segment().size(), " bytes, more than the ", max_bytes,
                          " bytes a live-video-to-video input segment may have")));
  }
  RunQuote(env, req, std::move(quote), nullptr, std::move(reply));
}

}  // namespace livepeer

int HttpStatusForGrpc(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::NOT_FOUND:  // no orchestrator offers the model
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return 401;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:  // over an API key's quota, or queues full
      return 429;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 503;
    default:
      return 500;
  }
}

std::map<std::string, http::Handler> LivepeerApiRoutes(std::shared_ptr<grpc::Channel> gateway,
                                                       std::shared_ptr<LiveVideoSessions> live,
                                                       const ApiKeyAuth* auth,
                                                       std::shared_ptr<PeerGateways> peers) {
  auto env = std::make_shared<livepeer::Env>();
  env->stub = livepeer::StubPtr(v1::Gateway::NewStub(gateway));
  env->store = std::make_shared<livepeer::Store>(
      peers != nullptr ? absl::StrCat(peers->self_id(), ".") : std::string());
  env->auth = auth;
  env->peers = std::move(peers);
  // Without an owner's, the live video sessions end when the HTTP server and its routes go.
  env->live = live != nullptr ? std::move(live) : std::make_shared<LiveVideoSessions>(env->stub);
  std::map<std::string, http::Handler> routes;
  for (const livepeer::Route& route : livepeer::Routes()) {
    routes[absl::StrCat("/", route.pipeline)] = [env, serve = route.serve](const http::Request& req,
                                                                           http::Reply reply) {
      serve(*env, req, std::move(reply));
    };
    if (route.quote != nullptr) {
      routes[absl::StrCat("/quote/", route.pipeline)] =
          [env, quote = route.quote](const http::Request& req, http::Reply reply) {
            quote(*env, req, std::move(reply));
          };
    }
    if (route.may_respond_async) {
      routes[absl::StrCat("/", route.pipeline, "/result")] =
          [env, pipeline = route.pipeline](const http::Request& req, http::Reply reply) {
            livepeer::ServeResult(pipeline, *env, req, std::move(reply));
          };
    }
  }
  for (const char* quote : {"/quote", "/quote/*"}) {
    routes[quote] = [](const http::Request& req, http::Reply reply) {
      livepeer::UnknownQuote(req, std::move(reply));
    };
  }
  routes["/stream/*"] = [env](const http::Request& req, http::Reply reply) {
    livepeer::ServeMedia(*env, req, std::move(reply));
  };
  if (env->peers != nullptr) {
    routes["/internal/v1/*"] = [env](const http::Request& req, http::Reply reply) {
      livepeer::ServeInternal(*env, req, std::move(reply));
    };
  }
  return routes;
}

}  // namespace switchyard::gateway
