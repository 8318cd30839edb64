// Pieces shared by the Livepeer AI HTTP API's files (livepeer_api*.cc); not a public interface.
//
// Every pipeline path is one Route in one table (Routes(), livepeer_api_routes.cc). A unary
// pipeline's route is a UnaryRoute descriptor: its body type, the body fields that become its proto
// request, the gateway gRPC method that runs it, how its response becomes JSON and which HTTP
// status its input errors get; ServeUnary does everything else, the same way for every pipeline.
// The LLM (streamed as it is generated) and live video (a session) have handlers of their own.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "common/http_server.h"
#include "common/multipart.h"
#include "common/pipelines.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {
class ApiKeyAuth;
class LiveVideoSessions;
class PeerGateways;
}  // namespace switchyard::gateway

namespace switchyard::gateway::livepeer {

using Json = nlohmann::json;
using StubPtr = std::shared_ptr<v1::Gateway::Stub>;

// {"detail": {"msg": message}}: the spec's HTTPError.
http::Response HttpError(int status, const std::string& message);

// `json` as a response body; invalid UTF-8 in a string (a client's, or a model's) is replaced
// rather than thrown on.
std::string Dump(const Json& json);

// A request's fields, from a multipart form or a JSON object, read with FastAPI's (pydantic's)
// rules and error shapes, as the reference gateway validates them: every problem is collected
// and answered at once as 422 {"detail": [{"loc": ["body", field], "msg", "type"}, ...]}.
class Params {
 public:
  explicit Params(std::map<std::string, http::FormPart> form);
  explicit Params(Json body);

  bool Has(const std::string& name) const;
  // A text field; nullopt when absent (a validation error when `required`) or not a string.
  std::optional<std::string> Str(const std::string& name, bool required = false);
  // An uploaded file's bytes (form bodies only). Empty files count as missing.
  std::optional<std::string> File(const std::string& name, bool required = false);
  std::optional<int64_t> Int(const std::string& name, int64_t min, int64_t max);
  std::optional<double> Number(const std::string& name);
  std::optional<bool> Bool(const std::string& name);
  // The raw JSON value (JSON bodies only), nullptr when absent.
  const Json* Raw(const std::string& name) const;

  // Records a problem with `loc` (after "body").
  void Fail(Json loc, const std::string& msg, const std::string& type);
  // Refuses the whole request as malformed (400 with `message`), e.g. a field's JSON nested past
  // the limit; it takes precedence over the 422 field errors. The first refusal is kept.
  void Refuse(std::string message);
  bool ok() const { return errors_.empty() && refusal_.empty(); }
  http::Response Error() const;

 private:
  bool is_form_;
  std::map<std::string, http::FormPart> form_;
  Json json_;
  Json errors_ = Json::array();
  std::string refusal_;
};

// A request header by its lower-case name.
std::optional<std::string> Header(const http::Request& req, const std::string& name);

// The body types of the API's paths.
enum class Body { kJson, kForm };

// Checks the method and body type and parses the body. On failure, replies (405, 415, 400 or
// 422) and returns nullopt. JSON bodies nested deeper than kMaxJsonDepth (common/json_limits.h)
// are 400 naming the limit; other malformed JSON is the reference API's 422 json_invalid.
std::optional<Params> ReadBody(Body body, const http::Request& req, const http::Reply& reply);

// One body field that is the request proto's field of the same name. The proto field's type says
// how it is read: string as text, bytes as an uploaded file (form bodies), int32 and int64 as an
// integer from `min` to the type's greatest value, float as a number, bool as a boolean.
struct Field {
  const char* name = nullptr;
  bool required = false;
  int64_t min = 1;
};
inline constexpr int64_t kAnyInt = std::numeric_limits<int64_t>::min();

// Reads `fields` into `request` in their order (the order the 422 body lists errors in).
void ReadFields(Params& params, std::span<const Field> fields, google::protobuf::Message* request);
// OK when every field names a field of `request` of a type ReadFields reads.
absl::Status CheckFields(std::span<const Field> fields,
                         const google::protobuf::Descriptor& request);

// Refines the HTTP status of a failed gRPC call (e.g. 413 or 415 for what the pipeline says about
// its input); returns 0 to keep the default mapping.
using StatusRefiner = int (*)(const grpc::Status&);

// Answers a failed call: HttpStatusForGrpc's code (or the refiner's) with the spec's error body.
// NOT_FOUND ("no orchestrator offers model ...") is 400 while the gateway knows orchestrators and
// 503 when it has none to route to at all, which it asks its own ListCapabilities.
void ReplyGrpcError(const StubPtr& stub, const grpc::Status& status, http::Reply reply,
                    StatusRefiner refine = nullptr);

// 413 for an input image over the model's pixel limit (the spec lists 413 for image inputs).
int ImageInputStatus(const grpc::Status& status);
// 415 for an upload that is not audio the pipeline can decode, 413 for audio longer than the
// model takes, as the reference runner answers them.
int AudioInputStatus(const grpc::Status& status);

// Sends the client's X-Request-Id, if it sent one, with the call so every log line has it, and
// its Authorization header, so the gRPC API's API key check covers HTTP calls too.
void ForwardRequestId(const http::Request& req, grpc::ClientContext* context);

// "data:<type>;base64,<data>".
std::string DataUrl(const std::string& content_type, const std::string& data);

// Generated videos and async results, kept in memory for a while (livepeer_api.cc).
class Store;

// Where a response puts the media it answers with URLs (image-to-video's videos): kept in the
// store for the key that asked, at the client's base URL.
class MediaSink {
 public:
  MediaSink(std::shared_ptr<Store> store, std::string owner, std::string base_url)
      : store_(std::move(store)), owner_(std::move(owner)), base_url_(std::move(base_url)) {}

  // Keeps `data` and returns the URL that serves it (GET /stream/<id>/<name>).
  std::string Put(const std::string& content_type, std::string data, const std::string& name) const;

 private:
  std::shared_ptr<Store> store_;
  std::string owner_;
  std::string base_url_;
};

// What the routes share. The owner of the routes keeps it; a call in flight keeps only what it
// needs (the stub, the store).
struct Env {
  StubPtr stub;
  std::shared_ptr<Store> store;
  // The gateway's API keys (null: none): stored results belong to the key that made them.
  const ApiKeyAuth* auth = nullptr;
  std::shared_ptr<LiveVideoSessions> live;
  // The other gateways that hold ids (null: none; every id is this gateway's).
  std::shared_ptr<PeerGateways> peers;

  // Whom a request's stored results belong to (livepeer_api.h).
  std::string OwnerOf(const http::Request& req) const;
  // Where its response's media go.
  MediaSink MediaFor(const http::Request& req) const;
};

// One unary call's state, kept alive until it completes.
template <typename Req, typename Resp>
struct UnaryCall {
  grpc::ClientContext context;
  Req request;
  Resp response;
};

// A unary pipeline's path, as data.
template <typename RequestType>
struct UnaryRoute {
  using Request = RequestType;
  using Response = typename pipelines::PipelineOf<Request>::Response;
  using Method = void (v1::Gateway::StubInterface::async_interface::*)(
      grpc::ClientContext*, const Request*, Response*, std::function<void(grpc::Status)>);

  const char* pipeline;  // common/pipelines.h; the path is "/<pipeline>"
  Body body;
  std::span<const Field> fields;
  Method method;  // the gateway's gRPC method that runs it
  Json (*to_json)(const Response&, const MediaSink&);
  StatusRefiner refine = nullptr;  // the HTTP status of the pipeline's input errors
  // What a Field cannot say (e.g. JSON arrays in form fields), read after `fields`.
  void (*read_more)(Params&, Request*) = nullptr;
  // With "Prefer: respond-async" (as go-livepeer's gateway takes it) the answer is 202
  // {"request_id"} at once, and POST /<pipeline>/result {"request_id"} gives the result.
  bool may_respond_async = false;
};

// Starts a call (given the completion) and answers when it completes: 200 with `to_json()`, or
// the error; with `may_respond_async` and the client's "Prefer: respond-async", 202 at once.
using CallStarter = std::function<void(std::function<void(grpc::Status)> done)>;
void RunCall(const Env& env, const http::Request& req, StatusRefiner refine, bool may_respond_async,
             const CallStarter& start, std::function<Json()> to_json, http::Reply reply);

template <typename Request>
void ServeUnary(const UnaryRoute<Request>& route, const Env& env, const http::Request& req,
                http::Reply reply) {
  auto params = ReadBody(route.body, req, reply);
  if (!params) return;
  auto call = std::make_shared<UnaryCall<Request, typename UnaryRoute<Request>::Response>>();
  ReadFields(*params, route.fields, &call->request);
  if (route.read_more != nullptr) route.read_more(*params, &call->request);
  if (!params->ok()) return reply(params->Error());
  ForwardRequestId(req, &call->context);
  RunCall(
      env, req, route.refine, route.may_respond_async,
      [stub = env.stub, call, method = route.method](std::function<void(grpc::Status)> done) {
        (stub->async()->*method)(&call->context, &call->request, &call->response, std::move(done));
      },
      [call, to_json = route.to_json, media = env.MediaFor(req)] {
        return to_json(call->response, media);
      },
      std::move(reply));
}

// Quotes (POST /quote/<pipeline>; docs/http-api.md): `request` becomes the QuoteRequest's one
// request (the oneof field of its type), Gateway.Quote prices it, and the answer is the
// QuoteResponse as JSON (proto field names), or the pipeline's error (`refine`).
void SetQuoted(const google::protobuf::Message& request, v1::QuoteRequest* quote);
void RunQuote(const Env& env, const http::Request& req, v1::QuoteRequest quote,
              StatusRefiner refine, http::Reply reply);

// POST /quote/<pipeline>: the same body as POST /<pipeline>, read by the same descriptor, so the
// quote prices exactly the request the pipeline's path would run.
template <typename Request>
void ServeQuote(const UnaryRoute<Request>& route, const Env& env, const http::Request& req,
                http::Reply reply) {
  auto params = ReadBody(route.body, req, reply);
  if (!params) return;
  Request request;
  ReadFields(*params, route.fields, &request);
  if (route.read_more != nullptr) route.read_more(*params, &request);
  if (!params->ok()) return reply(params->Error());
  v1::QuoteRequest quote;
  SetQuoted(request, &quote);
  RunQuote(env, req, std::move(quote), route.refine, std::move(reply));
}

// One path of the API: a pipeline and its handler.
struct Route {
  using Handler = void (*)(const Env& env, const http::Request& req, http::Reply reply);

  const char* pipeline;  // the path is "/<pipeline>"
  Handler serve;
  // Whether the descriptor is consistent: every field it reads is in its request.
  absl::Status (*check)();
  bool may_respond_async = false;  // also serves POST /<pipeline>/result
  Handler quote = nullptr;         // POST /quote/<pipeline> (none: not quotable over HTTP)
};

template <const auto& kRoute>
constexpr Route Unary() {
  using Request = typename std::remove_cvref_t<decltype(kRoute)>::Request;
  return {kRoute.pipeline,
          [](const Env& env, const http::Request& req, http::Reply reply) {
            ServeUnary(kRoute, env, req, std::move(reply));
          },
          [] { return CheckFields(kRoute.fields, *Request::descriptor()); },
          kRoute.may_respond_async,
          [](const Env& env, const http::Request& req, http::Reply reply) {
            ServeQuote(kRoute, env, req, std::move(reply));
          }};
}

// Every pipeline's path, in one table (livepeer_api_routes.cc).
std::span<const Route> Routes();

// The handlers of the paths that are not one unary call.
void Llm(const Env& env, const http::Request& req, http::Reply reply);  // livepeer_api_llm.cc
void LlmQuote(const Env& env, const http::Request& req, http::Reply reply);
absl::Status CheckLlmFields();
void LiveVideoToVideo(const Env& env, const http::Request& req, http::Reply reply);
// POST /quote/live-video-to-video: one sample segment (multipart `video`, as a session's input
// sends them) and `model_id`, quoted as the session's LiveVideoSegment call for it would be.
void LiveVideoQuote(const Env& env, const http::Request& req, http::Reply reply);

}  // namespace switchyard::gateway::livepeer
